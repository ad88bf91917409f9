"""The regression and binary-classification metrics (brain age, AD vs CN) against scikit-learn and scipy, and
`make_compute_metrics` for the "regression" and "binary" tasks."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)
from transformers import EvalPrediction

from hfmed.metrics import (
    METRICS_DIR,
    available_metrics,
    binary_metrics,
    classification_metrics,
    load_metric,
    make_compute_metrics,
    regression_metrics,
)
from hfmed.tasks import TASKS


@pytest.fixture(scope="module")
def ages():
    """Brain-age-like predictions (float32, as a model returns them) and targets in years."""
    rng = np.random.default_rng(2021)
    targets = rng.uniform(45, 85, size=80).round(1)
    predictions = (targets + rng.normal(0.0, 4.0, size=80)).astype(np.float32)
    return predictions, targets


@pytest.fixture(scope="module")
def ad():
    """AD probabilities that track the labels, with ties (quarters are exact in float32)."""
    rng = np.random.default_rng(2023)
    labels = rng.integers(0, 2, size=70)
    probabilities = np.clip(0.4 * labels + 0.6 * rng.random(70), 0.0, 1.0)
    probabilities[:20] = np.round(probabilities[:20] * 4) / 4
    assert 0 < labels.sum() < 70
    return probabilities.astype(np.float32), labels


def test_modules_are_folders_with_a_script_of_the_same_name():
    for name in ("regression", "binary_classification"):
        assert (METRICS_DIR / name / f"{name}.py").is_file()
        assert not (METRICS_DIR / name / "__init__.py").exists()
        assert name in available_metrics()


# --- regression ----------------------------------------------------------------------------------------


def test_regression_metrics_match_sklearn_and_scipy(ages):
    predictions, targets = ages
    result = regression_metrics(predictions, targets)
    assert list(result) == ["mae", "rmse", "pearson_r"]
    assert all(type(value) is float for value in result.values())
    expected = predictions.astype(np.float64)
    assert result["mae"] == pytest.approx(mean_absolute_error(targets, expected), rel=1e-12)
    assert result["rmse"] == pytest.approx(math.sqrt(mean_squared_error(targets, expected)), rel=1e-12)
    assert result["pearson_r"] == pytest.approx(pearsonr(expected, targets).statistic, rel=1e-10)
    assert 2.5 < result["mae"] < 4.5 and result["rmse"] > result["mae"]


def test_regression_metrics_accept_columns_tensors_and_the_evaluate_module(ages):
    predictions, targets = ages
    result = regression_metrics(predictions, targets)
    assert regression_metrics(predictions[:, None], targets[:, None]) == result
    assert regression_metrics(torch.from_numpy(predictions)[:, None], torch.from_numpy(targets)) == result
    module = load_metric("regression").compute(predictions=predictions, references=targets)
    assert module == pytest.approx(result, rel=1e-12)


def test_regression_metrics_edge_cases():
    exact = regression_metrics([50.0, 60.0, 70.0], [50.0, 60.0, 70.0])
    assert exact == {"mae": 0.0, "rmse": 0.0, "pearson_r": pytest.approx(1.0)}
    constant = regression_metrics([62.68] * 4, [50.0, 60.0, 70.0, 80.0])  # a model predicting the mean
    assert constant["mae"] == pytest.approx(10.0) and math.isnan(constant["pearson_r"])
    assert math.isnan(regression_metrics([1.0], [2.0])["pearson_r"])


@pytest.mark.parametrize(
    "predictions, targets, pattern",
    [
        (np.zeros((4, 2)), np.zeros(4), r"predictions must have shape \(N,\) or \(N, 1\)"),
        (np.zeros(4), np.zeros((2, 2)), r"targets must have shape"),
        (np.zeros(4), np.zeros(3), "same length"),
        ([], [], "at least one example"),
        ([1.0, float("nan")], [1.0, 2.0], "predictions contain NaN"),
        ([1.0, 2.0], [1.0, float("inf")], "references contain NaN or infinity"),
    ],
)
def test_regression_metrics_errors(predictions, targets, pattern):
    with pytest.raises(ValueError, match=pattern):
        regression_metrics(predictions, targets)


# --- binary classification -----------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.5, 0.25, 0.7])
def test_binary_metrics_match_sklearn(ad, threshold):
    probabilities, labels = ad
    result = binary_metrics(probabilities, labels, threshold=threshold)
    assert list(result) == ["accuracy", "balanced_accuracy", "auroc"]
    assert all(type(value) is float for value in result.values())
    predicted = (probabilities >= np.float32(threshold)).astype(int)
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-12)
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-12)
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, probabilities), abs=1e-12)


def test_binary_metrics_threshold_is_inclusive_and_compared_in_float32():
    probabilities = np.array([0.7, 0.3], dtype=np.float32)  # float32 0.7 < float64 0.7
    assert binary_metrics(probabilities, [1, 0], threshold=0.7)["accuracy"] == 1.0
    assert binary_metrics([0.5, 0.49], [1, 0])["accuracy"] == 1.0


def test_binary_metrics_accept_columns_tensors_and_the_evaluate_module(ad):
    probabilities, labels = ad
    result = binary_metrics(probabilities, labels)
    assert binary_metrics(probabilities[:, None], labels[:, None]) == result
    assert (
        binary_metrics(torch.from_numpy(probabilities), torch.from_numpy(labels).float()[:, None]) == result
    )
    module = load_metric("binary_classification").compute(predictions=probabilities, references=labels)
    assert module == pytest.approx(result, abs=1e-12)


def test_binary_metrics_with_a_single_class_follow_sklearn():
    probabilities, labels = np.array([0.2, 0.8, 0.6]), np.array([1, 1, 1])
    result = binary_metrics(probabilities, labels)
    assert math.isnan(result["auroc"])
    with pytest.warns(UserWarning):  # sklearn warns that y_pred holds a class y_true does not
        expected = balanced_accuracy_score(labels, (probabilities >= 0.5).astype(int))
    assert result["balanced_accuracy"] == pytest.approx(expected) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "probabilities, labels, pattern",
    [
        (np.zeros((3, 2)), np.zeros(3), r"probabilities must have shape \(N,\) or \(N, 1\)"),
        (np.zeros(3), np.zeros(4), "same length"),
        ([0.2, float("nan")], [0, 1], "predictions contain NaN"),
        ([-2.0, 3.0], [0, 1], r"probabilities in \[0, 1\].*logits\?"),
        ([0.2, 0.8], [0, 2], "references must be 0, 1, or -1"),
        ([0.2, 0.8], [0.5, 1], "references must be 0, 1, or -1"),
        ([], [], "at least one example"),
    ],
)
def test_binary_metrics_errors(probabilities, labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        binary_metrics(probabilities, labels)


# --- make_compute_metrics --------------------------------------------------------------------------------


def test_compute_metrics_for_regression_uses_the_raw_outputs(ages):
    predictions, targets = ages
    compute_metrics = make_compute_metrics(["age"], task="regression")
    eval_pred = EvalPrediction(
        predictions=predictions[:, None], label_ids=targets[:, None].astype(np.float32)
    )
    result = compute_metrics(eval_pred)
    assert result == pytest.approx(regression_metrics(predictions, targets.astype(np.float32)))
    # Extra model outputs (e.g. slice weights) after the logits are ignored.
    with_extras = EvalPrediction(
        predictions=(predictions[:, None], np.ones((80, 12))), label_ids=targets[:, None]
    )
    assert compute_metrics(with_extras)["mae"] == pytest.approx(result["mae"], rel=1e-6)


def test_compute_metrics_for_binary_adds_balanced_accuracy(ad):
    probabilities, labels = ad
    p = np.clip(probabilities.astype(np.float64), 1e-6, 1 - 1e-6)
    logits = np.log(p) - np.log1p(-p)
    result = make_compute_metrics(["AD"], task="binary")(
        EvalPrediction(predictions=logits[:, None], label_ids=labels[:, None])
    )
    expected = classification_metrics(p[:, None], labels[:, None], ["AD"])
    expected.update(binary_metrics(p, labels))
    assert result == pytest.approx(expected, abs=1e-6)
    assert {"mean_log_loss", "auroc_AD", "accuracy", "balanced_accuracy", "auroc"} <= set(result)
    at = make_compute_metrics(["AD"], thresholds=0.3, task="binary")(
        EvalPrediction(predictions=logits, label_ids=labels)
    )
    assert at["balanced_accuracy"] == pytest.approx(
        binary_metrics(p, labels, threshold=0.3)["balanced_accuracy"]
    )


def test_compute_metrics_default_task_is_unchanged(ad):
    probabilities, labels = ad
    p = np.clip(probabilities.astype(np.float64), 1e-6, 1 - 1e-6)
    logits = (np.log(p) - np.log1p(-p))[:, None]
    default = make_compute_metrics(["AD"])(EvalPrediction(predictions=logits, label_ids=labels[:, None]))
    assert set(default) == {"mean_log_loss", "mean_auroc", "auroc_AD", "mean_accuracy", "accuracy_AD"}
    assert set(TASKS) == {"multi_label_classification", "binary", "regression", "single_label_classification",
                          "semantic_segmentation"}


def test_make_compute_metrics_checks_its_task():
    with pytest.raises(ValueError, match="task must be one of"):
        make_compute_metrics(["age"], task="ordinal")
    with pytest.raises(ValueError, match="one output"):
        make_compute_metrics(["age", "sex"], task="regression")
    with pytest.raises(ValueError, match="takes neither"):
        make_compute_metrics(["age"], thresholds=0.5, task="regression")
    with pytest.raises(ValueError, match="one threshold"):
        make_compute_metrics(["AD"], thresholds=[0.3, 0.4], task="binary")
