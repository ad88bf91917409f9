"""The segmentation pipeline: raw medical inputs, and sliding-window inference for images larger than the
model's input (tiles, overlap, blend) that equals a plain forward where it must."""

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from transformers import pipeline

from hfmed import DIAMANTForSemanticSegmentation, DIAMANTImageProcessor, diamant_config
from hfmed.hub import save_for_hub
from hfmed.pipelines import (
    SEGMENTATION_TASK,
    blend_window,
    segment,
    sliding_window_logits,
    tile_starts,
)

SIZE = 32


@pytest.mark.parametrize(("length", "tile", "overlap"), [(32, 32, 0.25), (70, 32, 0.25), (100, 32, 0.5), (33, 32, 0.0)])
def test_tiles_cover_the_side_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    covered = np.zeros(length, dtype=bool)
    for start in starts:
        covered[start : start + tile] = True
    assert covered.all()
    shared = [a + tile - b for a, b in zip(starts, starts[1:], strict=False)]
    assert all(s >= overlap * tile for s in shared)


def pointwise(tiles):
    # A per-pixel "model" (two logits from a fixed mix of the channels): any tiling must give its full forward.
    weight = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]])
    return torch.einsum("kc,bchw->bkhw", weight, tiles)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(("height", "width"), [(70, 90), (20, 75), (32, 32)])
def test_sliding_window_of_a_per_pixel_model_equals_its_full_forward(blend, height, width):
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    logits = sliding_window_logits(pointwise, image, (SIZE, SIZE), overlap=0.25, blend=blend, batch_size=3)
    torch.testing.assert_close(logits, pointwise(image))


def test_the_gaussian_blend_trusts_tile_centres():
    window = blend_window(32, 32)
    assert window[15:17, 15:17].min() == 1.0 and window[0, 0] < 0.01 and window.min() > 0
    with pytest.raises(ValueError, match="blend must be one of"):
        blend_window(32, 32, "max")


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = DIAMANTForSemanticSegmentation(diamant_config("diamant-tiny")).eval()
    with torch.no_grad():  # a prediction with both classes in it: the masks then say something
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0]))
    processor = DIAMANTImageProcessor(size={"height": SIZE, "width": SIZE}, size_divisor=8)
    return model, processor, save_for_hub(model, processor, tmp_path_factory.mktemp("hub"))


def masks(rows):
    return {row["label"]: np.asarray(row["mask"]) for row in rows}


def test_a_model_sized_image_gives_the_plain_forward(hub_folder, tmp_path):
    _, _, folder = hub_folder
    path = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
    stock = pipeline("image-segmentation", model=str(folder), trust_remote_code=True)(str(path))
    ours = segment(str(path), str(folder))
    assert masks(ours).keys() == masks(stock).keys()
    for label, mask in masks(stock).items():
        np.testing.assert_array_equal(masks(ours)[label], mask)


def test_a_larger_image_is_segmented_at_its_own_size_by_tiles(hub_folder, tmp_path):
    model, processor, folder = hub_folder
    rng = np.random.default_rng(2)
    path = tmp_path / "large.png"
    Image.fromarray(rng.integers(0, 256, (72, 100, 3), dtype=np.uint8)).save(path)
    rows = segment(str(path), str(folder), overlap=0.5, blend="constant")
    assert all(row["mask"].size == (100, 72) for row in rows)
    # The reference: the constant blend is the plain mean of the tiles' logits, computed here tile by tile.
    native = processor(str(path), do_resize=False, size_divisor=1, return_tensors="pt")["pixel_values"]
    total, count = torch.zeros(2, 72, 100), torch.zeros(72, 100)
    with torch.no_grad():
        for y in tile_starts(72, SIZE, 0.5):
            for x in tile_starts(100, SIZE, 0.5):
                total[:, y : y + SIZE, x : x + SIZE] += model(pixel_values=native[..., y : y + SIZE, x : x + SIZE]).logits[0]
                count[y : y + SIZE, x : x + SIZE] += 1
    expected = (total / count).argmax(0).numpy()
    for row in rows:
        label = model.config.label2id[row["label"]]
        np.testing.assert_array_equal(np.asarray(row["mask"]) > 0, expected == label)
    assert {model.config.id2label[int(v)] for v in np.unique(expected)} == {row["label"] for row in rows}


def test_a_dicom_is_read_by_the_processor_and_tiled(hub_folder):
    _, _, folder = hub_folder
    path = get_testdata_file("CT_small.dcm")
    rows = pipeline(SEGMENTATION_TASK, model=str(folder))(pydicom.dcmread(path))
    shape = pydicom.dcmread(path).pixel_array.shape
    assert rows and all(row["mask"].size == (shape[1], shape[0]) for row in rows)
    total = sum((np.asarray(row["mask"]) > 0).astype(int) for row in rows)
    assert (total == 1).all()  # every pixel in exactly one class's mask


def test_bad_call_arguments_are_clear(hub_folder, tmp_path):
    _, _, folder = hub_folder
    pipe = pipeline(SEGMENTATION_TASK, model=str(folder))
    with pytest.raises(ValueError, match="blend must be one of"):
        pipe(np.zeros((8, 8)), blend="median")
    with pytest.raises(ValueError, match="overlap is the fraction"):
        pipe(np.zeros((8, 8)), overlap=1.0)


def test_an_hfmed_segmentation_model_is_not_reported_unsupported(hub_folder):
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging

    _, _, folder = hub_folder
    with CaptureLogger(logging.get_logger("transformers.pipelines.base")) as stock:
        pipeline("image-segmentation", model=str(folder), trust_remote_code=True)
    with CaptureLogger(logging.get_logger("transformers.pipelines.base")) as ours:
        pipeline(SEGMENTATION_TASK, model=str(folder))
    assert "is not supported for image-segmentation" in stock.out  # transformers' static table of names
    assert "is not supported" not in ours.out
