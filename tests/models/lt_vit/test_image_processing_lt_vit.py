"""Tests of the LT-ViT image processor (chest radiograph -> grey in [0, 1] -> 3-channel pixel_values) and of
its attention overlays.

Expected values are computed here by hand: min-max and divide-by-255 written out, the DICOM LINEAR window
formula (PS3.3 C.11.2.1.2.1) written out, MONOCHROME1 inversion as `1 - x`, never by calling the code under
test. The small chest-X-ray DICOMs are built in the test with pydicom. The module is loaded from its file
path on purpose: it is copied flat to the Hub, so it must import without the rest of `hfmed`.
"""

import ast
import importlib.util
import io
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataelem import DataElement  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402
from torchvision.transforms.v2 import functional as tvF  # noqa: E402

MODULE_PATH = (
    Path(__file__).resolve().parents[3] / "hfmed" / "models" / "lt_vit" / "image_processing_lt_vit.py"
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def _load_module(name):
    spec = importlib.util.spec_from_file_location(name, MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ips = _load_module("lt_vit_image_processing_under_test")
LTViTImageProcessor = ips.LTViTImageProcessor


def hand_pixel_values(grey_or_chw, size=(32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD):
    image = np.asarray(grey_or_chw, dtype=np.float32)
    if image.ndim == 2:
        image = np.stack([image] * 3)
    resized = tvF.resize(
        torch.from_numpy(np.ascontiguousarray(image)),
        list(size),
        interpolation=tvF.InterpolationMode.BILINEAR,
        antialias=True,
    )
    return (resized - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def hand_min_max(values):
    values = np.asarray(values, dtype=np.float64)
    return (values - values.min()) / (values.max() - values.min())


def hand_linear_window(x, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR), output scaled to [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    inside = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.where(x <= low, 0.0, np.where(x > high, 1.0, inside))


def cxr_pixels(seed=0, shape=(24, 20)):
    # 12-bit stored values, like a DX detector: dark lungs, brighter mediastinum, a bright "bone" stripe.
    rng = np.random.default_rng(seed)
    pixels = rng.integers(300, 3800, size=shape).astype(np.uint16)
    pixels[:, 2] = 4095
    pixels[0, 0] = 0
    return pixels


def make_cxr(pixels, photometric="MONOCHROME2", window=None, modality="DX", rescale=None, voi_lut=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if modality is not None:
        ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if voi_lut is not None:
        first, table = voi_lut
        item = Dataset()
        item.add(DataElement(0x00283002, "US", [len(table), first, 16]))  # LUT Descriptor
        item.add(DataElement(0x00283006, "US", [int(v) for v in table]))  # LUT Data
        ds.VOILUTSequence = [item]
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def save(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def processor32():
    return LTViTImageProcessor(size={"height": 32, "width": 32})


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)


# --- defaults ------------------------------------------------------------------------------------


def test_defaults_and_input_contract():
    processor = LTViTImageProcessor()
    assert processor.allowed_modalities == ["CR", "DX", "DR"]
    assert processor.max_image_pixels == 4096 * 4096
    assert (processor.size.height, processor.size.width) == (224, 224)
    assert processor.do_rescale is False and processor.do_normalize is True and processor.do_resize is True
    assert tuple(processor.image_mean) == IMAGENET_MEAN and tuple(processor.image_std) == IMAGENET_STD
    contract = processor.input_contract()
    assert contract["modality"] == "CR/DX" and contract["format"] == "grayscale radiograph"
    assert contract["num_channels"] == 3 and contract["spatial_shape"] == [224, 224]
    assert contract["normalization"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert contract["accepted_modalities"] == ["CR", "DX", "DR"]


# --- PNG / PIL / arrays ----------------------------------------------------------------------------


def test_8bit_grey_png_divided_by_255(tmp_path, processor32):
    grey = np.random.default_rng(1).integers(0, 256, size=(40, 36), dtype=np.uint8)
    path = tmp_path / "cxr8.png"
    Image.fromarray(grey).save(path)
    expected = hand_pixel_values(grey / 255.0)
    for item in (path, str(path), path.read_bytes(), Image.open(path)):
        pixel_values = processor32(item, return_tensors="pt").pixel_values
        assert pixel_values.shape == (1, 3, 32, 32)
        torch.testing.assert_close(pixel_values[0], expected, rtol=0, atol=1e-5)
    (decoded,) = processor32.decode(path)
    np.testing.assert_allclose(decoded, np.stack([grey / 255.0] * 3), atol=1e-7)


def test_16bit_grey_png_min_max_scaled(tmp_path, processor32):
    grey = np.random.default_rng(2).integers(1000, 3000, size=(30, 34)).astype(np.uint16)  # 12-bit values
    path = tmp_path / "cxr16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode == "I;16"
    (decoded,) = processor32.decode(path)
    np.testing.assert_allclose(decoded[1], hand_min_max(grey), atol=1e-6)
    assert decoded.min() == 0.0 and decoded.max() == 1.0
    torch.testing.assert_close(
        processor32(path.read_bytes(), return_tensors="pt").pixel_values[0],
        hand_pixel_values(hand_min_max(grey)),
        rtol=0,
        atol=1e-5,
    )
    wide = Image.fromarray(grey.astype(np.int32))  # PIL mode 'I'
    assert wide.mode == "I"
    np.testing.assert_allclose(processor32.decode(wide)[0][0], hand_min_max(grey), atol=1e-6)


def test_grey_resized_once_equals_three_channel_resize(processor32):
    # a grey image is resized as one channel and expanded: the numbers equal the same picture given as RGB
    grey = np.random.default_rng(7).integers(0, 256, size=(70, 50), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    from_grey = processor32(Image.fromarray(grey), return_tensors="pt").pixel_values
    from_rgb = processor32(rgb, return_tensors="pt").pixel_values
    assert from_grey.is_contiguous() and from_grey.shape == (1, 3, 32, 32)
    torch.testing.assert_close(from_grey, from_rgb, rtol=0, atol=0)
    grouped = processor32([Image.fromarray(grey)] * 2, disable_grouping=False, return_tensors="pt").pixel_values
    torch.testing.assert_close(grouped, from_rgb.expand(2, -1, -1, -1), rtol=0, atol=0)


@pytest.mark.parametrize(
    "values",
    [
        np.arange(0, 65536, dtype=np.uint16),  # every 16-bit value, full range
        np.arange(1000, 4096, dtype=np.uint16),  # a 12-bit range inside a 16-bit container
        np.arange(-1024, 3072, dtype=np.int16),
        np.array([-(2**24), 0, 2**24 - 1, 12345], dtype=np.int32),
        np.array([-(2**30), 7, 2**30], dtype=np.int32),  # too wide for float32: the float64 route
    ],
)
def test_integer_min_max_equals_float64_math_rounded_once(values):
    expected = hand_min_max(values).astype(np.float32)
    got = ips.min_max(values)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(ips.min_max(np.full(5, 9, dtype=np.uint16)), np.zeros(5, dtype=np.float32))


def test_rgb_used_as_is(tmp_path, processor32):
    rgb = np.random.default_rng(3).integers(0, 256, size=(20, 28, 3), dtype=np.uint8)
    path = tmp_path / "rgb.jpg.png"
    Image.fromarray(rgb).save(path)
    expected = rgb.transpose(2, 0, 1) / 255.0
    for item in (path, Image.fromarray(rgb), rgb):
        (decoded,) = processor32.decode(item)
        np.testing.assert_allclose(decoded, expected, atol=1e-7)
        pixel_values = processor32(images=item, return_tensors="pt").pixel_values
        torch.testing.assert_close(pixel_values[0], hand_pixel_values(expected), rtol=0, atol=1e-5)


def test_numpy_and_tensor_rules(processor32):
    rng = np.random.default_rng(4)
    unit = rng.random((16, 12)).astype(np.float32)  # float already in [0, 1]: used as is
    np.testing.assert_allclose(processor32.decode(unit)[0][0], unit, atol=0)
    raw = rng.normal(500.0, 200.0, size=(16, 12))  # float outside [0, 1]: min-max
    np.testing.assert_allclose(processor32.decode(raw)[0][2], hand_min_max(raw), atol=1e-6)
    counts = rng.integers(-50, 4000, size=(16, 12)).astype(np.int16)  # any integer dtype: min-max
    np.testing.assert_allclose(processor32.decode(counts)[0][0], hand_min_max(counts), atol=1e-6)
    grey8 = rng.integers(10, 200, size=(16, 12), dtype=np.uint8)  # 2-D uint8 too (documented)
    np.testing.assert_allclose(processor32.decode(grey8)[0][0], hand_min_max(grey8), atol=1e-6)
    np.testing.assert_array_equal(processor32.decode(np.full((5, 5), 7, dtype=np.uint16))[0], 0.0)
    from_tensor = processor32(torch.from_numpy(counts), return_tensors="pt").pixel_values
    torch.testing.assert_close(from_tensor[0], hand_pixel_values(hand_min_max(counts)), rtol=0, atol=1e-5)


def test_mixed_batch_and_pipeline_style_call(processor32):
    grey = np.random.default_rng(5).integers(0, 256, size=(20, 20), dtype=np.uint8)
    ds = make_cxr(cxr_pixels())
    batch = [Image.fromarray(grey), ds, np.stack([grey] * 3, axis=-1)]
    pixel_values = processor32(batch, return_tensors="pt").pixel_values
    assert pixel_values.shape == (3, 3, 32, 32)
    torch.testing.assert_close(pixel_values[0], pixel_values[2], rtol=0, atol=1e-6)
    image = Image.fromarray(np.random.default_rng(6).integers(0, 256, (300, 260, 3), dtype=np.uint8))
    assert LTViTImageProcessor()(images=image, return_tensors="pt").pixel_values.shape == (1, 3, 224, 224)


# --- DICOM ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_without_window_is_min_max_and_monochrome1_inverted(tmp_path, processor32, photometric):
    pixels = cxr_pixels()
    ds = make_cxr(pixels, photometric)
    expected = hand_min_max(pixels)
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected  # MONOCHROME1 stores white as the minimum
    path = save(ds, tmp_path / "cxr.dcm")
    for item in (ds, path, str(path), path.read_bytes(), pydicom.dcmread(path)):
        (decoded,) = processor32.decode(item)
        assert decoded.shape == (3, 24, 20)
        np.testing.assert_allclose(decoded[0], expected, atol=1e-6)
    pixel_values = processor32(path, return_tensors="pt").pixel_values
    torch.testing.assert_close(pixel_values[0], hand_pixel_values(expected), rtol=0, atol=1e-5)


def test_monochrome1_makes_low_stored_values_bright(processor32):
    pixels = np.array([[0, 1000, 4095]], dtype=np.uint16)
    (mono1,) = processor32.decode(make_cxr(pixels, "MONOCHROME1"))
    (mono2,) = processor32.decode(make_cxr(pixels, "MONOCHROME2"))
    np.testing.assert_allclose(mono1[0, 0], [1.0, 1 - 1000 / 4095, 0.0], atol=1e-6)
    np.testing.assert_allclose(mono2[0, 0], [0.0, 1000 / 4095, 1.0], atol=1e-6)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_window_follows_the_dicom_formula(tmp_path, processor32, photometric):
    pixels = cxr_pixels(7)
    center, width = 2000.0, 1500.0
    ds = make_cxr(pixels, photometric, window=(center, width))
    expected = hand_linear_window(pixels, center, width)
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected
    assert (expected == 0).any() and (expected == 1).any() and ((expected > 0) & (expected < 1)).any()
    (decoded,) = processor32.decode(save(ds, tmp_path / "w.dcm"))
    np.testing.assert_allclose(decoded[2], expected, atol=1e-6)


def test_dicom_window_applies_after_rescale(processor32):
    pixels = cxr_pixels(8)
    slope, intercept, center, width = 2.0, -1000.0, 3000.0, 4000.0
    (decoded,) = processor32.decode(make_cxr(pixels, window=(center, width), rescale=(slope, intercept)))
    expected = hand_linear_window(pixels.astype(np.float64) * slope + intercept, center, width)
    np.testing.assert_allclose(decoded[0], expected, atol=1e-6)


def test_dicom_voi_lut_sequence_is_used_and_scaled_by_its_range(processor32):
    pixels = np.array([[0, 1, 2, 3], [4, 5, 6, 100]], dtype=np.uint16)
    table = [100, 100, 400, 700, 1000, 1300, 1600]  # first mapped value 0; 100 is past the end: last entry
    (decoded,) = processor32.decode(make_cxr(pixels, window=(1, 2), voi_lut=(0, table)))  # the LUT wins
    looked_up = np.array(table)[np.clip(pixels, 0, len(table) - 1)]
    np.testing.assert_allclose(decoded[0], (looked_up - 100) / (1600 - 100), atol=1e-6)


def test_dicom_modalities(tmp_path, processor32):
    pixels = cxr_pixels()
    for modality in ("CR", "DX", "DR"):
        processor32.decode(make_cxr(pixels, modality=modality))
    message = r"DICOM Modality 'MR' is not in allowed_modalities \['CR', 'DX', 'DR'\]"
    with pytest.raises(ValueError, match=message) as excinfo:
        processor32(get_testdata_file("MR_small.dcm"))
    _one_line(excinfo)
    with pytest.raises(ValueError, match=r"Modality 'CT'"):
        processor32(get_testdata_file("CT_small.dcm"))
    # Allowed explicitly, MR_small decodes through its own window (center 600, width 1600, signed 16-bit).
    (mr,) = processor32.decode(get_testdata_file("MR_small.dcm"), allowed_modalities=["MR"])
    raw = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    np.testing.assert_allclose(mr[0], hand_linear_window(raw, 600.0, 1600.0), atol=1e-6)
    with pytest.warns(UserWarning, match="no Modality tag"):
        processor32.decode(make_cxr(pixels, modality=None))


def test_dicom_bad_inputs(tmp_path, processor32):
    ds = make_cxr(cxr_pixels())
    del ds.PixelData
    with pytest.raises(ValueError, match=r"no PixelData tag.*pass an image DICOM") as excinfo:
        processor32(ds)
    _one_line(excinfo)
    with pytest.raises(ValueError, match=r"3 samples per pixel \(a colour image\)"):
        processor32(get_testdata_file("SC_rgb_small_odd.dcm"), allowed_modalities=["OT"])
    with pytest.raises(ValueError, match=r"has 15 frames"):
        processor32(get_testdata_file("rtdose.dcm"), allowed_modalities=["RTDOSE"])
    huge = make_cxr(cxr_pixels())
    huge.Rows, huge.Columns = 60000, 60000
    with pytest.raises(ValueError, match=r"60000x60000 = 3,600,000,000 pixels, more than max_image_pixels"):
        processor32(huge)
    broken = make_cxr(cxr_pixels())
    broken.PixelData = b"\x00" * 16
    with pytest.raises(ValueError, match=r"pixel data could not be decoded") as excinfo:
        processor32(broken)
    _one_line(excinfo)


# --- bad inputs ----------------------------------------------------------------------------------


def test_empty_unreadable_and_missing_files(tmp_path, processor32):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)") as excinfo:
        processor32(empty)
    _one_line(excinfo)
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)"):
        processor32(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n" * 20)
    with pytest.raises(ValueError, match=r"not a DICOM file \(no 'DICM' marker\) nor an image PIL can read"):
        processor32(text)
    with pytest.raises(ValueError, match=r"not a DICOM file"):
        processor32(text.read_bytes())
    with pytest.raises(FileNotFoundError, match="No such file"):
        processor32(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="is a URL"):
        processor32("https://example.org/cxr.png")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_refused(processor32, bad):
    image = np.zeros((8, 8), dtype=np.float32)
    image[2, 3] = bad
    with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\)") as excinfo:
        processor32(image)
    _one_line(excinfo)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros(10),
        np.zeros((1, 8, 8, 3), dtype=np.uint8),
        np.zeros((8, 8, 3), dtype=np.float32),
        np.zeros((8, 8, 4), dtype=np.uint8),
        np.zeros((3, 8, 8), dtype=np.uint8),
    ],
    ids=["1d", "4d", "float-hwc", "rgba", "chw"],
)
def test_wrong_rank_refused(processor32, array):
    with pytest.raises(
        ValueError, match=r"neither a 2-D grey image nor an \(H, W, 3\) uint8 RGB image"
    ) as excinfo:
        processor32(array)
    _one_line(excinfo)


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "1"])
def test_other_pil_modes_refused(processor32, mode):
    with pytest.raises(ValueError, match=rf"PIL mode '{mode}'.*convert it first"):
        processor32(Image.new(mode, (8, 8)))


def test_unsupported_types_and_sizes(processor32):
    for item in (3.14, None, {"a": 1}):
        with pytest.raises(TypeError, match="Unsupported input type"):
            processor32(item)
    with pytest.raises(TypeError, match="not a real number type"):
        processor32(np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="No images given"):
        processor32([])
    small = LTViTImageProcessor(max_image_pixels=100)
    for item in (np.zeros((11, 10)), Image.new("L", (20, 10)), make_cxr(cxr_pixels())):
        with pytest.raises(ValueError, match=r"more than max_image_pixels=100: downscale it first"):
            small(item)
    assert small.decode(np.zeros((10, 10)))[0].shape == (3, 10, 10)


def test_bad_settings_refused():
    with pytest.raises(ValueError, match="allowed_modalities must be a non-empty list"):
        LTViTImageProcessor(allowed_modalities="DX")
    with pytest.raises(ValueError, match="max_image_pixels must be a positive int"):
        LTViTImageProcessor(max_image_pixels=0)
    with pytest.raises(ValueError, match="image_mean has 1 values but pixel_values have 3 channels"):
        LTViTImageProcessor(image_mean=[0.5], image_std=[0.5])


# --- serialisation -------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    settings = {
        "allowed_modalities": ["CR", "DX"],
        "max_image_pixels": 1234567,
        "size": {"height": 40, "width": 48},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.25, 0.25],
    }
    processor = LTViTImageProcessor(**settings)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    for key in ("allowed_modalities", "max_image_pixels", "image_mean", "image_std"):
        assert saved[key] == settings[key]
    assert saved["do_rescale"] is False and saved["size"] == settings["size"]
    loaded = LTViTImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    pixels = cxr_pixels()
    after = loaded(make_cxr(pixels), return_tensors="pt").pixel_values
    assert after.shape == (1, 3, 40, 48)
    expected = hand_pixel_values(
        hand_min_max(pixels), (40, 48), mean=settings["image_mean"], std=settings["image_std"]
    )
    torch.testing.assert_close(after[0], expected, rtol=0, atol=1e-5)


