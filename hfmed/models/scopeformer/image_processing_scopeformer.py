"""Image processor for Scopeformer / Efficient Scopeformer: one CT slice -> one channel per Hounsfield window.

Papers: Barhoumi & Rasool, "Scopeformer: n-CNN-ViT Hybrid Model for Intracranial Hemorrhage
Classification", arXiv 2107.04575 (MIDL 2021); Barhoumi, Bouaynaya & Rasool, "Efficient Scopeformer:
Towards Scalable and Rich Feature Extraction for Intracranial Hemorrhage Detection", arXiv 2302.00220.

What the papers state: the models classify RSNA 2019 intracranial-hemorrhage head-CT slices with
ImageNet-style CNN backbones, which take a 3-channel image.

Everything else below is our choice, not the papers' (no official code exists):

- Three Hounsfield-unit windows stacked as the three channels, with the (level, width) values used widely
  in the RSNA 2019 challenge: brain (40, 80), subdural (80, 200), bone (600, 2800).
- The window is the plain linear map `clip((HU - (L - W/2)) / W, 0, 1)`, i.e. the usual "DICOM-style"
  window without the 0.5 offsets of the DICOM VOI LUT formula (PS3.3 C.11.2.1.2); at these widths the
  offsets change values by less than 1/80 of a grey level.
- Bilinear (antialiased) resize to 224x224 and ImageNet mean/std normalisation, because the CNN backbones
  are ImageNet-pretrained.
- Input guards: the DICOM Modality must be in `allowed_modalities` (default CT), a single 2-D grey slice,
  finite values, and at most `max_image_pixels` pixels.

Accepted inputs (one, or a list that may mix kinds): a DICOM path / bytes / `pydicom.Dataset` (HU from
RescaleSlope and RescaleIntercept, then windowed); a path to a PNG/JPEG or a PIL image ('L' or 'RGB',
treated as already windowed); a 2-D numpy array or torch tensor of HU (windowed, whatever its dtype); an
(H, W, 3) uint8 array (already windowed). A 2-D uint8 array counts as HU, not as a grey picture: wrap a
windowed grey picture in `PIL.Image.fromarray` to say what it is.

This file must stay importable on its own (it is copied flat to the Hub for `trust_remote_code`), so it
imports nothing from `hfmed`, and it imports pydicom only when a DICOM is decoded.
"""

import io
import math
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

DEFAULT_WINDOWS = [[40, 80], [80, 200], [600, 2800]]
DEFAULT_WINDOW_NAMES = ["brain", "subdural", "bone"]

# The DICOM Part 10 file format puts "DICM" after a 128-byte preamble.
_DICOM_MAGIC = b"DICM"
_DICOM_MAGIC_OFFSET = 128
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_ARRAY_HINT = "pass a 2-D HU slice or an (H, W, {n}) uint8 windowed image"


def _one_line(text: Any) -> str:
    # Third-party messages can span lines; ours promise one line (logs, Gradio toasts).
    return " ".join(str(text).split())


def _check_windows(windows: Any) -> list[list[float]]:
    """Validates `windows` and returns it as a JSON-friendly list of [level, width] float pairs."""
    if isinstance(windows, (str, bytes)) or not isinstance(windows, Sequence) or len(windows) == 0:
        raise ValueError(
            f"windows must be a non-empty list of [level, width] pairs in HU, got {windows!r}: "
            f"e.g. windows={DEFAULT_WINDOWS}"
        )
    checked = []
    for index, window in enumerate(windows):
        if isinstance(window, (str, bytes)) or not isinstance(window, Sequence) or len(window) != 2:
            raise ValueError(
                f"windows[{index}] must be a [level, width] pair in HU, got {window!r}: e.g. [40, 80]"
            )
        try:
            level, width = float(window[0]), float(window[1])
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"windows[{index}] must hold two numbers [level, width], got {window!r}: e.g. [40, 80]"
            ) from err
        if not (math.isfinite(level) and math.isfinite(width)) or width <= 0:
            raise ValueError(
                f"windows[{index}] = {window!r} needs a finite level and a width > 0 (HU): e.g. [40, 80]"
            )
        checked.append([level, width])
    return checked


