"""Accuracy, balanced accuracy and per-class recall of a single-label (multi-class) classifier.

A local `evaluate` module: load it with `evaluate.load("<path to this folder>")` (or
`hfmed.metrics.load_metric("multiclass_accuracy")`). It imports only numpy, datasets and evaluate because
`evaluate` copies this file on its own into its module cache.
"""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Metrics of a single-label classifier (one class per example, e.g. a MedMNIST tissue type) from its scores per
class. The predicted class is the highest-scoring one (the first on a tie, as `numpy.argmax`):

    accuracy           fraction of examples whose predicted class is the reference class
    balanced_accuracy  mean of the recalls of the classes present in the references (scikit-learn's
                       `balanced_accuracy_score`): accuracy that a rare class weighs as much as a common one
    recall_<name>      fraction of the class's examples predicted as that class; `nan` for a class absent
                       from the references

`evaluate` stores predictions as float32, so the argmax is taken on float32 scores, as on a model's output.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): scores, shape (N, C): probabilities (softmax) or logits
        (only the highest of each row matters).
    references (`list` of `int`): N class indices, each in [0, C).
    label_names (`list` of `str`, optional): C class names used in the result keys; defaults to "0", "1", ...
Returns:
    accuracy (`float`), balanced_accuracy (`float`), recall_<name> (`float`, `nan` for an absent class).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("hfmed/metrics/multiclass_accuracy")
    >>> metric.compute(predictions=[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]],
    ...                references=[0, 1, 1, 1], label_names=["a", "b", "c"])
    {'accuracy': 0.5, 'balanced_accuracy': 0.6666666666666666, 'recall_a': 1.0, 'recall_b': 0.3333333333333333,
     'recall_c': nan}
"""

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


# Copied from multiclass_auroc._label_names (each module file must stand alone in evaluate's cache).
def _label_names(label_names, num_classes):
    if label_names is None:
        return [str(c) for c in range(num_classes)]
    label_names = [str(name) for name in label_names]
    if len(label_names) != num_classes:
        raise ValueError(f"label_names has {len(label_names)} entries for {num_classes} classes (score columns)")
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names must be unique; got {label_names}")
    return label_names


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MulticlassAccuracy(evaluate.Metric):
    """Accuracy, balanced accuracy and per-class recall of the argmax class."""

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
        predicted = np.argmax(scores.astype(np.float32), axis=1)
        correct = predicted == classes
        recalls = {
            f"recall_{name}": float(correct[classes == c].mean()) if (classes == c).any() else math.nan
            for c, name in enumerate(names)
        }
        present = [value for value in recalls.values() if not math.isnan(value)]
        return {"accuracy": float(correct.mean()), "balanced_accuracy": float(np.mean(present)), **recalls}


__all__ = ["MulticlassAccuracy"]
