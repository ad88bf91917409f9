"""Evaluation metrics for multi-label medical classifiers, as local `evaluate` modules.

Each metric is a folder `hfmed/metrics/<name>/<name>.py` that `evaluate.load(path)` reads offline (the
Hub copies of `evaluate`'s canonical metrics are not needed). `classification_metrics` runs them all and
returns one flat dict of floats, for a training loop; `make_compute_metrics` wraps it for
`transformers.Trainer(compute_metrics=...)`.

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


def _to_numpy(values) -> np.ndarray:
    # Accept torch tensors (on any device, with grad) without importing torch here.
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
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
        `{"weighted_log_loss", "mean_auroc", "auroc_<name>"..., "mean_accuracy", "accuracy_<name>"...}`;
        an AUROC is `nan` for a label with a single class in `labels` (left out of `mean_auroc`).
    """
    probabilities = _to_numpy(probabilities)
    labels = _to_numpy(labels)
    label_names = [str(name) for name in label_names]
    if probabilities.ndim != 2 or probabilities.shape[1] != len(label_names):
        raise ValueError(
            f"probabilities must have shape (N, {len(label_names)}) for {len(label_names)} label names; "
            f"got {probabilities.shape}"
        )
    log_loss_kwargs = {} if label_weights is None else {"label_weights": list(label_weights)}
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
        results.update({key: float(value) for key, value in output.items()})
    return results


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-x))) neither overflows for large |x| nor loses small probabilities to rounding.
    return np.exp(-np.logaddexp(0.0, -logits))


def make_compute_metrics(
    label_names: Sequence[str],
    label_weights: Sequence[float] | None = None,
    thresholds: float | Sequence[float] | None = None,
) -> Callable[..., dict[str, float]]:
    """A `compute_metrics(eval_pred)` for `transformers.Trainer`: sigmoid of the logits, then
    `classification_metrics`. When the model returns extra outputs, the logits are taken to be the first."""
    label_names = [str(name) for name in label_names]

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits, label_ids = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if isinstance(label_ids, (tuple, list)):
            label_ids = label_ids[0]
        probabilities = _sigmoid(_to_numpy(logits))
        return classification_metrics(probabilities, label_ids, label_names, label_weights, thresholds)

    return compute_metrics


__all__ = [
    "METRICS_DIR",
    "available_metrics",
    "classification_metrics",
    "load_metric",
    "make_compute_metrics",
]
