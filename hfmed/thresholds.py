"""Per-label decision thresholds for multi-label classifiers, chosen on a validation split.

A model outputs probabilities; a report needs yes/no per finding. `choose_thresholds` picks one
threshold per label (Youden's J, or the highest threshold that keeps a target sensitivity) and
`operating_points` reports what each threshold does on a split (sensitivity, specificity, counts).

Decision rule everywhere in hfmed: a label is positive iff `probability >= threshold`. Candidate
thresholds are the distinct predicted scores, so every candidate is one point of the empirical ROC curve.
Comparisons are made at the precision of the probabilities (float32 model outputs stay float32, so a
typed threshold 0.7 calls a float32 0.7 positive, as the `multilabel_accuracy` metric does).
A label of -1 is unknown (CheXpert's uncertain findings under U-Ignore): skipped, label by label, as the
model's loss and the metrics skip it.
numpy only: no scikit-learn here, the tests compare against it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

SINGLE_CLASS_THRESHOLD = 0.5
UNKNOWN = -1.0


def _as_float(values) -> np.ndarray:
    # Keep float32 as float32: thresholds are scores of this array and must compare exactly against it.
    values = np.asarray(values)
    return values if values.dtype in (np.float32, np.float64) else values.astype(np.float64)


def _at_least(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The decision rule: `scores >= threshold`, compared at the precision of `scores`."""
    return scores >= scores.dtype.type(threshold)


