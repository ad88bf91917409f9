"""Tests of the DIAMANT image processor (image + mask -> pixel_values + labels, and back to class maps) on real
files: pydicom's CT_small.dcm / MR_small.dcm / SC_rgb_small_odd.dcm, matplotlib's grace_hopper.jpg (a real
JPEG photograph; scikit-image is not in the environment), and PNG / TIFF masks written here.

Expected values are computed here by hand: divide-by-255 and min-max written out, the DICOM LINEAR window
formula (PS3.3 C.11.2.1.2.1) written out, centre-aligned nearest-neighbour indices written out, never by
calling the code under test. The module is loaded from its file path on purpose: it is copied flat to the
Hub, so it must import without the rest of `hfmed`.
"""

import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib.cbook  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from torchvision.transforms.v2 import functional as tvF  # noqa: E402

MODULE_PATH = (
    Path(__file__).resolve().parents[3] / "hfmed" / "models" / "diamant" / "image_processing_diamant.py"
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRACE_HOPPER = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def _load_module(name):
    spec = importlib.util.spec_from_file_location(name, MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ips = _load_module("diamant_image_processing_under_test")
DIAMANTImageProcessor = ips.DIAMANTImageProcessor


def processor(**kwargs):
    return DIAMANTImageProcessor(**{"size": {"height": 32, "width": 32}, "size_divisor": 8, **kwargs})


def hand_pixel_values(chw, size=(32, 32)):
    image = torch.from_numpy(np.ascontiguousarray(np.asarray(chw, dtype=np.float32)))
    resized = tvF.resize(image, list(size), interpolation=tvF.InterpolationMode.BILINEAR, antialias=True)
    return (resized - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def hand_nearest(mask, height, width):
    """Source row of output row i: floor((i + 0.5) * H_in / H_out), written with plain loops."""
    mask = np.asarray(mask)
    out = np.empty((height, width), dtype=np.int64)
    for i in range(height):
        for j in range(width):
            out[i, j] = mask[int((i + 0.5) * mask.shape[0] / height), int((j + 0.5) * mask.shape[1] / width)]
    return out


def hand_linear_window(x, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR), output scaled to [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    inside = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.where(x <= low, 0.0, np.where(x > high, 1.0, inside))


def rgb_png(path, height=40, width=24, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def blob_mask(height=40, width=24, seed=1, values=(0, 255)):
    """A lesion-like disc plus a few scattered pixels of the second value."""
    rows, cols = np.mgrid[:height, :width]
    disc = (rows - height * 0.45) ** 2 + (cols - width * 0.55) ** 2 < (min(height, width) * 0.3) ** 2
    noise = np.random.default_rng(seed).random((height, width)) < 0.05
    return np.where(disc | noise, values[1], values[0]).astype(np.uint8)


# --- images ------------------------------------------------------------------------------------------------


def test_rgb_png_and_0_255_mask_need_a_declared_rule(tmp_path):
    rgb = rgb_png(tmp_path / "image.png")
    mask = blob_mask()
    Image.fromarray(mask).save(tmp_path / "mask.png")
    with pytest.raises(ValueError, match=r"values \[255\] outside the model's classes 0..1.*mask_binarize_threshold=128") as info:
        processor()(str(tmp_path / "image.png"), segmentation_maps=str(tmp_path / "mask.png"))
    assert "\n" not in str(info.value)
    out = processor(mask_binarize_threshold=128)(
        str(tmp_path / "image.png"), segmentation_maps=str(tmp_path / "mask.png"), return_tensors="pt"
    )
    expected = hand_pixel_values(rgb.transpose(2, 0, 1) / 255.0)
    torch.testing.assert_close(out["pixel_values"][0], expected, atol=1e-5, rtol=1e-5)
    assert out["labels"].shape == (1, 32, 32) and out["labels"].dtype == torch.int64
    np.testing.assert_array_equal(out["labels"][0].numpy(), hand_nearest(mask >= 128, 32, 32))
    # the same rule through label_mapping
    mapped = processor(label_mapping={0: 0, 255: 1})(rgb, segmentation_maps=mask, return_tensors="pt")
    assert torch.equal(mapped["labels"], out["labels"])


def test_real_jpeg_with_a_mask_thresholded_from_it(tmp_path):
    photo = np.asarray(Image.open(GRACE_HOPPER).convert("RGB"))  # 600 x 512, a real JPEG
    grey = photo.astype(np.float64).mean(axis=-1)
    Image.fromarray(((grey > 128) * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    out = DIAMANTImageProcessor(mask_binarize_threshold=128)(
        GRACE_HOPPER, segmentation_maps=tmp_path / "mask.png", return_tensors="pt"
    )
    assert out["pixel_values"].shape == (1, 3, 224, 224)
    torch.testing.assert_close(
        out["pixel_values"][0], hand_pixel_values(photo.transpose(2, 0, 1) / 255.0, (224, 224)), atol=1e-5, rtol=1e-5
    )
    np.testing.assert_array_equal(out["labels"][0].numpy(), hand_nearest(grey > 128, 224, 224))
    np.testing.assert_array_equal(
        DIAMANTImageProcessor().decode(GRACE_HOPPER)[0], photo.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    )


def test_grey_dicom_ct_is_min_max_scaled_and_replicated():
    path = get_testdata_file("CT_small.dcm")
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    hu = stored * 1 - 1024  # RescaleSlope 1, RescaleIntercept -1024; no window in the file -> min-max
    unit = (hu - hu.min()) / (hu.max() - hu.min())
    decoded = DIAMANTImageProcessor().decode(path)[0]
    assert decoded.shape == (3, 128, 128)
    for channel in decoded:
        np.testing.assert_allclose(channel, unit, atol=1e-6)
    out = processor()(path, return_tensors="pt")
    torch.testing.assert_close(out["pixel_values"][0], hand_pixel_values(np.stack([unit] * 3)), atol=1e-5, rtol=1e-5)


def test_grey_dicom_mr_uses_its_window_and_allowed_modalities():
    path = get_testdata_file("MR_small.dcm")
    stored = pydicom.dcmread(path).pixel_array
    expected = hand_linear_window(stored, 600, 1600)  # WindowCenter 600, WindowWidth 1600, no rescale
    decoded = DIAMANTImageProcessor().decode(path)[0]
    np.testing.assert_allclose(decoded[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"Modality 'MR' is not in allowed_modalities \['US'\].*add 'MR'"):
        processor(allowed_modalities=["US"])(path)
    assert processor(allowed_modalities=["MR"])(path)["pixel_values"][0].shape == (3, 32, 32)


def test_colour_dicom_is_divided_by_its_bit_range():
    path = get_testdata_file("SC_rgb_small_odd.dcm")  # 3x3 RGB, 8 bits stored
    pixels = pydicom.dcmread(path).pixel_array
    decoded = DIAMANTImageProcessor().decode(path)[0]
    np.testing.assert_allclose(decoded, pixels.transpose(2, 0, 1) / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match=r"3x3 but the model needs height and width divisible by 8.*keep do_resize=True, or pad to 8x8$"):
        processor(do_resize=False)(path)


# --- masks -------------------------------------------------------------------------------------------------


def test_nearest_resize_never_invents_labels_and_follows_centre_indices():
    mask = np.random.default_rng(2).integers(0, 3, (37, 23)).astype(np.uint8)
    image = np.random.default_rng(3).random((37, 23))
    out = processor(num_labels=3)(image, segmentation_maps=mask, return_tensors="pt")
    labels = out["labels"][0].numpy()
    np.testing.assert_array_equal(labels, hand_nearest(mask, 32, 32))
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_mask_kinds_palette_one_bit_16_bit_rgb_and_tensor(tmp_path):
    values = blob_mask(values=(0, 2))
    image = np.random.default_rng(4).random((40, 24))
    expected = hand_nearest(values, 32, 32)
    run = processor(num_labels=3)
    palette = Image.fromarray(values, mode="L").convert("P")  # palette indices = the values for an 'L' source
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
    palette.save(tmp_path / "palette.png")
    Image.fromarray(values.astype(np.uint16)).save(tmp_path / "sixteen.tif")
    grey_rgb = np.repeat(values[..., None], 3, axis=-1)
    for mask in (
        tmp_path / "palette.png",
        (tmp_path / "palette.png").read_bytes(),
        tmp_path / "sixteen.tif",
        Image.fromarray(grey_rgb),
        torch.from_numpy(values.astype(np.int64)),
        values.astype(np.float32),  # integral floats are class indices
    ):
        labels = run(image, segmentation_maps=mask, return_tensors="pt")["labels"][0].numpy()
        np.testing.assert_array_equal(labels, expected)
    one_bit = Image.fromarray(values > 0).convert("1")
    labels = processor()(image, segmentation_maps=one_bit, return_tensors="pt")["labels"][0].numpy()
    np.testing.assert_array_equal(labels, hand_nearest(values > 0, 32, 32))


def test_label_mapping_reaches_the_ignore_index_and_round_trips(tmp_path):
    mask = np.array([[0, 128], [255, 0]], dtype=np.uint8).repeat(8, 0).repeat(8, 1)  # 16x16 blocks of 8
    image = np.random.default_rng(5).random((16, 16))
    run = processor(label_mapping={0: 0, 128: 1, 255: 255}, size={"height": 16, "width": 16})
    labels = run(image, segmentation_maps=mask, return_tensors="pt")["labels"][0].numpy()
    np.testing.assert_array_equal(labels, np.array([[0, 1], [255, 0]]).repeat(8, 0).repeat(8, 1))
    run.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["label_mapping"] == {"0": 0, "128": 1, "255": 255}
    again = DIAMANTImageProcessor.from_pretrained(tmp_path)
    assert again.label_mapping == {0: 0, 128: 1, 255: 255}
    assert torch.equal(again(image, segmentation_maps=mask, return_tensors="pt")["labels"][0], torch.from_numpy(labels))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(label_mapping={0: 0, 255: 1}, mask_binarize_threshold=128), "give one rule"),
        (dict(label_mapping={0: 0, 255: 7}), r"maps to \[7\].*neither classes 0..1 nor the ignore index 255"),
        (dict(label_mapping={"a": 1}), "integer mask values to integer classes"),
        (dict(ignore_index=1), "ignore_index must be an integer outside the classes 0..1"),
        (dict(num_labels=1), "num_labels must be at least 2"),
        (dict(size={"height": 30, "width": 32}), r"size 30x32 is not divisible by size_divisor 8"),
        (dict(mask_binarize_threshold=float("nan")), "mask_binarize_threshold must be None or a number"),
    ],
)
def test_bad_processor_fields_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        processor(**kwargs)


def test_bad_masks_and_pairs_are_one_line_errors(tmp_path):
    image = np.random.default_rng(6).random((40, 24))
    mask = blob_mask(values=(0, 1))
    run = processor()
    colour = np.stack([mask, mask, 1 - mask], axis=-1).astype(np.uint8)
    dicom_path = get_testdata_file("CT_small.dcm")
    cases = [
        (image, mask[:, :20], r"image 0 is 40x24 but its mask is 40x20.*same height and width"),
        ([image, image], mask, r"2 image\(s\) but 1 segmentation map\(s\)"),
        (image, mask * 255, r"values \[255\]"),
        (image, mask.astype(np.float32) * 0.5, r"values \[0.5\] outside"),
        (image, colour, r"colour channels that differ.*convert\('L'\)"),
        (image, dicom_path, r"DICOM masks .* are not read: export the mask as a PNG"),
        (image, np.zeros((40, 24, 5)), r"a mask is 2-D"),
    ]
    for images, masks, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            run(images, segmentation_maps=masks)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"label_mapping .* does not map: add them"):
        processor(label_mapping={0: 0})(image, segmentation_maps=mask)
    with pytest.raises(FileNotFoundError, match="No such file"):
        run(image, segmentation_maps=str(tmp_path / "missing.png"))


def test_without_resizing_sides_must_be_multiples_and_labels_stay_untouched():
    image = np.random.default_rng(7).random((48, 32))
    mask = np.random.default_rng(8).integers(0, 2, (48, 32))
    out = processor(do_resize=False)(image, segmentation_maps=mask, return_tensors="pt")
    assert out["pixel_values"].shape == (1, 3, 48, 32)
    np.testing.assert_array_equal(out["labels"][0].numpy(), mask)
    with pytest.raises(ValueError, match=r"50x32 but the model needs .* divisible by 8.*do_resize=True, or crop to 48x32 or pad to 56x32"):
        processor(do_resize=False)(np.random.default_rng(9).random((50, 32)))


def test_batches_of_images_and_masks():
    rng = np.random.default_rng(10)
    imgs = [rng.random((40, 24)), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)]
    masks = [blob_mask(40, 24, values=(0, 1)), blob_mask(20, 30, values=(0, 1))]
    out = processor()(imgs, segmentation_maps=masks, return_tensors="pt")
    assert out["pixel_values"].shape == (2, 3, 32, 32) and out["labels"].shape == (2, 32, 32)
    for index, mask in enumerate(masks):
        np.testing.assert_array_equal(out["labels"][index].numpy(), hand_nearest(mask, 32, 32))


# --- post-processing ---------------------------------------------------------------------------------------


def test_post_process_semantic_segmentation_resizes_logits_bilinearly_then_argmaxes():
    ramp = torch.arange(4, dtype=torch.float32) - 1.5  # class 1 wins where the ramp is positive
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1] = ramp.expand(4, 4)
    run = processor()
    (native,) = run.post_process_semantic_segmentation({"logits": logits})
    assert torch.equal(native, (ramp > 0).long().expand(4, 4))
    (resized,) = run.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(8, 6)])
    # bilinear, half-pixel centres: output column j samples x = (j + 0.5) * 4 / 6 - 0.5, where the ramp is x - 1.5
    expected_columns = [int((j + 0.5) * 4 / 6 - 0.5 - 1.5 > 0) for j in range(6)]
    assert expected_columns == [0, 0, 0, 1, 1, 1]
    assert resized.shape == (8, 6) and torch.equal(resized, torch.tensor(expected_columns).expand(8, 6))
    with pytest.raises(ValueError, match=r"2 target size\(s\) for 1 image\(s\)"):
        run.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(8, 6), (8, 6)])


def test_input_contract_names_the_label_rule():
    contract = processor(mask_binarize_threshold=128).input_contract()
    assert contract["spatial_shape"] == [32, 32]
    assert contract["labels"] == {
        "num_labels": 2,
        "ignore_index": 255,
        "mask_binarize_threshold": 128,
        "label_mapping": None,
    }
    assert contract["normalization"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
