"""Accuracy, balanced accuracy and AUROC of a binary classifier (e.g. Alzheimer's disease vs controls).

A local `evaluate` module: load it with `evaluate.load("<path to this folder>")` (or
`hfmed.metrics.load_metric("binary_classification")`). It imports only numpy, datasets and evaluate because
`evaluate` copies this file on its own into its module cache.
"""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Metrics of a binary classifier from its probabilities of the positive class (label 1):

    accuracy           fraction of examples whose prediction (probability >= threshold) equals the label
    balanced_accuracy  mean of the recalls of the classes present in the labels: (sensitivity + specificity)
                       / 2 when both are present, the recall of the one class otherwise (scikit-learn's
                       `balanced_accuracy_score`)
    auroc              area under the ROC curve, the Mann-Whitney U statistic on average ranks (ties count one
                       half); `nan` when the labels hold a single class

The threshold comparison is made in float32 (the precision `evaluate` stores predictions at, and that of a
model's output), as in `multilabel_accuracy`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): N probabilities of the positive class, each in [0, 1].
    references (`list` of `int`): N labels, each 0, 1 or -1 (unknown: skipped; all three metrics are over the
        known labels, `nan` when there is none).
    threshold (`float`, optional, defaults to 0.5): a prediction is positive when its probability is at least
        the threshold.
Returns:
    accuracy (`float`), balanced_accuracy (`float`), auroc (`float`, `nan` with a single class).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("hfmed/metrics/binary_classification")
    >>> metric.compute(predictions=[0.9, 0.2, 0.6, 0.4], references=[1, 0, 0, 1])
    {'accuracy': 0.5, 'balanced_accuracy': 0.5, 'auroc': 0.75}
"""

# A reference of -1 is "unknown" (CheXpert's uncertain labels under U-Ignore, a label missing for an image):
# that entry is skipped, label by label, as the model's loss masks it.
UNKNOWN = -1.0

_CITATION = """\
@inproceedings{brodersen2010balanced,
  title     = {The balanced accuracy and its posterior distribution},
  author    = {Brodersen, Kay Henning and Ong, Cheng Soon and Stephan, Klaas Enno and Buhmann, Joachim M.},
  booktitle = {20th International Conference on Pattern Recognition},
  pages     = {3121--3124},
  year      = {2010},
  doi       = {10.1109/ICPR.2010.764}
}
"""


def _as_vector(values, name):
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} must be N numbers: {error}") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape (N,); got shape {array.shape}")
    return array


def _check_inputs(predictions, references):
    predictions = _as_vector(predictions, "predictions")
    references = _as_vector(references, "references")
    if predictions.shape != references.shape:
        raise ValueError(
            f"predictions and references must have the same length; got {predictions.shape[0]} and "
            f"{references.shape[0]}"
        )
    if predictions.shape[0] == 0:
        raise ValueError("need at least one example")
    if np.isnan(predictions).any():
        raise ValueError("predictions contain NaN")
    if predictions.min() < 0.0 or predictions.max() > 1.0:
        raise ValueError(
            "predictions must be probabilities in [0, 1]; got values in "
            f"[{predictions.min():.4g}, {predictions.max():.4g}] (logits? apply a sigmoid first)"
        )
    if not np.isin(references, (0.0, 1.0, UNKNOWN)).all():
        raise ValueError("references must be 0, 1, or -1 for an unknown label (skipped)")
    return predictions, references


# Copied from multilabel_auroc.average_ranks (each module file must stand alone in evaluate's cache).
def average_ranks(values):
    """1-based ranks of `values`, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    first = last - counts + 1
    return ((first + last) / 2.0)[inverse.reshape(-1)]


# Copied from multilabel_auroc.binary_auroc.
def binary_auroc(scores, labels):
    """AUROC of one label (Mann-Whitney U on average ranks); `nan` when only one class is present."""
    positive = labels == 1
    num_positive = int(positive.sum())
    num_negative = labels.shape[0] - num_positive
    if num_positive == 0 or num_negative == 0:
        return math.nan
    ranks = average_ranks(scores)
    u_statistic = ranks[positive].sum() - num_positive * (num_positive + 1) / 2.0
    return float(u_statistic / (num_positive * num_negative))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BinaryClassification(evaluate.Metric):
    """Accuracy, balanced accuracy (at a threshold) and AUROC of a binary classifier."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float32"), "references": datasets.Value("float32")}
            ),
        )

    def _compute(self, predictions, references, threshold=0.5):
        predictions, references = _check_inputs(predictions, references)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
            raise ValueError(f"threshold must be a number, got {threshold!r}")
        known = references != UNKNOWN
        if not known.any():
            return {"accuracy": math.nan, "balanced_accuracy": math.nan, "auroc": math.nan}
        predictions, references = predictions[known], references[known]
        predicted = predictions.astype(np.float32) >= np.float32(threshold)
        actual = references.astype(bool)
        recalls = [float((predicted[actual == c] == c).mean()) for c in (False, True) if (actual == c).any()]
        return {
            "accuracy": float((predicted == actual).mean()),
            "balanced_accuracy": float(np.mean(recalls)),
            "auroc": binary_auroc(predictions, references),
        }


__all__ = ["BinaryClassification", "average_ranks", "binary_auroc"]
