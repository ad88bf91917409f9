"""Tests of the MoVL image processor (a medical image -> the backbone's pixel_values) on real files: pydicom's
sample DICOMs (CT, MR, RGB secondary capture, palette ultrasound, a structured report, a multi-frame RT dose) and
PNG / JPEG files written here (scikit-image is not installed in this environment, so its sample images are not
used).

Expected values are computed here by hand: min-max, divide-by-255, the DICOM LINEAR window formula
(PS3.3 C.11.2.1.2.1), MONOCHROME1 as `1 - x`, torchvision's resize and the mean / std written out. The module is
loaded from its file path on purpose: it is copied flat to the Hub, so it must import without `hfmed`.
"""

import ast
import importlib.util
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from torchvision.transforms.v2 import functional as tvF

ROOT = Path(__file__).resolve().parents[3]
MODULE_PATH = ROOT / "hfmed" / "models" / "movl" / "image_processing_movl.py"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _load_module(name):
    spec = importlib.util.spec_from_file_location(name, MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ips = _load_module("movl_image_processing_under_test")
MoVLImageProcessor = ips.MoVLImageProcessor


def hand_pixel_values(chw_or_grey, size=(32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD):
    image = np.asarray(chw_or_grey, dtype=np.float32)
    if image.ndim == 2:
        image = np.stack([image] * 3)
    resized = tvF.resize(
        torch.from_numpy(np.ascontiguousarray(image)), list(size),
        interpolation=tvF.InterpolationMode.BILINEAR, antialias=True,
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


@pytest.fixture
def processor32():
    return MoVLImageProcessor(size={"height": 32, "width": 32})


def one_line(excinfo):
    assert "\n" not in str(excinfo.value)


# --- defaults, the backbone's normalisation, serialisation ----------------------------------------------------


def test_defaults_are_resnet50s():
    processor = MoVLImageProcessor()
    assert (processor.size.height, processor.size.width) == (224, 224)
    assert tuple(processor.image_mean) == IMAGENET_MEAN and tuple(processor.image_std) == IMAGENET_STD
    assert processor.do_rescale is False and processor.do_normalize is True
    contract = processor.input_contract()
    assert contract["num_channels"] == 3 and contract["spatial_shape"] == [224, 224]
    assert contract["normalization"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


@pytest.mark.parametrize(
    ("preset", "size", "mean", "std"),
    [("movl-resnet50", 224, IMAGENET_MEAN, IMAGENET_STD), ("movl-clip-b32", 224, CLIP_MEAN, CLIP_STD),
     ("movl-clip-tiny", 32, CLIP_MEAN, CLIP_STD)],
)
def test_family_processor_uses_the_backbones_mean_std_and_saves_them(tmp_path, preset, size, mean, std):
    from transformers import AutoImageProcessor

    import hfmed

    config = hfmed.movl_config(preset)
    processor = hfmed.MoVLImageProcessor(**hfmed.FAMILIES["movl"].processor_kwargs_for(config))
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == pytest.approx(list(mean)) and saved["image_std"] == pytest.approx(list(std))
    assert saved["size"] == {"height": size, "width": size}
    again = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(again) is hfmed.MoVLImageProcessor
    grey = np.random.default_rng(0).integers(0, 256, size=(40, 30), dtype=np.uint8)
    out = again(Image.fromarray(grey), return_tensors="pt").pixel_values
    expected = hand_pixel_values(grey / 255.0, size=(size, size), mean=mean, std=std)
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-5)


def test_processor_output_fits_the_model():
    import hfmed

    config = hfmed.movl_config("movl-tiny")
    processor = hfmed.MoVLImageProcessor(**hfmed.FAMILIES["movl"].processor_kwargs_for(config))
    model = hfmed.MoVLForImageClassification(config).eval()
    pixel_values = processor(get_testdata_file("CT_small.dcm"), return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 32, 32)
    with torch.no_grad():
        assert model(pixel_values).logits.shape == (1, config.num_labels)


# --- PNG / JPEG / arrays ----------------------------------------------------------------------------------------


def test_8bit_grey_png_divided_by_255_and_replicated(tmp_path, processor32):
    grey = np.random.default_rng(1).integers(0, 256, size=(40, 36), dtype=np.uint8)
    path = tmp_path / "grey8.png"
    Image.fromarray(grey).save(path)
    for item in (path, str(path), path.read_bytes(), Image.open(path)):
        pixel_values = processor32(item, return_tensors="pt").pixel_values
        torch.testing.assert_close(pixel_values[0], hand_pixel_values(grey / 255.0), rtol=0, atol=1e-5)
    (decoded,) = processor32.decode(path)
    np.testing.assert_allclose(decoded, np.stack([grey / 255.0] * 3), atol=1e-7)


def test_16bit_grey_png_min_max(tmp_path, processor32):
    grey = np.random.default_rng(2).integers(1000, 3000, size=(30, 34)).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode == "I;16"
    (decoded,) = processor32.decode(path)
    np.testing.assert_allclose(decoded[1], hand_min_max(grey), atol=1e-6)
    torch.testing.assert_close(
        processor32(path, return_tensors="pt").pixel_values[0], hand_pixel_values(hand_min_max(grey)),
        rtol=0, atol=1e-5,
    )


def test_rgb_jpeg_kept_in_colour(tmp_path, processor32):
    rgb = np.random.default_rng(3).integers(0, 256, size=(20, 28, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    stored = np.asarray(Image.open(path))  # what the JPEG holds after lossy coding
    assert stored.shape == (20, 28, 3)
    expected = stored.transpose(2, 0, 1) / 255.0
    (decoded,) = processor32.decode(path)
    np.testing.assert_allclose(decoded, expected, atol=1e-7)
    assert not np.allclose(decoded[0], decoded[1])  # colour, not grey
    torch.testing.assert_close(
        processor32(path.read_bytes(), return_tensors="pt").pixel_values[0], hand_pixel_values(expected),
        rtol=0, atol=1e-5,
    )


def test_arrays_follow_the_2d_rule(processor32):
    rng = np.random.default_rng(4)
    unit = rng.random((16, 12)).astype(np.float32)
    np.testing.assert_allclose(processor32.decode(unit)[0][0], unit, atol=0)
    counts = rng.integers(-50, 4000, size=(16, 12)).astype(np.int16)
    np.testing.assert_allclose(processor32.decode(torch.from_numpy(counts))[0][2], hand_min_max(counts), atol=1e-6)


# --- DICOM (pydicom's sample files) -------------------------------------------------------------------------------


def test_ct_dicom_rescaled_then_min_max(processor32):
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "CT" and "WindowCenter" not in ds
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = hand_min_max(hu)
    for item in (path, Path(path).read_bytes(), ds):
        (decoded,) = processor32.decode(item)
        assert decoded.shape == (3, 128, 128)
        np.testing.assert_allclose(decoded[0], expected, atol=1e-6)
    torch.testing.assert_close(
        processor32(path, return_tensors="pt").pixel_values[0], hand_pixel_values(expected), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_mr_dicom_through_its_window_and_monochrome1_inverted(processor32, photometric):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    assert ds.Modality == "MR" and (float(ds.WindowCenter), float(ds.WindowWidth)) == (600.0, 1600.0)
    expected = hand_linear_window(ds.pixel_array, 600.0, 1600.0)
    ds.PhotometricInterpretation = photometric
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected
    (decoded,) = processor32.decode(ds)
    np.testing.assert_allclose(decoded[2], expected, atol=1e-6)
    assert (expected == 0).any() or (expected == 1).any()


def test_rgb_dicom_divided_by_its_bit_range(processor32):
    path = get_testdata_file("SC_rgb_small_odd.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "RGB" and ds.BitsStored == 8 and ds.PlanarConfiguration == 0
    raw = np.frombuffer(ds.PixelData, dtype=np.uint8)[: 3 * 3 * 3].reshape(3, 3, 3)
    (decoded,) = processor32.decode(path)
    np.testing.assert_allclose(decoded, raw.transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_any_modality_and_a_missing_modality_are_read_silently(processor32):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.Modality
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (decoded,) = processor32.decode(ds)
    np.testing.assert_allclose(decoded[0], hand_linear_window(ds.pixel_array, 600.0, 1600.0), atol=1e-6)


# --- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("examples_palette.dcm", r"PhotometricInterpretation is 'PALETTE COLOR'.*convert the image to grey"),
        ("reportsi.dcm", r"no PixelData tag.*pass an image DICOM"),
        ("rtdose.dcm", r"has 15 frames but one 2-D image is expected: split it"),
    ],
)
def test_dicoms_that_hold_no_single_image_are_clear_errors(processor32, name, message):
    with pytest.raises(ValueError, match=message) as excinfo:
        processor32(get_testdata_file(name))
    one_line(excinfo)


def test_bad_inputs_are_one_line_errors(tmp_path, processor32):
    rgba = Image.fromarray(np.zeros((8, 8, 4), dtype=np.uint8), mode="RGBA")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    cases = [
        (rgba, ValueError, r"PIL mode 'RGBA'.*image.convert\('RGB'\)"),
        (np.zeros((8, 8, 4), dtype=np.uint8), ValueError, r"neither a 2-D grey image nor an \(H, W, 3\) uint8"),
        ("https://example.org/x.png", ValueError, "URLs are not fetched"),
        (tmp_path / "missing.png", FileNotFoundError, "No such file"),
        (tmp_path, ValueError, "is a directory"),
        (empty, ValueError, r"is empty \(0 bytes\)"),
        (text, ValueError, "not a DICOM file.*nor an image PIL can read"),
        (np.full((4, 4), np.nan), ValueError, "NaN/inf"),
        (3.5, TypeError, "Unsupported input type float"),
    ]
    for item, error, message in cases:
        with pytest.raises(error, match=message) as excinfo:
            processor32(item)
        one_line(excinfo)
    with pytest.raises(ValueError, match="more than max_image_pixels=100"):
        MoVLImageProcessor(max_image_pixels=100)(np.zeros((20, 20), dtype=np.float32))
    with pytest.raises(ValueError, match="image_mean has 1 values but pixel_values have 3 channels"):
        MoVLImageProcessor(image_mean=[0.5], image_std=[0.5, 0.5, 0.5])


@pytest.mark.parametrize("content", [b"hello, not dicom", b"PK\x03\x04" + bytes(range(256))])
def test_a_file_named_dcm_that_is_not_dicom_is_called_so(tmp_path, processor32, content):
    path = tmp_path / "x.dcm"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"is not a DICOM file \(no 'DICM' preamble") as excinfo:
        processor32(str(path))
    one_line(excinfo)


def test_a_dicom_without_its_preamble_still_reads(tmp_path, processor32):
    ct = get_testdata_file("CT_small.dcm")
    raw = tmp_path / "raw.dcm"
    raw.write_bytes(Path(ct).read_bytes()[128 + 4 :])
    expected = processor32(ct, return_tensors="pt").pixel_values
    assert torch.equal(processor32(str(raw), return_tensors="pt").pixel_values, expected)


# --- the checked copies ----------------------------------------------------------------------------------------------


def test_copied_helpers_equal_their_lt_vit_source():
    """Every `# Copied from hfmed.models.lt_vit.image_processing_lt_vit.<name>` body equals its source exactly."""

    def top_level(path):
        text = path.read_text()
        lines = text.splitlines()
        nodes = ast.parse(text).body
        return text, {n.name: "\n".join(lines[n.lineno - 1 : n.end_lineno]) for n in nodes if hasattr(n, "name")}

    text, ours = top_level(MODULE_PATH)
    _, source = top_level(ROOT / "hfmed" / "models" / "lt_vit" / "image_processing_lt_vit.py")
    marks = re.findall(r"^# Copied from hfmed\.models\.lt_vit\.image_processing_lt_vit\.(\w+)\ndef (\w+)", text, re.M)
    assert len(marks) >= 15
    for source_name, name in marks:
        assert source_name == name and ours[name] == source[name], name


def test_medical_pipeline_gives_softmax_scores_for_a_dicom(tmp_path):
    from transformers import pipeline

    import hfmed
    from hfmed.hub import save_for_hub
    from hfmed.pipelines import TASK

    config = hfmed.movl_config("movl-tiny", id2label={0: "a", 1: "b", 2: "c"}, prompt_init="normal")
    torch.manual_seed(0)
    model = hfmed.MoVLForImageClassification(config).eval()
    processor = hfmed.MoVLImageProcessor(**hfmed.FAMILIES["movl"].processor_kwargs_for(config))
    folder = save_for_hub(model, processor, tmp_path / "hub")
    ct = get_testdata_file("CT_small.dcm")
    with torch.no_grad():
        probabilities = torch.softmax(model(**processor(ct, return_tensors="pt")).logits[0], dim=-1)
    result = pipeline(TASK, model=str(folder))(ct)
    assert {r["label"]: pytest.approx(r["score"], abs=1e-6) for r in result} == dict(
        zip(["a", "b", "c"], probabilities.tolist(), strict=True)
    )
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-6)
