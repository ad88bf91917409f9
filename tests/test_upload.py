"""upload.py: staged Hub folders and model cards (pushes, network faults and token hygiene:
tests/reliability/test_upload_faults.py)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from pydicom.data import get_testdata_file
from safetensors.torch import load_file, save_file

import upload
from hfmed import ScopeformerForImageClassification, ScopeformerImageProcessor, scopeformer_config

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as `hfmed train` leaves it, with a tiny random model and made-up metrics."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    config = scopeformer_config("scopeformer-tiny", label_thresholds=[0.4, 0.3, 0.5, 0.5, 0.6, 0.2])
    ScopeformerForImageClassification(config).save_pretrained(run / "model")
    ScopeformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(run / "model")
    metrics = {"mean_auroc": 0.91, "weighted_log_loss": 0.21, "mean_accuracy": 0.88}
    points = {name: {"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.8} for name in LABELS}
    (run / "metrics.json").write_text(json.dumps({
        "best": {"score": 0.91, "epoch": 3, "step": 60, "metrics": metrics},
        "history": [], "thresholds": {"method": "youden", "operating_points": points},
    }))
    (run / "recipe.yaml").write_text(yaml.safe_dump({
        "model": {"family": "scopeformer", "preset": "scopeformer-tiny"},
        "data": {"builder": "synthetic_ct"}, "training": {"epochs": 3, "learning_rate": 0.001},
    }))
    return run


@pytest.fixture(scope="module")
def staged(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("staged")
    assert upload.main([str(run_dir), "--repo-id", "org/scopeformer-demo", "--dry-run", "--out", str(out),
                        "--space", str(ROOT / "spaces" / "scopeformer"), "--space-id", "org/space"]) == 0
    return out


def test_staged_model_folder_holds_the_hub_files(staged):
    files = {p.name for p in (staged / "model").iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md",
            "configuration_scopeformer.py", "modeling_scopeformer.py", "image_processing_scopeformer.py"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    auto_map = json.loads((staged / "model" / "config.json").read_text())["auto_map"]
    assert set(auto_map) >= {"AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoImageProcessor"}


def test_model_card_parses_and_carries_the_metadata(staged):
    card = ModelCard.load(staged / "model" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-classification"
    assert data["license"] == "apache-2.0"
    assert {"medical", "ct", "scopeformer"} <= set(data["tags"])
    assert data["datasets"] == ["synthetic_ct"]
    assert "roc_auc" in data["metrics"]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["roc_auc"] == pytest.approx(0.91)
    assert results["log_loss"] == pytest.approx(0.21)
    text = card.text
    for needle in ("2107.04575", "2302.00220", "@inproceedings", "Research use only", "hounsfield",
                   "trust_remote_code=True", "medical-image-classification", "Trainer(", *LABELS):
        assert needle in text, needle


def test_staged_folder_loads_without_hfmed_with_identical_logits(staged, run_dir, tmp_path):
    from transformers import AutoModelForImageClassification

    processor = ScopeformerImageProcessor.from_pretrained(run_dir / "model")
    inputs = processor(get_testdata_file("CT_small.dcm"), return_tensors="pt")
    save_file(dict(inputs), str(tmp_path / "x.safetensors"))
    with torch.no_grad():
        expected = AutoModelForImageClassification.from_pretrained(run_dir / "model").eval()(**inputs).logits
    script = textwrap.dedent(
        """
        import sys
        sys.modules["hfmed"] = None
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
        with torch.no_grad():
            save_file({"logits": model(**load_file(sys.argv[2])).logits}, sys.argv[3])
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", script, str(staged / "model"), str(tmp_path / "x.safetensors"),
                           str(tmp_path / "y.safetensors")], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.equal(load_file(str(tmp_path / "y.safetensors"))["logits"], expected)


def test_staged_space_points_at_the_model(staged):
    space = staged / "space"
    assert (space / "app.py").is_file()
    assert (space / "model_id.txt").read_text().strip() == "org/scopeformer-demo"
    meta = yaml.safe_load((space / "README.md").read_text().split("---")[1])
    assert meta["models"] == ["org/scopeformer-demo"] and meta["sdk"] == "gradio"


def test_bad_arguments_are_clear(tmp_path, capsys):
    assert upload.main([str(tmp_path), "--repo-id", "org/x", "--dry-run"]) == 2
    assert "not a training run folder" in capsys.readouterr().err
    assert upload.main([str(tmp_path), "--repo-id", "org/x", "--space-id", "org/s", "--dry-run"]) == 2
    assert "--space and --space-id go together" in capsys.readouterr().err


def test_upload_stages_an_lt_vit_run_unchanged_with_a_chest_x_ray_card(tmp_path):
    from hfmed import LTViTForImageClassification, LTViTImageProcessor, lt_vit_config

    run = tmp_path / "run"
    LTViTForImageClassification(lt_vit_config("lt-vit-tiny")).save_pretrained(run / "model")
    LTViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(run / "model")
    out = tmp_path / "staged"
    assert upload.main([str(run), "--repo-id", "org/lt-vit", "--dry-run", "--out", str(out),
                        "--space", str(ROOT / "spaces" / "lt_vit"), "--space-id", "org/lt-vit-space"]) == 0
    files = {p.name for p in (out / "model").iterdir()}
    assert {"modeling_lt_vit.py", "configuration_lt_vit.py", "image_processing_lt_vit.py", "README.md"} <= files
    card = ModelCard.load(out / "model" / "README.md")
    assert {"chest-x-ray", "x-ray", "lt_vit", "medical"} <= set(card.data.tags)
    assert "2311.07263" in card.text and "Atelectasis" in card.text and "chest.png" in card.text
    assert (out / "space" / "model_id.txt").read_text().strip() == "org/lt-vit"


