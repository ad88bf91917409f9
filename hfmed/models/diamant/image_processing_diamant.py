"""Image processor for DIAMANT: an image (and optionally its mask) -> `pixel_values` (and `labels`).

Paper: Yeganeh et al., "DIAMANT: Dual Image-Attention Map Encoders For Medical Image Segmentation",
arXiv 2304.14571 (2023). No official code exists.

What the paper states: DIAMANT segments 2-D medical images (its public datasets are polyp / lesion style RGB
and grey images) from the image itself and from the attention maps of a frozen DINO ViT.

Everything else below is our choice, not the paper's:

- Images: PNG / JPEG / other PIL files, DICOM, PIL images, arrays and tensors, decoded to [0, 1] with the
  LT-ViT processor's rules (copied below, marked): 8-bit grey and RGB / 255; 16- and 32-bit grey min-max per
  image; 2-D float arrays already in [0, 1] as is, else min-max; an (H, W, 3) uint8 array is RGB / 255. Grey
  DICOMs: Modality LUT, then the first VOI LUT / window scaled from its output range, else min-max;
  MONOCHROME1 inverted. Colour DICOMs (RGB or YBR, converted to RGB by pydicom) are divided by
  2 ** BitsStored - 1. Any DICOM Modality is accepted unless `allowed_modalities` is set. Grey images are
  replicated to 3 channels (DINO is an RGB model).
- Bilinear antialiased resize to 224x224 and the ImageNet mean / std (DINO's own preprocessing in
  `visualize_attention.py`: torchvision Resize + ImageNet normalisation).
- Masks (`segmentation_maps=`): PNG / JPEG / TIFF ... files, PIL images ('1', 'L', 'P' palette indices, 'I',
  'I;16', 'F'; RGB / RGBA / LA only when their colour channels are equal; alpha is ignored), arrays and
  tensors. The raw values become class indices by one declared rule: `label_mapping` (every value must be a
  key), else `mask_binarize_threshold` (value >= threshold -> 1, else 0; for 0/255 masks, and JPEG masks whose
  edges hold intermediate values), else the values must already be class indices `0..num_labels-1`. Anything
  else is a one-line error: a 0/255 mask is never read silently (in particular 255 is never taken as the
  ignore index unless `label_mapping` says so). Masks are resized with nearest neighbours (centre-aligned, as
  torchvision's NEAREST_EXACT), so no new label value can appear.
- An image and its mask must have the same size; without resizing, height and width must be multiples of
  `size_divisor` (the model's `config.size_multiple`).
- `post_process_semantic_segmentation` follows transformers' segmentation processors: logits resized
  bilinearly to each target size, then argmax.

This file must stay importable on its own (it is copied flat to the Hub for `trust_remote_code`), so it
imports nothing from `hfmed`, and it imports pydicom only when a DICOM is decoded.
"""

import io
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs, Unpack

# Names the copied LT-ViT helpers use. DEFAULT_MODALITIES is only the fallback of their signatures: DIAMANT
# always passes the modality list explicitly (see `dicom_to_unit`).
DEFAULT_MODALITIES = ["OT"]
# Copied from hfmed.models.lt_vit.image_processing_lt_vit.NUM_CHANNELS
NUM_CHANNELS = 3
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
_MASK_PIL_MODES = ("1", "L", "P", "F", "LA", "RGB", "RGBA", *_GREY_PIL_MODES)


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


# --- DIAMANT's own decoding ------------------------------------------------------------------------------


