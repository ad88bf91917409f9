"""One-vs-rest AUROC of each class of a single-label (multi-class) classifier, and their macro mean.

A local `evaluate` module: load it with `evaluate.load("<path to this folder>")` (or
`hfmed.metrics.load_metric("multiclass_auroc")`). AUROC is the rank-based Mann-Whitney U statistic computed
with numpy, so the module depends on nothing but numpy, datasets and evaluate.
"""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Area under the ROC curve of each class against all others (one-vs-rest: the class's score separating its
examples from every other class's), and their unweighted (macro) mean, scikit-learn's
`roc_auc_score(multi_class="ovr", average="macro")`.

Each AUROC is the Mann-Whitney U statistic on average ranks (ties count one half). A class absent from the
references has no defined AUROC: it is `nan` and left out of `macro_auroc` (scikit-learn refuses such input).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): scores, shape (N, C): softmax probabilities (or logits: each
        class's AUROC reads only the order of its own column).
    references (`list` of `int`): N class indices, each in [0, C).
    label_names (`list` of `str`, optional): C class names used in the result keys; defaults to "0", "1", ...
Returns:
    macro_auroc (`float`): mean of the defined per-class AUROCs (`nan` when none is defined).
    auroc_<name> (`float`): one-vs-rest AUROC of the class (`nan` when the class is absent, or is every example).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("hfmed/metrics/multiclass_auroc")
    >>> metric.compute(predictions=[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.1, 0.6]], references=[0, 1, 2])
    {'macro_auroc': 1.0, 'auroc_0': 1.0, 'auroc_1': 1.0, 'auroc_2': 1.0}
"""

_CITATION = """\
@article{hand2001simple,
  title   = {A Simple Generalisation of the Area Under the {ROC} Curve for Multiple Class Classification Problems},
  author  = {Hand, David J. and Till, Robert J.},
  journal = {Machine Learning},
  volume  = {45},
  number  = {2},
  pages   = {171--186},
  year    = {2001},
  doi     = {10.1023/A:1010920819831}
}
"""


# Copied from multiclass_accuracy._check_inputs (each module file must stand alone in evaluate's cache).
def _check_inputs(predictions, references):
    """(N, C) float64 scores and (N,) int64 class indices, or a one-line ValueError naming the problem."""
    try:
        scores = np.asarray(predictions, dtype=np.float64)
    except (ValueError, TypeError) as error:
        raise ValueError(f"predictions must be a rectangular (N, C) array of numbers: {error}") from None
    if scores.ndim != 2:
        raise ValueError(f"predictions must have shape (N, C), one score per class; got shape {scores.shape}")
    try:
        classes = np.asarray(references, dtype=np.float64)
    except (ValueError, TypeError) as error:
        raise ValueError(f"references must be N class indices: {error}") from None
    if classes.ndim != 1:
        raise ValueError(
            f"references must have shape (N,), one class index per example; got shape {classes.shape} "
            "(one-hot rows? pass their argmax)"
        )
    if scores.shape[0] != classes.shape[0]:
        raise ValueError(
            f"predictions and references must have the same length; got {scores.shape[0]} and {classes.shape[0]}"
        )
    if scores.shape[0] == 0 or scores.shape[1] < 2:
        raise ValueError(f"need at least one example and two classes; got predictions of shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("predictions contain NaN")
    num_classes = scores.shape[1]
    if not (np.isfinite(classes).all() and (classes == np.round(classes)).all()) or (
        classes.min() < 0 or classes.max() >= num_classes
    ):
        bad = classes[~np.isin(classes, np.arange(num_classes))]
        raise ValueError(
            f"references must be class indices in [0, {num_classes}) for {num_classes} score columns; found "
            f"{bad[:5].tolist()}"
        )
    return scores, classes.astype(np.int64)


def _label_names(label_names, num_classes):
    if label_names is None:
        return [str(c) for c in range(num_classes)]
    label_names = [str(name) for name in label_names]
    if len(label_names) != num_classes:
        raise ValueError(f"label_names has {len(label_names)} entries for {num_classes} classes (score columns)")
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names must be unique; got {label_names}")
    return label_names


# Copied from multilabel_auroc.average_ranks.
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
class MulticlassAuroc(evaluate.Metric):
    """One-vs-rest AUROC per class and their macro mean (undefined classes are `nan`, left out of the mean)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, label_names=None):
        scores, classes = _check_inputs(predictions, references)
        names = _label_names(label_names, scores.shape[1])
        per_class = {
            f"auroc_{name}": binary_auroc(scores[:, c], (classes == c).astype(np.float64))
            for c, name in enumerate(names)
        }
        defined = [value for value in per_class.values() if not math.isnan(value)]
        return {"macro_auroc": float(np.mean(defined)) if defined else math.nan, **per_class}


__all__ = ["MulticlassAuroc", "average_ranks", "binary_auroc"]