def test_upload_stages_a_slice_cnn_regression_run_unchanged_with_an_mri_card(tmp_path):
    from hfmed import SliceCNNForVolumePrediction, SliceCNNImageProcessor, slice_cnn_config

    run = tmp_path / "run"
    config = slice_cnn_config("slice-cnn-tiny", task="regression")
    SliceCNNForVolumePrediction(config).save_pretrained(run / "model")
    SliceCNNImageProcessor(target_shape=config.volume_shape).save_pretrained(run / "model")
    metrics = {"mae": 3.25, "rmse": 4.5, "pearson_r": 0.9}
    (run / "metrics.json").write_text(json.dumps({
        "task": "regression", "best": {"score": 3.25, "epoch": 7, "step": 70, "metrics": metrics}, "history": [],
    }))
    out = tmp_path / "staged"
    assert upload.main([str(run), "--repo-id", "org/slice-cnn", "--dry-run", "--out", str(out),
                        "--space", str(ROOT / "spaces" / "slice_cnn"), "--space-id", "org/slice-cnn-space"]) == 0
    files = {p.name for p in (out / "model").iterdir()}
    assert {"modeling_slice_cnn.py", "configuration_slice_cnn.py", "image_processing_slice_cnn.py"} <= files
    card = ModelCard.load(out / "model" / "README.md")
    assert {"mri", "3d", "slice_cnn", "regression"} <= set(card.data.tags)
    assert "multi-label-classification" not in card.data.tags and card.data.pipeline_tag is None
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"mae": 3.25, "rmse": 4.5, "pearsonr": 0.9}
    # MONAI vocabulary of the processor's input contract, and the volume snippets
    for fact in ('"MR"', '"RAS"', "z-score", "predict_volume", "2303.01491", "regression: the model outputs"):
        assert fact in card.text, fact
    assert "volume regression" in card.text
    assert (out / "space" / "model_id.txt").read_text().strip() == "org/slice-cnn"


def test_upload_stages_a_diamant_segmentation_run_and_its_space_runs_it_without_hfmed(tmp_path):
    """A segmentation run stages unchanged (no branch in upload.py), and the staged Space, with hfmed
    unimportable, segments a bundled example exactly as hfmed's own classes do."""
    import numpy as np

    from hfmed import DIAMANTForSemanticSegmentation, DIAMANTImageProcessor, diamant_config

    run = tmp_path / "run"
    config = diamant_config("diamant-tiny")
    torch.manual_seed(0)
    model = DIAMANTForSemanticSegmentation(config).eval()
    processor = DIAMANTImageProcessor(size={"height": 32, "width": 32}, size_divisor=config.size_multiple)
    example = sorted((ROOT / "spaces" / "diamant" / "examples").glob("*.png"))[0]
    with torch.no_grad():  # shift the foreground bias so that about half the example is segmented at 0.5
        logits = model(**processor(str(example), return_tensors="pt")).logits[0]
        model.classifier.bias[1] += (logits[0] - logits[1]).median()
    model.save_pretrained(run / "model")
    processor.save_pretrained(run / "model")
    (run / "metrics.json").write_text(json.dumps({
        "task": "semantic_segmentation", "history": [],
        "best": {"score": 0.81, "epoch": 5, "step": 50, "metrics": {"mean_dice": 0.81, "mean_iou": 0.7}},
    }))
    out = tmp_path / "staged"
    assert upload.main([str(run), "--repo-id", "org/diamant", "--dry-run", "--out", str(out),
                        "--space", str(ROOT / "spaces" / "diamant"), "--space-id", "org/diamant-space"]) == 0
    files = {p.name for p in (out / "model").iterdir()}
    assert {"modeling_diamant.py", "configuration_diamant.py", "image_processing_diamant.py"} <= files
    auto_map = json.loads((out / "model" / "config.json").read_text())["auto_map"]
    assert "AutoModelForSemanticSegmentation" in auto_map
    card = ModelCard.load(out / "model" / "README.md")
    assert card.data.pipeline_tag == "image-segmentation" and "diamant" in card.data.tags
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"dice": 0.81, "mean_iou": 0.7}
    space = out / "space"
    assert (space / "model_id.txt").read_text().strip() == "org/diamant"
    assert not (space / "make_examples.py").exists()  # it imports hfmed; the Space never runs it

    example = space / "examples" / example.name
    with torch.no_grad():
        outputs = model(**processor(str(example), return_tensors="pt"))
    height, width = processor.decode(str(example))[0].shape[-2:]
    expected = processor.post_process_semantic_segmentation(outputs, target_sizes=[(height, width)])[0]
    assert 0.2 < expected.float().mean() < 0.8
    script = textwrap.dedent(
        """
        import importlib.util, sys
        sys.modules["hfmed"] = None
        import numpy as np
        spec = importlib.util.spec_from_file_location("app", "app.py")
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
        overlay, heads, mask, text = app.predict(sys.argv[1], 0.5)
        np.save(sys.argv[2], np.asarray(mask))
        print(len(heads), overlay.size)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_MODULES_CACHE": str(tmp_path / "modules"), "HFMED_MODEL": str(out / "model"),
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    done = subprocess.run([sys.executable, "-c", script, str(example), str(tmp_path / "mask.npy")], env=env,
                          cwd=space, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[:1] == [str(config.num_attention_heads)]
    assert np.array_equal(np.load(tmp_path / "mask.npy"), expected.numpy())
