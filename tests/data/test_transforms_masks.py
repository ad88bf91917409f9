"""Segmentation batches: a mask column becomes int64 (B, H, W) labels through the processor, and augmentation
moves each image and its mask together (nearest for the mask; pixels moved in are ignored)."""

import numpy as np
import pytest
import torch
from PIL import Image

from hfmed.data.transforms import collate, make_transform
from hfmed.models.diamant import DIAMANTImageProcessor

IGNORE = 255


def write_pairs(folder, count=3, size=32):
    """Grey images that are their masks (0/255 squares at different places), and the 0/255 masks."""
    rows = {"path": [], "mask_path": [], "image_id": []}
    for index in range(count):
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[4 + 3 * index : 20 + 3 * index, 6 : 22 + index] = 255
        Image.fromarray(mask).save(folder / f"img{index}.png")
        Image.fromarray(mask).save(folder / f"img{index}_mask.png")
        rows["path"].append(str(folder / f"img{index}.png"))
        rows["mask_path"].append(str(folder / f"img{index}_mask.png"))
        rows["image_id"].append(f"img{index}")
    return rows


@pytest.fixture
def processor():
    return DIAMANTImageProcessor(size={"height": 32, "width": 32}, size_divisor=8, mask_binarize_threshold=128)


def test_a_mask_path_column_gives_int64_class_maps(tmp_path, processor):
    rows = write_pairs(tmp_path)
    out = make_transform(processor)(rows)
    assert out["labels"].dtype == torch.int64 and out["labels"].shape == (3, 32, 32)
    expected = np.stack([np.asarray(Image.open(p)) >= 128 for p in rows["mask_path"]]).astype(np.int64)
    np.testing.assert_array_equal(out["labels"].numpy(), expected)
    batch = collate([{k: v[i] for k, v in out.items()} for i in range(3)])
    assert batch["labels"].shape == (3, 32, 32)


def test_a_mask_image_column_works_like_paths(tmp_path, processor):
    rows = write_pairs(tmp_path)
    pil_rows = {"image": [Image.open(p) for p in rows["path"]], "mask": [Image.open(p) for p in rows["mask_path"]]}
    torch.testing.assert_close(make_transform(processor)(pil_rows)["labels"], make_transform(processor)(rows)["labels"])


def test_a_horizontal_flip_flips_image_and_mask_together(tmp_path, processor):
    rows = write_pairs(tmp_path)
    plain = make_transform(processor)(rows)
    flipped = make_transform(processor, {"hflip": 1.0}, train=True, seed=0)(rows)
    torch.testing.assert_close(flipped["pixel_values"], plain["pixel_values"].flip(-1))
    torch.testing.assert_close(flipped["labels"], plain["labels"].flip(-1))


def test_an_affine_move_keeps_mask_values_and_follows_the_image(tmp_path, processor):
    rows = write_pairs(tmp_path)
    augment = {"rotate_degrees": 40, "scale": [0.7, 0.9], "translate": 0.1}
    transform = make_transform(processor, augment, train=True, seed=3)
    out = transform(rows)
    labels = out["labels"].numpy()
    assert set(np.unique(labels)) <= {0, 1, IGNORE}  # nearest neighbours: no new label values
    assert (labels == IGNORE).any()  # scaled down: unlabelled pixels moved in from outside
    brightness = out["pixel_values"].mean(dim=1).numpy()
    for image, mask in zip(brightness, labels, strict=True):
        # The image is its own mask: the moved image is bright where the moved mask says foreground.
        assert image[mask == 1].mean() > image[mask == 0].mean() + 1.0
    # The draw depends on (seed, epoch, example): the same call repeats, another epoch differs.
    torch.testing.assert_close(transform(rows)["labels"], out["labels"])
    transform.set_epoch(1)
    assert not torch.equal(transform(rows)["labels"], out["labels"])


def test_a_mask_column_and_a_labels_column_together_are_an_error(tmp_path, processor):
    rows = write_pairs(tmp_path)
    rows["labels"] = [0, 1, 0]
    with pytest.raises(ValueError, match="remove the 'labels' column"):
        make_transform(processor)(rows)
