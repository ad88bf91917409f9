"""Evaluation metrics for medical classifiers and regressors, as local `evaluate` modules.

Each metric is a folder `hfmed/metrics/<name>/<name>.py` that `evaluate.load(path)` reads offline (the
Hub copies of `evaluate`'s canonical metrics are not needed). `classification_metrics` (multi-label: log loss,
AUROC, accuracy per label), `binary_metrics` (one label: accuracy, balanced accuracy, AUROC),
`single_label_metrics` (one class per example: accuracy, balanced accuracy, macro one-vs-rest AUROC) and
`regression_metrics` (one output: MAE, RMSE, Pearson r) and `segmentation_metrics` (one class per pixel: Dice,
IoU) run them and return one flat dict of floats, for a
training loop; `make_compute_metrics` wraps them for `transformers.Trainer(compute_metrics=...)`.

`evaluate` takes seconds to import, so it is imported inside the functions that need it, never when
`hfmed.metrics` is imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

METRICS_DIR = Path(__file__).resolve().parent


def available_metrics() -> list[str]:
    """Names of the metric modules shipped in `METRICS_DIR` (a folder holding `<name>/<name>.py`)."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if p.is_dir() and (p / f"{p.name}.py").is_file())


def load_metric(name: str, **kwargs):
    """Load the local `evaluate` module `name` (see `available_metrics()`) by path, offline.

    Extra keyword arguments go to `evaluate.load`. `keep_in_memory=True` by default: single-process
    evaluation then writes no Arrow cache files or locks to disk; pass `keep_in_memory=False` together
    with `num_process` / `process_id` for `evaluate`'s multi-process gathering.
    """
    names = available_metrics()
    if name not in names:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(names)}")
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(METRICS_DIR / name), **kwargs)


@functools.cache
def _cached_metric(name: str):
    # evaluate.load hashes and copies the script on every call; a training loop evaluates many times.
    return load_metric(name)


def to_numpy(values) -> np.ndarray:
    # Accept torch tensors (on any device, with grad, any float type) without importing torch here.
    if hasattr(values, "detach"):
        values = values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def classification_metrics(
    probabilities,
    labels,
    label_names: Sequence[str],
    label_weights: Sequence[float] | None = None,
    thresholds: float | Sequence[float] | None = None,
) -> dict[str, float]:
    """All classification metrics of a multi-label model, merged into one flat dict of floats.

    Args:
        probabilities: (N, L) probabilities (after the sigmoid), numpy array, list or torch tensor.
        labels: (N, L) 0/1 labels.
        label_names: L names; result keys are `auroc_<name>` and `accuracy_<name>`.
        label_weights: L weights for the log loss; `None` is the RSNA convention (2 for the first label).
        thresholds: decision threshold(s) for the accuracies: one float, L floats, or `None` for 0.5.

    Returns:
        `{"weighted_log_loss" or "mean_log_loss", "mean_auroc", "auroc_<name>"..., "mean_accuracy",
        "accuracy_<name>"...}`; the log loss is `weighted_log_loss` only when the label weights differ (the
        RSNA metric), `mean_log_loss` when it is a plain mean over labels (equal weights, or one label). An
        AUROC is `nan` for a label with a single class in `labels` (left out of `mean_auroc`).
    """
    probabilities = to_numpy(probabilities)
    labels = to_numpy(labels)
    label_names = [str(name) for name in label_names]
    if probabilities.ndim != 2 or probabilities.shape[1] != len(label_names):
        raise ValueError(
            f"probabilities must have shape (N, {len(label_names)}) for {len(label_names)} label names; "
            f"got {probabilities.shape}"
        )
    log_loss_kwargs = {} if label_weights is None else {"label_weights": list(label_weights)}
    weights = np.asarray([2.0] + [1.0] * (len(label_names) - 1) if label_weights is None else label_weights)
    log_loss_name = "weighted_log_loss" if np.ptp(weights.astype(np.float64)) > 0 else "mean_log_loss"
    if thresholds is None or np.ndim(thresholds) == 0:
        accuracy_kwargs = {} if thresholds is None else {"threshold": float(thresholds)}
    else:
        accuracy_kwargs = {"thresholds": [float(t) for t in thresholds]}

    results: dict[str, float] = {}
    for name, kwargs in (
        ("rsna_weighted_log_loss", log_loss_kwargs),
        ("multilabel_auroc", {"label_names": label_names}),
        ("multilabel_accuracy", {"label_names": label_names, **accuracy_kwargs}),
    ):
        output = _cached_metric(name).compute(predictions=probabilities, references=labels, **kwargs)
        if name == "rsna_weighted_log_loss":
            output = {log_loss_name: output["weighted_log_loss"]}
        results.update({key: float(value) for key, value in output.items()})
    return results


