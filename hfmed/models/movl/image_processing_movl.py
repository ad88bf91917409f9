"""Image processor for MoVL: one medical image -> the backbone's `pixel_values` (3 channels, its size, its
mean / std), plus the decoding used to show images in a UI.

Paper: Tian et al., "MoVL: Exploring Fusion Strategies for the Domain-Adaptive Application of Pretrained Models
in Medical Imaging Tasks", arXiv 2405.07411 (2024). The paper states that the pretrained ResNet / CLIP backbone
is frozen and a visual prompt is learned on its input; everything below is our choice, not the paper's:

- Decoding is LT-ViT's (checked copies, `# Copied from hfmed.models.lt_vit.image_processing_lt_vit.<name>`):
  8-bit grey ('L') and RGB pictures are divided by 255; 16- and 32-bit integer grey ('I;16', 'I') are min-max
  scaled per image; a float 2-D array already inside [0, 1] is used as is, any other 2-D array is min-max
  scaled; an (H, W, 3) uint8 array is an RGB picture.
- DICOM, grey: Modality LUT (rescale), then the first VOI LUT or window scaled from its output range to [0, 1],
  else min-max; MONOCHROME1 inverted (LT-ViT's `radiograph_to_unit`, here for any modality: CT, MR, CR, US,
  ...). DICOM, colour (RGB, or YBR decoded to RGB by pydicom): divided by 2**BitsStored - 1.
- Grey is replicated to 3 channels (the backbones are RGB); colour is kept.
- Bilinear antialiased resize to the backbone's input size (`size`), then the backbone's own mean / std:
  ImageNet for timm ResNets, CLIP's for CLIP (`MoVLConfig.image_mean` / `image_std`, passed in by the
  family table and stored in `preprocessor_config.json`). The prompt is added after this normalisation.
- Input guards: finite values, one 2-D image (or one colour picture), at most `max_image_pixels` pixels.

This file must stay importable on its own (it is copied flat to the Hub for `trust_remote_code`), so it imports
nothing from `hfmed`, and it imports pydicom only when a DICOM is decoded.
"""

import io
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs, Unpack

# Copied from hfmed.models.lt_vit.image_processing_lt_vit.NUM_CHANNELS
NUM_CHANNELS = 3
# The default of the copied `radiograph_to_unit`; MoVL passes each image's own Modality, so any modality passes.
# Copied from hfmed.models.lt_vit.image_processing_lt_vit.DEFAULT_MODALITIES
DEFAULT_MODALITIES = ["CR", "DX", "DR"]