def dicom_to_unit(
    dataset: Any, *, allowed_modalities: Sequence[str] | None = None, max_image_pixels: int | None = None
) -> np.ndarray:
    """Returns the image of a `pydicom.Dataset` as float32 `(3, H, W)` in [0, 1].

    Grey images go through the LT-ViT rules (`radiograph_to_unit`: Modality LUT, VOI LUT / window or
    min-max, MONOCHROME1 inverted) and are replicated to 3 channels; colour images (RGB, or YBR which pydicom
    converts to RGB) are divided by `2 ** BitsStored - 1`. `allowed_modalities=None` accepts any Modality.
    """
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        raise ValueError(
            "DICOM has no PixelData tag (7FE0,0010), so it holds no image (e.g. a report or a segmentation "
            "object): pass an image DICOM"
        )
    modality = _tag_value(dataset, "Modality")
    modality = None if modality is None else str(modality).strip()
    if allowed_modalities is not None:
        allowed_modalities = _check_names(allowed_modalities, "allowed_modalities", ["ES", "US"])
        if modality is None:
            warnings.warn(
                f"DICOM has no Modality tag, so it cannot be checked against allowed_modalities "
                f"{allowed_modalities}: check the source",
                UserWarning,
                stacklevel=3,
            )
        elif modality not in allowed_modalities:
            raise ValueError(
                f"DICOM Modality {modality!r} is not in allowed_modalities {allowed_modalities}: pass an image of an "
                f"allowed modality, or add {modality!r} to allowed_modalities (None accepts any)"
            )
    frames = int(_tag_value(dataset, "NumberOfFrames") or 1)
    if frames > 1:
        raise ValueError(
            f"DICOM has {frames} frames but one 2-D image is expected: split it first and pass each frame as an array"
        )
    samples = int(_tag_value(dataset, "SamplesPerPixel") or 1)
    photometric = str(_tag_value(dataset, "PhotometricInterpretation") or "MONOCHROME2").strip()
    if samples == 1:
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise ValueError(
                f"DICOM PhotometricInterpretation is {photometric!r} with one sample per pixel: only grey "
                "(MONOCHROME1 / MONOCHROME2) or colour (RGB / YBR) images are read; convert it first"
            )
        with warnings.catch_warnings():
            # The modality was checked above, in DIAMANT's words; the copied helper's own check is bypassed.
            warnings.filterwarnings("ignore", message="DICOM has no Modality tag")
            grey = radiograph_to_unit(
                dataset, allowed_modalities=[modality or "OT"], max_image_pixels=max_image_pixels
            )
        return _replicate(grey)
    if samples != NUM_CHANNELS:
        raise ValueError(f"DICOM has {samples} samples per pixel: only grey (1) or colour (3) images are read")
    rows, columns = _tag_value(dataset, "Rows"), _tag_value(dataset, "Columns")
    if rows is not None and columns is not None:
        _check_size(int(rows), int(columns), max_image_pixels, "DICOM image")
    try:
        pixels = np.asarray(dataset.pixel_array)
    except Exception as err:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        raise ValueError(
            f"DICOM pixel data could not be decoded (transfer syntax {syntax}): {_one_line(err)}; for "
            "compressed files install a decoder (pylibjpeg[all] or python-gdcm) or decompress the file first"
        ) from err
    if pixels.ndim != 3 or pixels.shape[-1] != NUM_CHANNELS:
        raise ValueError(f"DICOM colour pixel array has shape {pixels.shape}, expected (rows, columns, 3)")
    bits = int(_tag_value(dataset, "BitsStored") or 8)
    unit = pixels.astype(np.float64) / float(2**bits - 1)
    return np.ascontiguousarray(np.clip(unit, 0.0, 1.0).transpose(2, 0, 1), dtype=np.float32)


def _check_path(item: Any, kind: str) -> str:
    path = os.fspath(item)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if path.startswith(("http://", "https://")):
        raise ValueError(f"{path!r} is a URL and URLs are not fetched: download the file and pass its path")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {path!r}: pass the path of an existing {kind} file")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory: pass one file per {kind.split()[-1]} (e.g. a list of its files)")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path!r} is empty (0 bytes): the upload or copy probably failed; pass a non-empty file")
    return path


def _unreadable(name: str) -> ValueError:
    return ValueError(
        f"{name} is not a DICOM file (no 'DICM' marker) nor an image PIL can read: pass a PNG / JPEG / DICOM "
        "image, a PIL image or an array"
    )


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._decompression_bomb
def _decompression_bomb(name: str, err: Exception, max_image_pixels: int) -> ValueError:
    # PIL refuses images past twice its MAX_IMAGE_PIXELS at open time, before decoding; say so in one line.
    return ValueError(
        f"{name} is refused before decoding: {_one_line(err).rstrip('.')}; downscale it to at most "
        f"max_image_pixels={max_image_pixels:,} pixels"
    )


