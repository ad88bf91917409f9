"""Error messages and metric names that name the real problem (issue 10, point 4)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

from hfmed import (
    LTViTImageProcessor,
    ScopeformerForImageClassification,
    ScopeformerImageProcessor,
    SliceCNNForVolumePrediction,
    SliceCNNImageProcessor,
    lt_vit_config,
    scopeformer_config,
    slice_cnn_config,
)
from hfmed.cards import card_data
from hfmed.hub import save_for_hub
from hfmed.models.diamant import DIAMANTImageProcessor
from hfmed.pipelines import classify, predict_volume
from hfmed.tasks import task_for

ROOT = Path(__file__).resolve().parents[1]

CT = get_testdata_file("CT_small.dcm")
PREAMBLE = 128 + len(b"DICM")

# Every processor that reads DICOM files, set to accept pydicom's CT slice (LT-ViT wants radiographs).
DICOM_PROCESSORS = {
    "scopeformer": lambda: ScopeformerImageProcessor(size={"height": 32, "width": 32}),
    "lt_vit": lambda: LTViTImageProcessor(size={"height": 32, "width": 32}, allowed_modalities=["CT"]),
    "diamant": lambda: DIAMANTImageProcessor(size={"height": 32, "width": 32}),
}


@pytest.mark.parametrize("family", sorted(DICOM_PROCESSORS))
@pytest.mark.parametrize("content", [b"hello, not dicom", bytes(300), b"PK\x03\x04" + bytes(range(256))])
def test_a_file_named_dcm_that_is_not_dicom_is_called_not_a_dicom(family, content, tmp_path):
    path = tmp_path / "x.dcm"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        DICOM_PROCESSORS[family]()(str(path))
    message = str(error.value)
    assert message.startswith(f"{str(path)!r} is not a DICOM file (no 'DICM' preamble")
    assert "PixelData" not in message and "\n" not in message


@pytest.mark.parametrize("family", sorted(DICOM_PROCESSORS))
def test_a_dicom_without_its_preamble_still_reads(family, tmp_path):
    # Older exports write the dataset alone (no 128-byte preamble, no 'DICM'): pydicom's force=True reads them.
    raw = tmp_path / "raw.dcm"
    with open(CT, "rb") as f:
        raw.write_bytes(f.read()[PREAMBLE:])
    processor = DICOM_PROCESSORS[family]()
    expected = processor(CT, return_tensors="pt")["pixel_values"]
    assert torch.equal(processor(str(raw), return_tensors="pt")["pixel_values"], expected)


# --- the log-loss name says what was computed ---------------------------------------------------------------


def _per_label_log_loss(probabilities, labels):
    from sklearn.metrics import log_loss

    return np.array([log_loss(labels[:, j], probabilities[:, j], labels=[0, 1]) for j in range(labels.shape[1])])


def _scores(num_labels, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(40, num_labels)).astype(np.float64)
    probabilities = np.clip(0.6 * labels + 0.4 * rng.random((40, num_labels)), 0.01, 0.99)
    return probabilities, labels


def test_a_chest_x_ray_run_reports_a_mean_log_loss_not_the_rsna_weighted_one():
    config = lt_vit_config("lt-vit-tiny")
    names = [config.id2label[i] for i in range(config.num_labels)]
    probabilities, labels = _scores(config.num_labels)
    metrics = task_for(config).metrics(config, probabilities, labels, names)
    assert "weighted_log_loss" not in metrics
    assert metrics["mean_log_loss"] == pytest.approx(_per_label_log_loss(probabilities, labels).mean(), rel=1e-6)


def test_scopeformer_keeps_the_rsna_weighted_log_loss():
    config = scopeformer_config("scopeformer-tiny")
    names = [config.id2label[i] for i in range(config.num_labels)]
    probabilities, labels = _scores(config.num_labels)
    metrics = task_for(config).metrics(config, probabilities, labels, names)
    assert "mean_log_loss" not in metrics
    weights = np.array([2.0 if name == "any" else 1.0 for name in names])
    expected = (weights * _per_label_log_loss(probabilities, labels)).sum() / weights.sum()
    assert metrics["weighted_log_loss"] == pytest.approx(expected, rel=1e-6)


def test_the_model_card_names_the_log_loss_the_run_computed():
    config = lt_vit_config("lt-vit-tiny")
    metrics = {"best": {"metrics": {"mean_auroc": 0.75, "mean_log_loss": 0.4}}}
    data = card_data(config, metrics, {"data": {"builder": "chexpert"}}, "org/lt-vit", "apache-2.0")
    assert {(r.metric_name, r.metric_value) for r in data.eval_results} == {("mean AUROC", 0.75), ("mean log loss", 0.4)}
    assert data.metrics == ["roc_auc", "log_loss"]


# --- entry points name the real mistake ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("messages")
    image = scopeformer_config("scopeformer-tiny")
    volume = slice_cnn_config("slice-cnn-tiny")
    return {
        "image": save_for_hub(ScopeformerForImageClassification(image), ScopeformerImageProcessor(
            size={"height": 32, "width": 32}), tmp / "image"),
        "volume": save_for_hub(SliceCNNForVolumePrediction(volume), SliceCNNImageProcessor(
            target_shape=list(volume.volume_shape)), tmp / "volume"),
    }


def test_a_run_folder_passed_as_the_model_is_pointed_to_its_model_subfolder(tmp_path):
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is a training run folder, not a model folder: pass .*run/model$"):
        classify(CT, str(tmp_path / "run"))


def test_a_folder_without_config_json_is_not_called_an_unrecognised_model(tmp_path):
    with pytest.raises(ValueError, match="has no config.json, so it is not a model folder") as error:
        classify(CT, str(tmp_path))
    assert "model_type" not in str(error.value)


@pytest.mark.parametrize("path", ["runs/missing-run/model", "./model", "/nonexistent/model"])
def test_a_missing_local_folder_is_not_called_a_malformed_repo_id(path):
    with pytest.raises(FileNotFoundError, match=f"No model folder '{path}'") as error:
        predict_volume("brain.nii.gz", path)
    assert "Repo id" not in str(error.value)


def test_the_wrong_entry_point_names_the_right_one(hub_folders, tmp_path):
    with pytest.raises(ValueError, match="model for 3-D volumes: use hfmed.pipelines.predict_volume, not classify"):
        classify(CT, str(hub_folders["volume"]))
    nifti = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 20, 16), np.float32), np.eye(4)), nifti)
    with pytest.raises(ValueError, match="model for 2-D images, not 3-D volumes: use hfmed.pipelines.classify"):
        predict_volume(str(nifti), str(hub_folders["image"]))


@pytest.mark.parametrize("key", ["training.mixed_precision", "model.preset"])
def test_a_bare_yaml_no_is_not_reported_as_a_type_mistake(key):
    from hfmed.recipe import RecipeError, load_recipe

    demo = ROOT / "configs" / "scopeformer-efficient-demo.yaml"
    message = rf"'{key}' must be str, but YAML read the bare word as the boolean False: quote it"
    with pytest.raises(RecipeError, match=message):
        load_recipe(demo, [f"{key}=no"])
    assert load_recipe(demo, ["training.mixed_precision='no'"]).training.mixed_precision == "no"