def _check_names(value: Any, field: str, example: list[str]) -> list[str]:
    # A bare string is a Sequence of characters; reject it rather than treat "CT" as ["C", "T"].
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(
            f"{field} must be a non-empty list of strings, got {value!r}: e.g. {field}={example}"
        )
    if not all(isinstance(item, str) for item in value):
        raise ValueError(f"{field} must hold strings only, got {value!r}: e.g. {field}={example}")
    return list(value)


def _check_max_image_pixels(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(
            f"max_image_pixels must be a positive int, got {value!r}: e.g. max_image_pixels={4096 * 4096}"
        )
    return int(value)


def _check_mean_std(image_mean: Any, image_std: Any, num_channels: int) -> None:
    # torchvision would fail later with a shape error that does not mention the windows.
    for field, value in (("image_mean", image_mean), ("image_std", image_std)):
        if isinstance(value, Sequence) and len(value) != num_channels:
            raise ValueError(
                f"{field} has {len(value)} values but there are {num_channels} windows (one channel each): "
                f"give {field} one value per window"
            )


def _check_size(height: int, width: int, max_image_pixels: int | None, name: str) -> None:
    if height == 0 or width == 0:
        raise ValueError(f"{name} is empty ({height}x{width} pixels): pass a slice with pixels")
    if max_image_pixels is not None and height * width > max_image_pixels:
        raise ValueError(
            f"{name} is {height}x{width} = {height * width:,} pixels, more than max_image_pixels="
            f"{max_image_pixels:,}: downscale it first, or raise max_image_pixels if you trust the source"
        )


# How to clean NaN / inf out of an array, for the error message.
_NAN_HINT = "np.nan_to_num(hu, nan=-1024.0, posinf=3071.0, neginf=-1024.0)"


def _check_finite(values: np.ndarray, name: str) -> None:
    if np.issubdtype(values.dtype, np.floating):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise ValueError(
                f"{name} contains {bad} NaN/inf value(s): fix the source, or replace them first "
                f"(e.g. {_NAN_HINT})"
            )


def _check_real_dtype(array: np.ndarray, name: str) -> None:
    dtype = array.dtype
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} has dtype {dtype}, not a real number type: pass HU as an int or float array")


def apply_windows(hu: np.ndarray, windows: Sequence[Sequence[float]]) -> np.ndarray:
    """Maps a 2-D slice of Hounsfield units to one [0, 1] channel per (level, width) window.

    Args:
        hu (`np.ndarray`): a 2-D array of HU, any real dtype.
        windows (`list[[level, width]]`): windows in HU; width > 0.

    Returns:
        `np.ndarray` of shape (len(windows), H, W), float32, in [0, 1].
    """
    windows = _check_windows(windows)
    hu = np.asarray(hu)
    _check_real_dtype(hu, "HU array")
    if hu.ndim != 2:
        raise ValueError(
            f"apply_windows expects a 2-D HU slice, got shape {hu.shape}: pass one slice at a time"
        )
    _check_finite(hu, "HU array")
    # float64 keeps int16/int32 HU exact; the cast to float32 happens once at the end.
    hu64 = hu.astype(np.float64, copy=False)
    out = np.empty((len(windows), *hu.shape), dtype=np.float32)
    for channel, (level, width) in enumerate(windows):
        # Linear window without the DICOM VOI 0.5 offsets (our choice, see the module docstring).
        out[channel] = np.clip((hu64 - (level - width / 2.0)) / width, 0.0, 1.0)
    return out


def _tag_value(dataset: Any, keyword: str) -> Any:
    element = dataset.get(keyword)
    value = getattr(element, "value", element)
    return None if value is None or value == "" else value