def decode_image(item: Any, allowed_modalities: Sequence[str] | None, max_image_pixels: int) -> np.ndarray:
    """Decodes one image input to float32 `(3, H, W)` in [0, 1] (rules in the module docstring)."""
    if isinstance(item, (str, os.PathLike)):
        path = _check_path(item, "PNG, JPEG or DICOM image")
        with open(path, "rb") as handle:
            head = handle.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
        has_magic = _has_dicom_magic(head)
        if has_magic or path.lower().endswith(".dcm"):
            dataset = _read_dicom(path, repr(path), force=not has_magic)
            return dicom_to_unit(dataset, allowed_modalities=allowed_modalities, max_image_pixels=max_image_pixels)
        try:
            image = Image.open(path)
        except UnidentifiedImageError as err:
            raise _unreadable(repr(path)) from err
        except Image.DecompressionBombError as err:
            raise _decompression_bomb(repr(path), err, max_image_pixels) from err
        with image:
            return _decode_pil(image, max_image_pixels, repr(path))
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        name = f"bytes input ({len(data)} bytes)"
        if not data:
            raise ValueError("bytes input is empty (0 bytes): the upload or read probably failed; pass the file's bytes")
        if _has_dicom_magic(data):
            dataset = _read_dicom(io.BytesIO(data), name, force=False)
            return dicom_to_unit(dataset, allowed_modalities=allowed_modalities, max_image_pixels=max_image_pixels)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as err:
            raise _unreadable(name) from err
        except Image.DecompressionBombError as err:
            raise _decompression_bomb(name, err, max_image_pixels) from err
        with image:
            return _decode_pil(image, max_image_pixels, name)
    if _is_pydicom_dataset(item):
        return dicom_to_unit(item, allowed_modalities=allowed_modalities, max_image_pixels=max_image_pixels)
    if isinstance(item, Image.Image):
        return _decode_pil(item, max_image_pixels, "PIL image")
    if isinstance(item, torch.Tensor):
        tensor = item.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32, torch.float64):
            tensor = tensor.to(torch.float32)  # numpy has no bfloat16 / float8
        return _decode_array(tensor.numpy(), max_image_pixels, "torch tensor")
    if isinstance(item, np.ndarray):
        return _decode_array(item, max_image_pixels, "numpy array")
    raise TypeError(
        f"Unsupported image type {type(item).__name__}: pass a PNG/JPEG/DICOM path or bytes, a pydicom.Dataset, a "
        "PIL image, a 2-D numpy array / torch tensor, or an (H, W, 3) uint8 array (or a flat list of these)"
    )


def _single_channel(array: np.ndarray, name: str) -> np.ndarray:
    """A mask with a trailing channel axis keeps one channel if all its colour channels are equal."""
    if array.ndim == 3 and array.shape[-1] in (1, 2, 3, 4):
        colour = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]  # alpha (LA / RGBA) is ignored
        if not np.all(colour == colour[..., :1]):
            raise ValueError(
                f"{name} has colour channels that differ, so it is not a label map: convert it to one class index "
                "per pixel first (e.g. Image.open(path).convert('L') and mask_binarize_threshold, or a colour -> "
                "class lookup)"
            )
        array = colour[..., 0]
    if array.ndim != 2:
        raise ValueError(
            f"{name} has shape {tuple(array.shape)} but a mask is 2-D (height, width), one class index per pixel"
        )
    return array


def decode_mask(item: Any, max_image_pixels: int) -> np.ndarray:
    """Decodes one mask input to a 2-D array of its raw values (any real dtype; rules in the module docstring)."""
    name = "mask"
    if isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
        if isinstance(item, (str, os.PathLike)):
            path = _check_path(item, "PNG, TIFF or JPEG mask")
            name = f"mask {path!r}"
            with open(path, "rb") as handle:
                data = handle.read()
        else:
            data = bytes(item)
            name = f"mask bytes ({len(data)} bytes)"
            if not data:
                raise ValueError("mask bytes input is empty (0 bytes): pass the mask file's bytes")
        if _has_dicom_magic(data[: _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)]):
            raise ValueError(
                f"{name} is a DICOM file; DICOM masks (segmentation objects) are not read: export the mask as a "
                "PNG or pass it as an array"
            )
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as err:
            raise ValueError(f"{name} is not an image PIL can read: pass a PNG / TIFF / JPEG mask or an array") from err
        except Image.DecompressionBombError as err:
            raise _decompression_bomb(name, err, max_image_pixels) from err
        with image:
            return _pil_mask(image, name, max_image_pixels)
    if isinstance(item, Image.Image):
        return _pil_mask(item, "PIL mask", max_image_pixels)
    if isinstance(item, torch.Tensor):
        tensor = item.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32, torch.float64):
            tensor = tensor.to(torch.float32)
        item, name = tensor.numpy(), "mask tensor"
    elif isinstance(item, np.ndarray):
        name = "mask array"
    else:
        raise TypeError(
            f"Unsupported mask type {type(item).__name__}: pass a PNG/TIFF/JPEG path or bytes, a PIL image, or a 2-D "
            "numpy array / torch tensor of class indices (or a flat list of these)"
        )
    array = np.asarray(item)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    _check_real_dtype(array, name)
    array = _single_channel(array, name)
    _check_size(array.shape[0], array.shape[1], max_image_pixels, name)
    _check_finite(array, name)
    return array