# The DICOM Part 10 file format puts "DICM" after a 128-byte preamble.
# Copied from hfmed.models.lt_vit.image_processing_lt_vit._DICOM_MAGIC
_DICOM_MAGIC = b"DICM"
# Copied from hfmed.models.lt_vit.image_processing_lt_vit._DICOM_MAGIC_OFFSET
_DICOM_MAGIC_OFFSET = 128
# Copied from hfmed.models.lt_vit.image_processing_lt_vit._PIXEL_DATA_KEYWORDS
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Copied from hfmed.models.lt_vit.image_processing_lt_vit._GREY_PIL_MODES
_GREY_PIL_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Copied from hfmed.models.lt_vit.image_processing_lt_vit._ARRAY_HINT
_ARRAY_HINT = "pass a 2-D grey image or an (H, W, 3) uint8 RGB image"
_COLOUR_PHOTOMETRIC = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._one_line
def _one_line(text: Any) -> str:
    # Third-party messages can span lines; ours promise one line (logs, Gradio toasts).
    return " ".join(str(text).split())


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._check_names
def _check_names(value: Any, field: str, example: list[str]) -> list[str]:
    # A bare string is a Sequence of characters; reject it rather than treat "CT" as ["C", "T"].
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(
            f"{field} must be a non-empty list of strings, got {value!r}: e.g. {field}={example}"
        )
    if not all(isinstance(item, str) for item in value):
        raise ValueError(f"{field} must hold strings only, got {value!r}: e.g. {field}={example}")
    return list(value)


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._check_max_image_pixels
def _check_max_image_pixels(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(
            f"max_image_pixels must be a positive int, got {value!r}: e.g. max_image_pixels={4096 * 4096}"
        )
    return int(value)


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._check_mean_std
def _check_mean_std(image_mean: Any, image_std: Any) -> None:
    for field, value in (("image_mean", image_mean), ("image_std", image_std)):
        if isinstance(value, Sequence) and len(value) != NUM_CHANNELS:
            raise ValueError(
                f"{field} has {len(value)} values but pixel_values have {NUM_CHANNELS} channels (grey is "
                f"replicated): give {field} {NUM_CHANNELS} values"
            )


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._check_size
def _check_size(height: int, width: int, max_image_pixels: int | None, name: str) -> None:
    if height == 0 or width == 0:
        raise ValueError(f"{name} is empty ({height}x{width} pixels): pass an image with pixels")
    if max_image_pixels is not None and height * width > max_image_pixels:
        raise ValueError(
            f"{name} is {height}x{width} = {height * width:,} pixels, more than max_image_pixels="
            f"{max_image_pixels:,}: downscale it first, or raise max_image_pixels if you trust the source"
        )


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._NAN_HINT
_NAN_HINT = "np.nan_to_num(image, nan=0.0)"


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._check_finite
def _check_finite(values: np.ndarray, name: str) -> None:
    if np.issubdtype(values.dtype, np.floating):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise ValueError(
                f"{name} contains {bad} NaN/inf value(s): fix the source, or replace them first "
                f"(e.g. {_NAN_HINT})"
            )


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._check_real_dtype
def _check_real_dtype(array: np.ndarray, name: str) -> None:
    dtype = array.dtype
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} has dtype {dtype}, not a real number type: pass an int or float image")


# Copied from hfmed.models.lt_vit.image_processing_lt_vit.min_max
def min_max(values: np.ndarray) -> np.ndarray:
    """Scales to [0, 1] by the image's own minimum and maximum (float64 math); a constant image gives 0."""
    values = np.asarray(values)
    if values.dtype.kind in "ui" and values.size:
        low, high = int(values.min()), int(values.max())
        if high <= low:
            return np.zeros(values.shape, dtype=np.float32)
        if -(2**24) <= low and high <= 2**24 and high - low <= 2**24:
            # Integers below 2**24 are exact in float32, so is the subtraction, and one float32 division of
            # exact operands rounds as float64 division then rounding to float32 does: the same numbers,
            # without the float64 copies (a 16-bit 1024^2 radiograph: ~3x faster).
            return np.subtract(values, np.float32(low), dtype=np.float32) / np.float32(high - low)
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._grey_to_unit
def _grey_to_unit(array: np.ndarray) -> np.ndarray:
    """The 2-D rule: float already in [0, 1] as is, anything else min-max (see the module docstring)."""
    if np.issubdtype(array.dtype, np.floating) and array.min() >= 0.0 and array.max() <= 1.0:
        return array.astype(np.float32)
    return min_max(array)


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._tag_value
def _tag_value(dataset: Any, keyword: str) -> Any:
    element = dataset.get(keyword)
    value = getattr(element, "value", element)
    return None if value is None or value == "" else value


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._has_voi_lut_sequence
def _has_voi_lut_sequence(dataset: Any) -> bool:
    sequence = dataset.get("VOILUTSequence")
    return bool(sequence) and None not in (sequence[0].get("LUTDescriptor"), sequence[0].get("LUTData"))


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._has_window
def _has_window(dataset: Any) -> bool:
    return _tag_value(dataset, "WindowCenter") is not None and _tag_value(dataset, "WindowWidth") is not None


