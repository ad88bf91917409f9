"""Image processor for Slice-CNN: one 3-D brain MRI -> a z-scored RAS volume at 2 mm, 91x109x91 voxels.

Papers: Gupta et al., "Improved Brain Age Estimation with Slice-based Set Networks", arXiv 2102.04438 (ISBI
2021); Gupta et al., "Transferring Models Trained on Natural Images to 3D MRI via Position Encoded Slice
Models", arXiv 2303.01491 (ISBI 2023). Official code: github.com/umgupta/2d-slice-set-networks.

What the papers and the official code do: the inputs are UK Biobank / ADNI T1-weighted volumes already
registered to the 2 mm MNI152 template with FSL (9 degrees of freedom; the CSV column is `9dof_2mm_vol`),
91x109x91 voxels. The data loaders read each file with nibabel exactly as stored (no reorientation) and
z-score it over *all* voxels of the volume, background included, with the population standard deviation:
`(v - v.mean()) / v.std()` (src/common/data/ukbb_brain_age.py and adni.py). No brain mask is used.

Everything else below is our choice, not the papers':

- Reorientation to `orientation` (default "RAS": the voxel index grows towards the subject's Right,
  Anterior, Superior; nibabel's letter convention) by the closest canonical orientation, the algorithm of
  `nibabel.as_closest_canonical` (flips and axis permutations only: an oblique volume is not rotated).
  Caution: FSL's MNI152 2 mm template stores x flipped (LAS, sform x step -2 mm), so the official models saw
  LAS arrays. Use `orientation="LAS"` with weights converted from the official code, so that slice index
  (and the learned position encoding) means the same thing.
- Resampling to `target_spacing` (default 2 mm isotropic) with torch's trilinear interpolation
  (`F.interpolate(mode="trilinear", align_corners=False)` given the exact scale factors), without
  antialiasing. Grids are edge-aligned: the output field of view starts where the input's starts (output
  voxel 0 is centred (t - s) / 2 mm from input voxel 0, for input spacing s and target t), and an axis of n
  voxels gets floor(n * s / t) voxels (with 1e-4 voxel of tolerance, so float32 pixdims such as 0.7 do not
  lose a voxel). Axes whose spacing already equals the target are left untouched (no blur).
- Central crop or pad to `target_shape` (default 91x109x91, the MNI 2 mm grid size), padding with
  `pad_value` (default 0, the background of a skull-stripped or registered MRI). Along an axis of n voxels
  and target T the first kept / written voxel is (n - T) // 2 / (T - n) // 2, so an odd difference drops or
  adds the extra voxel at the far end, and padding then cropping back returns the input.
- Z-score last, over the final volume (padding included, as the official z-score included background);
  `zscore_mask="nonzero"` instead uses the non-zero voxels only and leaves zero voxels at 0 (MONAI's
  `NormalizeIntensity(nonzero=True)`). A constant volume raises instead of dividing by zero.
- No registration to MNI space, skull stripping or bias-field correction: give registered volumes to
  reproduce the papers (for a 2 mm MNI volume the processor only reorients and z-scores).
- A numpy / torch volume without an affine is taken as already in `orientation` at `target_spacing` (so it
  is neither reoriented nor resampled), with a warning. An affine must map voxel indices to NIfTI world
  coordinates (RAS+, mm): convert a DICOM / ITK (LPS+) affine by negating its first two rows.
- A NIfTI whose shape has trailing singleton axes, e.g. (x, y, z, 1), is squeezed to 3-D; more than one
  volume (fMRI, diffusion) raises.
- Speed, with the same numbers: a .nii.gz is inflated by python-isal when it is installed (`pip install
  hfmed[fast]`; about twice zlib's speed), else by the standard library's zlib, in one call per gzip member
  straight from the memory-mapped file, and the voxels are read in place from the inflated bytes (scaled by
  nibabel's `apply_read_scaling`, as `get_fdata` does); the inputs of one call are decoded in up to
  `num_threads` threads (default None: `torch.get_num_threads()`, 1 inside DataLoader workers; the torch steps
  stay in the calling thread), with results, warnings and the first error in input order.
- Input guards: NIfTI-1 / NIfTI-2 files only (checked by header magic, gzip or not), a single 3-D volume,
  real finite voxels, a non-singular affine, at most `max_voxels` voxels (default 2**26, about 406**3; checked
  on the header before the data are decoded, and again for the resampled grid).

This file must stay importable on its own (it is copied flat to the Hub for `trust_remote_code`), so it
imports nothing from `hfmed`, and it imports nibabel only when a NIfTI file is decoded.
"""

import collections
import contextlib
import gzip
import math
import mmap
import os
import struct
import sys
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ImagesKwargs, Unpack

DEFAULT_SPACING = [2.0, 2.0, 2.0]
DEFAULT_SHAPE = [91, 109, 91]
DEFAULT_MAX_VOXELS = 2**26
ZSCORE_MASKS = ("volume", "nonzero")

# Orientation letters: the world axis (0 x, 1 y, 2 z of RAS+ NIfTI space) and the direction the index grows.
_AXIS_LETTERS = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
_AXIS_WORDS = {
    "R": "left -> right",
    "L": "right -> left",
    "A": "posterior -> anterior",
    "P": "anterior -> posterior",
    "S": "inferior -> superior",
    "I": "superior -> inferior",
}
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_HEADER_SIZE = 348
_NIFTI2_HEADER_SIZE = 540
# Bytes per voxel of each NIfTI datatype code (the header's bitpix is sometimes wrong; nibabel trusts datatype).
_NIFTI_ITEMSIZE = {
    2: 1,
    4: 2,
    8: 4,
    16: 4,
    32: 8,
    64: 8,
    128: 3,
    256: 1,
    512: 2,
    768: 4,
    1024: 8,
    1280: 8,
    1536: 16,
    1792: 16,
    2048: 32,
    2304: 4,
}
# Relative tolerance under which an input spacing counts as equal to the target (float32 pixdims).
_SPACING_RTOL = 1e-5
_NIFTI_HINT = "pass a .nii or .nii.gz volume (convert DICOM series first, e.g. with dcm2niix)"
# Where a header may put the voxels at most (vox_offset): 348/540 header bytes plus extensions (DICOM headers,
# CIFTI XML), which are kilobytes to a few megabytes in practice. Our choice, a bound against corrupted headers.
_MAX_VOX_OFFSET = 64 << 20
# Compressed bytes inflated to read a .nii.gz header (more only if they hold fewer than its 540 bytes).
_COMPRESSED_HEAD = 64 << 10


# Copied from hfmed.models.scopeformer.image_processing_scopeformer._one_line
def _one_line(text: Any) -> str:
    # Third-party messages can span lines; ours promise one line (logs, Gradio toasts).
    return " ".join(str(text).split())