def _pil_mask(image: Image.Image, name: str, max_image_pixels: int) -> np.ndarray:
    width, height = image.size
    _check_size(height, width, max_image_pixels, name)
    if image.mode not in _MASK_PIL_MODES:
        raise ValueError(
            f"{name} has PIL mode {image.mode!r}, which is not a label map: save masks as grey ('L'), palette ('P', "
            "the palette indices are the values), 1-bit or 16-bit grey"
        )
    try:
        array = np.asarray(image)
    except OSError as err:
        raise ValueError(f"{name} could not be decoded: {_one_line(err)}; pass an uncorrupted mask") from err
    if array.dtype == np.bool_:  # mode '1'
        array = array.astype(np.uint8)
    array = _single_channel(array, name)
    _check_finite(array, name)
    return array


def _mapping_int(value: Any, allow_text: bool) -> int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if allow_text and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)  # preprocessor_config.json stores the keys as strings
    return None


def _check_label_mapping(value: Any) -> dict[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"label_mapping must be None or a non-empty dict of mask value -> class, got {value!r}")
    mapping = {}
    for key, target in value.items():
        raw, mapped = _mapping_int(key, allow_text=True), _mapping_int(target, allow_text=False)
        if raw is None or mapped is None:
            raise ValueError(
                f"label_mapping must map integer mask values to integer classes, got {key!r}: {target!r}; e.g. "
                "label_mapping={0: 0, 255: 1}"
            )
        mapping[raw] = mapped
    return mapping


def mask_to_labels(
    raw: np.ndarray,
    *,
    num_labels: int,
    ignore_index: int,
    mask_binarize_threshold: float | None = None,
    label_mapping: Mapping[int, int] | None = None,
    name: str = "mask",
) -> np.ndarray:
    """Raw mask values -> int64 class indices by the one declared rule (see the module docstring)."""
    if label_mapping is not None:
        values = np.unique(raw)
        unknown = [v.item() for v in values if not (float(v).is_integer() and int(v) in label_mapping)]
        if unknown:
            raise ValueError(
                f"{name} holds values {unknown[:8]} that label_mapping {dict(label_mapping)} does not map: add them "
                "to label_mapping"
            )
        keys = np.array(sorted(label_mapping), dtype=np.int64)
        targets = np.array([label_mapping[k] for k in keys], dtype=np.int64)
        return targets[np.searchsorted(keys, raw.astype(np.int64))]
    if mask_binarize_threshold is not None:
        return (raw >= mask_binarize_threshold).astype(np.int64)
    values = np.unique(raw)
    bad = [v.item() for v in values if not (float(v).is_integer() and 0 <= v < num_labels)]
    if bad:
        raise ValueError(
            f"{name} holds values {bad[:8]} outside the model's classes 0..{num_labels - 1}: for 0/255 masks set "
            f"mask_binarize_threshold=128 (value >= 128 -> 1), otherwise give label_mapping (e.g. {{0: 0, 255: 1}}; "
            f"map a value to {ignore_index} to have those pixels ignored)"
        )
    return raw.astype(np.int64)


