"""The local evaluate modules in hfmed/metrics against scikit-learn, and the Trainer / training-loop helpers.

Every module is loaded by path through `hfmed.metrics.load_metric` (offline). Loading happens in
module-scoped fixtures so that `evaluate` is imported once for the file.
"""

import json
import math
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from hfmed.metrics import METRICS_DIR, classification_metrics, load_metric, make_compute_metrics

NAMES = ["any", "epidural", "subdural", "never"]
SINGLE_CLASS = 3  # the "never" label has no positive example


@pytest.fixture(scope="module")
def data():
    """Probabilities (float32, as a model returns them) that track the labels, with ties in two labels."""
    rng = np.random.default_rng(2019)
    n = 60
    labels = rng.integers(0, 2, size=(n, len(NAMES)))
    labels[:, SINGLE_CLASS] = 0
    probabilities = np.clip(0.35 * labels + 0.65 * rng.random((n, len(NAMES))), 0.01, 0.99)
    # Eighths and tenths: many tied scores across positives and negatives (eighths are exact in float32).
    probabilities[:, 1] = np.floor(probabilities[:, 1] * 4) / 4 + 0.125
    probabilities[:, 2] = np.clip(np.round(probabilities[:, 2], 1), 0.1, 0.9)
    probabilities = probabilities.astype(np.float32)
    for j in range(SINGLE_CLASS):
        assert 0 < labels[:, j].sum() < n
    assert len(np.unique(probabilities[:, 1])) < 6
    return probabilities, labels


@pytest.fixture(scope="module")
def log_loss_metric():
    return load_metric("rsna_weighted_log_loss")


@pytest.fixture(scope="module")
def auroc_metric():
    return load_metric("multilabel_auroc")


@pytest.fixture(scope="module")
def accuracy_metric():
    return load_metric("multilabel_accuracy")


def sklearn_weighted_log_loss(probabilities, labels, weights):
    per_label = [log_loss(labels[:, j], probabilities[:, j], labels=[0, 1]) for j in range(labels.shape[1])]
    return float(np.dot(weights, per_label) / np.sum(weights))


def sigmoid_inverse(p):
    p = p.astype(np.float64)
    return np.log(p) - np.log1p(-p)


# --- modules on disk ----------------------------------------------------------------------------------


def test_each_metric_is_a_folder_with_a_script_of_the_same_name():
    for name in ("rsna_weighted_log_loss", "multilabel_auroc", "multilabel_accuracy"):
        assert (METRICS_DIR / name / f"{name}.py").is_file()
        assert not (METRICS_DIR / name / "__init__.py").exists()


def test_unknown_metric_names_the_available_ones():
    from hfmed.metrics import available_metrics

    names = available_metrics()
    assert {"binary_classification", "multiclass_accuracy", "multiclass_auroc", "multilabel_accuracy",
            "multilabel_auroc", "regression", "rsna_weighted_log_loss"} <= set(names)
    with pytest.raises(ValueError, match=re.escape("available: " + ", ".join(names))):
        load_metric("accuracy")