def hounsfield_units(
    dataset: Any,
    *,
    allowed_modalities: Sequence[str] = ("CT",),
    max_image_pixels: int | None = None,
) -> np.ndarray:
    """Returns the 2-D slice of a `pydicom.Dataset` in Hounsfield units (float32).

    HU = stored value * RescaleSlope + RescaleIntercept, computed in float64. Missing RescaleSlope /
    RescaleIntercept fall back to 1 / 0 with a `UserWarning` (for CT, or when Modality is absent).

    Raises:
        ValueError: no pixel data, a Modality outside `allowed_modalities`, a multi-frame or colour
            image, more than `max_image_pixels` pixels, undecodable pixel data, or NaN/inf values.
    """
    allowed_modalities = _check_names(allowed_modalities, "allowed_modalities", ["CT"])
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        raise ValueError(
            "DICOM has no PixelData tag (7FE0,0010), so it holds no image (e.g. a report, or a header-only "
            "export): pass an image DICOM of one CT slice"
        )

    modality = _tag_value(dataset, "Modality")
    modality = None if modality is None else str(modality).strip()
    if modality is None:
        # Anonymisers sometimes strip Modality; refusing every such file would be harsh, so we only warn.
        warnings.warn(
            "DICOM has no Modality tag, so it cannot be checked to be CT; assuming its pixels rescale to "
            "Hounsfield units: check the source",
            UserWarning,
            stacklevel=3,
        )
    elif modality not in allowed_modalities:
        raise ValueError(
            f"DICOM Modality {modality!r} is not in allowed_modalities {allowed_modalities}: Hounsfield windows "
            f"only make sense for CT; pass a CT slice, or add {modality!r} to allowed_modalities if its pixel "
            "values really are HU"
        )

    samples = int(_tag_value(dataset, "SamplesPerPixel") or 1)
    if samples > 1:
        raise ValueError(
            f"DICOM has {samples} samples per pixel (a colour image) but one 2-D grey CT slice is expected: "
            "pass the original grey CT slice, or a windowed RGB picture as a PIL image"
        )
    frames = int(_tag_value(dataset, "NumberOfFrames") or 1)
    if frames > 1:
        raise ValueError(
            f"DICOM has {frames} frames but one 2-D slice is expected: split it first and pass each frame as "
            "a 2-D HU array (hounsfield_units of the frame, e.g. pixel_array[i] * slope + intercept)"
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
            f"DICOM pixel array has shape {pixels.shape} but one 2-D grey slice is expected: split frames or "
            "channels first and pass a 2-D HU array"
        )
    _check_size(pixels.shape[0], pixels.shape[1], max_image_pixels, "DICOM image")

    slope, intercept = _tag_value(dataset, "RescaleSlope"), _tag_value(dataset, "RescaleIntercept")
    missing = [
        name for name, value in (("RescaleSlope", slope), ("RescaleIntercept", intercept)) if value is None
    ]
    if missing and (modality is None or modality == "CT"):
        warnings.warn(
            f"CT DICOM has no {' / '.join(missing)} tag(s); assuming slope 1 and intercept 0, which is right "
            "only if the stored values already are HU (many scanners store HU + 1024): check the source",
            UserWarning,
            stacklevel=3,
        )
    slope = 1.0 if slope is None else float(slope)
    intercept = 0.0 if intercept is None else float(intercept)
    _check_finite(pixels, "DICOM pixel data")
    hu = pixels.astype(np.float64) * slope + intercept
    _check_finite(hu, "HU after rescale")
    return hu.astype(np.float32)


def _is_pydicom_dataset(obj: Any) -> bool:
    # A Dataset can only exist once pydicom is imported, so this never imports it.
    pydicom = sys.modules.get("pydicom")
    return pydicom is not None and isinstance(obj, pydicom.Dataset)


def _has_dicom_magic(head: bytes) -> bool:
    return head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == _DICOM_MAGIC


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
        f"{name} is not a DICOM file (no 'DICM' marker) nor an image PIL can read: pass a DICOM slice, "
        "a PNG/JPEG image, or a 2-D numpy array of HU"
    )


