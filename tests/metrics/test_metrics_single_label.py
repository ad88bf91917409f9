"""The single-label (multi-class) evaluate modules against scikit-learn, and `single_label_metrics`."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score

from hfmed.metrics import load_metric, single_label_metrics, softmax

NAMES = ["adipose", "background", "debris", "lymphocytes"]


@pytest.fixture(scope="module")
def accuracy_metric():
    return load_metric("multiclass_accuracy")


@pytest.fixture(scope="module")
def auroc_metric():
    return load_metric("multiclass_auroc")


@pytest.fixture(scope="module")
def data():
    """Softmax probabilities (float32) that track the labels, rounded to tenths so columns hold ties."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, len(NAMES), 90)
    logits = rng.normal(size=(90, len(NAMES))) + 1.2 * np.eye(len(NAMES))[labels]
    probabilities = softmax(logits)
    probabilities[:, 2] = np.round(probabilities[:, 2], 1)  # ties across positives and negatives
    return probabilities.astype(np.float32), labels


def test_accuracy_balanced_accuracy_and_recalls_match_sklearn(accuracy_metric, data):
    probabilities, labels = data
    result = accuracy_metric.compute(predictions=probabilities, references=labels, label_names=NAMES)
    predicted = probabilities.argmax(axis=1)
    assert 0.3 < result["accuracy"] < 0.95
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    recalls = recall_score(labels, predicted, average=None)
    assert [result[f"recall_{n}"] for n in NAMES] == pytest.approx(recalls.tolist())


def test_macro_auroc_matches_sklearn_one_vs_rest_with_ties(auroc_metric, data):
    probabilities, labels = data
    result = auroc_metric.compute(predictions=probabilities, references=labels, label_names=NAMES)
    assert len(np.unique(probabilities[:, 2])) <= 10
    expected = [roc_auc_score(labels == c, probabilities[:, c]) for c in range(len(NAMES))]
    assert [result[f"auroc_{n}"] for n in NAMES] == pytest.approx(expected)
    assert result["macro_auroc"] == pytest.approx(np.mean(expected))
    exact = probabilities / probabilities.sum(axis=1, keepdims=True, dtype=np.float64)  # rows sum to 1 (sklearn)
    assert auroc_metric.compute(predictions=exact, references=labels)["macro_auroc"] == pytest.approx(
        roc_auc_score(labels, exact, multi_class="ovr", average="macro"), abs=1e-6
    )


def test_a_class_absent_from_the_references_is_nan_and_left_out(accuracy_metric, auroc_metric):
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    labels = np.array([0, 1, 1, 0])  # no example of class 2
    accuracy = accuracy_metric.compute(predictions=probabilities, references=labels)
    assert math.isnan(accuracy["recall_2"])
    assert accuracy["balanced_accuracy"] == pytest.approx((0.5 + 0.5) / 2)
    auroc = auroc_metric.compute(predictions=probabilities, references=labels)
    assert math.isnan(auroc["auroc_2"])
    # Class 0 scores 0.6, 0.1 on its examples and 0.2, 0.5 on the others: 2 of 4 pairs ordered right.
    assert auroc["auroc_0"] == pytest.approx(0.5)
    assert auroc["macro_auroc"] == pytest.approx((auroc["auroc_0"] + auroc["auroc_1"]) / 2)


def test_argmax_ties_go_to_the_first_class(accuracy_metric):
    result = accuracy_metric.compute(predictions=[[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]], references=[0, 1])
    assert (result["recall_0"], result["recall_1"]) == (1.0, 0.0)


@pytest.mark.parametrize(
    ("predictions", "references", "match"),
    [
        ([[0.5, 0.5], [0.2, 0.8]], [0, 2], r"class indices in \[0, 2\)"),
        ([[0.5, 0.5], [0.2, 0.8]], [0, -1], r"class indices in \[0, 2\)"),
        ([[0.5, 0.5], [0.2, 0.8]], [0], "number of predictions"),  # evaluate checks this itself
        ([[1.0], [1.0]], [0, 0], "two classes"),
        ([[0.5, float("nan")], [0.2, 0.8]], [0, 1], "NaN"),
    ],
)
def test_bad_inputs_are_one_line_errors(accuracy_metric, auroc_metric, predictions, references, match):
    for metric in (accuracy_metric, auroc_metric):
        with pytest.raises(ValueError, match=match):
            metric.compute(predictions=predictions, references=references)


def test_label_names_must_fit_the_score_columns(accuracy_metric, auroc_metric):
    for metric in (accuracy_metric, auroc_metric):
        with pytest.raises(ValueError, match="label_names has 2 entries for 3 classes"):
            metric.compute(predictions=[[0.2, 0.3, 0.5]], references=[2], label_names=["a", "b"])


def test_single_label_metrics_takes_tensors_and_checks_shapes(data):
    probabilities, labels = data
    from_numpy = single_label_metrics(probabilities, labels, NAMES)
    from_torch = single_label_metrics(torch.from_numpy(probabilities), torch.from_numpy(labels)[:, None], NAMES)
    assert from_torch == pytest.approx(from_numpy, nan_ok=True)
    assert set(from_numpy) == {"accuracy", "balanced_accuracy", "macro_auroc",
                               *(f"recall_{n}" for n in NAMES), *(f"auroc_{n}" for n in NAMES)}
    with pytest.raises(ValueError, match=r"shape \(N, 3\) for 3 class names"):
        single_label_metrics(probabilities, labels, NAMES[:3])
    with pytest.raises(ValueError, match="whole class indices"):
        single_label_metrics(probabilities, labels + 0.5, NAMES)
    with pytest.raises(ValueError, match="same length"):
        single_label_metrics(probabilities, labels[:-1], NAMES)


def test_softmax_is_stable_for_large_logits():
    probabilities = softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, math.log(3.0), -np.inf]]))
    np.testing.assert_allclose(probabilities, [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]])
