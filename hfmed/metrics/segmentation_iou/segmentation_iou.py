"""Intersection over union per class and the mean IoU of a semantic segmentation model.

A local `evaluate` module: load it with `evaluate.load("<path to this folder>")` (or
`hfmed.metrics.load_metric("segmentation_iou")`). It imports only numpy, datasets and evaluate because
`evaluate` copies this file on its own into its module cache.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Intersection over union (Jaccard index) of each class and their mean, for class-index maps. With P_c the
pixels predicted as class c and G_c the pixels labelled c:

    iou_c    = |P_c and G_c| / |P_c or G_c|
    mean_iou = mean of iou_c over every class, background included (classes whose IoU is defined)

as `evaluate`'s canonical mean_iou: counts pooled over every pixel of every example, pixels whose reference is
`ignore_index` counting nowhere. `iou_c` is `nan` when class c is neither predicted nor labelled anywhere.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D int arrays): N predicted class maps, values in 0 .. num_labels - 1.
    references (`list` of 2-D int arrays): N reference maps, values in 0 .. num_labels - 1 or `ignore_index`.
    num_labels (`int`): number of classes (at least 2).
    ignore_index (`int`, defaults to 255): reference value of pixels that count nowhere.
    label_names (`list` of `str`, *optional*): one name per class; result keys are `iou_<name>` (default:
        `iou_<index>`).
Returns:
    iou_<name> (`float`): IoU of each class in [0, 1] (`nan` if the class appears nowhere).
    mean_iou (`float`): mean IoU over the classes.
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("hfmed/metrics/segmentation_iou")
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 1]]], num_labels=2)
    {'iou_0': 0.5, 'iou_1': 0.666..., 'mean_iou': 0.583...}
"""

_CITATION = """\
@article{jaccard1912,
  title   = {The Distribution of the Flora in the Alpine Zone},
  author  = {Jaccard, Paul},
  journal = {New Phytologist},
  volume  = {11},
  number  = {2},
  pages   = {37--50},
  year    = {1912},
  doi     = {10.1111/j.1469-8137.1912.tb05611.x}
}
"""


def confusion_matrix(predictions, references, num_labels, ignore_index):
    """(num_labels, num_labels) pixel counts, rows = reference class, columns = predicted class, pooled over
    the examples; pixels whose reference is `ignore_index` are left out."""
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 2:
        raise ValueError(f"num_labels must be an integer >= 2 (background and one class), got {num_labels!r}")
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must have the same length; got {len(predictions)} and {len(references)}"
        )
    if len(predictions) == 0:
        raise ValueError("need at least one example")
    counts = np.zeros(num_labels * num_labels, dtype=np.int64)
    for index, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        prediction, reference = np.asarray(prediction), np.asarray(reference)
        if prediction.shape != reference.shape or prediction.ndim != 2:
            raise ValueError(
                f"example {index}: prediction {prediction.shape} and reference {reference.shape} must be 2-D maps "
                "of the same size"
            )
        keep = reference != ignore_index
        prediction, reference = prediction[keep].astype(np.int64), reference[keep].astype(np.int64)
        for name, values in (("prediction", prediction), ("reference", reference)):
            if values.size and (values.min() < 0 or values.max() >= num_labels):
                bad = sorted(set(np.unique(values[(values < 0) | (values >= num_labels)]).tolist()))[:8]
                raise ValueError(
                    f"example {index}: {name} holds {bad}, outside the classes 0..{num_labels - 1} (and not "
                    f"ignore_index {ignore_index})"
                )
        counts += np.bincount(reference * num_labels + prediction, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels)


def names_for(label_names, num_labels):
    if label_names is None:
        return [str(i) for i in range(num_labels)]
    names = [str(name) for name in label_names]
    if len(names) != num_labels:
        raise ValueError(f"label_names has {len(names)} names for {num_labels} classes")
    return names


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SegmentationIou(evaluate.Metric):
    """Per-class IoU and mean IoU of class-index maps, pooled over pixels."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                }
            ),
        )

    def _compute(self, predictions, references, num_labels=None, ignore_index=255, label_names=None):
        counts = confusion_matrix(predictions, references, num_labels, ignore_index)
        names = names_for(label_names, num_labels)
        overlap = np.diag(counts).astype(np.float64)
        union = counts.sum(axis=0) + counts.sum(axis=1) - overlap
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, overlap / np.maximum(union, 1), np.nan)
        mean = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
        results = {f"iou_{name}": float(value) for name, value in zip(names, iou, strict=True)}
        results["mean_iou"] = mean
        return results


__all__ = ["SegmentationIou", "confusion_matrix"]