def _decompression_bomb(name: str, err: Exception, max_image_pixels: int) -> ValueError:
    # PIL refuses images past twice its MAX_IMAGE_PIXELS at open time, before decoding; say so in one line.
    return ValueError(
        f"{name} is refused before decoding: {_one_line(err).rstrip('.')}; downscale it to at most "
        f"max_image_pixels={max_image_pixels:,} pixels"
    )


class ScopeformerImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    windows (`list[[level, width]]`, *optional*, defaults to `[[40, 80], [80, 200], [600, 2800]]`):
        Hounsfield windows, one output channel each (brain, subdural, bone). Width must be > 0.
    window_names (`list[str]`, *optional*, defaults to `["brain", "subdural", "bone"]`):
        Display names of the windows, one per window.
    allowed_modalities (`list[str]`, *optional*, defaults to `["CT"]`):
        DICOM Modality values accepted; others raise, since HU windows only make sense for CT.
    max_image_pixels (`int`, *optional*, defaults to `4096 * 4096`):
        Larger decoded images raise, to guard against huge uploads.
    """

    windows: Sequence[Sequence[int | float]] | None
    window_names: list[str] | tuple[str, ...] | None
    allowed_modalities: list[str] | tuple[str, ...] | None
    max_image_pixels: int | None


class ScopeformerImageProcessor(TorchvisionBackend):
    r"""
    Turns CT slices into Scopeformer `pixel_values`: decode to Hounsfield units, map each window to one
    [0, 1] channel, resize (bilinear, antialiased) and normalise with the ImageNet mean/std.

    Inputs, one or a list (kinds may be mixed): a DICOM path (`str` / `pathlib.Path`), DICOM file `bytes`, a
    `pydicom.Dataset`, a PNG/JPEG path, a PIL image ('L' or 'RGB', already windowed), a 2-D numpy array or
    torch tensor of HU, or an (H, W, 3) uint8 array (already windowed).

    `do_rescale` defaults to `False` because decoding already yields values in [0, 1].
    """

    valid_kwargs = ScopeformerImageProcessorKwargs
    model_input_names = ["pixel_values"]

    resample = PILImageResampling.BILINEAR
    size = {"height": 224, "width": 224}
    do_resize = True
    do_rescale = False
    do_normalize = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    windows = DEFAULT_WINDOWS
    window_names = DEFAULT_WINDOW_NAMES
    allowed_modalities = ["CT"]
    max_image_pixels = 4096 * 4096

    def __init__(self, **kwargs: Unpack[ScopeformerImageProcessorKwargs]):
        super().__init__(**kwargs)
        # Stored as plain lists of floats / strings so preprocessor_config.json round-trips unchanged.
        self.windows = _check_windows(self.windows)
        self.window_names = _check_names(self.window_names, "window_names", DEFAULT_WINDOW_NAMES)
        if len(self.window_names) != len(self.windows):
            raise ValueError(
                f"window_names has {len(self.window_names)} names but windows has {len(self.windows)} "
                "windows: give one name per window"
            )
        self.allowed_modalities = _check_names(self.allowed_modalities, "allowed_modalities", ["CT"])
        self.max_image_pixels = _check_max_image_pixels(self.max_image_pixels)
        if self.do_normalize:
            _check_mean_std(self.image_mean, self.image_std, len(self.windows))

    def input_contract(self) -> dict:
        """What the model expects, in MONAI's metadata vocabulary (for model cards and Spaces)."""
        return {
            "modality": "CT",
            "format": "hounsfield",
            "source": "one axial head-CT slice (DICOM: pixel * RescaleSlope + RescaleIntercept)",
            "windows": {n: {"level": w[0], "width": w[1]} for n, w in zip(self.window_names, self.windows, strict=True)},
            "channel_def": dict(enumerate(self.window_names)),
            "spatial_shape": [self.size.height, self.size.width],
            "value_range": [0.0, 1.0],
            "normalization": {"mean": list(self.image_mean), "std": list(self.image_std)},
            "num_channels": len(self.windows),
            "accepted_modalities": list(self.allowed_modalities),
        }

    def _validate_preprocess_kwargs(self, **kwargs) -> None:
        super()._validate_preprocess_kwargs(**kwargs)
        windows = _check_windows(kwargs.get("windows"))
        _check_names(kwargs.get("allowed_modalities"), "allowed_modalities", ["CT"])
        _check_max_image_pixels(kwargs.get("max_image_pixels"))
        if kwargs.get("do_normalize"):
            _check_mean_std(kwargs.get("image_mean"), kwargs.get("image_std"), len(windows))
        if kwargs.get("do_rescale"):
            warnings.warn(
                "do_rescale=True divides the decoded [0, 1] windows by 255 again: leave do_rescale=False",
                UserWarning,
                stacklevel=4,
            )

    def _decode_all(
        self,
        images: Any,
        windows: Sequence[Sequence[float]],
        allowed_modalities: Sequence[str],
        max_image_pixels: int,
    ) -> list[np.ndarray]:
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("No images given: pass one input or a non-empty list of inputs")
        return [self._decode(item, windows, allowed_modalities, max_image_pixels) for item in items]

    def _decode(
        self,
        item: Any,
        windows: Sequence[Sequence[float]],
        allowed_modalities: Sequence[str],
        max_image_pixels: int,
    ) -> np.ndarray:
        """Decodes one input to a float32 (len(windows), H, W) array in [0, 1]."""
        num_channels = len(windows)
        if isinstance(item, (str, os.PathLike)):
            return self._decode_path(item, windows, allowed_modalities, max_image_pixels)
        if isinstance(item, (bytes, bytearray, memoryview)):
            data = bytes(item)
            name = f"bytes input ({len(data)} bytes)"
            if not data:
                raise ValueError(
                    "bytes input is empty (0 bytes): the upload or read probably failed; pass the file's bytes"
                )
            if _has_dicom_magic(data):
                dataset = _read_dicom(io.BytesIO(data), name, force=False)
                return self._window_dataset(dataset, windows, allowed_modalities, max_image_pixels)
            try:
                image = Image.open(io.BytesIO(data))
            except UnidentifiedImageError as err:
                raise _not_readable(name) from err
            except Image.DecompressionBombError as err:
                raise _decompression_bomb(name, err, max_image_pixels) from err
            with image:
                return _decode_pil(image, num_channels, max_image_pixels, name)
        if _is_pydicom_dataset(item):
            return self._window_dataset(item, windows, allowed_modalities, max_image_pixels)
        if isinstance(item, Image.Image):
            return _decode_pil(item, num_channels, max_image_pixels, "PIL image")
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu()
            # numpy has no bfloat16 / float8.
            if tensor.is_floating_point() and tensor.dtype not in (
                torch.float16,
                torch.float32,
                torch.float64,
            ):
                tensor = tensor.to(torch.float32)
            return _decode_array(tensor.numpy(), windows, max_image_pixels, "torch tensor")
        if isinstance(item, np.ndarray):
            return _decode_array(item, windows, max_image_pixels, "numpy array")
        raise TypeError(
            f"Unsupported input type {type(item).__name__}: pass a DICOM/PNG/JPEG path, DICOM bytes, a "
            "pydicom.Dataset, a PIL image, a 2-D HU numpy array / torch tensor, or an (H, W, 3) uint8 array "
            "(or a flat list of these)"
        )

    def _decode_path(
        self,
        item: Any,
        windows: Sequence[Sequence[float]],
        allowed_modalities: Sequence[str],
        max_image_pixels: int,
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
            raise ValueError(
                f"{path!r} is a directory: pass one file per slice (e.g. a list of its .dcm files)"
            )
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
            return self._window_dataset(dataset, windows, allowed_modalities, max_image_pixels)
        try:
            image = Image.open(path)
        except UnidentifiedImageError as err:
            raise _not_readable(repr(path)) from err
        except Image.DecompressionBombError as err:
            raise _decompression_bomb(repr(path), err, max_image_pixels) from err
        with image:
            return _decode_pil(image, len(windows), max_image_pixels, repr(path))

    @staticmethod
    def _window_dataset(
        dataset: Any,
        windows: Sequence[Sequence[float]],
        allowed_modalities: Sequence[str],
        max_image_pixels: int,
    ) -> np.ndarray:
        hu = hounsfield_units(
            dataset, allowed_modalities=allowed_modalities, max_image_pixels=max_image_pixels
        )
        return apply_windows(hu, windows)

    def window(
        self,
        images: Any,
        windows: Sequence[Sequence[float]] | None = None,
        allowed_modalities: Sequence[str] | None = None,
        max_image_pixels: int | None = None,
    ) -> list[np.ndarray]:
        """Decodes inputs to their windowed images, before resize and normalisation (e.g. to show in a UI).

        Args:
            images: one input or a list of inputs, of any kind `__call__` accepts.
            windows, allowed_modalities, max_image_pixels: override the processor's settings.

        Returns:
            `list[np.ndarray]`: one float32 (len(windows), H, W) array in [0, 1] per input, at native size.
        """
        windows = _check_windows(self.windows if windows is None else windows)
        allowed_modalities = _check_names(
            self.allowed_modalities if allowed_modalities is None else allowed_modalities,
            "allowed_modalities",
            ["CT"],
        )
        max_image_pixels = _check_max_image_pixels(
            self.max_image_pixels if max_image_pixels is None else max_image_pixels
        )
        return self._decode_all(images, windows, allowed_modalities, max_image_pixels)

    def _prepare_image_like_inputs(
        self,
        images: Any,
        *args,
        expected_ndims: int = 3,
        **kwargs: Unpack[ScopeformerImageProcessorKwargs],
    ) -> list[torch.Tensor]:
        # Replaces the base fetch + process_image route: it would open a DICOM path with PIL and treat a
        # 2-D HU array as a grey picture.
        decoded = self._decode_all(
            images,
            _check_windows(kwargs.get("windows")),
            kwargs.get("allowed_modalities"),
            kwargs.get("max_image_pixels"),
        )
        device = kwargs.get("device")
        tensors = [torch.from_numpy(image) for image in decoded]
        return [tensor.to(device) for tensor in tensors] if device is not None else tensors


def _decode_pil(image: Image.Image, num_channels: int, max_image_pixels: int, name: str) -> np.ndarray:
    width, height = image.size
    _check_size(height, width, max_image_pixels, name)
    if image.mode not in ("L", "RGB"):
        raise ValueError(
            f"{name} has PIL mode {image.mode!r}, but only already-windowed 'L' (grey, copied to every window "
            "channel) or 'RGB' (one window per channel) images are accepted: convert it first, e.g. "
            "image.convert('RGB'), or pass raw HU as a 2-D numpy array"
        )
    if image.mode == "RGB" and num_channels != 3:
        raise ValueError(
            f"{name} is RGB (3 channels) but the processor has {num_channels} windows: pass an 'L' image, a "
            "2-D HU array, or use 3 windows"
        )
    try:
        pixels = np.asarray(image)
    except OSError as err:
        raise ValueError(f"{name} could not be decoded: {_one_line(err)}; pass an uncorrupted image") from err
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[None], num_channels, axis=0)
    else:
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=np.float32) / np.float32(255.0)


def _decode_array(
    array: np.ndarray, windows: Sequence[Sequence[float]], max_image_pixels: int, name: str
) -> np.ndarray:
    num_channels = len(windows)
    _check_real_dtype(array, name)
    if array.ndim == 2:
        _check_size(array.shape[0], array.shape[1], max_image_pixels, name)
        return apply_windows(array, windows)
    if array.ndim == 3 and array.dtype == np.uint8 and array.shape[-1] == num_channels:
        _check_size(array.shape[0], array.shape[1], max_image_pixels, name)
        return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    raise ValueError(
        f"{name} has shape {tuple(array.shape)} and dtype {array.dtype}, which is neither a 2-D HU slice nor "
        f"an (H, W, {num_channels}) uint8 windowed image: {_ARRAY_HINT.format(n=num_channels)}"
    )


__all__ = ["ScopeformerImageProcessor"]