def one_output(values, name: str) -> np.ndarray:
    """(N,) float64 from an (N,) or (N, 1) array, list or tensor (one output per example)."""
    array = to_numpy(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1), one value per example; got {array.shape}")
    return array


def _same_length(first: np.ndarray, second: np.ndarray, names: str) -> None:
    if first.shape[0] != second.shape[0]:
        raise ValueError(f"{names} must have the same length; got {first.shape[0]} and {second.shape[0]}")


def regression_metrics(predictions, targets) -> dict[str, float]:
    """MAE, RMSE and Pearson's r of a single-output regression model (e.g. brain age in years).

    Args:
        predictions: (N,) or (N, 1) predicted values (the model's raw output), numpy array, list or tensor.
        targets: (N,) or (N, 1) target values.

    Returns:
        `{"mae", "rmse", "pearson_r"}`; `pearson_r` is `nan` when predictions or targets are constant.

    Raises:
        ValueError: other shapes, different lengths, no example, NaN or infinite values.
    """
    predictions = one_output(predictions, "predictions")
    targets = one_output(targets, "targets")
    _same_length(predictions, targets, "predictions and targets")
    output = _cached_metric("regression").compute(predictions=predictions, references=targets)
    return {key: float(value) for key, value in output.items()}


def binary_metrics(probabilities, labels, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy and AUROC of a binary classifier (e.g. AD = 1 vs CN = 0).

    Args:
        probabilities: (N,) or (N, 1) probabilities of the positive class (after the sigmoid).
        labels: (N,) or (N, 1) labels, each 0 or 1.
        threshold: a prediction is positive when its probability is at least `threshold`.

    Returns:
        `{"accuracy", "balanced_accuracy", "auroc"}`; `auroc` is `nan` when `labels` hold a single class.

    Raises:
        ValueError: other shapes, different lengths, no example, NaN, probabilities outside [0, 1], labels
            other than 0 / 1.
    """
    probabilities = one_output(probabilities, "probabilities")
    labels = one_output(labels, "labels")
    _same_length(probabilities, labels, "probabilities and labels")
    output = _cached_metric("binary_classification").compute(
        predictions=probabilities, references=labels, threshold=float(threshold)
    )
    return {key: float(value) for key, value in output.items()}


def class_indices(labels, name: str = "labels") -> np.ndarray:
    """(N,) int64 class indices from an (N,) or (N, 1) array, list or tensor of whole numbers."""
    array = one_output(labels, name)
    if not (np.isfinite(array).all() and (array == np.round(array)).all()):
        raise ValueError(f"{name} must be whole class indices (one per example), found {array[array != np.round(array)][:5]}")
    return array.astype(np.int64)


def single_label_metrics(probabilities, labels, label_names: Sequence[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy, per-class recall and one-vs-rest AUROC of a single-label classifier.

    Args:
        probabilities: (N, C) class probabilities (after the softmax) or logits: the metrics read the argmax
            and each column's order only.
        labels: (N,) or (N, 1) class indices in [0, C).
        label_names: C class names; result keys are `recall_<name>` and `auroc_<name>`.

    Returns:
        `{"accuracy", "balanced_accuracy", "macro_auroc", "recall_<name>"..., "auroc_<name>"...}`; a class absent
        from `labels` has `nan` recall and AUROC and is left out of the balanced accuracy and the macro mean.
    """
    probabilities = to_numpy(probabilities)
    labels = class_indices(labels)
    label_names = [str(name) for name in label_names]
    if probabilities.ndim != 2 or probabilities.shape[1] != len(label_names):
        raise ValueError(
            f"probabilities must have shape (N, {len(label_names)}) for {len(label_names)} class names; "
            f"got {probabilities.shape}"
        )
    _same_length(probabilities, labels, "probabilities and labels")
    results: dict[str, float] = {}
    for name in ("multiclass_accuracy", "multiclass_auroc"):
        output = _cached_metric(name).compute(predictions=probabilities, references=labels, label_names=label_names)
        results.update({key: float(value) for key, value in output.items()})
    return results


def _maps(values):
    # A torch tensor (any device) as numpy without importing torch here; lists and arrays as they are.
    return values.detach().cpu().numpy() if hasattr(values, "detach") else values


def segmentation_metrics(predictions, references, label_names: Sequence[str], ignore_index: int = 255) -> dict[str, float]:
    """Dice per class, the foreground mean Dice, IoU per class and the mean IoU of a segmentation model.

    Args:
        predictions: (N, H, W) predicted class indices (the argmax over classes), or a list of (H, W) maps.
        references: (N, H, W) reference class indices, `ignore_index` where a pixel counts nowhere.
        label_names: the C class names (class 0 is the background); keys are `dice_<name>` and `iou_<name>`.
        ignore_index: the reference value of ignored pixels (the config's `semantic_loss_ignore_index`).

    Returns:
        `{"mean_dice", "dice_<name>"..., "mean_iou", "iou_<name>"...}`, counts pooled over every pixel of the
        split (`segmentation_dice`, `segmentation_iou`); `mean_dice` averages the foreground classes, `mean_iou`
        every class. A class that appears nowhere is `nan` and left out of the means.
    """
    label_names = [str(name) for name in label_names]
    predictions = [np.asarray(p, dtype=np.int64) for p in _maps(predictions)]
    references = [np.asarray(r, dtype=np.int64) for r in _maps(references)]
    kwargs = {"num_labels": len(label_names), "ignore_index": int(ignore_index), "label_names": label_names}
    results: dict[str, float] = {}
    for name in ("segmentation_dice", "segmentation_iou"):
        output = _cached_metric(name).compute(predictions=predictions, references=references, **kwargs)
        results.update({key: float(value) for key, value in output.items()})
    return results


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities along the last axis, shifted by the row maximum so large logits do not overflow."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-x))) neither overflows for large |x| nor loses small probabilities to rounding.
    return np.exp(-np.logaddexp(0.0, -logits))


def make_compute_metrics(
    label_names: Sequence[str],
    label_weights: Sequence[float] | None = None,
    thresholds: float | Sequence[float] | None = None,
    task: str = "multi_label_classification",
) -> Callable[..., dict[str, float]]:
    """A `compute_metrics(eval_pred)` for `transformers.Trainer`. When the model returns extra outputs, the
    logits are taken to be the first. The task (`hfmed.tasks`) builds it.

    Args:
        label_names: the names of the model's outputs (one for "binary" and "regression").
        label_weights, thresholds: see `classification_metrics` (classification tasks only).
        task: "multi_label_classification" (sigmoid of the logits, then `classification_metrics`), "binary"
            (one label: the same, plus `binary_metrics` at `thresholds`, default 0.5),
            "single_label_classification" (softmax of the logits, then `single_label_metrics`; the label ids
            are class indices), "regression" (one output: `regression_metrics` of the raw logits) or
            "semantic_segmentation" (argmax over the classes of (N, C, H, W) logits, then `segmentation_metrics`
            against (N, H, W) label maps); any name of `hfmed.tasks.TASKS`.
    """
    from ..tasks import get_task

    return get_task(task).compute_metrics(label_names, label_weights, thresholds)


__all__ = [
    "METRICS_DIR",
    "available_metrics",
    "binary_metrics",
    "class_indices",
    "classification_metrics",
    "load_metric",
    "make_compute_metrics",
    "one_output",
    "regression_metrics",
    "segmentation_metrics",
    "sigmoid",
    "single_label_metrics",
    "softmax",
    "to_numpy",
]