def test_importing_hfmed_metrics_thresholds_and_plots_imports_neither_evaluate_nor_matplotlib():
    code = (
        "import sys, hfmed.metrics, hfmed.thresholds, hfmed.plots; "
        "print(sorted(m for m in ('evaluate', 'matplotlib', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_metric_info_documents_the_inputs(log_loss_metric, auroc_metric, accuracy_metric):
    assert "RSNA" in log_loss_metric.description and "Radiology" in log_loss_metric.citation
    assert "nan" in auroc_metric.description
    for metric in (log_loss_metric, auroc_metric, accuracy_metric):
        assert set(metric.features) == {"predictions", "references"}


# --- rsna_weighted_log_loss ---------------------------------------------------------------------------


def test_weighted_log_loss_default_weights_match_sklearn(log_loss_metric, data):
    probabilities, labels = data
    result = log_loss_metric.compute(predictions=probabilities, references=labels)
    assert set(result) == {"weighted_log_loss"}
    expected = sklearn_weighted_log_loss(probabilities, labels, [2, 1, 1, 1])  # RSNA: "any" counts twice
    assert result["weighted_log_loss"] == pytest.approx(expected, rel=1e-6)


def test_weighted_log_loss_custom_weights_match_sklearn(log_loss_metric, data):
    probabilities, labels = data
    weights = [0.5, 3.0, 0.0, 1.5]
    result = log_loss_metric.compute(predictions=probabilities, references=labels, label_weights=weights)
    expected = sklearn_weighted_log_loss(probabilities, labels, weights)
    assert result["weighted_log_loss"] == pytest.approx(expected, rel=1e-6)
    # The weights matter: equal weights give a different number.
    unweighted = sklearn_weighted_log_loss(probabilities, labels, [1, 1, 1, 1])
    assert abs(result["weighted_log_loss"] - unweighted) > 1e-3


def test_weighted_log_loss_clips_confident_mistakes_at_eps(log_loss_metric):
    predictions = [[0.0, 1.0], [1.0, 0.0]]
    references = [[1, 0], [0, 1]]
    result = log_loss_metric.compute(predictions=predictions, references=references, eps=1e-3)
    assert result["weighted_log_loss"] == pytest.approx(-math.log(1e-3), rel=1e-6)
    default_eps = log_loss_metric.compute(predictions=predictions, references=references)
    assert default_eps["weighted_log_loss"] == pytest.approx(-math.log(1e-7), rel=1e-5)


def test_weighted_log_loss_refuses_logits(log_loss_metric):
    with pytest.raises(ValueError, match="sigmoid"):
        log_loss_metric.compute(predictions=[[2.5, 0.1]], references=[[1, 0]])


# --- multilabel_auroc ---------------------------------------------------------------------------------


def test_auroc_matches_sklearn_with_ties_and_a_single_class_label(auroc_metric, data):
    probabilities, labels = data
    result = auroc_metric.compute(predictions=probabilities, references=labels, label_names=NAMES)
    assert set(result) == {"mean_auroc"} | {f"auroc_{name}" for name in NAMES}
    expected = [roc_auc_score(labels[:, j], probabilities[:, j]) for j in range(SINGLE_CLASS)]
    for name, value in zip(NAMES, expected, strict=False):
        assert result[f"auroc_{name}"] == pytest.approx(value, abs=1e-12)
    assert math.isnan(result["auroc_never"])
    assert result["mean_auroc"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert 0.6 < result["mean_auroc"] < 1.0  # the scores do track the labels


def test_auroc_counts_a_tie_between_a_positive_and_a_negative_as_one_half(auroc_metric):
    result = auroc_metric.compute(predictions=[[0.5], [0.5], [0.9]], references=[[1], [0], [1]])
    # Pairs (positive, negative): (0.5, 0.5) -> 1/2, (0.9, 0.5) -> 1.
    assert result["auroc_0"] == pytest.approx(0.75)
    assert result["mean_auroc"] == pytest.approx(0.75)


def test_auroc_keys_default_to_label_indices_and_all_single_class_gives_nan_mean(auroc_metric):
    result = auroc_metric.compute(predictions=[[0.2, 0.9], [0.4, 0.1]], references=[[1, 0], [1, 0]])
    assert set(result) == {"mean_auroc", "auroc_0", "auroc_1"}
    assert all(math.isnan(value) for value in result.values())


# --- multilabel_accuracy ------------------------------------------------------------------------------


def test_accuracy_at_default_threshold_matches_sklearn(accuracy_metric, data):
    probabilities, labels = data
    result = accuracy_metric.compute(predictions=probabilities, references=labels, label_names=NAMES)
    assert set(result) == {"mean_accuracy"} | {f"accuracy_{name}" for name in NAMES}
    expected = [accuracy_score(labels[:, j], probabilities[:, j] >= 0.5) for j in range(len(NAMES))]
    for name, value in zip(NAMES, expected, strict=True):
        assert result[f"accuracy_{name}"] == pytest.approx(value)
    assert result["mean_accuracy"] == pytest.approx(np.mean(expected))


def test_accuracy_with_one_threshold_and_per_label_thresholds(accuracy_metric, data):
    probabilities, labels = data
    single = accuracy_metric.compute(predictions=probabilities, references=labels, threshold=0.7)
    expected = [accuracy_score(labels[:, j], probabilities[:, j] >= 0.7) for j in range(len(NAMES))]
    assert [single[f"accuracy_{j}"] for j in range(len(NAMES))] == pytest.approx(expected)

    # 0.375 is a tied score of label 1 and 0.5 one of label 2: the >= rule puts them on the positive side.
    cutoffs = [0.3, 0.375, 0.5, 0.9]
    per_label = accuracy_metric.compute(predictions=probabilities, references=labels, thresholds=cutoffs)
    expected = [accuracy_score(labels[:, j], probabilities[:, j] >= t) for j, t in enumerate(cutoffs)]
    assert [per_label[f"accuracy_{j}"] for j in range(len(NAMES))] == pytest.approx(expected)
    assert per_label["mean_accuracy"] == pytest.approx(np.mean(expected))


def test_accuracy_calls_a_probability_equal_to_the_threshold_positive(accuracy_metric):
    result = accuracy_metric.compute(predictions=[[0.5], [0.25]], references=[[1], [0]])
    assert result["accuracy_0"] == 1.0


def test_accuracy_compares_at_the_float32_precision_of_the_stored_predictions(accuracy_metric):
    # float32(0.7) < 0.7 in float64; a typed threshold 0.7 must still call a stored 0.7 positive.
    predictions = np.array([[0.7], [0.6]], dtype=np.float32)
    result = accuracy_metric.compute(predictions=predictions, references=[[1], [0]], threshold=0.7)
    assert result["accuracy_0"] == 1.0


# --- bad inputs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rsna_weighted_log_loss", "multilabel_auroc", "multilabel_accuracy"])
@pytest.mark.parametrize(
    ("predictions", "references", "match"),
    [
        ([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], [[0, 1], [1, 0]], "same shape"),
        ([[0.1, 0.2], [0.4, 0.5]], [[0, 1]], "Mismatch in the number"),
        ([[0.1, 0.2], [0.4]], [[0, 1], [1]], "rectangular"),
        ([[0.1, float("nan")], [0.4, 0.5]], [[0, 1], [1, 0]], "NaN"),
        ([[0.1, 0.2], [0.4, 0.5]], [[0, 2], [1, 0]], "0, 1, or -1 for an unknown label"),
    ],
    ids=["label-count", "row-count", "ragged", "nan", "non-binary"],
)
def test_bad_inputs_raise(name, predictions, references, match, log_loss_metric, auroc_metric, accuracy_metric):
    metric = {
        "rsna_weighted_log_loss": log_loss_metric,
        "multilabel_auroc": auroc_metric,
        "multilabel_accuracy": accuracy_metric,
    }[name]
    with pytest.raises(ValueError, match=match):
        metric.compute(predictions=predictions, references=references)


def test_wrong_number_of_weights_names_or_thresholds_raise(log_loss_metric, auroc_metric, accuracy_metric):
    predictions, references = [[0.1, 0.8], [0.7, 0.3]], [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match="label_weights has 3 entries for 2 labels"):
        log_loss_metric.compute(predictions=predictions, references=references, label_weights=[2, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        log_loss_metric.compute(predictions=predictions, references=references, label_weights=[-1, 1])
    with pytest.raises(ValueError, match="label_names has 1 entries for 2 labels"):
        auroc_metric.compute(predictions=predictions, references=references, label_names=["any"])
    with pytest.raises(ValueError, match="thresholds has 3 entries for 2 labels"):
        accuracy_metric.compute(predictions=predictions, references=references, thresholds=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="not both"):
        accuracy_metric.compute(predictions=predictions, references=references, threshold=0.5, thresholds=[0.5, 0.5])


# --- unknown labels (-1): skipped per label ------------------------------------------------------------


@pytest.fixture(scope="module")
def with_unknown(data):
    """`data` with a third of the entries unknown (-1), one label entirely unknown, one known single-class."""
    probabilities, labels = data
    rng = np.random.default_rng(5)
    references = labels.astype(np.float64)
    references[rng.random(references.shape) < 0.33] = -1
    references[:, 2] = -1  # "subdural": nothing known
    for j in (0, 1):
        known = references[:, j] != -1
        assert 0 < references[known, j].sum() < known.sum()
    return probabilities, references


def test_auroc_skips_unknown_entries_per_label(auroc_metric, with_unknown):
    probabilities, references = with_unknown
    result = auroc_metric.compute(predictions=probabilities, references=references, label_names=NAMES)
    for j in (0, 1):
        known = references[:, j] != -1
        assert result[f"auroc_{NAMES[j]}"] == pytest.approx(roc_auc_score(references[known, j], probabilities[known, j]))
    assert math.isnan(result["auroc_subdural"]) and math.isnan(result["auroc_never"])
    assert result["mean_auroc"] == pytest.approx((result["auroc_any"] + result["auroc_epidural"]) / 2)


def test_accuracy_skips_unknown_entries_per_label(accuracy_metric, with_unknown):
    probabilities, references = with_unknown
    cutoffs = [0.3, 0.375, 0.5, 0.9]
    result = accuracy_metric.compute(predictions=probabilities, references=references, thresholds=cutoffs,
                                     label_names=NAMES)
    expected = {}
    for j in (0, 1, 3):
        known = references[:, j] != -1
        expected[NAMES[j]] = accuracy_score(references[known, j], probabilities[known, j] >= np.float32(cutoffs[j]))
        assert result[f"accuracy_{NAMES[j]}"] == pytest.approx(expected[NAMES[j]])
    assert math.isnan(result["accuracy_subdural"])
    assert result["mean_accuracy"] == pytest.approx(np.mean(list(expected.values())))


def test_log_loss_skips_unknown_entries_and_labels_without_any(log_loss_metric, with_unknown):
    probabilities, references = with_unknown
    weights = [2, 1, 1, 1]
    result = log_loss_metric.compute(predictions=probabilities, references=references, label_weights=weights)
    per_label = {}
    for j in (0, 1, 3):
        known = references[:, j] != -1
        per_label[j] = log_loss(references[known, j], probabilities[known, j], labels=[0, 1])
    expected = sum(weights[j] * value for j, value in per_label.items()) / sum(weights[j] for j in per_label)
    assert result["weighted_log_loss"] == pytest.approx(expected, rel=1e-6)
    nothing = log_loss_metric.compute(predictions=probabilities[:, :1], references=-np.ones((len(references), 1)))
    assert math.isnan(nothing["weighted_log_loss"])


def test_binary_metrics_skip_unknown_entries():
    from sklearn.metrics import balanced_accuracy_score

    from hfmed.metrics import binary_metrics

    probabilities = np.array([0.9, 0.2, 0.6, 0.4, 0.7, 0.1], dtype=np.float32)
    labels = np.array([1, 0, -1, 1, -1, 0])
    known = labels != -1
    result = binary_metrics(probabilities, labels)
    assert result["accuracy"] == pytest.approx(accuracy_score(labels[known], probabilities[known] >= 0.5))
    assert result["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(labels[known], probabilities[known] >= 0.5)
    )
    assert result["auroc"] == pytest.approx(roc_auc_score(labels[known], probabilities[known]))
    assert all(math.isnan(v) for v in binary_metrics(probabilities[:2], [-1, -1]).values())


def test_classification_metrics_with_unknown_labels_equals_the_masked_computation(with_unknown):
    probabilities, references = with_unknown
    result = classification_metrics(probabilities, references, NAMES, label_weights=[1, 1, 1, 1])
    for j in (0, 1):
        known = references[:, j] != -1
        alone = classification_metrics(probabilities[known, j : j + 1], references[known, j : j + 1], [NAMES[j]])
        assert result[f"auroc_{NAMES[j]}"] == pytest.approx(alone[f"auroc_{NAMES[j]}"])
        assert result[f"accuracy_{NAMES[j]}"] == pytest.approx(alone[f"accuracy_{NAMES[j]}"])
    assert math.isfinite(result["mean_log_loss"]) and math.isfinite(result["mean_auroc"])


# --- classification_metrics and make_compute_metrics --------------------------------------------------


def test_classification_metrics_merges_the_three_modules(data):
    probabilities, labels = data
    weights = [2, 1, 1, 1]
    cutoffs = [0.3, 0.375, 0.5, 0.9]
    result = classification_metrics(probabilities, labels, NAMES, label_weights=weights, thresholds=cutoffs)
    expected_keys = (
        {"weighted_log_loss", "mean_auroc", "mean_accuracy"}
        | {f"auroc_{name}" for name in NAMES}
        | {f"accuracy_{name}" for name in NAMES}
    )
    assert set(result) == expected_keys
    assert all(type(value) is float for value in result.values())
    assert result["weighted_log_loss"] == pytest.approx(
        sklearn_weighted_log_loss(probabilities, labels, weights), rel=1e-6
    )
    assert result["auroc_any"] == pytest.approx(roc_auc_score(labels[:, 0], probabilities[:, 0]))
    assert math.isnan(result["auroc_never"])
    assert result["accuracy_epidural"] == pytest.approx(accuracy_score(labels[:, 1], probabilities[:, 1] >= 0.375))
    # A training loop writes these to metrics.json: plain floats (NaN aside) serialise.
    json.dumps({k: v for k, v in result.items() if not math.isnan(v)}, allow_nan=False)


def test_classification_metrics_accepts_torch_tensors_and_checks_label_names(data):
    torch = pytest.importorskip("torch")
    probabilities, labels = data
    from_numpy = classification_metrics(probabilities, labels, NAMES)
    from_torch = classification_metrics(torch.from_numpy(probabilities), torch.from_numpy(labels).float(), NAMES)
    assert from_torch.keys() == from_numpy.keys()
    for key, value in from_numpy.items():
        assert from_torch[key] == pytest.approx(value, nan_ok=True)
    with pytest.raises(ValueError, match="3 label names"):
        classification_metrics(probabilities, labels, NAMES[:3])


def test_make_compute_metrics_applies_the_sigmoid_to_trainer_logits(data):
    from transformers import EvalPrediction

    probabilities, labels = data
    compute_metrics = make_compute_metrics(NAMES, label_weights=[1, 1, 1, 1])
    logits = sigmoid_inverse(probabilities).astype(np.float32)
    result = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels.astype(np.float32)))
    assert result["mean_log_loss"] == pytest.approx(  # equal weights: a plain mean, named so
        sklearn_weighted_log_loss(probabilities, labels, [1, 1, 1, 1]), rel=1e-5
    )
    for j, name in enumerate(NAMES[:SINGLE_CLASS]):
        assert result[f"auroc_{name}"] == pytest.approx(roc_auc_score(labels[:, j], probabilities[:, j]))
    # Models that return extra outputs hand the Trainer a tuple whose first item is the logits.
    as_tuple = compute_metrics(EvalPrediction(predictions=(logits, logits[:, :1]), label_ids=labels))
    assert as_tuple["mean_auroc"] == pytest.approx(result["mean_auroc"])


def test_make_compute_metrics_handles_extreme_logits_without_overflow():
    from transformers import EvalPrediction

    compute_metrics = make_compute_metrics(["any", "epidural"])
    logits = np.array([[800.0, -800.0], [-800.0, 800.0], [30.0, -30.0]], dtype=np.float32)
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    # Only the last label-1 prediction is wrong: sigmoid(-30) ~ 9.4e-14, clipped to eps = 1e-7.
    bce_epidural = -math.log(1e-7) / 3
    assert result["weighted_log_loss"] == pytest.approx((2 * 0.0 + 1 * bce_epidural) / 3, rel=1e-4)