def test_module_imports_without_pydicom(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)
    module = _load_module("lt_vit_image_processing_without_pydicom")
    (decoded,) = module.LTViTImageProcessor().decode(np.array([[0.0, 0.5]]))
    np.testing.assert_allclose(decoded[0], [[0.0, 0.5]])
    imports = [
        node
        for node in ast.walk(ast.parse(MODULE_PATH.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    names = [alias.name for node in imports if isinstance(node, ast.Import) for alias in node.names]
    names += [node.module or "" for node in imports if isinstance(node, ast.ImportFrom)]
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in imports)
    assert not any(name.split(".")[0] == "hfmed" for name in names)


# --- attention overlays --------------------------------------------------------------------------


def test_label_attention_overlays_sizes_and_hot_spot(processor32):
    height, width = 48, 64  # cells of 12 x 16 pixels on a 4 x 4 grid
    maps = torch.full((2, 3, 4, 4), 0.01)
    peaks = [[(1, 2), (3, 0), (0, 3)], [(2, 2), (0, 0), (3, 3)]]
    for b, row in enumerate(peaks):
        for label, (i, j) in enumerate(row):
            maps[b, label, i, j] = 1.0
    images = [np.full((height, width), 0.5), Image.fromarray(np.full((height, width), 128, dtype=np.uint8))]
    overlays = processor32.label_attention_overlays(images, maps)
    assert len(overlays) == 2 and all(len(row) == 3 for row in overlays)
    for b, row in enumerate(overlays):
        for label, overlay in enumerate(row):
            assert overlay.mode == "RGB" and overlay.size == (width, height)
            rgb = np.asarray(overlay).astype(np.int64)
            hot = rgb[..., 0] - rgb[..., 1] - rgb[..., 2]  # red, neither green nor blue
            y, x = np.unravel_index(np.argmax(hot), hot.shape)
            i, j = peaks[b][label]
            assert 12 * i <= y < 12 * (i + 1) and 16 * j <= x < 16 * (j + 1), (b, label, y, x)
    plain = processor32.label_attention_overlays(images[0], maps[:1], alpha=0.0)[0][0]
    assert np.all(np.asarray(plain) == 128)  # alpha 0: the grey image alone
    single = processor32.label_attention_overlays(images[0], maps[0].numpy())
    assert len(single) == 1 and len(single[0]) == 3


def test_label_attention_overlays_bad_arguments(processor32):
    with pytest.raises(
        ValueError, match=r"label_attentions has shape \(2, 3, 4, 4\) but 1 image\(s\) were given"
    ):
        processor32.label_attention_overlays(np.zeros((8, 8)), torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        processor32.label_attention_overlays(np.zeros((8, 8)), torch.rand(1, 3, 4, 4), alpha=1.5)


def test_colour_ramp_ends():
    np.testing.assert_allclose(ips.colorize(np.array([0.0, 0.5, 1.0])), [[0, 0, 1], [0, 1, 0], [1, 0, 0]])


def test_bytes_io_not_needed_for_dataset_in_memory(processor32):
    # A Dataset written to bytes and read back equals the in-memory one.
    ds = make_cxr(cxr_pixels(9), "MONOCHROME1", window=(2000.0, 3000.0))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    np.testing.assert_array_equal(processor32.decode(buffer.getvalue())[0], processor32.decode(ds)[0])


# --- threads -------------------------------------------------------------------------------------


def test_threads_give_the_one_by_one_results_in_order(tmp_path, processor32):
    rng = np.random.default_rng(11)
    paths = []
    for index in range(4):
        path = tmp_path / f"cxr{index}.png"
        Image.fromarray(rng.integers(0, 65535, size=(40 + index, 36), dtype=np.uint16)).save(path)
        paths.append(path)
    rgb = tmp_path / "rgb.jpg"
    Image.fromarray(rng.integers(0, 256, size=(30, 30, 3), dtype=np.uint8)).save(rgb)
    dicom = save(make_cxr(cxr_pixels(3)), tmp_path / "cxr.dcm")
    buffer = io.BytesIO()
    make_cxr(cxr_pixels(4), "MONOCHROME1").save_as(buffer, enforce_file_format=True)
    inputs = [paths[0], str(paths[1]), dicom, paths[2].read_bytes(), buffer.getvalue(), rgb, paths[3],
              np.asarray(Image.open(paths[0]))]
    assert [ips._decodes_with_pil(item) for item in inputs] == [True, True, False, True, False, True, True, False]
    one_by_one = processor32(inputs, return_tensors="pt", num_threads=1).pixel_values
    singles = torch.cat([processor32(item, return_tensors="pt").pixel_values for item in inputs])
    torch.testing.assert_close(one_by_one, singles, rtol=0, atol=0)
    for threads in (2, 8, None):
        out = processor32(inputs, return_tensors="pt", num_threads=threads).pixel_values
        torch.testing.assert_close(out, one_by_one, rtol=0, atol=0)
    decoded = LTViTImageProcessor(num_threads=3).decode(inputs)
    for got, want in zip(decoded, processor32.decode(inputs, num_threads=1), strict=True):
        np.testing.assert_array_equal(got, want)


def test_threads_raise_the_first_error_in_input_order(tmp_path, processor32):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(12).integers(0, 256, (20, 20), dtype=np.uint8)).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not an image\n" * 20)
    nan = np.zeros((8, 8), dtype=np.float32)
    nan[1, 1] = np.nan
    with pytest.raises(ValueError, match="notes.png"):
        processor32([good, text, nan, good], num_threads=4)
    with pytest.raises(ValueError, match="NaN"):
        processor32([good, nan, text, good], num_threads=4)
    with pytest.raises(FileNotFoundError, match="No such file"):
        processor32([good, tmp_path / "missing.png", text], num_threads=4)


def test_bad_num_threads_refused(processor32):
    for value in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="num_threads must be a positive int") as excinfo:
            LTViTImageProcessor(num_threads=value)
        _one_line(excinfo)
    with pytest.raises(ValueError, match="num_threads"):
        processor32(np.zeros((8, 8)), num_threads=0)
    with pytest.raises(ValueError, match="num_threads"):
        processor32.decode(np.zeros((8, 8)), num_threads=0)
