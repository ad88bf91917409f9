"""Image processor for LT-ViT: one chest radiograph -> 3-channel ViT `pixel_values`, plus attention overlays.

Paper: Marikkar et al., "LT-ViT: A Vision Transformer for multi-label Chest X-ray classification",
arXiv 2311.07263 (ICIP 2023). No official code exists.

What the paper states: LT-ViT classifies frontal chest X-rays (NIH ChestX-ray14, CheXpert) at 224 px with
ViTs initialised from standard pretrained checkpoints, and its label-token attention maps explain the
predictions.

Everything else below is our choice, not the paper's:

- DICOM: stored values -> Modality LUT (RescaleSlope / RescaleIntercept or a Modality LUT Sequence) -> the
  first VOI LUT (VOI LUT Sequence, else Window Center / Width with the DICOM formula, both through
  `pydicom.pixels.apply_voi_lut`) scaled from its output range to [0, 1]; without VOI information, min-max
  to [0, 1]. MONOCHROME1 images are inverted afterwards, so bone is always bright. Accepted Modality values
  default to CR, DX and DR (`allowed_modalities`).
- PNG / JPEG / PIL: 8-bit grey ('L') and RGB are taken as already windowed (divided by 255); 16- and 32-bit
  integer grey ('I;16', 'I') are min-max scaled per image, because the bit depth actually used inside a
  16-bit container (often 12 bits) is unknown; 'F' follows the 2-D array rule.
- 2-D numpy arrays / torch tensors (any real dtype): a float array already inside [0, 1] is used as is;
  anything else is min-max scaled per image (a constant image becomes 0). A 2-D uint8 array is therefore
  min-max scaled too: wrap an 8-bit picture in `PIL.Image.fromarray` to have it divided by 255 instead.
  An (H, W, 3) uint8 array is an RGB picture (divided by 255).
- Grey images are replicated to 3 channels (the ViT checkpoints are RGB); RGB is kept as is.
- Bilinear antialiased resize to 224x224 and ImageNet mean / std, as timm's ViT weights expect.
- Input guards: finite values, a single 2-D image, at most `max_image_pixels` (default 4096 * 4096) pixels.
- Speed, with the same numbers: the PNG / JPEG files and bytes of one call are decoded in up to `num_threads`
  threads (default None: `torch.get_num_threads()`, 1 inside DataLoader workers; PIL, zlib and numpy release
  the GIL); DICOM files, datasets, PIL images and arrays are decoded in the caller's thread, in input order.
- Overlays (`label_attention_overlays`): a jet-like colour ramp (blue -> cyan -> green -> yellow -> red)
  alpha-blended over the grey image.

This file must stay importable on its own (it is copied flat to the Hub for `trust_remote_code`), so it
imports nothing from `hfmed`, and it imports pydicom only when a DICOM is decoded.
"""

import io
import os
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs, Unpack

DEFAULT_MODALITIES = ["CR", "DX", "DR"]
NUM_CHANNELS = 3

# The DICOM Part 10 file format puts "DICM" after a 128-byte preamble.
# Copied from hfmed.models.scopeformer.image_processing_scopeformer._DICOM_MAGIC
_DICOM_MAGIC = b"DICM"
# Copied from hfmed.models.scopeformer.image_processing_scopeformer._DICOM_MAGIC_OFFSET
_DICOM_MAGIC_OFFSET = 128
# Copied from hfmed.models.scopeformer.image_processing_scopeformer._PIXEL_DATA_KEYWORDS
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GREY_PIL_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ARRAY_HINT = "pass a 2-D grey image or an (H, W, 3) uint8 RGB image"

