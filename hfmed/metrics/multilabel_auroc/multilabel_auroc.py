"""Per-label area under the ROC curve for multi-label classification, and their mean.

A local `evaluate` module: load it with `evaluate.load("<path to this folder>")` (or
`hfmed.metrics.load_metric("multilabel_auroc")`). AUROC is computed here with numpy (the rank-based
Mann-Whitney U statistic) so that the module depends on nothing but numpy, datasets and evaluate, and so
that tests can check it against an independent implementation.
"""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Area under the receiver operating characteristic curve (AUROC) of each label of a multi-label
classifier, and their unweighted mean.

AUROC is the probability that a random positive example scores higher than a random negative one,
counting ties as one half. It is computed as the Mann-Whitney U statistic on average ranks:

    AUROC_j = (sum of the ranks of the positives - P (P + 1) / 2) / (P * N)

with P positives and N negatives for label j, which equals the trapezoidal area under the ROC curve.

A reference of -1 means "unknown": that entry is left out of its label's AUROC (the other labels of the
example still count). A label whose known references hold a single class (all 0 or all 1), or none, has no
defined AUROC: it is reported as `nan` and left out of `mean_auroc`. If every label is like that,
`mean_auroc` is `nan` too.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): scores, shape (N, L): probabilities or logits (only
        their order matters).
    references (`list` of `list` of `int`): binary labels, shape (N, L), each 0, 1 or -1 (unknown: skipped).
    label_names (`list` of `str`, optional): L names used in the result keys; defaults to "0", "1", ...
Returns:
    mean_auroc (`float`): mean of the defined per-label AUROCs (`nan` if none is defined).
    auroc_<name> (`float`): AUROC of each label over its known references (`nan` for a single class).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("hfmed/metrics/multilabel_auroc")
    >>> metric.compute(predictions=[[0.9, 0.2], [0.1, 0.7], [0.4, 0.6]], references=[[1, 0], [0, 1], [1, 0]],
    ...                label_names=["any", "epidural"])
    {'mean_auroc': 1.0, 'auroc_any': 1.0, 'auroc_epidural': 1.0}
"""

# A reference of -1 is "unknown" (CheXpert's uncertain labels under U-Ignore, a label missing for an image):
# that entry is skipped, label by label, as the model's loss masks it.
UNKNOWN = -1.0

_CITATION = """\
@article{hanley1982auc,
  title   = {The meaning and use of the area under a receiver operating characteristic ({ROC}) curve},
  author  = {Hanley, James A. and McNeil, Barbara J.},
  journal = {Radiology},
  volume  = {143},
  number  = {1},
  pages   = {29--36},
  year    = {1982},
  doi     = {10.1148/radiology.143.1.7063747}
}
"""


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


def average_ranks(values):
    """1-based ranks of `values`, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    first = last - counts + 1
    return ((first + last) / 2.0)[inverse.reshape(-1)]


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
class MultilabelAuroc(evaluate.Metric):
    """Per-label AUROC and their mean (labels with a single class are `nan` and left out of the mean)."""

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
            reference_urls=["https://en.wikipedia.org/wiki/Mann%E2%80%93Whitney_U_test#Area-under-curve_(AUC)_statistic_for_ROC_curves"],
        )

    def _compute(self, predictions, references, label_names=None):
        predictions, references = _check_inputs(predictions, references)
        names = _label_names(label_names, predictions.shape[1])
        known = references != UNKNOWN
        per_label = {
            f"auroc_{name}": binary_auroc(predictions[known[:, j], j], references[known[:, j], j])
            for j, name in enumerate(names)
        }
        defined = [value for value in per_label.values() if not math.isnan(value)]
        mean = float(np.mean(defined)) if defined else math.nan
        return {"mean_auroc": mean, **per_label}


__all__ = ["average_ranks", "binary_auroc", "MultilabelAuroc"]
