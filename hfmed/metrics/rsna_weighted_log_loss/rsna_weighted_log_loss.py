"""RSNA 2019 Intracranial Hemorrhage Detection metric: weighted multi-label log loss.

A local `evaluate` module: load it with `evaluate.load("<path to this folder>")` (or
`hfmed.metrics.load_metric("rsna_weighted_log_loss")`). It imports only numpy, datasets and evaluate
because `evaluate` copies this file on its own into its module cache.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Weighted multi-label binary cross-entropy, the scoring metric of the RSNA 2019 Intracranial Hemorrhage
Detection challenge. For N images and L labels, with probabilities p clipped to [eps, 1 - eps]:

    BCE_ij = -(y_ij * log(p_ij) + (1 - y_ij) * log(1 - p_ij))
    weighted_log_loss = sum_j w_j * mean_i BCE_ij / sum_j w_j

The challenge used w = 2 for the "any" label (listed first) and 1 for the five subtypes; that is the
default here for any L (2 for the first label, 1 for the others). Lower is better.

A reference of -1 means "unknown": mean_i runs over the label's known references only, and a label without
any is left out of the weighted mean (`nan` when no label has one). RSNA labels are never unknown.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): probabilities, shape (N, L), each in [0, 1].
        Logits are refused (values outside [0, 1]): apply a sigmoid first.
    references (`list` of `list` of `int`): binary labels, shape (N, L), each 0, 1 or -1 (unknown: skipped).
    label_weights (`list` of `float`, optional): L non-negative weights with a positive sum.
        Defaults to [2, 1, ..., 1] (the RSNA "any" label first).
    eps (`float`, optional, defaults to 1e-7): probabilities are clipped to [eps, 1 - eps] so that a
        confident mistake costs -log(eps) instead of infinity.
Returns:
    weighted_log_loss (`float`): the weighted mean binary cross-entropy.
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("hfmed/metrics/rsna_weighted_log_loss")
    >>> metric.compute(predictions=[[0.9, 0.2], [0.1, 0.7]], references=[[1, 0], [0, 1]])
    {'weighted_log_loss': ...}
"""

# A reference of -1 is "unknown" (CheXpert's uncertain labels under U-Ignore, a label missing for an image):
# that entry is skipped, label by label, as the model's loss masks it.
UNKNOWN = -1.0

_CITATION = """\
@article{flanders2020rsna,
  title   = {Construction of a Machine Learning Dataset through Collaboration: The {RSNA} 2019 Brain {CT}
             Hemorrhage Challenge},
  author  = {Flanders, Adam E. and Prevedello, Luciano M. and Shih, George and others},
  journal = {Radiology: Artificial Intelligence},
  volume  = {2},
  number  = {3},
  pages   = {e190211},
  year    = {2020},
  doi     = {10.1148/ryai.2020190211}
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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RsnaWeightedLogLoss(evaluate.Metric):
    """Weighted multi-label log loss of the RSNA 2019 Intracranial Hemorrhage challenge."""

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
            reference_urls=["https://www.kaggle.com/c/rsna-intracranial-hemorrhage-detection/overview/evaluation"],
        )

    def _compute(self, predictions, references, label_weights=None, eps=1e-7):
        predictions, references = _check_inputs(predictions, references)
        num_labels = predictions.shape[1]
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5); got {eps}")
        if predictions.min() < 0.0 or predictions.max() > 1.0:
            raise ValueError(
                "predictions must be probabilities in [0, 1]; got values in "
                f"[{predictions.min():.4g}, {predictions.max():.4g}] (logits? apply a sigmoid first)"
            )
        if label_weights is None:
            weights = np.ones(num_labels)
            weights[0] = 2.0
        else:
            weights = np.asarray(label_weights, dtype=np.float64).reshape(-1)
            if weights.shape[0] != num_labels:
                raise ValueError(f"label_weights has {weights.shape[0]} entries for {num_labels} labels")
            if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f"label_weights must be finite, non-negative, with a positive sum; got {weights}")

        p = np.clip(predictions, eps, 1.0 - eps)
        known = references != UNKNOWN
        truth = references == 1.0
        bce = np.where(known, -np.where(truth, np.log(p), np.log1p(-p)), 0.0)
        counts = known.sum(axis=0)
        counted = counts > 0
        if not counted.any() or weights[counted].sum() <= 0:
            return {"weighted_log_loss": float("nan")}
        per_label = bce.sum(axis=0)[counted] / counts[counted]
        return {"weighted_log_loss": float((weights[counted] * per_label).sum() / weights[counted].sum())}


__all__ = ["RsnaWeightedLogLoss"]
