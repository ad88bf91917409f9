"""`hfmed demo` on a regression run: the report comes from the task (no thresholds to look up), the staged
Space is the run's family's, and the example prediction goes through the family's pipeline."""

import json
import sys
from pathlib import Path

from hfmed.cli import main
from hfmed.recipe import load_recipe
from hfmed.train import train

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "slice-cnn-demo.yaml"


def test_demo_reports_a_regression_run_and_predicts_on_a_real_volume(tmp_path, capsys):
    overrides = [
        f"training.output_dir={tmp_path / 'run'}", "model.config.volume_shape=[24,28,24]",
        "model.config.encoder_channels=[4,8,8]", "model.config.encoder1_feature_size=16",
        "processor.target_spacing=[8.0,8.0,8.0]", "processor.target_shape=[24,28,24]",
        f"data.args.root={tmp_path / 'twin'}", "data.args.num_subjects=10", "data.args.shape=[24,28,24]",
        "data.args.spacing=8.0", "data.args.val_fraction=0.3", "training.batch_size=4", "training.epochs=1",
    ]
    train(load_recipe(DEMO, overrides))
    capsys.readouterr()
    assert main(["demo", str(DEMO), *overrides, "--no-serve"]) == 0
    sys.stdout.flush()
    out = capsys.readouterr().out
    assert "[1/1] slice_cnn: reusing the finished run" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("slice_cnn "))
    assert row[:6] == ["slice_cnn", "regression", "mean", "absolute", "error", f"{metrics['best']['metrics']['mae']:.4f}"]
    assert "threshold" not in out
    assert "trained model on anatomical.nii" in out and "\n  age " in out
    staged = tmp_path / "run" / "hub"
    assert (staged / "model" / "README.md").is_file()
    assert (staged / "space" / "app.py").read_text() == (ROOT / "spaces" / "slice_cnn" / "app.py").read_text()
