"""Dice per class and the foreground mean Dice of a semantic segmentation model.

A local `evaluate` module: load it with `evaluate.load("<path to this folder>")` (or
`hfmed.metrics.load_metric("segmentation_dice")`). It imports only numpy, datasets and evaluate because
`evaluate` copies this file on its own into its module cache.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Dice (F1 of the pixels) of each class, and the mean over the foreground classes (every class but 0), for
class-index maps. With P_c the pixels predicted as class c and G_c the pixels labelled c:

    dice_c    = 2 |P_c and G_c| / (|P_c| + |G_c|)
    mean_dice = mean of dice_c over c = 1 .. num_labels - 1 (classes whose Dice is defined)

The counts are pooled over every pixel of every example (as `evaluate`'s mean_iou pools them), not averaged
per image: one number per class for the whole split, and no rule needed for an image without the class. Pixels
whose reference is `ignore_index` count nowhere. `dice_c` is `nan` when class c is neither predicted nor
labelled anywhere; `mean_dice` is `nan` when every foreground Dice is. Examples may have different sizes, but
each prediction must have the size of its reference.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D int arrays): N predicted class maps, values in 0 .. num_labels - 1.
    references (`list` of 2-D int arrays): N reference maps, values in 0 .. num_labels - 1 or `ignore_index`.
    num_labels (`int`): number of classes (at least 2; class 0 is the background).
    ignore_index (`int`, defaults to 255): reference value of pixels that count nowhere.
    label_names (`list` of `str`, *optional*): one name per class; result keys are `dice_<name>` (default:
        `dice_<index>`).
Returns:
    dice_<name> (`float`): Dice of each class in [0, 1] (`nan` if the class appears nowhere).
    mean_dice (`float`): mean Dice of the foreground classes.
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("hfmed/metrics/segmentation_dice")
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 1]]], num_labels=2)
    {'dice_0': 0.666..., 'dice_1': 0.8, 'mean_dice': 0.8}
"""

_CITATION = """\
@article{dice1945,
  title   = {Measures of the Amount of Ecologic Association Between Species},
  author  = {Dice, Lee R.},
  journal = {Ecology},
  volume  = {26},
  number  = {3},
  pages   = {297--302},
  year    = {1945},
  doi     = {10.2307/1932409}
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
class SegmentationDice(evaluate.Metric):
    """Per-class and foreground-mean Dice of class-index maps, pooled over pixels."""

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
        total = counts.sum(axis=0) + counts.sum(axis=1)  # |P_c| + |G_c|
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(total > 0, 2.0 * overlap / np.maximum(total, 1), np.nan)
        foreground = dice[1:]
        mean = float(np.nanmean(foreground)) if np.isfinite(foreground).any() else float("nan")
        results = {f"dice_{name}": float(value) for name, value in zip(names, dice, strict=True)}
        results["mean_dice"] = mean
        return results


__all__ = ["SegmentationDice", "confusion_matrix"]
