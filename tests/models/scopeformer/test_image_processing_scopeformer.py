"""Tests of the Scopeformer image processor (CT -> Hounsfield windows -> pixel_values).

Expected values are computed here by hand from pydicom's raw `pixel_array`, the rescale tags and the
window formula written out below, never by calling the code under test. The module is loaded from its
file path on purpose: it is copied flat to the Hub, so it must import without the rest of `hfmed`.
"""

import importlib.util
import io
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from torchvision.transforms.v2 import functional as tvF  # noqa: E402

MODULE_PATH = (
    Path(__file__).resolve().parents[3]
    / "hfmed"
    / "models"
    / "scopeformer"
    / "image_processing_scopeformer.py"
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_WINDOWS = [(40, 80), (80, 200), (600, 2800)]


def _load_module(name):
    spec = importlib.util.spec_from_file_location(name, MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ips = _load_module("scopeformer_image_processing_under_test")
ScopeformerImageProcessor = ips.ScopeformerImageProcessor

CT_PATH = get_testdata_file("CT_small.dcm")
MR_PATH = get_testdata_file("MR_small.dcm")


def hand_hu(dataset):
    return dataset.pixel_array.astype(np.float64) * float(dataset.RescaleSlope) + float(
        dataset.RescaleIntercept
    )


def hand_window(hu, level, width):
    lower = level - width / 2.0
    return np.clip((np.asarray(hu, dtype=np.float64) - lower) / width, 0.0, 1.0)


def hand_windows(hu, windows=DEFAULT_WINDOWS):
    return np.stack([hand_window(hu, level, width) for level, width in windows]).astype(np.float32)


def hand_pixel_values(image_chw, size, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    resized = tvF.resize(
        torch.from_numpy(np.ascontiguousarray(image_chw, dtype=np.float32)),
        list(size),
        interpolation=tvF.InterpolationMode.BILINEAR,
        antialias=True,
    )
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (resized - mean_t) / std_t


@pytest.fixture(scope="module")
def ct_dataset():
    return pydicom.dcmread(CT_PATH)


@pytest.fixture(scope="module")
def ct_windows(ct_dataset):
    return hand_windows(hand_hu(ct_dataset))


@pytest.fixture
def processor32():
    return ScopeformerImageProcessor(size={"height": 32, "width": 32})


def _rgb(seed=0, shape=(40, 52, 3)):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# --- Hounsfield units and windows ---------------------------------------------------------------


def test_defaults():
    processor = ScopeformerImageProcessor()
    assert processor.windows == [[40, 80], [80, 200], [600, 2800]]
    assert processor.window_names == ["brain", "subdural", "bone"]
    assert processor.allowed_modalities == ["CT"]
    assert processor.max_image_pixels == 4096 * 4096
    assert (processor.size.height, processor.size.width) == (224, 224)
    assert processor.do_rescale is False and processor.do_normalize is True and processor.do_resize is True
    assert tuple(processor.image_mean) == IMAGENET_MEAN and tuple(processor.image_std) == IMAGENET_STD


def test_hounsfield_units_ct_small(ct_dataset):
    hu = ips.hounsfield_units(ct_dataset)
    assert hu.dtype == np.float32 and hu.shape == (128, 128)
    assert hu.min() == -896 and hu.max() == 1167
    raw = ct_dataset.pixel_array.astype(np.float64)
    expected = raw * 1.0 + (-1024.0)  # CT_small: RescaleSlope 1, RescaleIntercept -1024
    assert float(ct_dataset.RescaleSlope) == 1.0 and float(ct_dataset.RescaleIntercept) == -1024.0
    np.testing.assert_array_equal(hu, expected.astype(np.float32))


def test_window_channels_match_hand_computation(processor32, ct_dataset, ct_windows):
    (windowed,) = processor32.window(CT_PATH)
    assert windowed.dtype == np.float32 and windowed.shape == (3, 128, 128)
    hu = hand_hu(ct_dataset)
    for channel, (level, width) in enumerate(DEFAULT_WINDOWS):
        np.testing.assert_allclose(windowed[channel], hand_window(hu, level, width), rtol=0, atol=1e-6)
        below, above = hu <= level - width / 2, hu >= level + width / 2
        assert below.any(), "CT_small has air, below every window"
        assert np.all(windowed[channel][below] == 0.0)
        assert np.all(windowed[channel][above] == 1.0)
        inside = ~below & ~above
        assert np.all((windowed[channel][inside] > 0) & (windowed[channel][inside] < 1))
    # CT_small reaches 1167 HU: above the brain and subdural windows, inside the bone window (-800..2000).
    assert (hu >= 80).any() and (hu >= 180).any()


def test_apply_windows_spot_values():
    hu = np.array([[-1000, 0, 20, 40, 80, 600, 2000, 3000]], dtype=np.int16)
    out = ips.apply_windows(hu, [[40, 80], [80, 200], [600, 2800]])
    assert out.dtype == np.float32 and out.shape == (3, 1, 8)
    # brain: 0..80 HU; subdural: -20..180 HU; bone: -800..2000 HU.
    np.testing.assert_allclose(out[0, 0], [0, 0, 0.25, 0.5, 1, 1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(out[1, 0], [0, 0.1, 0.2, 0.3, 0.5, 1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(
        out[2, 0], [0, 800 / 2800, 820 / 2800, 840 / 2800, 880 / 2800, 0.5, 1, 1], atol=1e-7
    )


def test_call_time_windows_override(processor32, ct_dataset):
    windows = [[0, 100], [-500, 1000], [1000, 10]]
    (windowed,) = processor32.window(CT_PATH, windows=windows)
    np.testing.assert_allclose(windowed, hand_windows(hand_hu(ct_dataset), windows), atol=1e-6)
    pixel_values = processor32(CT_PATH, windows=windows, return_tensors="pt").pixel_values
    expected = hand_pixel_values(hand_windows(hand_hu(ct_dataset), windows), (32, 32))
    torch.testing.assert_close(pixel_values[0], expected, rtol=0, atol=1e-5)


# --- Full call: resize + normalise -------------------------------------------------------------


def test_full_call_shape_dtype_and_normalisation(processor32, ct_windows):
    pixel_values = processor32(CT_PATH, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 32, 32) and pixel_values.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    unnormalised = pixel_values[0] * std + mean
    assert unnormalised.min() >= -1e-5 and unnormalised.max() <= 1 + 1e-5
    resized = tvF.resize(
        torch.from_numpy(ct_windows), [32, 32], interpolation=tvF.InterpolationMode.BILINEAR, antialias=True
    )
    torch.testing.assert_close(unnormalised, resized, rtol=0, atol=1e-5)
    # The resize really averages (antialias): a nearest-neighbour pick would differ.
    nearest = tvF.resize(torch.from_numpy(ct_windows), [32, 32], interpolation=tvF.InterpolationMode.NEAREST)
    assert (unnormalised - nearest).abs().max() > 1e-2


def test_default_size_is_224(ct_windows):
    pixel_values = ScopeformerImageProcessor()(CT_PATH, return_tensors="pt").pixel_values
    torch.testing.assert_close(pixel_values[0], hand_pixel_values(ct_windows, (224, 224)), rtol=0, atol=1e-5)


# --- Input kinds ----------------------------------------------------------------------------------


def test_path_bytes_and_dataset_give_the_same_result(processor32, ct_dataset):
    data = Path(CT_PATH).read_bytes()
    reference = processor32(CT_PATH, return_tensors="pt").pixel_values
    for item in (Path(CT_PATH), data, bytearray(data), ct_dataset, pydicom.dcmread(io.BytesIO(data))):
        torch.testing.assert_close(
            processor32(item, return_tensors="pt").pixel_values, reference, rtol=0, atol=0
        )


def test_dcm_suffix_without_preamble_is_read(tmp_path, processor32, ct_windows):
    # Older exports omit the 128-byte preamble and 'DICM'; the .dcm suffix still marks them as DICOM.
    path = tmp_path / "no_preamble.dcm"
    path.write_bytes(Path(CT_PATH).read_bytes()[132:])
    (windowed,) = processor32.window(path)
    np.testing.assert_allclose(windowed, ct_windows, atol=1e-6)
    with pytest.raises(ValueError, match="not a DICOM file"):
        processor32.window(path.rename(tmp_path / "no_preamble.bin"))


def test_mixed_batch_stacks(processor32, ct_dataset, ct_windows):
    rgb = _rgb()
    batch = [CT_PATH, Path(CT_PATH).read_bytes(), ct_dataset, hand_hu(ct_dataset), Image.fromarray(rgb), rgb]
    pixel_values = processor32(batch, return_tensors="pt").pixel_values
    assert pixel_values.shape == (6, 3, 32, 32)
    expected_ct = hand_pixel_values(ct_windows, (32, 32))
    for row in range(4):
        torch.testing.assert_close(pixel_values[row], expected_ct, rtol=0, atol=1e-5)
    expected_rgb = hand_pixel_values(rgb.transpose(2, 0, 1) / 255.0, (32, 32))
    for row in (4, 5):
        torch.testing.assert_close(pixel_values[row], expected_rgb, rtol=0, atol=1e-5)
    assert len(processor32.window(batch)) == 6


def test_numpy_hu_matches_dicom_route(processor32, ct_dataset):
    from_path = processor32(CT_PATH, return_tensors="pt").pixel_values
    hu = hand_hu(ct_dataset)
    for array in (hu, hu.astype(np.int16), hu.astype(np.float32), hu.astype(np.int32)):
        torch.testing.assert_close(
            processor32(array, return_tensors="pt").pixel_values, from_path, rtol=0, atol=0
        )
    as_tensor = torch.from_numpy(hu.astype(np.int16))
    torch.testing.assert_close(
        processor32(as_tensor, return_tensors="pt").pixel_values, from_path, rtol=0, atol=0
    )


def test_rgb_image_and_uint8_array_used_as_is(processor32):
    rgb = _rgb(1)
    expected_window = rgb.transpose(2, 0, 1).astype(np.float32) / 255.0
    for item in (Image.fromarray(rgb, mode="RGB"), rgb):
        (windowed,) = processor32.window(item)
        np.testing.assert_allclose(windowed, expected_window, atol=1e-7)
        pixel_values = processor32(images=item, return_tensors="pt").pixel_values
        torch.testing.assert_close(
            pixel_values[0], hand_pixel_values(expected_window, (32, 32)), rtol=0, atol=1e-5
        )


def test_pipeline_style_call_with_rgb_pil():
    # transformers' image-classification pipeline calls processor(images=pil_rgb, return_tensors="pt").
    image = Image.fromarray(_rgb(2, (300, 260, 3)))
    pixel_values = ScopeformerImageProcessor()(images=image, return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 224, 224) and pixel_values.dtype == torch.float32


def test_grey_image_replicated_to_every_window(processor32):
    grey = _rgb(3, (30, 20, 3))[..., 0]
    (windowed,) = processor32.window(Image.fromarray(grey, mode="L"))
    assert windowed.shape == (3, 30, 20)
    for channel in range(3):
        np.testing.assert_allclose(windowed[channel], grey / 255.0, atol=1e-7)


def test_png_path_and_bytes(tmp_path, processor32):
    rgb = _rgb(4)
    path = tmp_path / "windowed.png"
    Image.fromarray(rgb).save(path)
    expected = rgb.transpose(2, 0, 1) / 255.0
    for item in (str(path), path, path.read_bytes()):
        (windowed,) = processor32.window(item)
        np.testing.assert_allclose(windowed, expected, atol=1e-7)


def test_mr_accepted_when_allowed(processor32):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MR has no rescale tags, but the missing-tag warning is for CT only
        (windowed,) = processor32.window(MR_PATH, allowed_modalities=["CT", "MR"])
    raw = pydicom.dcmread(MR_PATH).pixel_array.astype(np.float64)  # no rescale tags: slope 1, intercept 0
    np.testing.assert_allclose(windowed, hand_windows(raw), atol=1e-6)


def test_missing_rescale_tags_warn_and_default(processor32):
    dataset = pydicom.dcmread(CT_PATH)
    del dataset.RescaleSlope
    del dataset.RescaleIntercept
    with pytest.warns(UserWarning, match=r"RescaleSlope / RescaleIntercept.*slope 1 and intercept 0"):
        hu = ips.hounsfield_units(dataset)
    np.testing.assert_array_equal(hu, dataset.pixel_array.astype(np.float32))
    with pytest.warns(UserWarning, match="RescaleSlope"):
        (windowed,) = processor32.window(dataset)
    np.testing.assert_allclose(windowed, hand_windows(dataset.pixel_array.astype(np.float64)), atol=1e-6)


def test_only_missing_intercept_is_named():
    dataset = pydicom.dcmread(CT_PATH)
    dataset.RescaleSlope = 2
    del dataset.RescaleIntercept
    with pytest.warns(UserWarning, match=r"no RescaleIntercept tag") as record:
        hu = ips.hounsfield_units(dataset)
    assert not any("RescaleSlope /" in str(item.message) for item in record)
    np.testing.assert_array_equal(hu, (dataset.pixel_array.astype(np.float64) * 2).astype(np.float32))


# --- Bad inputs ---------------------------------------------------------------------------------


def _assert_one_line(excinfo):
    assert "\n" not in str(excinfo.value)


def test_empty_file_and_bytes(tmp_path, processor32):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)") as excinfo:
        processor32(str(path))
    _assert_one_line(excinfo)
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)"):
        processor32(b"")


def test_text_file_is_neither_dicom_nor_image(tmp_path, processor32):
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n" * 20)
    message = r"is not a DICOM file \(no 'DICM' marker\) nor an image PIL can read: pass"
    with pytest.raises(ValueError, match=message) as excinfo:
        processor32(path)
    _assert_one_line(excinfo)
    with pytest.raises(ValueError, match=message):
        processor32(path.read_bytes())


def test_nonexistent_path(tmp_path, processor32):
    with pytest.raises(FileNotFoundError, match="No such file"):
        processor32(str(tmp_path / "missing.dcm"))


def test_dicom_without_pixel_data(tmp_path, processor32):
    dataset = pydicom.dcmread(CT_PATH)
    del dataset.PixelData
    with pytest.raises(ValueError, match=r"no PixelData tag.*pass an image DICOM") as excinfo:
        processor32(dataset)
    _assert_one_line(excinfo)
    path = tmp_path / "header_only.dcm"
    dataset.save_as(path)
    with pytest.raises(ValueError, match=r"no PixelData tag"):
        processor32(path)


def test_mr_refused_by_default(processor32):
    message = r"DICOM Modality 'MR' is not in allowed_modalities \['CT'\]: Hounsfield windows only make sense for CT"
    with pytest.raises(ValueError, match=message) as excinfo:
        processor32(MR_PATH)
    _assert_one_line(excinfo)
    with pytest.raises(ValueError, match=r"Modality 'MR'"):
        ips.hounsfield_units(pydicom.dcmread(MR_PATH))


def test_multi_frame_and_colour_dicom_refused(processor32):
    with pytest.raises(ValueError, match=r"has 15 frames but one 2-D slice is expected"):
        processor32(get_testdata_file("rtdose.dcm"), allowed_modalities=["RTDOSE"])
    with pytest.raises(ValueError, match=r"3 samples per pixel \(a colour image\)"):
        processor32(get_testdata_file("SC_rgb_small_odd.dcm"), allowed_modalities=["OT"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_hu_refused(processor32, bad):
    hu = np.zeros((16, 16), dtype=np.float32)
    hu[3, 4] = bad
    with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\)") as excinfo:
        processor32(hu)
    _assert_one_line(excinfo)
    with pytest.raises(ValueError, match="NaN/inf"):
        processor32(torch.from_numpy(hu))


@pytest.mark.parametrize(
    "array",
    [
        np.zeros(10, dtype=np.float32),  # 1-D
        np.zeros((1, 3, 8, 8), dtype=np.float32),  # 4-D
        np.zeros((4, 8, 8), dtype=np.int16),  # a stack of HU slices
        np.zeros((8, 8, 3), dtype=np.float32),  # windowed, but not uint8
        np.zeros((8, 8, 4), dtype=np.uint8),  # RGBA-like
        np.zeros((3, 8, 8), dtype=np.uint8),  # channels first
    ],
    ids=["1d", "4d", "stack", "float-hwc", "uint8-4ch", "uint8-chw"],
)
def test_wrong_rank_or_layout_refused(processor32, array):
    message = r"pass a 2-D HU slice or an \(H, W, 3\) uint8 windowed image"
    with pytest.raises(ValueError, match=message) as excinfo:
        processor32(array)
    _assert_one_line(excinfo)


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "LA", "F"])
def test_other_pil_modes_refused(processor32, mode):
    image = Image.new(mode, (8, 8))
    with pytest.raises(ValueError, match=rf"PIL mode '{mode}'.*'L'.*'RGB'.*convert") as excinfo:
        processor32(image)
    _assert_one_line(excinfo)


def test_unsupported_types(processor32):
    for item in (3.14, {"hu": 1}, [[1.0, 2.0], [3.0, 4.0]], None):
        with pytest.raises(TypeError, match="Unsupported input type"):
            processor32(item)
    with pytest.raises(TypeError, match="not a real number type"):
        processor32(np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="No images given"):
        processor32([])


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ([[40, 0], [80, 200], [600, 2800]], r"windows\[0\].*width > 0"),
        ([[40, 80], [80, -200], [600, 2800]], r"windows\[1\].*width > 0"),
        ([[40, 80], [80, 200], [600]], r"windows\[2\] must be a \[level, width\] pair"),
        ([], r"windows must be a non-empty list"),
    ],
)
def test_bad_windows_refused(windows, message):
    with pytest.raises(ValueError, match=message) as excinfo:
        ScopeformerImageProcessor(windows=windows)
    _assert_one_line(excinfo)


def test_inconsistent_settings_refused(processor32):
    with pytest.raises(ValueError, match=r"window_names has 2 names but windows has 3"):
        ScopeformerImageProcessor(window_names=["brain", "bone"])
    with pytest.raises(ValueError, match=r"image_mean has 3 values but there are 2 windows"):
        ScopeformerImageProcessor(windows=[[40, 80], [600, 2800]], window_names=["brain", "bone"])
    with pytest.raises(ValueError, match=r"allowed_modalities must be a non-empty list"):
        ScopeformerImageProcessor(allowed_modalities=[])
    with pytest.raises(ValueError, match=r"windows\[0\].*width > 0"):
        processor32(CT_PATH, windows=[[40, 0], [80, 200], [600, 2800]])


def test_too_large_image_refused():
    processor = ScopeformerImageProcessor(max_image_pixels=100)
    message = r"more than max_image_pixels=100: downscale it first"
    for item in (CT_PATH, np.zeros((11, 10), dtype=np.int16), Image.new("L", (20, 10)), _rgb(5, (12, 9, 3))):
        with pytest.raises(ValueError, match=message) as excinfo:
            processor(item)
        _assert_one_line(excinfo)
    (windowed,) = processor.window(np.zeros((10, 10), dtype=np.int16))  # exactly at the limit is fine
    assert windowed.shape == (3, 10, 10)


def test_huge_dicom_header_refused_before_decoding():
    # The pixel data is far too short for the header: only a check of Rows x Columns, made before
    # decoding, can report the size instead of a decode failure.
    dataset = pydicom.dcmread(CT_PATH)
    dataset.Rows, dataset.Columns = 60000, 60000
    dataset.PixelData = b"\x00" * 16
    with pytest.raises(ValueError, match=r"60000x60000 = 3,600,000,000 pixels, more than max_image_pixels"):
        ips.hounsfield_units(dataset, max_image_pixels=4096 * 4096)
    with pytest.raises(ValueError, match=r"pixel data could not be decoded.*decompress") as excinfo:
        ips.hounsfield_units(dataset, max_image_pixels=10**10)
    _assert_one_line(excinfo)


# --- Serialisation and packaging ----------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    settings = {
        "windows": [[35, 90], [75, 215], [500, 2500]],
        "window_names": ["brain-ish", "subdural-ish", "bone-ish"],
        "allowed_modalities": ["CT", "OT"],
        "max_image_pixels": 1234567,
        "size": {"height": 40, "width": 48},
        "image_mean": [0.5, 0.4, 0.3],
        "image_std": [0.2, 0.25, 0.3],
    }
    processor = ScopeformerImageProcessor(**settings)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["windows"] == settings["windows"]
    assert saved["window_names"] == settings["window_names"]
    assert saved["allowed_modalities"] == settings["allowed_modalities"]
    assert saved["max_image_pixels"] == settings["max_image_pixels"]
    assert saved["do_rescale"] is False

    loaded = ScopeformerImageProcessor.from_pretrained(tmp_path)
    assert loaded.windows == settings["windows"]
    assert loaded.window_names == settings["window_names"]
    assert loaded.allowed_modalities == settings["allowed_modalities"]
    assert loaded.max_image_pixels == settings["max_image_pixels"]
    assert (loaded.size.height, loaded.size.width) == (40, 48)
    assert (
        list(loaded.image_mean) == settings["image_mean"] and list(loaded.image_std) == settings["image_std"]
    )
    assert loaded.to_dict() == processor.to_dict()

    before = processor(CT_PATH, return_tensors="pt").pixel_values
    after = loaded(CT_PATH, return_tensors="pt").pixel_values
    assert after.shape == (1, 3, 40, 48)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    expected = hand_pixel_values(
        hand_windows(hand_hu(pydicom.dcmread(CT_PATH)), settings["windows"]),
        (40, 48),
        mean=settings["image_mean"],
        std=settings["image_std"],
    )
    torch.testing.assert_close(after[0], expected, rtol=0, atol=1e-5)


def test_module_imports_without_pydicom(monkeypatch):
    # A None entry makes `import pydicom` fail, as on a machine without it.
    monkeypatch.setitem(sys.modules, "pydicom", None)
    module = _load_module("scopeformer_image_processing_without_pydicom")
    (windowed,) = module.ScopeformerImageProcessor().window(np.full((4, 4), 40, dtype=np.int16))
    np.testing.assert_allclose(windowed[0], 0.5)
    source = MODULE_PATH.read_text()
    assert "from ." not in source and "from hfmed" not in source and "import hfmed" not in source