# Jet-like colour ramp: stops at 0, 1/4, 1/2, 3/4, 1 (our choice; no matplotlib dependency).
_RAMP = np.array([[0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0]], dtype=np.float32)


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._one_line
def _one_line(text: Any) -> str:
    # Third-party messages can span lines; ours promise one line (logs, Gradio toasts).
    return " ".join(str(text).split())


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._check_names
def _check_names(value: Any, field: str, example: list[str]) -> list[str]:
    # A bare string is a Sequence of characters; reject it rather than treat "CT" as ["C", "T"].
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(
            f"{field} must be a non-empty list of strings, got {value!r}: e.g. {field}={example}"
        )
    if not all(isinstance(item, str) for item in value):
        raise ValueError(f"{field} must hold strings only, got {value!r}: e.g. {field}={example}")
    return list(value)


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._check_max_image_pixels
def _check_max_image_pixels(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(
            f"max_image_pixels must be a positive int, got {value!r}: e.g. max_image_pixels={4096 * 4096}"
        )
    return int(value)


def _check_num_threads(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"num_threads must be a positive int or None (as many as torch.get_num_threads()), got {value!r}: "
            "e.g. num_threads=1 to read the inputs one after another"
        )
    return int(value)


def _decodes_with_pil(item: Any) -> bool:
    """Whether an input is an image file or its bytes that `_decode` reads with PIL alone: those may be decoded
    in worker threads (pydicom's reading changes the process-wide warning filters, so DICOM stays in the
    caller's thread). Anything doubtful (missing file, directory, URL) is left to the caller's thread."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return len(item) > 0 and not _has_dicom_magic(bytes(item[: _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)]))
    if not isinstance(item, (str, os.PathLike)):
        return False
    path = os.fspath(item)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if path.lower().endswith(".dcm") or path.startswith(("http://", "https://")):
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError:
        return False
    return len(head) > 0 and not _has_dicom_magic(head)


def _check_mean_std(image_mean: Any, image_std: Any) -> None:
    for field, value in (("image_mean", image_mean), ("image_std", image_std)):
        if isinstance(value, Sequence) and len(value) != NUM_CHANNELS:
            raise ValueError(
                f"{field} has {len(value)} values but pixel_values have {NUM_CHANNELS} channels (grey is "
                f"replicated): give {field} {NUM_CHANNELS} values"
            )


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._check_size with a slice with pixels->an image with pixels
def _check_size(height: int, width: int, max_image_pixels: int | None, name: str) -> None:
    if height == 0 or width == 0:
        raise ValueError(f"{name} is empty ({height}x{width} pixels): pass an image with pixels")
    if max_image_pixels is not None and height * width > max_image_pixels:
        raise ValueError(
            f"{name} is {height}x{width} = {height * width:,} pixels, more than max_image_pixels="
            f"{max_image_pixels:,}: downscale it first, or raise max_image_pixels if you trust the source"
        )


# How to clean NaN / inf out of an array, for the error message.
_NAN_HINT = "np.nan_to_num(image, nan=0.0)"


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._check_finite
def _check_finite(values: np.ndarray, name: str) -> None:
    if np.issubdtype(values.dtype, np.floating):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise ValueError(
                f"{name} contains {bad} NaN/inf value(s): fix the source, or replace them first "
                f"(e.g. {_NAN_HINT})"
            )


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._check_real_dtype with pass HU as an int or float array->pass an int or float image
def _check_real_dtype(array: np.ndarray, name: str) -> None:
    dtype = array.dtype
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} has dtype {dtype}, not a real number type: pass an int or float image")


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


def _grey_to_unit(array: np.ndarray) -> np.ndarray:
    """The 2-D rule: float already in [0, 1] as is, anything else min-max (see the module docstring)."""
    if np.issubdtype(array.dtype, np.floating) and array.min() >= 0.0 and array.max() <= 1.0:
        return array.astype(np.float32)
    return min_max(array)


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._tag_value
def _tag_value(dataset: Any, keyword: str) -> Any:
    element = dataset.get(keyword)
    value = getattr(element, "value", element)
    return None if value is None or value == "" else value


def _has_voi_lut_sequence(dataset: Any) -> bool:
    sequence = dataset.get("VOILUTSequence")
    return bool(sequence) and None not in (sequence[0].get("LUTDescriptor"), sequence[0].get("LUTData"))


def _has_window(dataset: Any) -> bool:
    return _tag_value(dataset, "WindowCenter") is not None and _tag_value(dataset, "WindowWidth") is not None


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


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._is_pydicom_dataset
def _is_pydicom_dataset(obj: Any) -> bool:
    # A Dataset can only exist once pydicom is imported, so this never imports it.
    pydicom = sys.modules.get("pydicom")
    return pydicom is not None and isinstance(obj, pydicom.Dataset)


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._has_dicom_magic
def _has_dicom_magic(head: bytes) -> bool:
    return head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == _DICOM_MAGIC


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._read_dicom
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


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._not_readable with DICOM slice->DICOM radiograph, 2-D numpy array of HU->2-D numpy array
def _not_readable(name: str) -> ValueError:
    return ValueError(
        f"{name} is not a DICOM file (no 'DICM' marker) nor an image PIL can read: pass a DICOM radiograph, "
        "a PNG/JPEG image, or a 2-D numpy array"
    )


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._decompression_bomb
def _decompression_bomb(name: str, err: Exception, max_image_pixels: int) -> ValueError:
    # PIL refuses images past twice its MAX_IMAGE_PIXELS at open time, before decoding; say so in one line.
    return ValueError(
        f"{name} is refused before decoding: {_one_line(err).rstrip('.')}; downscale it to at most "
        f"max_image_pixels={max_image_pixels:,} pixels"
    )


def _replicate(grey: np.ndarray, keep_grey: bool = False) -> np.ndarray:
    """(3, H, W) float32 copies of a grey image; (1, H, W) with `keep_grey` (the caller expands it later)."""
    if keep_grey:
        return np.ascontiguousarray(grey[None], dtype=np.float32)
    return np.ascontiguousarray(np.repeat(grey[None].astype(np.float32), NUM_CHANNELS, axis=0))


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


def colorize(heat: np.ndarray) -> np.ndarray:
    """Maps values in [0, 1] to RGB in [0, 1] with the jet-like ramp (blue low, red high); shape (..., 3)."""
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    position = heat * (len(_RAMP) - 1)
    lower = np.minimum(np.floor(position).astype(np.int64), len(_RAMP) - 2)
    frac = (position - lower)[..., None]
    return _RAMP[lower] * (1.0 - frac) + _RAMP[lower + 1] * frac


class LTViTImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    allowed_modalities (`list[str]`, *optional*, defaults to `["CR", "DX", "DR"]`):
        DICOM Modality values accepted; others raise.
    max_image_pixels (`int`, *optional*, defaults to `4096 * 4096`):
        Larger decoded images raise, to guard against huge uploads.
    num_threads (`int`, *optional*, defaults to `None`):
        The PNG / JPEG files and bytes of one call are decoded in up to this many threads (None: as many as
        `torch.get_num_threads()`, which is 1 inside DataLoader workers). Results, their order and the first
        error are those of one-by-one decoding. Our choice, not the paper's.
    """

    allowed_modalities: list[str] | tuple[str, ...] | None
    max_image_pixels: int | None
    num_threads: int | None


class LTViTImageProcessor(TorchvisionBackend):
    r"""
    Turns chest radiographs into LT-ViT `pixel_values`: decode to grey in [0, 1] (bone bright), replicate to 3
    channels, resize (bilinear, antialiased) and normalise with the ImageNet mean / std.

    Inputs, one or a list (kinds may be mixed): a DICOM path (`str` / `pathlib.Path`), DICOM file `bytes`, a
    `pydicom.Dataset`, a PNG/JPEG path or bytes, a PIL image ('L', 'I;16', 'I', 'F' or 'RGB'), a 2-D numpy
    array or torch tensor, or an (H, W, 3) uint8 array. The intensity rules are in the module docstring.

    `do_rescale` defaults to `False` because decoding already yields values in [0, 1].
    """

    valid_kwargs = LTViTImageProcessorKwargs
    model_input_names = ["pixel_values"]

    resample = PILImageResampling.BILINEAR
    size = {"height": 224, "width": 224}
    do_resize = True
    do_rescale = False
    do_normalize = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    allowed_modalities = DEFAULT_MODALITIES
    max_image_pixels = 4096 * 4096
    num_threads = None

    def __init__(self, **kwargs: Unpack[LTViTImageProcessorKwargs]):
        super().__init__(**kwargs)
        # Stored as plain lists / ints so preprocessor_config.json round-trips unchanged.
        self.allowed_modalities = _check_names(
            self.allowed_modalities, "allowed_modalities", DEFAULT_MODALITIES
        )
        self.max_image_pixels = _check_max_image_pixels(self.max_image_pixels)
        self.num_threads = _check_num_threads(self.num_threads)
        if self.do_normalize:
            _check_mean_std(self.image_mean, self.image_std)

    def input_contract(self) -> dict:
        """What the model expects, in MONAI's metadata vocabulary (for model cards and Spaces)."""
        return {
            "modality": "CR/DX",
            "format": "grayscale radiograph",
            "source": (
                "one frontal chest X-ray (DICOM: Modality LUT, then VOI LUT / window if present else min-max, "
                "MONOCHROME1 inverted; PNG/JPEG: 8-bit / 255, 16-bit min-max)"
            ),
            "channel_def": {0: "grey", 1: "grey", 2: "grey"},
            "spatial_shape": [self.size.height, self.size.width],
            "value_range": [0.0, 1.0],
            "intensity": "bone bright",
            "normalization": {"mean": list(self.image_mean), "std": list(self.image_std)},
            "num_channels": NUM_CHANNELS,
            "accepted_modalities": list(self.allowed_modalities),
            "intended_use": "research only, not for diagnostic use",
        }

    def _validate_preprocess_kwargs(self, **kwargs) -> None:
        super()._validate_preprocess_kwargs(**kwargs)
        _check_names(kwargs.get("allowed_modalities"), "allowed_modalities", DEFAULT_MODALITIES)
        _check_max_image_pixels(kwargs.get("max_image_pixels"))
        _check_num_threads(kwargs.get("num_threads"))
        if kwargs.get("do_normalize"):
            _check_mean_std(kwargs.get("image_mean"), kwargs.get("image_std"))
        if kwargs.get("do_rescale"):
            warnings.warn(
                "do_rescale=True divides the decoded [0, 1] images by 255 again: leave do_rescale=False",
                UserWarning,
                stacklevel=4,
            )

    def _decode_all(
        self,
        images: Any,
        allowed_modalities: Sequence[str],
        max_image_pixels: int,
        keep_grey: bool = False,
        num_threads: int | None = None,
    ) -> list[np.ndarray]:
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("No images given: pass one input or a non-empty list of inputs")

        def decode(item: Any) -> np.ndarray:
            return self._decode(item, allowed_modalities, max_image_pixels, keep_grey)

        threads = min(len(items), torch.get_num_threads() if num_threads is None else num_threads)
        pooled = [index for index, item in enumerate(items) if _decodes_with_pil(item)] if threads > 1 else []
        if len(pooled) <= 1:
            return [decode(item) for item in items]
        with ThreadPoolExecutor(min(threads, len(pooled)), thread_name_prefix="lt_vit_decode") as pool:
            futures = {index: pool.submit(decode, items[index]) for index in pooled}
            try:
                # In input order: the first failing input raises, as in a plain loop.
                return [futures[i].result() if i in futures else decode(item) for i, item in enumerate(items)]
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _decode(
        self, item: Any, allowed_modalities: Sequence[str], max_image_pixels: int, keep_grey: bool = False
    ) -> np.ndarray:
        """Decodes one input to a float32 (3, H, W) array in [0, 1] ((1, H, W) for grey with `keep_grey`)."""
        if isinstance(item, (str, os.PathLike)):
            return self._decode_path(item, allowed_modalities, max_image_pixels, keep_grey)
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = bytes(item)
            name = f"bytes input ({len(data)} bytes)"
            if not data:
                raise ValueError(
                    "bytes input is empty (0 bytes): the upload or read probably failed; pass the file's bytes"
                )
            if _has_dicom_magic(data):
                dataset = _read_dicom(io.BytesIO(data), name, force=False)
                return self._decode_dataset(dataset, allowed_modalities, max_image_pixels, keep_grey)
            try:
                image = Image.open(io.BytesIO(data))
            except UnidentifiedImageError as err:
                raise _not_readable(name) from err
            except Image.DecompressionBombError as err:
                raise _decompression_bomb(name, err, max_image_pixels) from err
            with image:
                return _decode_pil(image, max_image_pixels, name, keep_grey)
        if _is_pydicom_dataset(item):
            return self._decode_dataset(item, allowed_modalities, max_image_pixels, keep_grey)
        if isinstance(item, Image.Image):
            return _decode_pil(item, max_image_pixels, "PIL image", keep_grey)
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu()
            # numpy has no bfloat16 / float8.
            if tensor.is_floating_point() and tensor.dtype not in (
                torch.float16,
                torch.float32,
                torch.float64,
            ):
                tensor = tensor.to(torch.float32)
            return _decode_array(tensor.numpy(), max_image_pixels, "torch tensor", keep_grey)
        if isinstance(item, np.ndarray):
            return _decode_array(item, max_image_pixels, "numpy array", keep_grey)
        raise TypeError(
            f"Unsupported input type {type(item).__name__}: pass a DICOM/PNG/JPEG path or bytes, a "
            "pydicom.Dataset, a PIL image, a 2-D numpy array / torch tensor, or an (H, W, 3) uint8 array "
            "(or a flat list of these)"
        )

    def _decode_path(
        self, item: Any, allowed_modalities: Sequence[str], max_image_pixels: int, keep_grey: bool = False
    ) -> np.ndarray:
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
            return self._decode_dataset(dataset, allowed_modalities, max_image_pixels, keep_grey)
        try:
            image = Image.open(path)
        except UnidentifiedImageError as err:
            raise _not_readable(repr(path)) from err
        except Image.DecompressionBombError as err:
            raise _decompression_bomb(repr(path), err, max_image_pixels) from err
        with image:
            return _decode_pil(image, max_image_pixels, repr(path), keep_grey)

    @staticmethod
    def _decode_dataset(
        dataset: Any, allowed_modalities: Sequence[str], max_image_pixels: int, keep_grey: bool = False
    ) -> np.ndarray:
        grey = radiograph_to_unit(
            dataset, allowed_modalities=allowed_modalities, max_image_pixels=max_image_pixels
        )
        return _replicate(grey, keep_grey)

    def decode(
        self,
        images: Any,
        allowed_modalities: Sequence[str] | None = None,
        max_image_pixels: int | None = None,
        num_threads: int | None = None,
    ) -> list[np.ndarray]:
        """Decodes inputs to 3-channel [0, 1] images before resize and normalisation (e.g. to show in a UI).

        Returns:
            `list[np.ndarray]`: one float32 (3, H, W) array in [0, 1] per input, at native size.
        """
        allowed_modalities = _check_names(
            self.allowed_modalities if allowed_modalities is None else allowed_modalities,
            "allowed_modalities",
            DEFAULT_MODALITIES,
        )
        max_image_pixels = _check_max_image_pixels(
            self.max_image_pixels if max_image_pixels is None else max_image_pixels
        )
        num_threads = _check_num_threads(self.num_threads if num_threads is None else num_threads)
        return self._decode_all(images, allowed_modalities, max_image_pixels, num_threads=num_threads)

    def label_attention_overlays(
        self, images: Any, label_attentions: Any, alpha: float = 0.45
    ) -> list[list[Image.Image]]:
        """Colours each label's attention map over its image: the interpretability view of the paper.

        Args:
            images: one input or a list of inputs, of any kind `__call__` accepts (shown at native size, grey).
            label_attentions (`torch.Tensor` or `np.ndarray` of shape `(batch, num_labels, grid_h, grid_w)`):
                the model's `label_attentions` (`output_label_attentions=True`), one row per image; a 3-D
                array is taken as one image's maps.
            alpha (`float`, defaults to 0.45): weight of the colour map in the blend (0: only the image).

        Returns:
            `list[list[PIL.Image.Image]]`: per image, per label, an RGB image of the image's size: the map
            upsampled bilinearly, min-max normalised to [0, 1], coloured blue (low) -> red (high) and blended
            over the grey image.
        """
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        maps = (
            label_attentions.detach().float().cpu()
            if isinstance(label_attentions, torch.Tensor)
            else (torch.as_tensor(np.asarray(label_attentions, dtype=np.float32)))
        )
        if maps.ndim == 3:
            maps = maps[None]
        decoded = self.decode(images)
        if maps.ndim != 4 or maps.shape[0] != len(decoded):
            raise ValueError(
                f"label_attentions has shape {tuple(maps.shape)} but {len(decoded)} image(s) were given: pass the "
                "model's label_attentions, (batch, num_labels, grid_h, grid_w), with one row per image"
            )
        overlays = []
        for image, image_maps in zip(decoded, maps, strict=True):
            height, width = image.shape[-2:]
            grey = image.mean(axis=0)[..., None]
            upsampled = F.interpolate(
                image_maps[None], size=(height, width), mode="bilinear", align_corners=False
            )[0]
            row = []
            for heat in upsampled.numpy():
                blended = (1.0 - alpha) * grey + alpha * colorize(min_max(heat))
                row.append(Image.fromarray(np.round(np.clip(blended, 0.0, 1.0) * 255).astype(np.uint8)))
            overlays.append(row)
        return overlays

    def _prepare_image_like_inputs(
        self,
        images: Any,
        *args,
        expected_ndims: int = 3,
        **kwargs: Unpack[LTViTImageProcessorKwargs],
    ) -> list[torch.Tensor]:
        # Replaces the base fetch + process_image route: it would open a DICOM path with PIL and read a 16-bit
        # grey image as a picture in [0, 255].
        # A grey image stays one channel, expanded to three without a copy (stride 0): `resize` then resizes
        # that one channel and expands the result, a third of the work, with the same numbers.
        decoded = self._decode_all(
            images,
            kwargs.get("allowed_modalities"),
            kwargs.get("max_image_pixels"),
            keep_grey=True,
            num_threads=kwargs.get("num_threads"),
        )
        device = kwargs.get("device")
        tensors = [torch.from_numpy(image).expand(NUM_CHANNELS, -1, -1) for image in decoded]
        return [tensor.to(device) for tensor in tensors] if device is not None else tensors

    def resize(self, image: torch.Tensor, size: Any, *args, **kwargs) -> torch.Tensor:
        if image.ndim >= 3 and image.shape[-3] == NUM_CHANNELS and image.stride(-3) == 0:
            # three views of one grey channel (see `_prepare_image_like_inputs`): resize it once
            resized = super().resize(image[..., :1, :, :], size, *args, **kwargs)
            return resized.expand(*resized.shape[:-3], NUM_CHANNELS, *resized.shape[-2:])
        return super().resize(image, size, *args, **kwargs)


__all__ = ["LTViTImageProcessor"]
