"""Per-label accuracy of a multi-label classifier at decision thresholds, and their mean.

A local `evaluate` module: load it with `evaluate.load("<path to this folder>")` (or
`hfmed.metrics.load_metric("multilabel_accuracy")`). It imports only numpy, datasets and evaluate
because `evaluate` copies this file on its own into its module cache.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Accuracy of each label of a multi-label classifier, and their unweighted mean. A prediction is positive
when its probability is at least the label's threshold (`probability >= threshold`, the same rule as
`hfmed.thresholds`); the threshold is one number for all labels (`threshold`, default 0.5) or one per
label (`thresholds`, for instance chosen on a validation split with `hfmed.thresholds.choose_thresholds`).

`evaluate` stores predictions as float32, so the comparison is made in float32 (thresholds are rounded
to float32 too): a typed threshold 0.7 calls a float32 probability 0.7 positive, as numpy would on the
model's float32 output. Thresholds chosen on float32 outputs are float32 values and compare exactly.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): probabilities (or any scores on the thresholds' scale),
        shape (N, L).
    references (`list` of `list` of `int`): binary labels, shape (N, L), each 0, 1 or -1 (unknown: skipped).
    threshold (`float`, optional): one threshold for every label; 0.5 when neither it nor `thresholds`
        is given.
    thresholds (`list` of `float`, optional): one threshold per label; give this or `threshold`, not both.
    label_names (`list` of `str`, optional): L names used in the result keys; defaults to "0", "1", ...
Returns:
    mean_accuracy (`float`): mean of the defined per-label accuracies (`nan` if none is defined).
    accuracy_<name> (`float`): fraction of the label's known references (not -1) that its thresholded
        prediction equals; `nan` for a label without a known reference.
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("hfmed/metrics/multilabel_accuracy")
    >>> metric.compute(predictions=[[0.9, 0.2], [0.1, 0.7]], references=[[1, 0], [0, 0]], label_names=["a", "b"])
    {'mean_accuracy': 0.75, 'accuracy_a': 1.0, 'accuracy_b': 0.5}
"""

# A reference of -1 is "unknown" (CheXpert's uncertain labels under U-Ignore, a label missing for an image):
# that entry is skipped, label by label, as the model's loss masks it.
UNKNOWN = -1.0

_CITATION = ""


def _as_matrix(values, name):
    # Arrow hands back a list of rows; rows of unequal length mean the label count is not consistent.
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} must be a rectangular (N, L) array of numbers: {error}") from None
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, L); got shape {array.shape}")
    return array


def _check_inputs(predictions, references):
    predictions = _as_matrix(predictions, "predictions")
    references = _as_matrix(references, "references")
    if predictions.shape != references.shape:
        raise ValueError(
            f"predictions and references must have the same shape (N, L); got {predictions.shape} and "
            f"{references.shape}"
        )
    if predictions.shape[0] == 0 or predictions.shape[1] == 0:
        raise ValueError(f"need at least one example and one label; got shape {predictions.shape}")
    if np.isnan(predictions).any():
        raise ValueError("predictions contain NaN")
    if not np.isin(references, (0.0, 1.0, UNKNOWN)).all():
        raise ValueError("references must be 0, 1, or -1 for an unknown label (skipped)")
    return predictions, references


def _label_names(label_names, num_labels):
    if label_names is None:
        return [str(j) for j in range(num_labels)]
    label_names = [str(name) for name in label_names]
    if len(label_names) != num_labels:
        raise ValueError(f"label_names has {len(label_names)} entries for {num_labels} labels")
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names must be unique; got {label_names}")
    return label_names


def _thresholds(threshold, thresholds, num_labels):
    # Refusing both avoids silently ignoring one of two conflicting requests.
    if threshold is not None and thresholds is not None:
        raise ValueError("give either threshold (one for all labels) or thresholds (one per label), not both")
    if thresholds is None:
        values = np.full(num_labels, 0.5 if threshold is None else threshold, dtype=np.float64)
    else:
        values = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if values.shape[0] != num_labels:
            raise ValueError(f"thresholds has {values.shape[0]} entries for {num_labels} labels")
    if np.isnan(values).any():
        raise ValueError(f"thresholds must not be NaN; got {values}")
    return values


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MultilabelAccuracy(evaluate.Metric):
    """Per-label accuracy at a threshold (or one threshold per label) and their mean."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, threshold=None, thresholds=None, label_names=None):
        predictions, references = _check_inputs(predictions, references)
        num_labels = predictions.shape[1]
        names = _label_names(label_names, num_labels)
        cutoffs = _thresholds(threshold, thresholds, num_labels)
        # Both sides in float32, the precision the predictions were stored at (see the description).
        predicted = predictions.astype(np.float32) >= cutoffs.astype(np.float32)[None, :]
        known = references != UNKNOWN
        correct = ((predicted == (references == 1.0)) & known).sum(axis=0)
        counts = known.sum(axis=0)
        per_label = np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)
        defined = per_label[~np.isnan(per_label)]
        result = {"mean_accuracy": float(defined.mean()) if defined.size else float("nan")}
        result.update({f"accuracy_{name}": float(value) for name, value in zip(names, per_label, strict=True)})
        return result


__all__ = ["MultilabelAccuracy"]