# Warnings raised in a worker thread of `_run_in_order`, re-raised in the calling thread in input order.
_thread_warnings = threading.local()


def _warn(message: str) -> None:
    pending = getattr(_thread_warnings, "messages", None)
    if pending is not None:
        pending.append(message)
        return
    # Point the warning at the user's line, past this file and transformers' preprocess plumbing.
    frame, level = sys._getframe(0), 1
    while frame is not None and (
        frame.f_code.co_filename == __file__ or f"{os.sep}transformers{os.sep}" in frame.f_code.co_filename
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _check_bool(value: Any, field: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{field} must be True or False, got {value!r}")
    return bool(value)


def _check_spacing(value: Any) -> list[float]:
    """Validates `target_spacing` and returns it as a JSON-friendly list of three floats (mm)."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        value = [value] * 3
    hint = f"e.g. target_spacing={DEFAULT_SPACING} (mm, x y z)"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"target_spacing must be three voxel sizes in mm, got {value!r}: {hint}")
    spacing = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float, np.number)):
            raise ValueError(f"target_spacing must hold numbers, got {value!r}: {hint}")
        if not math.isfinite(float(item)) or float(item) <= 0:
            raise ValueError(f"target_spacing must be finite and > 0 mm, got {value!r}: {hint}")
        spacing.append(float(item))
    return spacing


def _check_shape(value: Any) -> list[int]:
    """Validates `target_shape` and returns it as a list of three positive ints."""
    hint = f"e.g. target_shape={DEFAULT_SHAPE} (voxels, x y z)"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"target_shape must be three voxel counts, got {value!r}: {hint}")
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in value):
        raise ValueError(f"target_shape must hold three positive ints, got {value!r}: {hint}")
    return [int(n) for n in value]


def _check_orientation(value: Any) -> str:
    hint = "e.g. orientation='RAS' (or 'LAS' for FSL-stored MNI volumes)"
    if not isinstance(value, str) or len(value) != 3:
        raise ValueError(f"orientation must be a 3-letter axis code, got {value!r}: {hint}")
    code = value.upper()
    if any(letter not in _AXIS_LETTERS for letter in code) or sorted(
        _AXIS_LETTERS[letter][0] for letter in code
    ) != [0, 1, 2]:
        raise ValueError(f"orientation {value!r} must use one letter of each pair R/L, A/P, S/I: {hint}")
    return code


def _check_zscore_mask(value: Any) -> str:
    if value not in ZSCORE_MASKS:
        raise ValueError(
            f"zscore_mask must be one of {list(ZSCORE_MASKS)}, got {value!r}: 'volume' (all voxels, the official "
            "code) or 'nonzero'"
        )
    return value


def _check_pad_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
        raise ValueError(f"pad_value must be a finite number, got {value!r}: e.g. pad_value=0.0")
    return float(value)


def _check_max_voxels(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(
            f"max_voxels must be a positive int, got {value!r}: e.g. max_voxels={DEFAULT_MAX_VOXELS}"
        )
    return int(value)


# Copied from hfmed.models.lt_vit.image_processing_lt_vit._check_num_threads
def _check_num_threads(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"num_threads must be a positive int or None (as many as torch.get_num_threads()), got {value!r}: "
            "e.g. num_threads=1 to read the inputs one after another"
        )
    return int(value)


def _run_in_order(
    decode: Callable[[int], Any], finish: Callable[[int, Any], Any], count: int, threads: int | None
) -> list[Any]:
    """`[finish(i, decode(i)) for i in range(count)]`, with `decode` in up to `threads` worker threads (None: as
    many as `torch.get_num_threads()`) and `finish` in the caller's thread, as each input's turn comes.

    What a plain loop gives: the same results in input order, the warnings of `_warn` in input order from the
    caller's thread, and the error of the first failing input (the warnings of the inputs before it still
    raised). Decoding (zlib / isal, numpy copies) releases the GIL, so workers overlap on several cores; the
    torch steps (`finish`) stay in the caller's thread, where torch's own intra-op threads serve them (torch
    called from many threads at once would start a team of intra-op threads in each). At most two inputs per
    worker are decoded ahead of `finish`, to bound memory.
    """
    threads = min(count, torch.get_num_threads() if threads is None else threads)
    if threads <= 1:
        return [finish(index, decode(index)) for index in range(count)]

    def collect(index: int) -> tuple[Any, list[str], Exception | None]:
        _thread_warnings.messages = messages = []
        try:
            return decode(index), messages, None
        except Exception as err:  # re-raised in input order below
            return None, messages, err
        finally:
            _thread_warnings.messages = None

    results = []
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="slice_cnn_decode") as pool:
        pending = collections.deque(pool.submit(collect, index) for index in range(min(count, 2 * threads)))
        try:
            for index in range(count):
                decoded, messages, error = pending.popleft().result()
                if index + len(pending) + 1 < count:
                    pending.append(pool.submit(collect, index + len(pending) + 1))
                for message in messages:
                    _warn(message)
                if error is not None:
                    raise error
                results.append(finish(index, decoded))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return results


def _check_real_dtype(dtype: np.dtype, name: str) -> None:
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise ValueError(
            f"{name} has voxel type {dtype}, not real numbers: pass a real-valued scalar volume (int or float)"
        )


def _squeeze_to_3d(shape: Sequence[int], name: str, nifti: bool) -> tuple[int, ...]:
    """The 3-D shape of a volume, dropping trailing singleton axes; raises for anything else."""
    shape = tuple(int(n) for n in shape)
    spatial = shape
    while len(spatial) > 3 and spatial[-1] == 1:
        spatial = spatial[:-1]
    if len(spatial) > 3:
        if nifti:
            volumes = math.prod(spatial[3:])
            raise ValueError(
                f"{name} is {len(shape)}-D with shape {shape} ({volumes} volumes, e.g. an fMRI or diffusion "
                "series) but one 3-D volume is expected: pass a single volume, e.g. nibabel.load(path).slicer[..., 0]"
            )
        raise ValueError(
            f"{name} has shape {shape} but one 3-D (x, y, z) volume is expected: pass a 3-D array (for a batch "
            "pass a list of volumes; drop a channel axis with volume[0])"
        )
    if len(spatial) < 3:
        raise ValueError(
            f"{name} has shape {shape}, {len(spatial)}-D, but a 3-D (x, y, z) volume is expected: pass a whole "
            "volume, not a single slice"
        )
    if min(spatial) < 2:
        raise ValueError(
            f"{name} has shape {shape} with fewer than 2 voxels along an axis, a slice rather than a volume: pass "
            "a 3-D volume"
        )
    return spatial


def _check_voxels(shape: Sequence[int], max_voxels: int, name: str, what: str = "") -> None:
    count = math.prod(shape)
    if count > max_voxels:
        raise ValueError(
            f"{name}{what} has shape {tuple(shape)} = {count:,} voxels, more than max_voxels={max_voxels:,}: "
            "downsample or crop it first, or raise max_voxels if you trust the source"
        )


def _check_finite(volume: np.ndarray, name: str) -> None:
    bad = int(volume.size - np.count_nonzero(np.isfinite(volume)))
    if bad:
        raise ValueError(
            f"{name} contains {bad} NaN/inf voxel(s): fix the source, or replace them first "
            "(e.g. np.nan_to_num(volume, nan=0.0, posinf=0.0, neginf=0.0))"
        )


def _check_affine(affine: Any, name: str) -> np.ndarray:
    """Validates a 4x4 voxel-to-world affine (finite, last row 0 0 0 1, non-singular); returns float64."""
    try:
        matrix = np.array(affine, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"affine of {name} is not a numeric 4x4 matrix: pass a 4x4 voxel-to-world (RAS+, mm) affine"
        ) from err
    if matrix.shape != (4, 4):
        raise ValueError(
            f"affine of {name} has shape {matrix.shape} but a 4x4 voxel-to-world (RAS+, mm) matrix is expected"
        )
    if not np.isfinite(matrix).all():
        raise ValueError(
            f"affine of {name} contains NaN/inf: fix the header (sform/qform) or the affine you pass"
        )
    if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(
            f"affine of {name} has last row {matrix[3].tolist()} but [0, 0, 0, 1] is expected: pass an affine "
            "(homogeneous) voxel-to-world matrix"
        )
    zooms = np.linalg.norm(matrix[:3, :3], axis=0)
    det = float(np.linalg.det(matrix[:3, :3]))
    if zooms.min() == 0 or abs(det) <= 1e-6 * float(np.prod(zooms)):
        raise ValueError(
            f"affine of {name} is singular (voxel sizes {np.round(zooms, 4).tolist()} mm, determinant {det:.3g}): "
            "its voxel axes do not span 3-D space, so orientation and spacing are undefined; fix the NIfTI "
            "header (sform/qform, pixdim) or pass a valid affine"
        )
    return matrix


def _voxel_axes(affine: np.ndarray) -> list[tuple[int, int]]:
    """For each voxel axis, the closest world axis and the direction (+1 / -1) the index grows along it.

    The polar decomposition and greedy assignment of `nibabel.orientations.io_orientation`: strongest axes
    first, each world axis used once.
    """
    rzs = affine[:3, :3]
    rs = rzs / np.linalg.norm(rzs, axis=0)
    left, _, right = np.linalg.svd(rs)
    rotation = left @ right
    result: list[tuple[int, int]] = [(0, 1)] * 3
    for voxel_axis in np.argsort(np.min(-(rotation**2), axis=0), kind="stable"):
        column = rotation[:, voxel_axis]
        world_axis = int(np.argmax(np.abs(column)))
        result[voxel_axis] = (world_axis, 1 if column[world_axis] >= 0 else -1)
        rotation[world_axis, :] = 0.0
    if sorted(world for world, _ in result) != [0, 1, 2]:
        raise ValueError(
            f"affine {np.round(affine, 4).tolist()} has no unambiguous closest orientation: pass an affine whose "
            "voxel axes are near the world axes, or set do_reorient=False"
        )
    return result


def reorient(
    volume: np.ndarray, affine: np.ndarray, orientation: str = "RAS"
) -> tuple[np.ndarray, np.ndarray]:
    """Flips and permutes voxel axes to the closest match of `orientation` (as `nibabel.as_closest_canonical`).

    Args:
        volume (`np.ndarray`): a 3-D volume.
        affine (`np.ndarray`): its 4x4 voxel-to-world (RAS+, mm) affine.
        orientation (`str`): target axis code, nibabel convention (letter = direction the index grows).

    Returns:
        `(volume, affine)`: the reoriented volume (a view where possible) and its affine, mapping the same
        voxels to the same world points.
    """
    orientation = _check_orientation(orientation)
    target = [_AXIS_LETTERS[letter] for letter in orientation]
    target_axis_of_world = {world: axis for axis, (world, _) in enumerate(target)}
    transform = np.zeros((4, 4))
    transform[3, 3] = 1.0
    permutation = [0, 0, 0]
    for voxel_axis, (world, sign) in enumerate(_voxel_axes(affine)):
        out_axis = target_axis_of_world[world]
        permutation[out_axis] = voxel_axis
        flip = sign != target[out_axis][1]
        if flip:
            volume = np.flip(volume, axis=voxel_axis)
            # Output index u reads input index n - 1 - u along this axis.
            transform[voxel_axis, out_axis] = -1.0
            transform[voxel_axis, 3] = volume.shape[voxel_axis] - 1
        else:
            transform[voxel_axis, out_axis] = 1.0
    return np.transpose(volume, permutation), affine @ transform


def _resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> list[int]:
    out = []
    for n, step, goal in zip(shape, spacing, target, strict=True):
        if math.isclose(step, goal, rel_tol=_SPACING_RTOL):
            out.append(int(n))
        else:
            out.append(max(1, math.floor(n * step / goal + 1e-4)))
    return out


def resample(
    volume: torch.Tensor, affine: np.ndarray, target_spacing: Sequence[float]
) -> tuple[torch.Tensor, np.ndarray]:
    """Trilinear resampling of a 3-D volume along its voxel axes to `target_spacing` (mm).

    The voxel size of axis k is the norm of the affine's column k. One `F.interpolate(mode="trilinear",
    align_corners=False)` call with the exact scale factors s / t (`recompute_scale_factor=False`), so output
    voxel j samples input coordinate (j + 0.5) * t / s - 0.5, clamped to the volume (border replicate). See
    the module docstring for the grid convention (edge-aligned, floor(n * s / t) voxels, untouched axes where
    the spacing already matches).

    Returns:
        `(volume, affine)`: the resampled volume and its affine.
    """
    target_spacing = _check_spacing(target_spacing)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    sizes = _resampled_shape(volume.shape, spacing, target_spacing)
    if list(sizes) == list(volume.shape) and all(
        math.isclose(step, goal, rel_tol=_SPACING_RTOL)
        for step, goal in zip(spacing, target_spacing, strict=True)
    ):
        return volume, affine
    scales = []
    for n, size, step, goal in zip(volume.shape, sizes, spacing, target_spacing, strict=True):
        scale = 1.0 if math.isclose(step, goal, rel_tol=_SPACING_RTOL) else float(step / goal)
        if math.floor(n * scale) != size:
            # torch sizes the output floor(n * scale); our size allows 1e-4 voxel of float32 pixdim error, so
            # nudge the scale by that much (it moves no sample by more than 1e-4 voxel).
            scale = (size + 1e-6) / n
        scales.append(scale)
    volume = F.interpolate(
        volume[None, None],
        scale_factor=tuple(scales),
        mode="trilinear",
        align_corners=False,
        recompute_scale_factor=False,
    )[0, 0]
    affine = affine.copy()
    for axis, scale in enumerate(scales):
        if scale == 1.0:
            continue
        step = 1.0 / scale
        # Voxel 0 of the new grid sits at old coordinate 0.5 * step - 0.5; one new voxel is `step` old ones.
        affine[:3, 3] = affine[:3, 3] + affine[:3, axis] * (0.5 * step - 0.5)
        affine[:3, axis] = affine[:3, axis] * step
    return volume, affine


def crop_or_pad(
    volume: torch.Tensor, affine: np.ndarray, target_shape: Sequence[int], pad_value: float = 0.0
) -> tuple[torch.Tensor, np.ndarray]:
    """Central crop or pad to `target_shape` (first kept voxel (n - T) // 2, first written (T - n) // 2)."""
    target_shape = _check_shape(target_shape)
    out = torch.full(target_shape, float(pad_value), dtype=volume.dtype, device=volume.device)
    source, destination = [], []
    shift = np.zeros(3)
    for axis, (n, goal) in enumerate(zip(volume.shape, target_shape, strict=True)):
        if n >= goal:
            start = (n - goal) // 2
            source.append(slice(start, start + goal))
            destination.append(slice(0, goal))
            shift[axis] = start
        else:
            start = (goal - n) // 2
            source.append(slice(0, n))
            destination.append(slice(start, start + n))
            shift[axis] = -start
    out[tuple(destination)] = volume[tuple(source)]
    affine = affine.copy()
    affine[:3, 3] = affine[:3, 3] + affine[:3, :3] @ shift
    return out, affine


def zscore(volume: torch.Tensor, mask: str = "volume", name: str = "volume") -> torch.Tensor:
    """Per-volume z-score with the population standard deviation (numpy's default, as the official code).

    `mask="volume"` uses every voxel; `mask="nonzero"` uses the non-zero voxels and leaves zeros at 0.
    """
    mask = _check_zscore_mask(mask)
    values = volume.double()
    selected = values[values != 0] if mask == "nonzero" else values.reshape(-1)
    if selected.numel() == 0:
        raise ValueError(
            f"{name} has no non-zero voxels, so zscore_mask='nonzero' has nothing to normalise: check the file"
        )
    mean = selected.mean()
    std = selected.std(correction=0)
    if not bool(std > 0):
        raise ValueError(
            f"{name} is constant after preprocessing (every {'non-zero ' if mask == 'nonzero' else ''}voxel = "
            f"{float(mean):.6g}), so its z-score is undefined: check the file (blank or empty volume)"
        )
    normalised = (values - mean) / std
    if mask == "nonzero":
        normalised = torch.where(values != 0, normalised, torch.zeros_like(normalised))
    return normalised.to(torch.float32)


class OrthogonalSlices(NamedTuple):
    """The three middle slices of a volume, 2-D float32 arrays oriented for display (see `orthogonal_slices`)."""

    sagittal: np.ndarray
    coronal: np.ndarray
    axial: np.ndarray


# --- NIfTI decoding -------------------------------------------------------------------------------------


def _nifti_layout(head: bytes) -> tuple[str, tuple[int, ...], int, int, float] | None:
    """Reads kind ("nifti1" / "nifti2" / "pair"), shape, datatype, bitpix and vox_offset from raw header bytes."""
    for order in ("<", ">"):
        if (
            len(head) >= _NIFTI1_HEADER_SIZE
            and struct.unpack(order + "i", head[:4])[0] == _NIFTI1_HEADER_SIZE
        ):
            magic = head[344:348]
            if magic == b"ni1\x00":
                return ("pair", (), 0, 0, 0.0)
            if magic != b"n+1\x00":
                return None
            dim = struct.unpack(order + "8h", head[40:56])
            datatype, bitpix = struct.unpack(order + "2h", head[70:74])
            vox_offset = struct.unpack(order + "f", head[108:112])[0]
            kind = "nifti1"
        elif (
            len(head) >= _NIFTI2_HEADER_SIZE
            and struct.unpack(order + "i", head[:4])[0] == _NIFTI2_HEADER_SIZE
        ):
            if head[4:8] not in (b"n+2\x00", b"ni2\x00"):
                return None
            if head[4:8] == b"ni2\x00":
                return ("pair", (), 0, 0, 0.0)
            datatype, bitpix = struct.unpack(order + "2h", head[12:16])
            dim = struct.unpack(order + "8q", head[16:80])
            vox_offset = float(struct.unpack(order + "q", head[168:176])[0])
            kind = "nifti2"
        else:
            continue
        ndim = dim[0]
        if not 1 <= ndim <= 7 or any(n < 1 for n in dim[1 : ndim + 1]):
            raise ValueError(
                f"NIfTI header has an invalid dim field {list(dim)}: the file is corrupted; re-export the volume"
            )
        return (kind, tuple(int(n) for n in dim[1 : ndim + 1]), int(datatype), int(bitpix), float(vox_offset))
    return None


def _what_is_it(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return " (it is a PNG image)"
    if head.startswith(b"\xff\xd8\xff"):
        return " (it is a JPEG image)"
    if head[128:132] == b"DICM":
        return " (it is a DICOM file)"
    return ""


@contextlib.contextmanager
def _gunzip_errors(name: str) -> Iterator[None]:
    """Turns the errors of a bad gzip stream into our one-line ValueError."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(
            f"{name} could not be decompressed as gzip: {_one_line(err)}; pass an uncorrupted .nii.gz file"
        ) from err


def _expected_size(head: bytes, name: str, max_voxels: int, compressed: bool) -> int:
    """Checks a NIfTI header (its first 540 bytes or fewer) and returns the file's size up to its last voxel."""
    layout = _nifti_layout(head)
    if layout is None:
        where = " after gunzip" if compressed else ""
        raise ValueError(
            f"{name} is not a NIfTI file (no NIfTI-1/NIfTI-2 header{where}){_what_is_it(head)}: {_NIFTI_HINT}"
        )
    kind, shape, datatype, bitpix, vox_offset = layout
    if kind == "pair":
        raise ValueError(
            f"{name} is the header of a NIfTI .hdr/.img pair, whose voxels live in another file: convert it to "
            "one .nii file first (e.g. nibabel.save(nibabel.load('x.hdr'), 'x.nii'))"
        )
    spatial = _squeeze_to_3d(shape, name, nifti=True)
    _check_voxels(spatial, max_voxels, name)
    if not math.isfinite(vox_offset) or vox_offset > _MAX_VOX_OFFSET:
        # A corrupted offset would make us read (or gunzip) up to that many bytes before noticing.
        raise ValueError(
            f"{name} has a corrupted header: its voxels would start at byte {vox_offset:g} (vox_offset), past the "
            f"{_MAX_VOX_OFFSET >> 20} MB a NIfTI header and its extensions can take: re-export the volume"
        )
    itemsize = _NIFTI_ITEMSIZE.get(datatype, max(bitpix, 8) // 8)
    return int(vox_offset) + math.prod(shape) * itemsize


def _inflate_module() -> Any:
    """The zlib-compatible inflater: python-isal's `isal_zlib` when installed (`pip install isal`, the `fast`
    extra; about twice as fast as zlib on NIfTI voxels), else the standard library's `zlib`. Both give the
    same bytes."""
    try:
        from isal import isal_zlib  # optional, see the docstring
    except ImportError:
        return zlib
    return isal_zlib


def _inflate(module: Any, inflater: Any, data: Any, size: int) -> bytes:
    try:
        return inflater.decompress(data, size)
    except module.error as err:
        if module is zlib:
            raise
        raise zlib.error(_one_line(err)) from err


def _gunzip(compressed: Any, size: int) -> bytes:
    """The first `size` inflated bytes of a gzip stream (fewer if the stream holds fewer), one or more members.

    `compressed` is any buffer (bytes, a memory-mapped file). One inflate call per member with
    `max_length=size` (what `gzip.GzipFile` does in 8 KiB steps): the output is one bytes object, inflated
    only as far as asked, so a gzip bomb inflates no more than the header promises, and memory follows the
    bytes actually inflated. Where the `size` bytes end a member, its CRC is checked too. Raises like `gzip`:
    `EOFError` for a stream cut before its end marker, `gzip.BadGzipFile` for garbage after a member (zeros
    between members are skipped, as gzip does), `zlib.error` for corrupt data, whichever inflater found it.
    """
    module = _inflate_module()
    pieces, remaining, data = [], size, compressed
    while remaining > 0:
        inflater = module.decompressobj(31)  # 16 + 15: a gzip wrapper around a 32 KiB-window deflate
        piece = _inflate(module, inflater, data, remaining)
        pieces.append(piece)
        remaining -= len(piece)
        if remaining <= 0:
            if not inflater.eof:
                # A corrupt stream can inflate to plausible garbage; one more byte asked reaches the end of the
                # member, and so its CRC check, when the voxels end it (a longer member is left unread).
                _inflate(module, inflater, inflater.unconsumed_tail, 1)
            break
        if not inflater.eof:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        data = inflater.unused_data.lstrip(b"\x00")
        if not data:
            break
        if data[:2] != _GZIP_MAGIC:
            raise gzip.BadGzipFile(f"Not a gzipped file ({data[:2]!r})")
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _nifti_bytes(buffer: Any, name: str, max_voxels: int) -> bytes:
    """The bytes of the NIfTI file in `buffer` (gzip or not) up to its last voxel, header checked first."""
    compressed = bytes(buffer[:2]) == _GZIP_MAGIC
    if compressed:
        with _gunzip_errors(name):
            # The header from the first 64 KiB of compressed bytes (all of them if that falls short).
            head = _gunzip(buffer[:_COMPRESSED_HEAD], _NIFTI2_HEADER_SIZE)
            if len(head) < _NIFTI2_HEADER_SIZE and len(buffer) > _COMPRESSED_HEAD:
                head = _gunzip(buffer, _NIFTI2_HEADER_SIZE)
    else:
        head = bytes(buffer[:_NIFTI2_HEADER_SIZE])
    expected = _expected_size(head, name, max_voxels, compressed)
    if compressed:
        with _gunzip_errors(name):
            data = _gunzip(buffer, expected)
    elif isinstance(buffer, bytes) and len(buffer) == expected:
        data = buffer
    else:
        data = bytes(buffer[:expected])
    if len(data) < expected:
        raise ValueError(
            f"{name} is truncated: its header promises {expected:,} bytes but the file has {len(data):,}: the "
            "upload or copy probably failed; pass the complete file"
        )
    return data


def _nifti_bytes_from_path(item: Any, max_voxels: int) -> tuple[bytes, str]:
    path = os.fspath(item)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    name = repr(path)
    if path.startswith(("http://", "https://")):
        raise ValueError(f"{name} is a URL and URLs are not fetched: download the file and pass its path")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {name}: pass the path of an existing .nii or .nii.gz file")
    if os.path.isdir(path):
        raise ValueError(
            f"{name} is a directory: pass one .nii / .nii.gz file per volume (e.g. a list of them)"
        )
    if os.path.getsize(path) == 0:
        raise ValueError(
            f"{name} is empty (0 bytes): the upload or copy probably failed; pass a non-empty file"
        )
    with open(path, "rb") as handle:
        try:
            # Memory-mapped, so the compressed bytes are inflated in place rather than copied in first.
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # not a regular file (a pipe, some network file systems)
            return _nifti_bytes(handle.read(), name, max_voxels), name
    with mapped:  # zlib reads the map through the buffer protocol; its slices are bytes copies
        return _nifti_bytes(mapped, name, max_voxels), name


def _nifti_bytes_from_bytes(data: bytes, max_voxels: int) -> tuple[bytes, str]:
    name = f"bytes input ({len(data)} bytes)"
    if not data:
        raise ValueError(
            "bytes input is empty (0 bytes): the upload or read probably failed; pass the file's bytes"
        )
    return _nifti_bytes(data, name, max_voxels), name


def _image_from_nifti_bytes(data: bytes, name: str) -> Any:
    import nibabel  # lazy: the module must import without nibabel installed

    klass = nibabel.Nifti2Image if _nifti_layout(data)[0] == "nifti2" else nibabel.Nifti1Image
    try:
        return klass.from_bytes(data)
    except Exception as err:
        raise ValueError(
            f"{name} could not be read as NIfTI: {_one_line(err)}; pass an uncorrupted file"
        ) from err


def _is_nibabel_image(obj: Any) -> bool:
    # A nibabel image can only exist once nibabel is imported, so this never imports it.
    nibabel = sys.modules.get("nibabel")
    return nibabel is not None and isinstance(obj, nibabel.spatialimages.SpatialImage)


def _voxels_in_bytes(image: Any, data: bytes) -> np.ndarray:
    """`image.get_fdata(dtype=np.float32)` for an image nibabel read from `data` (`from_bytes`), without
    nibabel's copy of the voxels into a zero-filled buffer (about 15 ms for a 1 mm T1): the voxels are a
    view of `data` (read-only), scaled by nibabel's own `apply_read_scaling` with the scale factors cast as
    its `ArrayProxy` casts them for a float32 read; the same numbers (tested against `get_fdata`)."""
    from nibabel.volumeutils import apply_read_scaling  # lazy: see the module docstring

    proxy = image.dataobj
    raw = np.ndarray(proxy.shape, proxy.dtype, buffer=data, offset=proxy.offset, order=proxy.order)
    slope, inter = np.asanyarray(proxy.slope), np.asanyarray(proxy.inter)
    if np.can_cast(slope, np.float32):
        slope = slope.astype(np.float32)
    if np.can_cast(inter, np.float32):
        inter = inter.astype(np.float32)
    scaled = apply_read_scaling(raw, slope, inter)
    scaled = scaled.astype(np.promote_types(scaled.dtype, np.float32), copy=False)
    return scaled.astype(np.float32, copy=False)


def _volume_from_image(
    image: Any, name: str, max_voxels: int, data: bytes | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The float32 3-D voxels (scaled by scl_slope / scl_inter) and the affine of a nibabel image; `data`: the
    bytes nibabel read it from, if any (the voxels are then read from them in place)."""
    spatial = _squeeze_to_3d(image.shape, name, nifti=True)
    _check_voxels(spatial, max_voxels, name)
    header = image.header
    _check_real_dtype(np.dtype(header.get_data_dtype()), name)
    if image.affine is None:
        raise ValueError(
            f"{name} has no affine, so orientation and spacing are unknown: give the image an affine"
        )
    affine = _check_affine(image.affine, name)
    codes = [int(header[key]) for key in ("sform_code", "qform_code") if key in header]
    if codes and not any(codes):
        _warn(
            f"{name} has sform_code = qform_code = 0, so its orientation is not recorded; nibabel falls back to "
            "pixdim with x flipped (LAS): check the orientation of the result"
        )
    try:
        if data is not None and type(image.dataobj).__name__ == "ArrayProxy":  # nibabel's, from `data`
            volume = _voxels_in_bytes(image, data)
        else:
            volume = image.get_fdata(caching="unchanged", dtype=np.float32)
    except Exception as err:
        raise ValueError(
            f"{name} voxels could not be decoded: {_one_line(err)}; pass an uncorrupted file"
        ) from err
    volume = volume.reshape(spatial)
    _check_finite(volume, name)
    return volume, affine


def _decode_array(
    array: Any, affine: Any, name: str, max_voxels: int, orientation: str, target_spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
        # numpy has no bfloat16 / float8.
        if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32, torch.float64):
            tensor = tensor.to(torch.float32)
        array = tensor.numpy()
    _check_real_dtype(array.dtype, name)
    spatial = _squeeze_to_3d(array.shape, name, nifti=False)
    _check_voxels(spatial, max_voxels, name)
    if affine is None:
        _warn(
            f"{name} was given without an affine: assuming it is already {orientation} at target_spacing "
            f"{list(target_spacing)} mm (no reorientation or resampling); pass affine= (4x4 voxel-to-world, RAS+ "
            "mm) to have it reoriented and resampled"
        )
        matrix = np.eye(4)
        matrix[:3, :3] = 0.0
        for axis, letter in enumerate(orientation):
            world, sign = _AXIS_LETTERS[letter]
            matrix[world, axis] = sign * target_spacing[axis]
    else:
        matrix = _check_affine(affine, name)
    volume = np.asarray(array).reshape(spatial).astype(np.float32, copy=False)
    _check_finite(volume, name)
    return volume, matrix


class SliceCNNImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_reorient (`bool`, *optional*, defaults to `True`):
        Flip / permute voxel axes to `orientation` (closest canonical, no rotation).
    orientation (`str`, *optional*, defaults to `"RAS"`):
        Target axis code, nibabel convention (the letter is where the index grows). "LAS" matches FSL's
        MNI152 storage, i.e. the arrays the official models were trained on.
    do_resample (`bool`, *optional*, defaults to `True`):
        Trilinear resampling to `target_spacing`.
    target_spacing (`list[float]`, *optional*, defaults to `[2.0, 2.0, 2.0]`):
        Voxel size in mm along x, y, z of the output.
    do_crop_pad (`bool`, *optional*, defaults to `True`):
        Central crop or pad to `target_shape`.
    target_shape (`list[int]`, *optional*, defaults to `[91, 109, 91]`):
        Output voxels along x, y, z; must equal the model's `config.volume_shape`.
    pad_value (`float`, *optional*, defaults to `0.0`):
        Raw intensity written where padding adds voxels (before the z-score).
    do_zscore (`bool`, *optional*, defaults to `True`):
        Per-volume z-score (population std) as the official data loaders do.
    zscore_mask (`str`, *optional*, defaults to `"volume"`):
        "volume" (all voxels, the official choice) or "nonzero" (non-zero voxels; zeros stay 0).
    max_voxels (`int`, *optional*, defaults to `2**26`):
        Larger input volumes, or resampled grids, raise, to guard against huge uploads.
    num_threads (`int`, *optional*, defaults to `None`):
        The inputs of one call are decoded and reoriented in up to this many threads (None: as many as
        `torch.get_num_threads()`, which is 1 inside DataLoader workers); the torch steps run in the calling
        thread. Results, their order, warnings and errors are those of one-by-one processing. Our choice, not
        the papers'.
    """

    do_reorient: bool | None
    orientation: str | None
    do_resample: bool | None
    target_spacing: Sequence[int | float] | None
    do_crop_pad: bool | None
    target_shape: Sequence[int] | None
    pad_value: int | float | None
    do_zscore: bool | None
    zscore_mask: str | None
    max_voxels: int | None
    num_threads: int | None


class SliceCNNImageProcessor(TorchvisionBackend):
    r"""
    Turns 3-D MRI volumes into Slice-CNN `pixel_values`: decode, reorient to RAS, resample to 2 mm, crop or pad
    centrally to 91x109x91 and z-score each volume; every step is a serialised field.

    Inputs, one or a list (kinds may be mixed): a NIfTI path (`.nii` / `.nii.gz`, `str` or `os.PathLike`), the
    bytes of a NIfTI file (gzip or not), a nibabel image (e.g. what `datasets.Nifti` decodes to), a
    `{"path", "bytes"}` dict (an undecoded `datasets.Nifti` value), or a 3-D numpy array / torch tensor with an
    optional `affine` (see the module docstring for the rule without one).

    Call: `processor(volumes, affine=None, return_tensors="pt")` -> `BatchFeature` with `pixel_values`, float32
    of shape (batch, x, y, z) (a list of (x, y, z) tensors when `return_tensors` is None). `affine` is one 4x4
    matrix for every array input, or a list with one entry (a 4x4 matrix or None) per input; NIfTI and nibabel
    inputs carry their own affine and must get None.

    The resize / rescale / normalise fields inherited from the 2-D processors are unused (all off).
    """

    valid_kwargs = SliceCNNImageProcessorKwargs
    model_input_names = ["pixel_values"]

    do_resize = False
    do_rescale = False
    do_normalize = False
    do_center_crop = False
    do_pad = False
    do_convert_rgb = False
    do_reorient = True
    orientation = "RAS"
    do_resample = True
    target_spacing = DEFAULT_SPACING
    do_crop_pad = True
    target_shape = DEFAULT_SHAPE
    pad_value = 0.0
    do_zscore = True
    zscore_mask = "volume"
    max_voxels = DEFAULT_MAX_VOXELS
    num_threads = None

    def __init__(self, **kwargs: Unpack[SliceCNNImageProcessorKwargs]):
        super().__init__(**kwargs)
        # Stored as plain lists / numbers so preprocessor_config.json round-trips unchanged.
        self._apply_checks(self.__dict__)

    @staticmethod
    def _apply_checks(settings: dict) -> dict:
        for field in ("do_reorient", "do_resample", "do_crop_pad", "do_zscore"):
            settings[field] = _check_bool(settings.get(field), field)
        settings["orientation"] = _check_orientation(settings.get("orientation"))
        settings["target_spacing"] = _check_spacing(settings.get("target_spacing"))
        settings["target_shape"] = _check_shape(settings.get("target_shape"))
        settings["pad_value"] = _check_pad_value(settings.get("pad_value"))
        settings["zscore_mask"] = _check_zscore_mask(settings.get("zscore_mask"))
        settings["max_voxels"] = _check_max_voxels(settings.get("max_voxels"))
        settings["num_threads"] = _check_num_threads(settings.get("num_threads"))
        for field in ("do_resize", "do_rescale", "do_normalize", "do_center_crop", "do_pad"):
            if settings.get(field):
                raise ValueError(
                    f"{field}=True is a 2-D image step that SliceCNNImageProcessor does not apply: leave it False "
                    "and use target_spacing / target_shape / do_zscore"
                )
        return settings

    def input_contract(self) -> dict:
        """What the model expects, in MONAI's metadata vocabulary (for model cards and Spaces)."""
        orientation = self.orientation if self.do_reorient else "as stored"
        return {
            "modality": "MR",
            "format": "magnitude",
            "file_format": "NIfTI-1 / NIfTI-2 (.nii, .nii.gz)",
            "source": (
                "one 3-D structural brain MRI (the papers: T1-weighted, registered to the 2 mm MNI152 template "
                "with FSL; this processor does not register, skull-strip or bias-correct)"
            ),
            "orientation": orientation,
            "axes": (
                {axis: _AXIS_WORDS[letter] for axis, letter in zip("xyz", self.orientation, strict=True)}
                if self.do_reorient
                else "as stored"
            ),
            "spacing": list(self.target_spacing) if self.do_resample else "as stored",
            "spacing_unit": "mm",
            "interpolation": "trilinear" if self.do_resample else None,
            "spatial_shape": list(self.target_shape) if self.do_crop_pad else "as resampled",
            "pad_value": self.pad_value if self.do_crop_pad else None,
            "value_range": "z-score per volume" if self.do_zscore else "raw intensities",
            "normalization": (
                {"method": "z-score", "mask": self.zscore_mask, "std": "population (ddof=0)"}
                if self.do_zscore
                else None
            ),
            "dtype": "float32",
            "pixel_values": "(batch, x, y, z)",
            "num_channels": 1,
            "channel_def": {0: "MR intensity"},
            "is_patch_data": False,
            "max_voxels": self.max_voxels,
            "intended_use": "research only, not for diagnostic use",
        }

    def _validate_preprocess_kwargs(self, **kwargs) -> None:
        super()._validate_preprocess_kwargs(**kwargs)
        self._apply_checks(dict(kwargs))

    def preprocess(self, images: Any, affine: Any = None, **kwargs: Unpack[SliceCNNImageProcessorKwargs]):
        """Preprocesses one volume or a list of volumes; `affine` as in the class docstring."""
        return super().preprocess(images, image_like_kwargs={"affine": affine}, **kwargs)

    def _preprocess_image_like_inputs(self, images: Any, *args, affine: Any = None, **kwargs) -> BatchFeature:
        # Replaces the 2-D fetch / process_image / resize route of the base class.
        settings = self._apply_checks(dict(kwargs))
        volumes = self._process_all(images, affine, settings, kwargs.get("device"))
        return_tensors = kwargs.get("return_tensors")
        if return_tensors is None:
            return BatchFeature(data={"pixel_values": volumes})
        shapes = {tuple(volume.shape) for volume in volumes}
        if len(shapes) > 1:
            raise ValueError(
                f"the volumes have different shapes {sorted(shapes)} and cannot be stacked: keep do_crop_pad=True "
                "(target_shape), or pass return_tensors=None to get a list"
            )
        stacked = torch.stack(volumes)
        return BatchFeature(data={"pixel_values": stacked}, tensor_type=return_tensors)

    def _process_all(
        self, images: Any, affine: Any, settings: dict, device: Any = None
    ) -> list[torch.Tensor]:
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("No volumes given: pass one input or a non-empty list of inputs")
        affines = _split_affines(affine, len(items))

        def decode(index: int) -> tuple[np.ndarray, np.ndarray, str]:
            volume, matrix, name = self._decode(
                items[index], affines[index], settings, index if len(items) > 1 else None
            )
            return (*self._reorient(volume, matrix, settings), name)

        def finish(index: int, decoded: tuple[np.ndarray, np.ndarray, str]) -> torch.Tensor:
            return self._transform_tensor(*decoded, settings, device)[0]

        return _run_in_order(decode, finish, len(items), settings["num_threads"])

    def _decode(
        self, item: Any, affine: Any, settings: dict, index: int | None
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Decodes one input to float32 (x, y, z) voxels as stored, its affine and a name for messages."""
        suffix = "" if index is None else f" (input {index})"
        max_voxels = settings["max_voxels"]
        if isinstance(item, dict) and ("path" in item or "bytes" in item):
            item = item.get("bytes") or item.get("path")
            if item is None:
                raise ValueError(
                    f"dict input{suffix} has neither 'bytes' nor 'path': pass a NIfTI path or bytes"
                )
        if isinstance(item, (np.ndarray, torch.Tensor)):
            name = ("torch tensor" if isinstance(item, torch.Tensor) else "numpy volume") + suffix
            volume, matrix = _decode_array(
                item, affine, name, max_voxels, settings["orientation"], settings["target_spacing"]
            )
            return volume, matrix, name
        if isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
            if isinstance(item, (str, os.PathLike)):
                data, name = _nifti_bytes_from_path(item, max_voxels)
            else:
                data, name = _nifti_bytes_from_bytes(bytes(item), max_voxels)
            name += suffix
            image = _image_from_nifti_bytes(data, name)
        elif _is_nibabel_image(item):
            name = f"nibabel {type(item).__name__}{suffix}"
            image, data = item, None
        else:
            raise TypeError(
                f"Unsupported input type {type(item).__name__}{suffix}: pass a .nii / .nii.gz path, NIfTI bytes, a "
                "nibabel image, or a 3-D numpy array / torch tensor (or a flat list of these)"
            )
        if affine is not None:
            raise ValueError(
                f"an affine was given for {name}, which carries its own: pass affine only for numpy / torch volumes "
                "(None for the others)"
            )
        volume, matrix = _volume_from_image(image, name, max_voxels, data)
        return volume, matrix, name

    @staticmethod
    def _transform(
        volume: np.ndarray, affine: np.ndarray, name: str, settings: dict, device: Any = None
    ) -> tuple[torch.Tensor, np.ndarray]:
        array, affine = SliceCNNImageProcessor._reorient(volume, affine, settings)
        return SliceCNNImageProcessor._transform_tensor(array, affine, name, settings, device)

    @staticmethod
    def _reorient(volume: np.ndarray, affine: np.ndarray, settings: dict) -> tuple[np.ndarray, np.ndarray]:
        """The numpy steps: reorientation and the C-ordered float32 copy torch works on."""
        if settings["do_reorient"]:
            volume, affine = reorient(volume, affine, settings["orientation"])
        array = np.ascontiguousarray(volume, dtype=np.float32)
        if not array.flags.writeable:  # voxels read in place from a NIfTI file's bytes, already C-ordered
            array = array.copy()
        return array, affine

    @staticmethod
    def _transform_tensor(
        array: np.ndarray, affine: np.ndarray, name: str, settings: dict, device: Any = None
    ) -> tuple[torch.Tensor, np.ndarray]:
        """The torch steps: resampling, crop / pad and z-score."""
        tensor = torch.from_numpy(array)
        if device is not None:
            tensor = tensor.to(device)
        if settings["do_resample"]:
            spacing = np.linalg.norm(affine[:3, :3], axis=0)
            sizes = _resampled_shape(tensor.shape, spacing, settings["target_spacing"])
            _check_voxels(sizes, settings["max_voxels"], name, " resampled to target_spacing")
            tensor, affine = resample(tensor, affine, settings["target_spacing"])
        if settings["do_crop_pad"]:
            tensor, affine = crop_or_pad(tensor, affine, settings["target_shape"], settings["pad_value"])
        if settings["do_zscore"]:
            tensor = zscore(tensor, settings["zscore_mask"], name)
        return tensor.to(torch.float32).contiguous(), affine

    def preprocess_volume(self, volume: Any, affine: Any = None) -> tuple[torch.Tensor, np.ndarray]:
        """Processes one input and also returns the 4x4 affine of the output grid (e.g. to save it as NIfTI).

        Returns:
            `(torch.Tensor, np.ndarray)`: the float32 (x, y, z) volume and its voxel-to-world (RAS+, mm) affine.
        """
        settings = self._apply_checks({key: getattr(self, key, None) for key in self._valid_kwargs_names})
        decoded, matrix, name = self._decode(volume, affine, settings, None)
        return self._transform(decoded, matrix, name, settings)

    def orthogonal_slices(self, volume: Any, radiological: bool = False) -> OrthogonalSlices:
        """The middle sagittal, coronal and axial slices of a volume, oriented for display.

        Args:
            volume: `pixel_values` of one volume, i.e. a (1, x, y, z) or (x, y, z) tensor / array, taken as the
                processor's output (already in `orientation`, normally RAS); anything else `__call__` accepts
                (path, bytes, nibabel image) is processed first.
            radiological (`bool`, defaults to False): put the subject's right on the image's left in the
                coronal and axial slices (radiological convention) instead of the subject's left (neurological).

        Returns:
            `OrthogonalSlices(sagittal, coronal, axial)`, float32 2-D arrays, row 0 at the top of the picture.
            For a RAS volume v and middle indices (x // 2, y // 2, z // 2): sagittal = v[x // 2] with superior up
            and anterior on the right, shape (z, y); coronal = v[:, y // 2] with superior up and the subject's
            left on the image's left, shape (z, x); axial = v[:, :, z // 2] with anterior up and the subject's
            left on the image's left, shape (y, x). For another `orientation` the same recipe is applied to the
            array axes as they are.
        """
        if isinstance(volume, (np.ndarray, torch.Tensor)):
            array = (
                volume.detach().float().cpu().numpy()
                if isinstance(volume, torch.Tensor)
                else np.asarray(volume)
            )
            if array.ndim == 4 and array.shape[0] == 1:
                array = array[0]
            if array.ndim != 3:
                raise ValueError(
                    f"orthogonal_slices needs one volume, (x, y, z) or (1, x, y, z), got shape {array.shape}: pass "
                    "pixel_values[i] for one item of a batch"
                )
        else:
            array = self(volume, return_tensors="pt")["pixel_values"][0].numpy()
        x, y, z = (n // 2 for n in array.shape)
        # Transposing puts the last axis (z, or y for axial) on rows; flipping rows puts superior / anterior up.
        sagittal = array[x].T[::-1]
        coronal = array[:, y].T[::-1]
        axial = array[:, :, z].T[::-1]
        if radiological:
            coronal, axial = coronal[:, ::-1], axial[:, ::-1]
        return OrthogonalSlices(
            *(np.ascontiguousarray(view, dtype=np.float32) for view in (sagittal, coronal, axial))
        )


def _split_affines(affine: Any, count: int) -> list[Any]:
    """One affine (or None) per input: a single 4x4 applies to every input, a list gives one each."""
    if affine is None:
        return [None] * count
    if isinstance(affine, (np.ndarray, torch.Tensor)) and np.asarray(affine).shape == (4, 4):
        return [np.asarray(affine)] * count
    if isinstance(affine, (list, tuple)):
        if len(affine) == 4 and all(
            isinstance(row, (list, tuple, np.ndarray)) and np.ndim(row) == 1 for row in affine
        ):
            return [affine] * count
        if len(affine) != count:
            raise ValueError(
                f"affine is a list of {len(affine)} entries but {count} volume(s) were given: pass one 4x4 matrix "
                "for all, or one entry (4x4 or None) per volume"
            )
        return list(affine)
    if isinstance(affine, (np.ndarray, torch.Tensor)) and np.asarray(affine).shape == (count, 4, 4):
        return list(np.asarray(affine))
    raise ValueError(
        f"affine must be a 4x4 voxel-to-world matrix or a list with one per volume, got {type(affine).__name__} "
        f"of shape {np.shape(affine)}"
    )


__all__ = ["SliceCNNImageProcessor"]
