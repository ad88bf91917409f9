"""hfmed.plots writes real PNG files (checked by their magic bytes and opened with PIL)."""

import numpy as np
import pytest
from PIL import Image

from hfmed.plots import plot_history, plot_regression, plot_roc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        width, height = image.size
        assert width > 0 and height > 0
        # Something was drawn: not a single flat colour.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or [0, 0]) > 1


HISTORY = [
    {"epoch": 1, "step": 40, "train_loss": 0.61, "eval_loss": 0.55, "eval_mean_auroc": 0.71, "eval_auroc_any": 0.7},
    {"epoch": 2, "step": 80, "train_loss": 0.48, "eval_loss": 0.47, "eval_mean_auroc": 0.78, "eval_auroc_any": 0.8},
    # Keys vary between entries: a metric that appears late, one that is missing, bookkeeping to skip.
    {"epoch": 3, "step": 120, "train_loss": 0.41, "eval_loss": 0.45, "eval_mean_auroc": 0.80,
     "eval_mean_accuracy": 0.74, "eval_runtime": 3.2, "learning_rate": 1e-4, "flag": True, "note": "best"},
]


def test_plot_history_writes_loss_and_metrics_pngs(tmp_path):
    step_losses = [(step, 0.7 * np.exp(-step / 80) + 0.02 * np.sin(step)) for step in range(1, 121)]
    paths = plot_history(HISTORY, tmp_path / "plots", step_losses=step_losses)
    assert [p.name for p in paths] == ["loss.png", "metrics.png"]
    assert all(p.parent == tmp_path / "plots" for p in paths)
    for path in paths:
        assert_png(path)


def test_plot_history_per_epoch_curves_with_step_losses_and_no_step_key(tmp_path):
    history = [{"epoch": e, "train_loss": 1.0 / e, "eval_loss": 1.2 / e, "eval_mean_auroc": 0.5 + e / 10} for e in (1, 2)]
    paths = plot_history(history, tmp_path, step_losses=[(s, 1.0 / s) for s in range(1, 21)])
    assert [p.name for p in paths] == ["loss.png", "metrics.png"]
    for path in paths:
        assert_png(path)


def test_plot_history_writes_only_the_figures_it_has_data_for(tmp_path):
    paths = plot_history([{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.4}], tmp_path)
    assert [p.name for p in paths] == ["loss.png"]
    assert not (tmp_path / "metrics.png").exists()
    assert_png(paths[0])


def test_plot_history_refuses_an_empty_history(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_history([], tmp_path)


def test_plot_roc_two_labels_with_operating_points(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(50, 2))
    probabilities = np.clip(0.4 * labels + 0.6 * rng.random((50, 2)), 0, 1).astype(np.float32)
    out = plot_roc(probabilities, labels, ["any", "epidural"], tmp_path / "sub" / "roc.png", thresholds=[0.5, 0.4])
    assert out == tmp_path / "sub" / "roc.png"
    assert_png(out)


def test_plot_roc_with_a_single_class_label_and_no_thresholds(tmp_path):
    labels = np.array([[0, 0], [1, 0], [1, 0], [0, 0]])
    probabilities = np.array([[0.2, 0.1], [0.9, 0.3], [0.6, 0.2], [0.4, 0.7]])
    assert_png(plot_roc(probabilities, labels, ["any", "never"], tmp_path / "roc.png"))


def test_plot_roc_checks_its_inputs(tmp_path):
    probabilities, labels = np.full((4, 2), 0.5), np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    with pytest.raises(ValueError, match="label_names has 1 entries for 2 labels"):
        plot_roc(probabilities, labels, ["any"], tmp_path / "roc.png")
    with pytest.raises(ValueError, match="thresholds has 3 entries for 2 labels"):
        plot_roc(probabilities, labels, ["a", "b"], tmp_path / "roc.png", thresholds=[0.5, 0.5, 0.5])
    assert not (tmp_path / "roc.png").exists()


def test_plot_regression_writes_a_scatter_with_mae_in_the_title(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    targets = rng.uniform(45, 85, 40)
    predictions = targets + rng.normal(0, 3, 40)
    titles = []
    from matplotlib.axes import Axes

    original = Axes.set_title
    monkeypatch.setattr(Axes, "set_title", lambda self, text, **kw: titles.append(text) or original(self, text, **kw))
    path = plot_regression(predictions, targets, tmp_path / "sub" / "pred.png", "age")
    assert_png(path)
    expected_mae = np.abs(predictions - targets).mean()
    expected_r = np.corrcoef(predictions, targets)[0, 1]
    assert titles == [f"MAE {expected_mae:.3f}, Pearson r {expected_r:.3f}"]


def test_plot_regression_checks_its_inputs(tmp_path):
    with pytest.raises(ValueError, match="equal length"):
        plot_regression([1.0, 2.0], [1.0], tmp_path / "a.png")
    with pytest.raises(ValueError, match="NaN"):
        plot_regression([1.0, float("nan")], [1.0, 2.0], tmp_path / "a.png")