# Copied from hfmed.models.lt_vit.image_processing_lt_vit.radiograph_to_unit
def radiograph_to_unit(
    dataset: Any,
    *,
    allowed_modalities: Sequence[str] = tuple(DEFAULT_MODALITIES),
    max_image_pixels: int | None = None,
) -> np.ndarray:
    """Returns the 2-D radiograph of a `pydicom.Dataset` as float32 in [0, 1], bone bright.

    Modality LUT, then the first VOI LUT or window (scaled from the VOI output range), else min-max; then
    MONOCHROME1 is inverted (`1 - x`).

    Raises:
        ValueError: no pixel data, a Modality outside `allowed_modalities`, a colour or multi-frame image, more
            than `max_image_pixels` pixels, undecodable pixel data, or NaN/inf values.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut  # lazy: see the module docstring

    allowed_modalities = _check_names(allowed_modalities, "allowed_modalities", DEFAULT_MODALITIES)
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        raise ValueError(
            "DICOM has no PixelData tag (7FE0,0010), so it holds no image (e.g. a report, or a header-only "
            "export): pass an image DICOM of one chest radiograph"
        )
    modality = _tag_value(dataset, "Modality")
    modality = None if modality is None else str(modality).strip()
    if modality is None:
        # Anonymisers sometimes strip Modality; refusing every such file would be harsh, so we only warn.
        warnings.warn(
            "DICOM has no Modality tag, so it cannot be checked to be a radiograph (CR/DX): check the source",
            UserWarning,
            stacklevel=3,
        )
    elif modality not in allowed_modalities:
        raise ValueError(
            f"DICOM Modality {modality!r} is not in allowed_modalities {allowed_modalities}: LT-ViT reads chest "
            f"radiographs; pass a CR/DX image, or add {modality!r} to allowed_modalities if it really is one"
        )
    samples = int(_tag_value(dataset, "SamplesPerPixel") or 1)
    if samples > 1:
        raise ValueError(
            f"DICOM has {samples} samples per pixel (a colour image) but a grey radiograph is expected: pass the "
            "original grey image, or an RGB picture as a PIL image"
        )
    frames = int(_tag_value(dataset, "NumberOfFrames") or 1)
    if frames > 1:
        raise ValueError(
            f"DICOM has {frames} frames but one 2-D radiograph is expected: split it first and pass each frame "
            "as a 2-D array"
        )
    photometric = str(_tag_value(dataset, "PhotometricInterpretation") or "MONOCHROME2").strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(
            f"DICOM PhotometricInterpretation is {photometric!r} but a grey radiograph (MONOCHROME1 or "
            "MONOCHROME2) is expected: convert it to grey first"
        )
    rows, columns = _tag_value(dataset, "Rows"), _tag_value(dataset, "Columns")
    if rows is not None and columns is not None:
        # Checked on the header so a huge upload is refused before its pixels are decoded.
        _check_size(int(rows), int(columns), max_image_pixels, "DICOM image")
    try:
        pixels = np.asarray(dataset.pixel_array)
    except Exception as err:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        raise ValueError(
            f"DICOM pixel data could not be decoded (transfer syntax {syntax}): {_one_line(err)}; for "
            "compressed files install a decoder (pylibjpeg[all] or python-gdcm) or decompress the file first"
        ) from err
    if pixels.ndim != 2:
        raise ValueError(
            f"DICOM pixel array has shape {pixels.shape} but one 2-D grey radiograph is expected: split frames "
            "or channels first and pass a 2-D array"
        )
    _check_size(pixels.shape[0], pixels.shape[1], max_image_pixels, "DICOM image")
    _check_finite(pixels, "DICOM pixel data")

    values = apply_modality_lut(pixels, dataset)
    if _has_voi_lut_sequence(dataset):
        if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
            values = values.astype(np.int64)  # a LUT indexes integers; identity rescales give integral floats
        item = dataset.VOILUTSequence[0]
        entries, first = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
        table = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), dataset, prefer_lut=True)
        low, high = float(table.min()), float(table.max())
        values = apply_voi_lut(values, dataset, prefer_lut=True)
    elif _has_window(dataset):
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                # The window's output range, probed at -inf / +inf (it depends on BitsStored and the rescale).
                low, high = (float(v) for v in apply_voi_lut(np.array([-np.inf, np.inf]), dataset))
            values = apply_voi_lut(values, dataset)
        except ValueError as err:
            raise ValueError(
                f"DICOM window could not be applied: {_one_line(err)}; fix WindowCenter / WindowWidth, or delete "
                "them to get a min-max scaling"
            ) from err
    else:
        low = high = None
    if low is None:
        unit = min_max(values)
    elif high <= low:
        unit = np.zeros(values.shape, dtype=np.float32)
    else:
        unit = np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0).astype(
            np.float32
        )
    _check_finite(unit, "DICOM image after the VOI LUT")
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit  # MONOCHROME1: low values are white; flip so bone is bright as in MONOCHROME2
    return unit


def dicom_to_unit(dataset: Any, *, max_image_pixels: int | None = None) -> np.ndarray:
    """Returns the image of a `pydicom.Dataset` as float32 `(3, H, W)` in [0, 1]: grey images through
    `radiograph_to_unit` (any Modality; replicated to 3 channels), colour images divided by 2**BitsStored - 1.

    Raises:
        ValueError: no pixel data, several frames, an unsupported photometric interpretation, more than
            `max_image_pixels` pixels, undecodable pixel data, or NaN/inf values.
    """
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        raise ValueError(
            "DICOM has no PixelData tag (7FE0,0010), so it holds no image (e.g. a report, or a header-only "
            "export): pass an image DICOM"
        )
    frames = int(_tag_value(dataset, "NumberOfFrames") or 1)
    if frames > 1:
        raise ValueError(
            f"DICOM has {frames} frames but one 2-D image is expected: split it first and pass each frame as a "
            "2-D array"
        )
    photometric = str(_tag_value(dataset, "PhotometricInterpretation") or "MONOCHROME2").strip()
    if photometric in _COLOUR_PHOTOMETRIC:
        return _colour_dicom_to_unit(dataset, photometric, max_image_pixels)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(
            f"DICOM PhotometricInterpretation is {photometric!r}, which MoVL does not read: convert the image to "
            "grey (MONOCHROME2) or RGB first"
        )
    modality = _tag_value(dataset, "Modality")
    allowed = [str(modality).strip()] if modality is not None else list(DEFAULT_MODALITIES)
    with warnings.catch_warnings():
        # MoVL reads every modality, so a missing Modality tag is nothing to check.
        warnings.filterwarnings("ignore", message="DICOM has no Modality tag")
        grey = radiograph_to_unit(dataset, allowed_modalities=allowed, max_image_pixels=max_image_pixels)
    return _replicate(grey)


def _colour_dicom_to_unit(dataset: Any, photometric: str, max_image_pixels: int | None) -> np.ndarray:
    rows, columns = _tag_value(dataset, "Rows"), _tag_value(dataset, "Columns")
    if rows is not None and columns is not None:
        _check_size(int(rows), int(columns), max_image_pixels, "DICOM image")
    try:
        # pydicom converts YBR colour spaces to RGB by default.
        pixels = np.asarray(dataset.pixel_array)
    except Exception as err:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        raise ValueError(
            f"DICOM pixel data could not be decoded (transfer syntax {syntax}): {_one_line(err)}; for "
            "compressed files install a decoder (pylibjpeg[all] or python-gdcm) or decompress the file first"
        ) from err
    if pixels.ndim != 3 or pixels.shape[-1] != NUM_CHANNELS:
        raise ValueError(
            f"DICOM colour pixel array has shape {pixels.shape} but one (rows, columns, 3) {photometric} image is "
            "expected: pass one colour frame"
        )
    _check_size(pixels.shape[0], pixels.shape[1], max_image_pixels, "DICOM image")
    bits = int(_tag_value(dataset, "BitsStored") or 8)
    unit = np.clip(pixels.astype(np.float64) / float(2**bits - 1), 0.0, 1.0)
    return np.ascontiguousarray(unit.transpose(2, 0, 1), dtype=np.float32)


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._is_pydicom_dataset
def _is_pydicom_dataset(obj: Any) -> bool:
    # A Dataset can only exist once pydicom is imported, so this never imports it.
    pydicom = sys.modules.get("pydicom")
    return pydicom is not None and isinstance(obj, pydicom.Dataset)


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._has_dicom_magic
def _has_dicom_magic(head: bytes) -> bool:
    return head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == _DICOM_MAGIC


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._read_dicom
def _read_dicom(source: Any, name: str, force: bool) -> Any:
    import pydicom  # lazy: the module must import without pydicom installed
    from pydicom.datadict import dictionary_has_tag

    try:
        with warnings.catch_warnings():
            if force:  # any bytes parse as elements of unknown tags, one warning each; the check below decides
                warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(source, force=force)
    except Exception as err:
        raise ValueError(
            f"{name} could not be read as DICOM: {_one_line(err)}; pass an uncorrupted DICOM file"
        ) from err
    # Without the preamble, force=True reads text or a zip as a "dataset" of made-up tags; a real preamble-less
    # DICOM starts with standard data elements (group 0 holds network commands, never file data).
    if force and not any(tag.group != 0 and dictionary_has_tag(tag) for tag in dataset.keys()):
        raise ValueError(
            f"{name} is not a DICOM file (no 'DICM' preamble and no DICOM data elements where a dataset would "
            "start, e.g. a text or other file renamed .dcm): pass a real DICOM file"
        )
    return dataset


def _not_readable(name: str) -> ValueError:
    return ValueError(
        f"{name} is not a DICOM file (no 'DICM' marker) nor an image PIL can read: pass a DICOM, a PNG/JPEG "
        "image, or a 2-D numpy array"
    )


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._decompression_bomb
def _decompression_bomb(name: str, err: Exception, max_image_pixels: int) -> ValueError:
    # PIL refuses images past twice its MAX_IMAGE_PIXELS at open time, before decoding; say so in one line.
    return ValueError(
        f"{name} is refused before decoding: {_one_line(err).rstrip('.')}; downscale it to at most "
        f"max_image_pixels={max_image_pixels:,} pixels"
    )


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._replicate
def _replicate(grey: np.ndarray, keep_grey: bool = False) -> np.ndarray:
    """(3, H, W) float32 copies of a grey image; (1, H, W) with `keep_grey` (the caller expands it later)."""
    if keep_grey:
        return np.ascontiguousarray(grey[None], dtype=np.float32)
    return np.ascontiguousarray(np.repeat(grey[None].astype(np.float32), NUM_CHANNELS, axis=0))


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._decode_pil
def _decode_pil(image: Image.Image, max_image_pixels: int, name: str, keep_grey: bool = False) -> np.ndarray:
    width, height = image.size
    _check_size(height, width, max_image_pixels, name)
    mode = image.mode
    if mode not in ("L", "RGB", "F", *_GREY_PIL_MODES):
        raise ValueError(
            f"{name} has PIL mode {mode!r}, but only grey ('L', 'I;16', 'I', 'F') or 'RGB' images are accepted: "
            "convert it first, e.g. image.convert('L') or image.convert('RGB')"
        )
    try:
        pixels = np.asarray(image)
    except OSError as err:
        raise ValueError(f"{name} could not be decoded: {_one_line(err)}; pass an uncorrupted image") from err
    if mode == "L":
        return _replicate(pixels.astype(np.float32) / np.float32(255.0), keep_grey)
    if mode == "RGB":
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    if mode == "F":
        _check_finite(pixels, name)
        return _replicate(_grey_to_unit(pixels), keep_grey)
    return _replicate(min_max(pixels), keep_grey)  # 16/32-bit integer grey


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._decode_array
def _decode_array(array: np.ndarray, max_image_pixels: int, name: str, keep_grey: bool = False) -> np.ndarray:
    _check_real_dtype(array, name)
    if array.ndim == 2:
        _check_size(array.shape[0], array.shape[1], max_image_pixels, name)
        _check_finite(array, name)
        return _replicate(_grey_to_unit(array), keep_grey)
    if array.ndim == 3 and array.dtype == np.uint8 and array.shape[-1] == NUM_CHANNELS:
        _check_size(array.shape[0], array.shape[1], max_image_pixels, name)
        return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    raise ValueError(
        f"{name} has shape {tuple(array.shape)} and dtype {array.dtype}, which is neither a 2-D grey image nor "
        f"an (H, W, 3) uint8 RGB image: {_ARRAY_HINT}"
    )


class MoVLImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    max_image_pixels (`int`, *optional*, defaults to `4096 * 4096`):
        Larger decoded images raise, to guard against huge uploads.
    """

    max_image_pixels: int | None


