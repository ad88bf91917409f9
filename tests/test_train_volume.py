"""The Accelerate loop on 3-D volumes: Slice-CNN regression (brain age) and classification (AD) runs on the
synthetic brain twin write task-specific metrics, plots and models."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from hfmed.recipe import load_recipe
from hfmed.train import train

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "slice-cnn-demo.yaml"


def tiny_overrides(tmp_path, **extra):
    """The demo recipe shrunk to seconds: 24x28x24 volumes at 8 mm, a 3-block encoder, 14 subjects."""
    overrides = {
        "training.output_dir": str(tmp_path / "run"),
        "model.config.volume_shape": "[24,28,24]",
        "model.config.encoder_channels": "[4,8,8]",
        "model.config.encoder1_feature_size": 16,
        "processor.target_spacing": "[8.0,8.0,8.0]",
        "processor.target_shape": "[24,28,24]",
        "data.args.root": str(tmp_path / "twin"),
        "data.args.num_subjects": 14,
        "data.args.shape": "[24,28,24]",
        "data.args.spacing": 8.0,
        "data.args.val_fraction": 0.3,
        "training.batch_size": 4,
        "training.eval_batch_size": 8,
        "training.log_every_steps": 1,
        "training.epochs": 2,
        **extra,
    }
    return [f"{k}={v}" for k, v in overrides.items()]


def _validation_predictions(run):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import hfmed  # noqa: F401
    from hfmed.data import build_dataset

    recipe = load_recipe(run / "recipe.yaml", check_paths=False)
    data = build_dataset(recipe.data.builder, **recipe.data.args)["validation"]
    model = AutoModelForImageClassification.from_pretrained(run / "model").eval()
    processor = AutoImageProcessor.from_pretrained(run / "model")
    with torch.no_grad():
        logits = model(**processor(list(data["path"]), return_tensors="pt")).logits[:, 0].numpy()
    return logits.astype(np.float64), np.asarray(data["labels"], dtype=np.float64)[:, 0]


def test_a_regression_run_reports_mae_rmse_and_pearson_of_its_saved_model(tmp_path):
    run = train(load_recipe(DEMO, tiny_overrides(tmp_path)))
    report = json.loads((run / "metrics.json").read_text())
    assert report["task"] == "regression" and "thresholds" not in report
    best = report["best"]["metrics"]
    assert set(best) == {"mae", "rmse", "pearson_r"}
    # the best epoch is the one with the lowest validation MAE, and the saved model is that epoch's
    assert best["mae"] == min(h["eval_mae"] for h in report["history"])
    predictions, ages = _validation_predictions(run)
    assert best["mae"] == pytest.approx(np.abs(predictions - ages).mean(), abs=1e-4)
    assert best["rmse"] == pytest.approx(np.sqrt(((predictions - ages) ** 2).mean()), abs=1e-4)
    assert best["pearson_r"] == pytest.approx(pearsonr(predictions, ages).statistic, abs=1e-4)
    assert "label_thresholds" not in json.loads((run / "model" / "config.json").read_text())
    for plot in ("loss.png", "metrics.png", "predictions.png"):
        assert (run / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run / "plots" / "roc.png").exists()


def test_a_classification_run_reports_balanced_accuracy_and_a_threshold(tmp_path):
    overrides = tiny_overrides(
        tmp_path,
        **{"model.config.task": "classification", "data.args.target": "diagnosis", "evaluation.metric": "auroc",
           "evaluation.greater_is_better": "true", "data.args.num_subjects": 16},
    )
    run = train(load_recipe(DEMO, overrides))
    report = json.loads((run / "metrics.json").read_text())
    assert report["task"] == "classification"
    best = report["best"]["metrics"]
    assert {"auroc", "accuracy", "balanced_accuracy", "mean_auroc", "auroc_AD"} <= set(best)
    assert best["auroc"] == best["auroc_AD"]
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["id2label"] == {"0": "AD"}
    assert config["label_thresholds"] == [report["thresholds"]["operating_points"]["AD"]["threshold"]]


@pytest.mark.parametrize(
    ("override", "message"),
    [("training.pos_weight=auto", "pos_weight applies to classification"),
     ("data.balanced_sampler=true", "balanced_sampler evens out labels of a classifier")],
)
def test_classification_only_options_on_a_regression_recipe_are_clear_errors(tmp_path, override, message):
    from hfmed.recipe import RecipeError

    key, value = override.split("=")
    with pytest.raises(RecipeError, match=message):
        train(load_recipe(DEMO, tiny_overrides(tmp_path, **{key: value})))
