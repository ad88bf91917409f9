"""Training curves and ROC curves as PNG files, for run folders and model cards.

matplotlib is imported inside the functions (it is a `train` extra and slow to import), and figures are
drawn on `matplotlib.figure.Figure` with the Agg canvas directly: no pyplot, so no global backend switch,
no figure left open in a long training process, and it works on machines without a display.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .checkpoint import atomic_path
from .thresholds import _as_matrices, _at_least, roc_points

# Bookkeeping that transformers.Trainer logs next to the metrics; plotted it would only crowd metrics.png.
_IGNORED_KEYS = {"epoch", "step", "total_flos"}
_IGNORED_SUFFIXES = ("_runtime", "_per_second")
# Split prefixes: "train_auroc" and "eval_auroc" share a panel.
_SPLIT_PREFIXES = ("train_", "eval_", "validation_", "val_", "test_")


def _new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False)
    return figure, axes


def _save(figure, path: Path) -> None:
    # Via a temporary file: a run killed while plotting leaves the previous PNG, never half of one.
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _keys_in_order(history: Sequence[Mapping]) -> list[str]:
    keys: dict[str, None] = {}
    for entry in history:
        for key, value in entry.items():
            if _is_number(value):
                keys.setdefault(key, None)
    return list(keys)


def _series(history: Sequence[Mapping], x: list[float], key: str) -> tuple[list[float], list[float]]:
    points = [(xi, float(entry[key])) for xi, entry in zip(x, history, strict=True) if _is_number(entry.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def _panel_name(key: str) -> str:
    for prefix in _SPLIT_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return key[len(prefix) :]
    return key


def plot_history(
    history: Sequence[Mapping],
    out_dir: str | Path,
    step_losses: Iterable[tuple[float, float]] | None = None,
) -> list[Path]:
    """Plot a run's per-epoch (or per-evaluation) log as `loss.png` and `metrics.png` in `out_dir`.

    Args:
        history: dicts such as `{"epoch": 1, "step": 40, "train_loss": 0.5, "eval_loss": 0.4,
            "eval_mean_auroc": 0.8}`; keys may differ between entries (a key is drawn where present).
            `transformers.Trainer`'s `state.log_history` works as is.
        out_dir: folder for the PNGs (created if missing).
        step_losses: optional `(step, loss)` pairs, drawn faintly behind the curves of `loss.png`.

    The x axis is `step` when every entry has one, else `epoch` when every entry has one, else the entry
    index. `loss.png` holds every numeric key ending in `loss`; `metrics.png` every other numeric key
    except `epoch`, `step` and Trainer bookkeeping (`*_runtime`, `*_per_second`, `total_flos`), one panel
    per metric with its `train_` / `eval_` / `val_` / `test_` variants together.

    Returns:
        The paths written: a figure with nothing to draw is not written.
    """
    history = list(history)
    step_losses = [] if step_losses is None else [(float(s), float(v)) for s, v in step_losses]
    if not history and not step_losses:
        raise ValueError("nothing to plot: history and step_losses are both empty")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    if history and all(_is_number(entry.get("step")) for entry in history):
        x_key = "step"
    elif history and all(_is_number(entry.get("epoch")) for entry in history):
        x_key = "epoch"
    else:
        x_key = "evaluation"
    x = [float(entry[x_key]) for entry in history] if x_key != "evaluation" else list(range(1, len(history) + 1))

    keys = _keys_in_order(history)
    loss_keys = [key for key in keys if key.endswith("loss")]
    metric_keys = [
        key
        for key in keys
        if key not in loss_keys and key not in _IGNORED_KEYS and not key.endswith(_IGNORED_SUFFIXES)
    ]
    written = []

    if loss_keys or step_losses:
        figure, axes = _new_figure(7, 4.5)
        ax = axes[0, 0]
        if step_losses:
            # A step axis of its own when the curves are per epoch: steps and epochs do not share a scale.
            step_ax = ax if x_key == "step" or not loss_keys else ax.twiny()
            steps, values = [s for s, _ in step_losses], [v for _, v in step_losses]
            step_ax.plot(steps, values, color="0.5", alpha=0.35, linewidth=0.8, label="loss (per step)")
            if step_ax is not ax:
                step_ax.set_xlabel("step")
                step_ax.legend(loc="upper center", fontsize="small")
        for key in loss_keys:
            xs, ys = _series(history, x, key)
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
        ax.set_xlabel(x_key if loss_keys else "step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        path = out_dir / "loss.png"
        _save(figure, path)
        written.append(path)

    if metric_keys:
        panels: dict[str, list[str]] = {}
        for key in metric_keys:
            panels.setdefault(_panel_name(key), []).append(key)
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        figure, axes = _new_figure(4.2 * ncols, 3.0 * nrows, nrows, ncols)
        for ax, (panel, panel_keys) in zip(axes.flat, panels.items(), strict=False):
            for key in panel_keys:
                xs, ys = _series(history, x, key)
                ax.plot(xs, ys, marker="o", markersize=3, label=key)
            ax.set_title(panel, fontsize="medium")
            ax.set_xlabel(x_key)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small")
        for ax in list(axes.flat)[len(panels) :]:
            ax.set_visible(False)
        path = out_dir / "metrics.png"
        _save(figure, path)
        written.append(path)

    return written


def plot_roc(
    probabilities,
    labels,
    label_names: Sequence[str],
    out_path: str | Path,
    thresholds: float | Sequence[float] | None = None,
) -> Path:
    """One ROC curve per label in one PNG, AUROC in the legend; operating points marked if `thresholds`.

    Args:
        probabilities: (N, L) probabilities.
        labels: (N, L) 0/1 labels; -1 (unknown) entries are left out of their label's curve.
        label_names: L names for the legend.
        out_path: the PNG to write (its folder is created if missing).
        thresholds: optional float or L floats; each label's point (1 - specificity, sensitivity) under
            `probability >= threshold` is marked on its curve.

    A label whose known labels hold a single class has no ROC curve: it is listed in the legend as such.
    """
    probabilities, labels, known = _as_matrices(probabilities, labels)
    num_labels = probabilities.shape[1]
    label_names = [str(name) for name in label_names]
    if len(label_names) != num_labels:
        raise ValueError(f"label_names has {len(label_names)} entries for {num_labels} labels")
    cutoffs = None
    if thresholds is not None:
        cutoffs = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if cutoffs.shape[0] == 1:
            cutoffs = np.repeat(cutoffs, num_labels)
        if cutoffs.shape[0] != num_labels:
            raise ValueError(f"thresholds has {cutoffs.shape[0]} entries for {num_labels} labels")

    figure, axes = _new_figure(6, 6)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    for j, name in enumerate(label_names):
        scores, truth = probabilities[known[:, j], j], labels[known[:, j], j]
        if truth.all() or not truth.any():
            ax.plot([], [], linestyle="none", label=f"{name} (single class: no ROC)")
            continue
        _, tpr, fpr = roc_points(scores, truth)
        # The curve starts at (0, 0): a threshold above every score calls nothing positive.
        fpr, tpr = np.concatenate(([0.0], fpr)), np.concatenate(([0.0], tpr))
        auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
        (line,) = ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUROC {auroc:.3f})")
        if cutoffs is not None:
            predicted = _at_least(scores, cutoffs[j])
            ax.plot(
                predicted[~truth].mean(),
                predicted[truth].mean(),
                marker="o",
                markersize=7,
                markeredgecolor="black",
                color=line.get_color(),
                linestyle="none",
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    title = "ROC" if cutoffs is None else "ROC (dots: chosen thresholds, probability >= threshold)"
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _save(figure, out_path)
    return out_path


def confusion_counts(predicted, labels, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    predicted = np.asarray(predicted, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted and labels must have the same length, got {predicted.size} and {labels.size}")
    for name, values in (("predicted", predicted), ("labels", labels)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must be class indices in [0, {num_classes}), found {values.min()}..{values.max()}")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def plot_confusion_matrix(counts, label_names: Sequence[str], out_path: str | Path) -> Path:
    """A single-label classifier's confusion matrix as a PNG: rows true classes, columns predicted ones, each
    cell coloured by its share of the row (the class's recall on the diagonal) and labelled with its count.

    Args:
        counts: (C, C) counts, e.g. from `confusion_counts`.
        label_names: C class names for the axes.
        out_path: the PNG to write (its folder is created if missing).
    """
    counts = np.asarray(counts, dtype=np.int64)
    label_names = [str(name) for name in label_names]
    if counts.ndim != 2 or counts.shape != (len(label_names), len(label_names)):
        raise ValueError(f"counts must be ({len(label_names)}, {len(label_names)}) for the class names, got {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = max(4.0, 0.6 * len(label_names) + 2.5)
    figure, axes = _new_figure(size, size)
    ax = axes[0, 0]
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, column), count in np.ndenumerate(counts):
        ax.text(column, row, str(count), ha="center", va="center", fontsize="small",
                color="white" if shares[row, column] > 0.5 else "black")
    ticks = np.arange(len(label_names))
    ax.set_xticks(ticks, label_names, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(ticks, label_names, fontsize="small")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(int(counts.sum()), 1)
    ax.set_title(f"confusion matrix, accuracy {accuracy:.3f}\n(colour: share of the true class)", fontsize="medium")

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _save(figure, out_path)
    return out_path


def plot_regression(predictions, targets, out_path: str | Path, target_name: str = "target") -> Path:
    """Predicted against true values in one PNG, with the identity line and MAE / Pearson r in the title.

    Args:
        predictions: N predicted values.
        targets: N true values (same length).
        out_path: the PNG to write (its folder is created if missing).
        target_name: the quantity's name for the axis labels (e.g. "age").
    """
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if predictions.shape != targets.shape or predictions.size == 0:
        raise ValueError(
            f"predictions and targets must be two non-empty lists of equal length, got {predictions.size} "
            f"and {targets.size}"
        )
    if not (np.isfinite(predictions).all() and np.isfinite(targets).all()):
        raise ValueError("predictions and targets must be finite numbers (found NaN or inf)")
    mae = float(np.abs(predictions - targets).mean())
    spread = predictions.std() * targets.std()
    pearson = float(np.mean((predictions - predictions.mean()) * (targets - targets.mean())) / spread) if spread else math.nan

    figure, axes = _new_figure(6, 6)
    ax = axes[0, 0]
    low = float(min(predictions.min(), targets.min()))
    high = float(max(predictions.max(), targets.max()))
    ax.plot([low, high], [low, high], linestyle="--", color="0.6", linewidth=1, label="prediction = truth")
    ax.scatter(targets, predictions, s=14, alpha=0.7, label=f"validation ({targets.size})")
    ax.set_xlabel(f"true {target_name}")
    ax.set_ylabel(f"predicted {target_name}")
    ax.set_aspect("equal")
    ax.set_title(f"MAE {mae:.3f}, Pearson r {pearson:.3f}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _save(figure, out_path)
    return out_path


def _display_rgb(image) -> np.ndarray:
    """(C, H, W) model input (normalised) -> (H, W, 3) in [0, 1] for display: min-max over the whole image, so
    the colours keep their balance; one channel is shown grey."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[None]
    image = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    low, high = float(image.min()), float(image.max())
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return image.transpose(1, 2, 0)


def _class_overlay(rgb: np.ndarray, classes: np.ndarray, ignore_index: int, alpha: float = 0.45) -> np.ndarray:
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    out = rgb.copy()
    for value in np.unique(classes):
        if value == 0:
            continue  # the background stays the image
        colour = np.array([0.5, 0.5, 0.5]) if value == ignore_index else np.array(colours[(int(value) - 1) % 10])
        where = classes == value
        out[where] = (1 - alpha) * out[where] + alpha * colour
    return out


def plot_segmentation_overlays(images, predictions, references, label_names: Sequence[str], out_path: str | Path,
                               ignore_index: int = 255) -> Path:
    """A few validation images with the reference mask (left) and the prediction (right) drawn over them, one
    row per image, each class in its own colour (background left clear; ignored reference pixels grey), the
    row titled with the image's foreground Dice.

    Args:
        images: (K, C, H, W) model inputs (normalised pixel values; shown min-max scaled).
        predictions: (K, H, W) predicted class indices.
        references: (K, H, W) reference class indices (`ignore_index` where unknown).
        label_names: the class names (class 0 is the background), for the legend.
        out_path: the PNG to write (its folder is created if missing).
    """
    images, predictions, references = (np.asarray(v) for v in (images, predictions, references))
    if images.ndim != 4 or predictions.shape != references.shape or predictions.shape != (
        images.shape[0], *images.shape[-2:]
    ):
        raise ValueError(
            f"need images (K, C, H, W) with predictions and references (K, H, W) of the same K, H, W; got "
            f"{images.shape}, {predictions.shape}, {references.shape}"
        )
    if images.shape[0] == 0:
        raise ValueError("no image to draw: pass at least one")
    label_names = [str(name) for name in label_names]
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    rows = images.shape[0]
    figure, axes = _new_figure(6.4, 3.2 * rows + 0.4, nrows=rows, ncols=2)
    for row in range(rows):
        rgb = _display_rgb(images[row])
        valid = references[row] != ignore_index
        predicted, truth = (predictions[row] > 0) & valid, (references[row] > 0) & valid
        total = int(predicted.sum() + truth.sum())
        dice = f"{2 * int((predicted & truth).sum()) / total:.3f}" if total else "n/a (empty)"
        for column, (classes, title) in enumerate(((references[row], "reference"), (predictions[row], "prediction"))):
            ax = axes[row, column]
            ax.imshow(_class_overlay(rgb, classes, ignore_index))
            ax.set_axis_off()
            ax.set_title(f"{title}" + (f" (foreground Dice {dice})" if column else ""), fontsize="small")
    colours = colormaps["tab10"].colors
    handles = [Patch(color=colours[(i - 1) % 10], label=name) for i, name in enumerate(label_names) if i > 0]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4) or 1, fontsize="small")

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _save(figure, out_path)
    return out_path


__all__ = [
    "confusion_counts",
    "plot_confusion_matrix",
    "plot_history",
    "plot_regression",
    "plot_roc",
    "plot_segmentation_overlays",
]
