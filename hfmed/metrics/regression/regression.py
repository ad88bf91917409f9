"""Errors of a single-output regression model (e.g. brain age): MAE, RMSE and Pearson's r.

A local `evaluate` module: load it with `evaluate.load("<path to this folder>")` (or
`hfmed.metrics.load_metric("regression")`). It imports only numpy, datasets and evaluate because `evaluate`
copies this file on its own into its module cache.
"""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Errors of a regression model with one output per example (brain age in years, for instance), the metrics
brain-age papers report. For N predictions p and targets y:

    mae       = mean_i |p_i - y_i|
    rmse      = sqrt(mean_i (p_i - y_i)^2)
    pearson_r = cov(p, y) / (std(p) std(y))

Pearson's r is `nan` when the predictions or the targets are constant (its denominator is 0), and for a
single example. Values are stored and compared in float64.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): N predicted values.
    references (`list` of `float`): N target values.
Returns:
    mae (`float`): mean absolute error, in the targets' unit.
    rmse (`float`): root mean squared error, in the targets' unit.
    pearson_r (`float`): Pearson correlation of predictions and targets, in [-1, 1] (`nan` if undefined).
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("hfmed/metrics/regression")
    >>> metric.compute(predictions=[60.0, 70.0, 82.0], references=[62.0, 70.0, 80.0])
    {'mae': 1.333..., 'rmse': 1.632..., 'pearson_r': 0.99...}
"""

_CITATION = """\
@article{cole2017brainage,
  title   = {Predicting brain age with deep learning from raw imaging data results in a reliable and heritable
             biomarker},
  author  = {Cole, James H. and Poudel, Rudra P. K. and Tsagkrasoulis, Dimosthenis and others},
  journal = {NeuroImage},
  volume  = {163},
  pages   = {115--124},
  year    = {2017},
  doi     = {10.1016/j.neuroimage.2017.07.059}
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
    for name, array in (("predictions", predictions), ("references", references)):
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contain NaN or infinity")
    return predictions, references


def pearson_r(predictions, references):
    """Pearson's r of two float64 vectors; `nan` when either is constant or there are fewer than 2 values."""
    if predictions.shape[0] < 2:
        return math.nan
    p = predictions - predictions.mean()
    y = references - references.mean()
    denominator = math.sqrt(float(np.dot(p, p)) * float(np.dot(y, y)))
    if denominator == 0.0:
        return math.nan
    return float(np.clip(np.dot(p, y) / denominator, -1.0, 1.0))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Regression(evaluate.Metric):
    """MAE, RMSE and Pearson's r of a single-output regression model."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        predictions, references = _check_inputs(predictions, references)
        errors = predictions - references
        return {
            "mae": float(np.abs(errors).mean()),
            "rmse": float(math.sqrt(float(np.mean(errors * errors)))),
            "pearson_r": pearson_r(predictions, references),
        }


__all__ = ["Regression", "pearson_r"]