def nearest_resize(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-aligned nearest neighbour (source index floor((i + 0.5) * in / out), exact integer arithmetic):
    every output value is an input value."""
    rows = ((2 * np.arange(height) + 1) * labels.shape[0]) // (2 * height)
    cols = ((2 * np.arange(width) + 1) * labels.shape[1]) // (2 * width)
    return np.ascontiguousarray(labels[rows[:, None], cols[None, :]])


def _check_positive_int(value: Any, field: str, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{field} must be a positive int, got {value!r}: e.g. {field}={example}")
    return int(value)


class DIAMANTImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    num_labels (`int`, *optional*, defaults to 2): classes of the model; mask values must end up in
        `0..num_labels-1` (or `ignore_index` through `label_mapping`).
    ignore_index (`int`, *optional*, defaults to 255): the model's `semantic_loss_ignore_index`; reachable only
        through `label_mapping`.
    mask_binarize_threshold (`float`, *optional*): masks become `value >= threshold` (0 / 1). For 0/255 masks.
    label_mapping (`dict[int, int]`, *optional*): raw mask value -> class index (or `ignore_index`); every value
        present must be a key. Exclusive with `mask_binarize_threshold`.
    size_divisor (`int`, *optional*, defaults to 16): height and width must be multiples of it when
        `do_resize=False` (the model's `config.size_multiple`).
    allowed_modalities (`list[str]`, *optional*): DICOM Modality values accepted; `None` accepts any.
    max_image_pixels (`int`, *optional*, defaults to `4096 * 4096`): larger inputs raise.
    """

    num_labels: int | None
    ignore_index: int | None
    mask_binarize_threshold: int | float | None
    label_mapping: dict | None
    size_divisor: int | None
    allowed_modalities: list[str] | tuple[str, ...] | None
    max_image_pixels: int | None


class DIAMANTImageProcessor(TorchvisionBackend):
    r"""
    Turns images (and optionally masks) into DIAMANT inputs: decode to RGB in [0, 1] (grey replicated), resize
    (bilinear, antialiased; masks nearest) and normalise with the ImageNet mean / std. With
    `segmentation_maps=`, the output also holds `labels`: int64 `(batch, height, width)` class indices.

    Inputs, one or a list: PNG / JPEG / DICOM paths or bytes, `pydicom.Dataset`s, PIL images, 2-D arrays /
    tensors or (H, W, 3) uint8 arrays. Masks: paths or bytes of PIL-readable files, PIL images, 2-D arrays /
    tensors. The rules are in the module docstring; how mask values become classes is declared by
    `label_mapping` or `mask_binarize_threshold`, else they must already be class indices.

    `do_rescale` defaults to `False` because decoding already yields values in [0, 1].
    """

    valid_kwargs = DIAMANTImageProcessorKwargs
    model_input_names = ["pixel_values"]

    resample = PILImageResampling.BILINEAR
    size = {"height": 224, "width": 224}
    do_resize = True
    do_rescale = False
    do_normalize = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    num_labels = 2
    ignore_index = 255
    mask_binarize_threshold = None
    label_mapping = None
    size_divisor = 16
    allowed_modalities = None
    max_image_pixels = 4096 * 4096

    def __init__(self, **kwargs: Unpack[DIAMANTImageProcessorKwargs]):
        super().__init__(**kwargs)
        # Stored as plain JSON types so preprocessor_config.json round-trips unchanged.
        self.label_mapping = _check_label_mapping(self.label_mapping)
        self._check_fields(
            num_labels=self.num_labels,
            ignore_index=self.ignore_index,
            mask_binarize_threshold=self.mask_binarize_threshold,
            label_mapping=self.label_mapping,
            size_divisor=self.size_divisor,
            allowed_modalities=self.allowed_modalities,
            max_image_pixels=self.max_image_pixels,
            do_resize=self.do_resize,
            size=self.size,
            do_normalize=self.do_normalize,
            image_mean=self.image_mean,
            image_std=self.image_std,
        )
        if self.allowed_modalities is not None:
            self.allowed_modalities = list(self.allowed_modalities)

    @staticmethod
    def _check_fields(**kwargs) -> None:
        num_labels = _check_positive_int(kwargs.get("num_labels"), "num_labels", 2)
        if num_labels < 2:
            raise ValueError(f"num_labels must be at least 2 (background and one class), got {num_labels}")
        ignore = kwargs.get("ignore_index")
        if isinstance(ignore, bool) or not isinstance(ignore, (int, np.integer)) or 0 <= ignore < num_labels:
            raise ValueError(
                f"ignore_index must be an integer outside the classes 0..{num_labels - 1}, got {ignore!r}: e.g. 255"
            )
        threshold = kwargs.get("mask_binarize_threshold")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold)
        ):
            raise ValueError(f"mask_binarize_threshold must be None or a number, got {threshold!r}: e.g. 128")
        mapping = _check_label_mapping(kwargs.get("label_mapping"))
        if mapping is not None:
            if threshold is not None:
                raise ValueError(
                    "mask_binarize_threshold and label_mapping are both set: give one rule for mask values"
                )
            bad = {k: v for k, v in mapping.items() if not (0 <= v < num_labels or v == ignore)}
            if bad:
                raise ValueError(
                    f"label_mapping maps to {sorted(set(bad.values()))}, which are neither classes 0..{num_labels - 1} "
                    f"nor the ignore index {ignore}: fix {bad}"
                )
        divisor = _check_positive_int(kwargs.get("size_divisor"), "size_divisor", 16)
        _check_max_image_pixels(kwargs.get("max_image_pixels"))
        if kwargs.get("allowed_modalities") is not None:
            _check_names(kwargs["allowed_modalities"], "allowed_modalities", ["ES", "US"])
        size = kwargs.get("size")
        if kwargs.get("do_resize") and size is not None:
            height, width = size["height"], size["width"]
            if height % divisor or width % divisor:
                raise ValueError(
                    f"size {height}x{width} is not divisible by size_divisor {divisor} (the model's patch size and "
                    f"poolings): pick e.g. size={{'height': 224, 'width': 224}}"
                )
        if kwargs.get("do_normalize"):
            for field in ("image_mean", "image_std"):
                value = kwargs.get(field)
                if isinstance(value, Sequence) and len(value) != NUM_CHANNELS:
                    raise ValueError(
                        f"{field} has {len(value)} values but pixel_values have {NUM_CHANNELS} channels (grey is "
                        f"replicated): give {field} {NUM_CHANNELS} values"
                    )

    def input_contract(self) -> dict:
        """What the model expects, in MONAI's metadata vocabulary (for model cards and Spaces)."""
        return {
            "modality": "2-D medical (endoscopy, dermoscopy, ultrasound, histology, ...)",
            "format": "RGB or grey image",
            "source": (
                "PNG/JPEG: 8-bit / 255, 16-bit min-max; DICOM grey: Modality LUT, then VOI LUT / window if present "
                "else min-max, MONOCHROME1 inverted; DICOM colour: / (2**BitsStored - 1)"
            ),
            "channel_def": {0: "R", 1: "G", 2: "B"},
            "spatial_shape": [self.size.height, self.size.width],
            "value_range": [0.0, 1.0],
            "normalization": {"mean": list(self.image_mean), "std": list(self.image_std)},
            "num_channels": NUM_CHANNELS,
            "labels": {
                "num_labels": self.num_labels,
                "ignore_index": self.ignore_index,
                "mask_binarize_threshold": self.mask_binarize_threshold,
                "label_mapping": self.label_mapping,
            },
            "intended_use": "research only, not for diagnostic use",
        }

    def _validate_preprocess_kwargs(self, **kwargs) -> None:
        super()._validate_preprocess_kwargs(**kwargs)
        self._check_fields(**kwargs)
        if kwargs.get("do_rescale"):
            warnings.warn(
                "do_rescale=True divides the decoded [0, 1] images by 255 again: leave do_rescale=False",
                UserWarning,
                stacklevel=4,
            )

    def preprocess(self, images: Any, segmentation_maps: Any = None, **kwargs: Unpack[DIAMANTImageProcessorKwargs]):
        r"""
        images: one input or a list (see the class docstring).
        segmentation_maps (*optional*): one mask per image, same kinds and sizes; adds `labels` to the output.
        """
        return super().preprocess(images, segmentation_maps, **kwargs)

    def decode(self, images: Any) -> list[np.ndarray]:
        """Decodes inputs to float32 `(3, H, W)` arrays in [0, 1] at native size (e.g. to show in a UI)."""
        return self._decode_all(images, self.allowed_modalities, self.max_image_pixels)

    @staticmethod
    def _as_list(items: Any, what: str) -> list:
        items = list(items) if isinstance(items, (list, tuple)) else [items]
        if not items:
            raise ValueError(f"No {what} given: pass one input or a non-empty list of inputs")
        return items

    def _decode_all(self, images: Any, allowed_modalities: Any, max_image_pixels: int) -> list[np.ndarray]:
        return [decode_image(item, allowed_modalities, max_image_pixels) for item in self._as_list(images, "images")]

    def _preprocess_image_like_inputs(self, images: Any, segmentation_maps: Any = None, **kwargs) -> BatchFeature:
        # Replaces the base fetch + process_image route: it would open a DICOM path with PIL and read a 16-bit
        # grey image as a picture in [0, 255]; masks get their own decoding and nearest resizing.
        decoded = self._decode_all(images, kwargs.get("allowed_modalities"), kwargs.get("max_image_pixels"))
        labels = None
        if segmentation_maps is not None:
            masks = self._as_list(segmentation_maps, "segmentation maps")
            if len(masks) != len(decoded):
                raise ValueError(
                    f"{len(decoded)} image(s) but {len(masks)} segmentation map(s): pass one mask per image"
                )
            labels = []
            for index, (image, mask) in enumerate(zip(decoded, masks, strict=True)):
                raw = decode_mask(mask, kwargs.get("max_image_pixels"))
                if tuple(raw.shape) != tuple(image.shape[-2:]):
                    raise ValueError(
                        f"image {index} is {image.shape[-2]}x{image.shape[-1]} but its mask is {raw.shape[0]}x"
                        f"{raw.shape[1]}: pass the mask drawn on this image (same height and width); the processor "
                        "resizes both together"
                    )
                labels.append(
                    mask_to_labels(
                        raw,
                        num_labels=kwargs.get("num_labels"),
                        ignore_index=kwargs.get("ignore_index"),
                        mask_binarize_threshold=kwargs.get("mask_binarize_threshold"),
                        label_mapping=_check_label_mapping(kwargs.get("label_mapping")),
                        name=f"mask {index}",
                    )
                )
        if not kwargs.get("do_resize"):
            divisor = kwargs.get("size_divisor")
            for index, image in enumerate(decoded):
                height, width = image.shape[-2:]
                if height % divisor or width % divisor:
                    padded = f"pad to {height + (-height) % divisor}x{width + (-width) % divisor}"
                    if height >= divisor and width >= divisor:
                        padded = f"crop to {height - height % divisor}x{width - width % divisor} or {padded}"
                    raise ValueError(
                        f"image {index} is {height}x{width} but the model needs height and width divisible by "
                        f"{divisor} (size_divisor: its patch size and poolings): keep do_resize=True, or {padded}"
                    )
        device = kwargs.get("device")
        tensors = [torch.from_numpy(image) for image in decoded]
        if device is not None:
            tensors = [tensor.to(device) for tensor in tensors]
        return_tensors = kwargs.pop("return_tensors", None)
        pixel_values = self._preprocess(tensors, return_tensors=None, **kwargs)["pixel_values"]
        data = {"pixel_values": pixel_values}
        if labels is not None:
            size = kwargs.get("size")
            if kwargs.get("do_resize"):
                labels = [nearest_resize(label, size.height, size.width) for label in labels]
            data["labels"] = [torch.from_numpy(label).to(device) if device else torch.from_numpy(label) for label in labels]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def post_process_semantic_segmentation(self, outputs: Any, target_sizes: Sequence | None = None) -> list:
        """Class-index maps from a DIAMANT output, as transformers' segmentation processors return them.

        Args:
            outputs: the model output (anything with `logits` of shape `(batch, num_labels, height, width)`).
            target_sizes (list of `(height, width)`, *optional*): one size per image, e.g. the original image sizes;
                the logits are resized bilinearly to it before the argmax. `None` keeps the model's size.

        Returns:
            `list[torch.Tensor]`: one int64 `(height, width)` map of class indices per image.
        """
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs.logits
        if target_sizes is None:
            return list(logits.argmax(dim=1))
        if isinstance(target_sizes, torch.Tensor):
            target_sizes = target_sizes.tolist()
        if len(target_sizes) != len(logits):
            raise ValueError(
                f"{len(target_sizes)} target size(s) for {len(logits)} image(s): pass one (height, width) per image"
            )
        maps = []
        for item, size in zip(logits, target_sizes, strict=True):
            height, width = (int(v) for v in size)
            resized = F.interpolate(item[None].float(), size=(height, width), mode="bilinear", align_corners=False)
            maps.append(resized[0].argmax(dim=0))
        return maps


__all__ = ["DIAMANTImageProcessor"]
