"""The segmentation evaluate modules (Dice, IoU) against an independent numpy reference written here."""

import math

import numpy as np
import pytest

from hfmed.metrics import load_metric, segmentation_metrics

NAMES = ["background", "polyp", "tool"]


def reference_scores(predictions, references, num_labels, ignore_index=255):
    """Per-class Dice and IoU with boolean masks, pooled over all pixels of all images."""
    dice, iou = [], []
    for c in range(num_labels):
        inter = union = p_sum = g_sum = 0
        for p, g in zip(predictions, references, strict=True):
            valid = g != ignore_index
            pc, gc = (p == c) & valid, (g == c) & valid
            inter += np.logical_and(pc, gc).sum()
            union += np.logical_or(pc, gc).sum()
            p_sum += pc.sum()
            g_sum += gc.sum()
        dice.append(2 * inter / (p_sum + g_sum) if p_sum + g_sum else math.nan)
        iou.append(inter / union if union else math.nan)
    return dice, iou


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(13)
    references = [rng.integers(0, 3, (12, 10)), rng.integers(0, 3, (7, 9))]  # images of different sizes
    predictions = [np.where(rng.random(r.shape) < 0.7, r, rng.integers(0, 3, r.shape)) for r in references]
    references[0][:2] = 255  # two ignored rows
    return predictions, references


def test_dice_and_iou_match_the_numpy_reference(maps):
    predictions, references = maps
    dice, iou = reference_scores(predictions, references, 3)
    result = segmentation_metrics(predictions, references, NAMES)
    for name, d, i in zip(NAMES, dice, iou, strict=True):
        assert result[f"dice_{name}"] == pytest.approx(d) and result[f"iou_{name}"] == pytest.approx(i)
    assert result["mean_dice"] == pytest.approx(np.mean(dice[1:]))  # foreground only
    assert result["mean_iou"] == pytest.approx(np.mean(iou))  # every class
    # Dice = 2 IoU / (1 + IoU) per class: an identity the two modules must share.
    for name in NAMES:
        assert result[f"dice_{name}"] == pytest.approx(2 * result[f"iou_{name}"] / (1 + result[f"iou_{name}"]))


def test_ignored_pixels_count_nowhere(maps):
    predictions, references = maps
    changed = [p.copy() for p in predictions]
    changed[0][:2] = 2  # predictions under ignored reference pixels change nothing
    assert segmentation_metrics(changed, references, NAMES) == segmentation_metrics(predictions, references, NAMES)


def test_a_class_absent_everywhere_is_nan_and_left_out_of_the_means():
    references = [np.array([[0, 1], [1, 0]])]
    predictions = [np.array([[0, 1], [0, 0]])]
    result = segmentation_metrics(predictions, references, NAMES)
    assert math.isnan(result["dice_tool"]) and math.isnan(result["iou_tool"])
    assert result["mean_dice"] == pytest.approx(2 / 3)
    assert result["mean_iou"] == pytest.approx(np.mean([2 / 3, 1 / 2]))
    assert segmentation_metrics([np.zeros((2, 2))], [np.zeros((2, 2))], NAMES[:2])["dice_background"] == 1.0


def test_a_perfect_prediction_scores_one(maps):
    _, references = maps
    perfect = [np.where(r == 255, 0, r) for r in references]
    result = segmentation_metrics(perfect, references, NAMES)
    assert all(result[k] == pytest.approx(1.0) for k in result)


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([np.zeros((2, 2))], [np.zeros((2, 3))], "same size"),
        ([np.full((2, 2), 3)], [np.zeros((2, 2))], r"prediction holds \[3\], outside the classes 0..2"),
        ([np.zeros((2, 2))], [np.full((2, 2), 9)], r"reference holds \[9\]"),
        ([np.zeros((2, 2))], [np.zeros((2, 2)), np.zeros((2, 2))], "number of predictions"),
    ],
)
def test_bad_inputs_are_one_line_errors(predictions, references, message):
    metric = load_metric("segmentation_dice")
    with pytest.raises(ValueError, match=message):
        metric.compute(predictions=predictions, references=references, num_labels=3)


def test_the_modules_need_a_class_count():
    metric = load_metric("segmentation_iou")
    with pytest.raises(ValueError, match="num_labels must be an integer >= 2"):
        metric.compute(predictions=[[[0]]], references=[[[0]]], num_labels=1)


def test_tensors_and_arrays_give_the_same_numbers(maps):
    import torch

    predictions, references = maps
    stacked_p = np.stack([p[:7, :9] for p in predictions])
    stacked_r = np.stack([r[:7, :9] for r in references])
    expected = segmentation_metrics(stacked_p, stacked_r, NAMES)
    assert segmentation_metrics(torch.from_numpy(stacked_p), torch.from_numpy(stacked_r), NAMES) == expected