class MoVLImageProcessor(TorchvisionBackend):
    r"""
    Turns medical images into MoVL `pixel_values`: decode to [0, 1] (grey replicated to 3 channels, colour kept),
    resize (bilinear, antialiased) to the backbone's input size and normalise with the backbone's mean / std.

    Inputs, one or a list (kinds may be mixed): a DICOM path (`str` / `pathlib.Path`), DICOM file `bytes`, a
    `pydicom.Dataset`, a PNG/JPEG path or bytes, a PIL image ('L', 'I;16', 'I', 'F' or 'RGB'), a 2-D numpy array
    or torch tensor, or an (H, W, 3) uint8 array. The intensity rules are in the module docstring.

    Defaults are ResNet-50's (224 px, ImageNet mean / std); build it for a model with the config's values,
    `MoVLImageProcessor(size={"height": s, "width": s}, image_mean=config.image_mean,
    image_std=config.image_std)` (what `hfmed`'s family table does). `do_rescale` defaults to `False` because
    decoding already yields values in [0, 1].
    """

    valid_kwargs = MoVLImageProcessorKwargs
    model_input_names = ["pixel_values"]

    resample = PILImageResampling.BILINEAR
    size = {"height": 224, "width": 224}
    do_resize = True
    do_rescale = False
    do_normalize = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    max_image_pixels = 4096 * 4096

    def __init__(self, **kwargs: Unpack[MoVLImageProcessorKwargs]):
        super().__init__(**kwargs)
        # Stored as plain lists / ints so preprocessor_config.json round-trips unchanged.
        self.max_image_pixels = _check_max_image_pixels(self.max_image_pixels)
        if self.do_normalize:
            _check_mean_std(self.image_mean, self.image_std)
            self.image_mean = [float(v) for v in self.image_mean]
            self.image_std = [float(v) for v in self.image_std]

    def input_contract(self) -> dict:
        """What the model expects, in MONAI's metadata vocabulary (for model cards and Spaces)."""
        return {
            "modality": "2-D medical",
            "format": "grey or RGB image",
            "source": (
                "one 2-D image (DICOM: Modality LUT, then VOI LUT / window if present else min-max, MONOCHROME1 "
                "inverted, colour / 2**BitsStored-1; PNG/JPEG: 8-bit / 255, 16-bit min-max)"
            ),
            "channel_def": {0: "R (or grey)", 1: "G (or grey)", 2: "B (or grey)"},
            "spatial_shape": [self.size.height, self.size.width],
            "value_range": [0.0, 1.0],
            "normalization": {"mean": list(self.image_mean), "std": list(self.image_std)},
            "num_channels": NUM_CHANNELS,
            "intended_use": "research only, not for diagnostic use",
        }

    def _validate_preprocess_kwargs(self, **kwargs) -> None:
        super()._validate_preprocess_kwargs(**kwargs)
        _check_max_image_pixels(kwargs.get("max_image_pixels"))
        if kwargs.get("do_normalize"):
            _check_mean_std(kwargs.get("image_mean"), kwargs.get("image_std"))
        if kwargs.get("do_rescale"):
            warnings.warn(
                "do_rescale=True divides the decoded [0, 1] images by 255 again: leave do_rescale=False",
                UserWarning,
                stacklevel=4,
            )

    def _decode_all(self, images: Any, max_image_pixels: int) -> list[np.ndarray]:
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("No images given: pass one input or a non-empty list of inputs")
        return [self._decode(item, max_image_pixels) for item in items]

    def _decode(self, item: Any, max_image_pixels: int) -> np.ndarray:
        """Decodes one input to a float32 (3, H, W) array in [0, 1]."""
        if isinstance(item, (str, os.PathLike)):
            return self._decode_path(item, max_image_pixels)
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = bytes(item)
            name = f"bytes input ({len(data)} bytes)"
            if not data:
                raise ValueError(
                    "bytes input is empty (0 bytes): the upload or read probably failed; pass the file's bytes"
                )
            if _has_dicom_magic(data):
                return dicom_to_unit(
                    _read_dicom(io.BytesIO(data), name, force=False), max_image_pixels=max_image_pixels
                )
            try:
                image = Image.open(io.BytesIO(data))
            except UnidentifiedImageError as err:
                raise _not_readable(name) from err
            except Image.DecompressionBombError as err:
                raise _decompression_bomb(name, err, max_image_pixels) from err
            with image:
                return _decode_pil(image, max_image_pixels, name)
        if _is_pydicom_dataset(item):
            return dicom_to_unit(item, max_image_pixels=max_image_pixels)
        if isinstance(item, Image.Image):
            return _decode_pil(item, max_image_pixels, "PIL image")
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu()
            # numpy has no bfloat16 / float8.
            if tensor.is_floating_point() and tensor.dtype not in (
                torch.float16,
                torch.float32,
                torch.float64,
            ):
                tensor = tensor.to(torch.float32)
            return _decode_array(tensor.numpy(), max_image_pixels, "torch tensor")
        if isinstance(item, np.ndarray):
            return _decode_array(item, max_image_pixels, "numpy array")
        raise TypeError(
            f"Unsupported input type {type(item).__name__}: pass a DICOM/PNG/JPEG path or bytes, a "
            "pydicom.Dataset, a PIL image, a 2-D numpy array / torch tensor, or an (H, W, 3) uint8 array "
            "(or a flat list of these)"
        )

    def _decode_path(self, item: Any, max_image_pixels: int) -> np.ndarray:
        path = os.fspath(item)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if path.startswith(("http://", "https://")):
            raise ValueError(
                f"{path!r} is a URL and URLs are not fetched: download the file and pass its path"
            )
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"No such file: {path!r}: pass the path of an existing DICOM, PNG or JPEG file"
            )
        if os.path.isdir(path):
            raise ValueError(f"{path!r} is a directory: pass one file per image (e.g. a list of its files)")
        if os.path.getsize(path) == 0:
            raise ValueError(
                f"{path!r} is empty (0 bytes): the upload or copy probably failed; pass a non-empty file"
            )
        with open(path, "rb") as handle:
            head = handle.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
        has_magic = _has_dicom_magic(head)
        if has_magic or path.lower().endswith(".dcm"):
            # force=True lets a .dcm without the 128-byte preamble (older exports) still be read.
            dataset = _read_dicom(path, repr(path), force=not has_magic)
            return dicom_to_unit(dataset, max_image_pixels=max_image_pixels)
        try:
            image = Image.open(path)
        except UnidentifiedImageError as err:
            raise _not_readable(repr(path)) from err
        except Image.DecompressionBombError as err:
            raise _decompression_bomb(repr(path), err, max_image_pixels) from err
        with image:
            return _decode_pil(image, max_image_pixels, repr(path))

    def decode(self, images: Any, max_image_pixels: int | None = None) -> list[np.ndarray]:
        """Decodes inputs to 3-channel [0, 1] images before resize and normalisation (e.g. to show in a UI).

        Returns:
            `list[np.ndarray]`: one float32 (3, H, W) array in [0, 1] per input, at native size.
        """
        max_image_pixels = _check_max_image_pixels(
            self.max_image_pixels if max_image_pixels is None else max_image_pixels
        )
        return self._decode_all(images, max_image_pixels)

    def _prepare_image_like_inputs(
        self,
        images: Any,
        *args,
        expected_ndims: int = 3,
        **kwargs: Unpack[MoVLImageProcessorKwargs],
    ) -> list[torch.Tensor]:
        # Replaces the base fetch + process_image route: it would open a DICOM path with PIL and read a 16-bit
        # grey image as a picture in [0, 255].
        decoded = self._decode_all(images, kwargs.get("max_image_pixels"))
        device = kwargs.get("device")
        tensors = [torch.from_numpy(image) for image in decoded]
        return [tensor.to(device) for tensor in tensors] if device is not None else tensors


__all__ = ["MoVLImageProcessor", "dicom_to_unit"]