def _as_matrices(probabilities, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(probabilities, positive, known)`: (N, L) scores and two boolean masks (`known` is False at -1)."""
    if hasattr(probabilities, "detach"):
        probabilities = probabilities.detach().float().cpu().numpy()
    if hasattr(labels, "detach"):
        labels = labels.detach().float().cpu().numpy()
    probabilities = _as_float(probabilities)
    labels = np.asarray(labels, dtype=np.float64)
    # A single label may come as a vector: treat it as one column.
    if probabilities.ndim == 1:
        probabilities = probabilities[:, None]
    if labels.ndim == 1:
        labels = labels[:, None]
    if probabilities.ndim != 2 or probabilities.shape != labels.shape:
        raise ValueError(
            f"probabilities and labels must have the same shape (N, L); got {probabilities.shape} and "
            f"{labels.shape}"
        )
    if probabilities.shape[0] == 0:
        raise ValueError("need at least one example")
    if np.isnan(probabilities).any():
        raise ValueError("probabilities contain NaN")
    if not np.isin(labels, (0.0, 1.0, UNKNOWN)).all():
        raise ValueError("labels must be 0, 1, or -1 for an unknown label (skipped)")
    return probabilities, labels == 1.0, labels != UNKNOWN


def roc_points(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC curve of one label under the `score >= threshold` rule.

    Returns `(thresholds, tpr, fpr)`: the distinct scores in decreasing order and, for each, the true and
    false positive rates of calling `score >= threshold` positive. The (0, 0) corner (threshold above
    every score) is not included. Labels of -1 (unknown) are skipped. Raises `ValueError` if the known
    labels hold a single class.
    """
    scores = _as_float(scores).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores, labels = scores[labels != UNKNOWN], labels[labels != UNKNOWN] == 1.0
    num_positive = int(labels.sum())
    num_negative = labels.shape[0] - num_positive
    if num_positive == 0 or num_negative == 0:
        raise ValueError("the ROC curve needs both classes in labels")
    thresholds = np.unique(scores)[::-1]
    tp, fp = _counts_at(scores, labels, thresholds)
    return thresholds, tp / num_positive, fp / num_negative


def _counts_at(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Number of positives / negatives with score >= t, for every t at once (sorted search, no loop).
    thresholds = thresholds.astype(scores.dtype)
    positive_scores = np.sort(scores[labels])
    negative_scores = np.sort(scores[~labels])
    tp = positive_scores.shape[0] - np.searchsorted(positive_scores, thresholds, side="left")
    fp = negative_scores.shape[0] - np.searchsorted(negative_scores, thresholds, side="left")
    return tp, fp


def choose_thresholds(
    probabilities, labels, method: str = "youden", target_sensitivity: float = 0.9
) -> list[float]:
    """One decision threshold per label, chosen on a validation split.

    Args:
        probabilities: (N, L) predicted probabilities (a vector for one label).
        labels: (N, L) 0/1 labels; -1 (unknown) entries are skipped.
        method: `"youden"` maximises sensitivity + specificity - 1 (Youden's J) over the distinct
            predicted scores; among equal J the highest threshold wins (fewer false positives).
            `"sensitivity"` picks the highest threshold whose sensitivity is at least
            `target_sensitivity` (the most specific such operating point).
        target_sensitivity: in (0, 1], for `method="sensitivity"`.

    Returns:
        L plain floats. A label whose known labels hold a single class (or none) gets 0.5 and a
        `UserWarning`.
    """
    if method not in ("youden", "sensitivity"):
        raise ValueError(f"method must be 'youden' or 'sensitivity'; got {method!r}")
    if method == "sensitivity" and not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1]; got {target_sensitivity}")
    probabilities, labels, known = _as_matrices(probabilities, labels)

    chosen = []
    for j in range(probabilities.shape[1]):
        column, truth = probabilities[known[:, j], j], labels[known[:, j], j]
        if truth.all() or not truth.any():
            unknown = int((~known[:, j]).sum())
            warnings.warn(
                f"label {j} has a single class in the validation labels ({int(truth.sum())} positives of "
                f"{truth.shape[0]}{f' known, {unknown} unknown' if unknown else ''}); no threshold can be "
                f"chosen, using {SINGLE_CLASS_THRESHOLD}",
                UserWarning,
                stacklevel=2,
            )
            chosen.append(SINGLE_CLASS_THRESHOLD)
            continue
        thresholds = np.unique(column)[::-1]
        tp, fp = _counts_at(column, truth, thresholds)
        num_positive, num_negative = int(truth.sum()), int((~truth).sum())
        if method == "youden":
            # J = tp/P - fp/N, compared as the integer P*N*J so equal J are exactly equal; thresholds
            # decrease and argmax returns the first maximum: the highest threshold among ties.
            best = int(np.argmax(tp * num_negative - fp * num_positive))
        else:
            # tp never decreases along decreasing thresholds, and the lowest threshold has tp = P.
            best = int(np.argmax(tp / num_positive >= target_sensitivity))
        chosen.append(float(thresholds[best]))
    return chosen


def _rate(numerator: int, denominator: int) -> float | None:
    # None (JSON null) rather than NaN: NaN is not valid JSON.
    return numerator / denominator if denominator else None


def operating_points(
    probabilities,
    labels,
    thresholds: float | Sequence[float],
    label_names: Sequence[str] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """What each label's threshold does on a split, as a JSON-serialisable dict.

    Args:
        probabilities: (N, L) predicted probabilities.
        labels: (N, L) 0/1 labels; -1 (unknown) entries are left out of the counts.
        thresholds: one float for every label, or L floats (e.g. from `choose_thresholds`).
        label_names: L names for the keys; defaults to "0", "1", ...

    Returns:
        `{name: {"threshold", "sensitivity", "specificity", "youden_j", "tp", "fp", "tn", "fn"}}` with
        plain floats and ints. Sensitivity (no positives) or specificity (no negatives) that is undefined
        is `None`, and so is `youden_j` then.
    """
    probabilities, labels, known = _as_matrices(probabilities, labels)
    num_labels = probabilities.shape[1]
    cutoffs = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if cutoffs.shape[0] == 1:
        cutoffs = np.repeat(cutoffs, num_labels)
    if cutoffs.shape[0] != num_labels:
        raise ValueError(f"thresholds has {cutoffs.shape[0]} entries for {num_labels} labels")
    if np.isnan(cutoffs).any():
        raise ValueError("thresholds must not be NaN")
    names = [str(j) for j in range(num_labels)] if label_names is None else [str(n) for n in label_names]
    if len(names) != num_labels:
        raise ValueError(f"label_names has {len(names)} entries for {num_labels} labels")
    if len(set(names)) != len(names):
        raise ValueError(f"label_names must be unique; got {names}")

    points = {}
    for j, name in enumerate(names):
        predicted = _at_least(probabilities[known[:, j], j], cutoffs[j])
        truth = labels[known[:, j], j]
        tp = int((predicted & truth).sum())
        fp = int((predicted & ~truth).sum())
        tn = int((~predicted & ~truth).sum())
        fn = int((~predicted & truth).sum())
        sensitivity = _rate(tp, tp + fn)
        specificity = _rate(tn, tn + fp)
        youden_j = None if sensitivity is None or specificity is None else sensitivity + specificity - 1.0
        points[name] = {
            "threshold": float(cutoffs[j]),
            "sensitivity": sensitivity,
            "specificity": specificity,
            "youden_j": youden_j,
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
        }
    return points


__all__ = ["SINGLE_CLASS_THRESHOLD", "choose_thresholds", "operating_points", "roc_points"]
