"""The CheXpert recipe with uncertain labels ignored (-1 kept, masked in the loss) trains and evaluates on a
validation split carved from train.csv, its metrics and thresholds computed over the known labels only
(issue 10, point 5)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from hfmed.data import build_dataset, write_synthetic_chexpert
from hfmed.data.transforms import collate, make_transform
from hfmed.recipe import load_recipe
from hfmed.train import train

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "lt-vit-small-chexpert.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chexpert")
    write_synthetic_chexpert(tmp / "data", num_patients=24, num_valid_patients=3, image_size=32, seed=0)
    overrides = {
        "model.preset": "lt-vit-tiny",  # the recipe's model, shrunk: 2 blocks, width 32, 32 px
        "model.pretrained_backbones": False,
        "data.args.root": tmp / "data",
        "data.args.uncertain": "ignore",
        "data.args.val_fraction": 0.3,
        "data.num_workers": 0,
        "training.output_dir": tmp / "run",
        "training.epochs": 1,
        "training.batch_size": 8,
        "training.eval_batch_size": 16,
        "training.mixed_precision": "'no'",  # quoted: YAML reads a bare no as False
        "training.report_to": "[]",
        "training.save_every_steps": "null",
    }
    recipe = load_recipe(RECIPE, [f"{key}={value}" for key, value in overrides.items()])
    return recipe, train(recipe)


def _validation(recipe, run_dir):
    """Validation labels (with -1) and the saved model's probabilities on them, computed here."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    validation = build_dataset(recipe.data.builder, **recipe.data.args)["validation"]
    model = AutoModelForImageClassification.from_pretrained(run_dir / "model").eval()
    processor = AutoImageProcessor.from_pretrained(run_dir / "model")
    rows = validation.with_transform(make_transform(processor))
    batch = collate([rows[i] for i in range(len(rows))])
    with torch.no_grad():
        probabilities = torch.sigmoid(model(pixel_values=batch["pixel_values"]).logits).double().numpy()
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return names, probabilities, np.asarray(validation["labels"], dtype=np.float64)


def test_ignored_uncertain_labels_train_and_evaluate_over_known_labels(run):
    recipe, run_dir = run
    report = json.loads((run_dir / "metrics.json").read_text())
    metrics = report["best"]["metrics"]
    names, probabilities, labels = _validation(recipe, run_dir)
    assert (labels == -1).any(), "the carved validation split must hold unknown labels"

    defined_auroc, losses = [], []
    for j, name in enumerate(names):
        known = labels[:, j] != -1
        truth, scores = labels[known, j], probabilities[known, j]
        assert metrics[f"accuracy_{name}"] == pytest.approx(accuracy_score(truth, scores >= 0.5), abs=1e-9)
        losses.append(log_loss(truth, scores, labels=[0, 1]))
        if 0 < truth.sum() < truth.size:
            defined_auroc.append(roc_auc_score(truth, scores))
            assert metrics[f"auroc_{name}"] == pytest.approx(defined_auroc[-1], abs=1e-6)
        else:
            assert metrics[f"auroc_{name}"] is None  # NaN in memory, null in metrics.json
        point = report["thresholds"]["operating_points"][name]
        assert point["tp"] + point["fp"] + point["tn"] + point["fn"] == known.sum()
        predicted = scores >= np.float32(point["threshold"])
        assert point["tp"] == int((predicted & (truth == 1)).sum())
    assert len(defined_auroc) >= 3
    assert metrics["mean_auroc"] == pytest.approx(np.mean(defined_auroc), abs=1e-6)
    assert metrics["mean_log_loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert all(math.isfinite(metrics[k]) for k in ("mean_auroc", "mean_log_loss", "mean_accuracy"))
    assert math.isfinite(report["history"][0]["train_loss"])


def test_pos_weight_counts_unknown_labels_as_neither_class():
    from hfmed.data.transforms import pos_weight_from_data

    labels = np.array([[1, 0], [0, -1], [-1, 1], [0, 0], [-1, -1]], dtype=np.float32)
    # Label 0: 1 positive, 2 negatives; label 1: 1 positive, 2 negatives (the -1 rows are neither).
    assert pos_weight_from_data(labels) == [2.0, 2.0]
