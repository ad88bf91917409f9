"""A synthetic twin of a T1-weighted brain MRI cohort (brain age; Alzheimer's disease vs controls), for offline
demos and tests.

`write_synthetic_brain` writes real `.nii.gz` files and a scan list in the `nifti_csv` layout, so the same code
path (`hfmed.data.nifti.load_nifti_csv`) reads the twin and real data:

    root/participants.csv                                  path,subject_id,session,age,diagnosis (one row per scan)
    root/images/sub-0001/ses-1/anat/sub-0001_ses-1_T1w.nii.gz

`path` is relative to the CSV's folder. Ages are drawn uniformly from `age_range` (default 45-85 years, one
decimal); a `second_session_fraction` of the subjects (default 0.2) has a second scan 1-3 years later (same
anatomy, aged), so a per-scan split would leak subjects and the subject split matters. With `ad_fraction > 0`
that share of the subjects (exactly rounded, drawn at random, ages from the same range so that age does not
give diagnosis away) is `AD`, the others `CN`.

Each volume is an ellipsoidal head in T1-weighted contrast (arbitrary units, stored as int16): air (0), scalp
(~620, fat is bright in T1), skull (~110), cerebrospinal fluid (~160) in the subarachnoid space, the sulci, the
interhemispheric fissure and the ventricles (two lateral ventricles with occipital horns, a third ventricle,
temporal horns), a folded grey-matter cortex ribbon (~460), white matter (~700), deep grey matter (thalami,
putamina, caudate heads ~540), a cerebellum with folia (~520), a brainstem (~650) and a hippocampus on each
side (~500) in a CSF pocket. Edges are soft (a tanh over ~0.4 voxel) so thin structures show as partial volume.
An acquisition adds a small head pose change (rotation up to 3 degrees about each axis, shift up to 3 mm), a
smooth multiplicative bias field (exp of a random quadratic, about +-10 %), a gain (0.9-1.1) and Rician noise
(sigma 10-18, i.e. white-matter SNR ~40-70).

What age and diagnosis change (`a = age - 45` in years; AD adds atrophy beyond age):

    lateral / third ventricle volume   x exp(0.025 a)        (x2.7 from 45 to 85);  AD: x1.7 more
    subarachnoid CSF (and sulci)       1.5 + 0.07 a mm       (1.5 -> 4.3 mm);      AD: +1.2 mm
    cortical thickness                 4.5 - 0.03 a mm       (4.5 -> 3.3 mm);      AD: -0.7 mm
    hippocampus (each semi-axis)       x (1 - 0.0025 a)      (x0.9);               AD: x0.78 more, and a
                                                                                    wider CSF pocket around it
    temporal horns (each semi-axis)    x (1 + 0.01 a)        (x1.4);               AD: x1.6 more

Subjects differ beyond age (head size +-6 %, ventricle size lognormal sigma 0.1, CSF +-0.25 mm, cortex +-0.15 mm,
hippocampus +-3 %, folding pattern), so age has to be estimated from several cues, as in real brains. The
directions of all effects follow the ageing / AD literature; the sizes are exaggerated so that a small model
learns them from ~100 low-resolution volumes on a CPU. All numbers are our choice: the twin only has to be
learnable and MRI-like.

Geometry: `shape` and `spacing` are given along the anatomical axes (x: left -> right, y: posterior ->
anterior, z: inferior -> superior); the head (about 150 x 190 x 160 mm) is centred at world (0, 0, 0) and must
fit in the field of view `shape * spacing` (at least `MIN_FIELD_OF_VIEW_MM`): the default (48, 56, 48) at 4 mm
(192 x 224 x 192 mm) is about the MNI box at half its 2 mm resolution; (91, 109, 91) at 2 mm is the MNI grid.
`orientation` is the voxel-axis code of the stored array (default "RAS"; e.g. "LPS" or "ASL" stores the
same anatomy flipped / permuted, with the affine saying so), which exercises the processor's reorientation:
after `nibabel.as_closest_canonical` every orientation gives the same voxels.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .builder import Builder
from .twin_cache import ensure_twin

# Bump when the drawing changes: cached twins written by an older version are regenerated.
GENERATOR_VERSION = 1
MARKER_NAME = ".hfmed_synthetic_brain.json"
CSV_NAME = "participants.csv"
DIAGNOSES = ("CN", "AD")
DEFAULT_SHAPE = (48, 56, 48)
DEFAULT_SPACING = 4.0
DEFAULT_AGE_RANGE = (45.0, 85.0)
MIN_FIELD_OF_VIEW_MM = (168.0, 204.0, 176.0)
"""The smallest `shape * spacing` (x, y, z) that holds the largest head in any pose the twin draws."""
_KNOWN_ENTRIES = {"images", CSV_NAME, MARKER_NAME}
_AGE_LIMITS = (20.0, 100.0)

# T1-weighted intensities (arbitrary units, white matter ~700).
_SCALP, _SKULL, _CSF = 620.0, 110.0, 160.0
_GREY, _WHITE, _DEEP_GREY, _HIPPOCAMPUS = 460.0, 700.0, 540.0, 500.0
_CEREBELLUM, _BRAINSTEM = 520.0, 650.0
_HEAD_AXES = (72.0, 90.0, 76.0)  # outer scalp semi-axes (mm) before the subject's scale
_SCALP_MM, _SKULL_MM = 5.0, 6.0
_FISSURE_MM = 0.3  # half-width of the interhemispheric fissure at a gyrus, before ageing
_MAX_ROTATION_DEG, _MAX_SHIFT_MM = 3.0, 3.0


# ---------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_shape(shape: Any) -> tuple[int, int, int]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) != 3:
        raise ValueError(f"shape must be 3 ints (x, y, z), got {shape!r}")
    return tuple(_check_int("each entry of shape", size, 8) for size in shape)  # type: ignore[return-value]


def _check_spacing(spacing: Any) -> tuple[float, float, float]:
    values = [spacing] * 3 if isinstance(spacing, (int, float)) else spacing
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
        raise ValueError(f"spacing must be one number or 3 numbers (x, y, z) in mm, got {spacing!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < math.inf:
            raise ValueError(f"spacing must be positive numbers in mm, got {spacing!r}")
    return tuple(float(value) for value in values)  # type: ignore[return-value]


def _check_orientation(orientation: Any) -> str:
    pairs = ({"R", "L"}, {"A", "P"}, {"S", "I"})
    code = orientation.upper() if isinstance(orientation, str) else None
    if code is None or len(code) != 3 or any(len(set(code) & pair) != 1 for pair in pairs):
        raise ValueError(
            f"orientation must be a 3-letter axis code with one of R/L, A/P and S/I each (e.g. 'RAS', 'LPS', "
            f"'LAS'), got {orientation!r}"
        )
    return code


def _check_geometry(shape: Any, spacing: Any) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    shape, spacing = _check_shape(shape), _check_spacing(spacing)
    field_of_view = tuple(n * s for n, s in zip(shape, spacing, strict=True))
    if any(f < m for f, m in zip(field_of_view, MIN_FIELD_OF_VIEW_MM, strict=True)):
        raise ValueError(
            f"shape * spacing = {tuple(round(f, 1) for f in field_of_view)} mm is smaller than the synthetic head "
            f"needs ({MIN_FIELD_OF_VIEW_MM} mm): raise spacing or shape (e.g. shape (48, 56, 48) at 4 mm, "
            "(24, 28, 24) at 8 mm, or (91, 109, 91) at 2 mm)"
        )
    return shape, spacing


def _check_age(age: Any) -> float:
    low, high = _AGE_LIMITS
    if isinstance(age, bool) or not isinstance(age, (int, float, np.number)) or not low <= age <= high:
        raise ValueError(f"age must be a number of years in [{low:g}, {high:g}], got {age!r}")
    return float(age)


def _check_age_range(age_range: Any) -> tuple[float, float]:
    if isinstance(age_range, (str, bytes)) or not isinstance(age_range, Sequence) or len(age_range) != 2:
        raise ValueError(f"age_range must be (low, high) in years, got {age_range!r}")
    low, high = _check_age(age_range[0]), _check_age(age_range[1])
    if high - low < 1.0:
        raise ValueError(f"age_range must span at least a year (low < high), got {age_range!r}")
    if high + 3.0 > _AGE_LIMITS[1]:  # second sessions are up to 3 years older
        raise ValueError(f"age_range must end at most at {_AGE_LIMITS[1] - 3:g}, got {age_range!r}")
    return low, high


# ---------------------------------------------------------------------------------------------------
# One volume
# ---------------------------------------------------------------------------------------------------


def ras_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """The 4x4 voxel -> world (RAS mm) affine of a RAS-stored volume whose centre is at world (0, 0, 0)."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = [-s * (n - 1) / 2.0 for n, s in zip(shape, spacing, strict=True)]
    return affine


def _soft(depth: np.ndarray, width: float) -> np.ndarray:
    """A smooth step: 0 well outside (depth << 0), 1 well inside, over about `width` mm (partial volume)."""
    return 0.5 * (1.0 + np.tanh(depth / width))


def _blend(image: np.ndarray, weight: np.ndarray, value: float | np.ndarray) -> None:
    image *= 1.0 - weight
    image += weight * value


def _ellipsoid_depth(q: tuple[np.ndarray, ...], centre, axes) -> np.ndarray:
    """How far (mm) each point lies inside the ellipsoid, along the ray from its centre (negative outside)."""
    d = [c - c0 for c, c0 in zip(q, centre, strict=True)]
    distance = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    r = np.sqrt((d[0] / axes[0]) ** 2 + (d[1] / axes[1]) ** 2 + (d[2] / axes[2]) ** 2)
    # At the centre the ray is undefined; the depth there is at least the smallest semi-axis.
    inside = np.divide(distance, r, out=np.full_like(r, float(min(axes))), where=r > 1e-9)
    return inside - distance


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _subject_anatomy(rng: np.random.Generator) -> dict[str, Any]:
    """Everything that makes a subject look like themself, drawn in a fixed order."""
    folds = rng.normal(size=(8, 3))
    return {
        "head_scale": rng.uniform(0.94, 1.06) * rng.uniform(0.97, 1.03, size=3),
        "ventricles": math.exp(rng.normal(0.0, 0.1)),
        "ventricle_asymmetry": math.exp(rng.normal(0.0, 0.06)),
        "csf_mm": rng.normal(0.0, 0.25),
        "cortex_mm": rng.normal(0.0, 0.15),
        "hippocampus": math.exp(rng.normal(0.0, 0.03)),
        "fold_directions": folds / np.linalg.norm(folds, axis=1, keepdims=True),
        "fold_frequencies": rng.uniform(16.0, 26.0, size=8),
        "fold_phases": rng.uniform(0.0, 2.0 * math.pi, size=8),
    }


def _ageing(age: float, diagnosis: str, anatomy: dict[str, Any]) -> dict[str, float]:
    """The sizes that age and diagnosis set (see the module docstring), with the subject's own offsets."""
    a = age - 45.0
    ad = diagnosis == "AD"
    return {
        "ventricles": math.exp(0.025 * a) * (1.7 if ad else 1.0) * anatomy["ventricles"],
        "csf_mm": max(0.3, 1.5 + 0.07 * a + (1.2 if ad else 0.0) + anatomy["csf_mm"]),
        "cortex_mm": max(1.5, 4.5 - 0.03 * a - (0.7 if ad else 0.0) + anatomy["cortex_mm"]),
        "hippocampus": (1.0 - 0.0025 * a) * (0.78 if ad else 1.0) * anatomy["hippocampus"],
        "hippocampal_pocket": 1.0 + (0.12 if ad else 0.0),
        "temporal_horn": (1.0 + 0.01 * a) * (1.6 if ad else 1.0),
    }


def synthetic_brain_volume(
    age: float,
    diagnosis: str = "CN",
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: float | Sequence[float] = DEFAULT_SPACING,
    subject_seed: int | Sequence[int] = 0,
    scan_seed: int | Sequence[int] = 0,
) -> np.ndarray:
    """One synthetic T1-weighted head volume in RAS voxel order, float32 (x, y, z) = `shape`.

    Args:
        age: years, in [20, 100]; sets ventricle size, CSF width, cortical thickness and hippocampal size.
        diagnosis: "CN" or "AD" (AD adds atrophy beyond age; see the module docstring).
        shape, spacing: voxels and mm along (x, y, z); `shape * spacing` must hold the head
            (`MIN_FIELD_OF_VIEW_MM`). The volume's affine is `ras_affine(shape, spacing)`.
        subject_seed: seeds the subject's anatomy (head size, folding, individual offsets): the same subject
            seed at another age gives the same person, aged.
        scan_seed: seeds the acquisition (head pose, bias field, gain, noise).

    Intensities are in arbitrary T1-weighted units (white matter ~700, CSF ~160, air ~0 plus Rician noise).
    """
    age = _check_age(age)
    if diagnosis not in DIAGNOSES:
        raise ValueError(f"diagnosis must be one of {list(DIAGNOSES)}, got {diagnosis!r}")
    shape, spacing = _check_geometry(shape, spacing)
    anatomy = _subject_anatomy(np.random.default_rng(subject_seed))
    sizes = _ageing(age, diagnosis, anatomy)
    scan = np.random.default_rng(scan_seed)
    angles = scan.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG, size=3)
    shift = scan.uniform(-_MAX_SHIFT_MM, _MAX_SHIFT_MM, size=3)
    bias = np.concatenate([scan.normal(0.0, 0.06, size=3), scan.normal(0.0, 0.04, size=6)])
    gain = scan.uniform(0.9, 1.1)
    sigma = scan.uniform(10.0, 18.0)

    # World (RAS mm) coordinates of the voxel centres, then the head's own (anatomical) frame.
    affine = ras_affine(shape, spacing)
    axes = [affine[i, i] * np.arange(shape[i]) + affine[i, 3] - shift[i] for i in range(3)]
    world = np.ix_(*axes)
    rotation = _rotation(angles)
    q = tuple(
        (rotation[0, a] * world[0] + rotation[1, a] * world[1] + rotation[2, a] * world[2]).astype(np.float32)
        for a in range(3)
    )
    width = 0.4 * float(np.mean(spacing))
    scale = anatomy["head_scale"]
    head_axes = [h * s for h, s in zip(_HEAD_AXES, scale, strict=True)]

    def at(centre, semi_axes):  # anatomical positions scale with the head
        return np.multiply(centre, scale).tolist(), np.multiply(semi_axes, scale).tolist()

    def block(centre, semi_axes):  # the voxels within reach of an ellipsoid (a bounding sphere, any pose)
        reach = max(semi_axes) + 6.0 * width
        middle = rotation @ np.asarray(centre)
        return tuple(
            slice(
                int(np.searchsorted(axes[i], middle[i] - reach)),
                int(np.searchsorted(axes[i], middle[i] + reach)),
            )
            for i in range(3)
        )

    def paint(image, centre, semi_axes, value, within=None):
        centre, semi_axes = at(centre, semi_axes)
        where = block(centre, semi_axes)
        weight = _soft(_ellipsoid_depth(tuple(c[where] for c in q), centre, semi_axes), width)
        if within is not None:
            weight *= within[where]
        if not np.isscalar(value):
            value = value[where]
        _blend(image[where], weight, value)

    # --- shells from the scalp inwards: depth along the ray from the head centre ---
    depth = _ellipsoid_depth(q, (0.0, 0.0, 0.0), head_axes)
    # Folding: plane waves over the direction from the head centre (a fixed pattern per subject).
    radius = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2) + np.float32(1e-6)
    u = [c / radius for c in q]
    pattern = np.zeros(shape, dtype=np.float32)
    for d, f, p in zip(
        anatomy["fold_directions"], anatomy["fold_frequencies"], anatomy["fold_phases"], strict=True
    ):
        pattern += np.sin((f * d[0]) * u[0] + (f * d[1]) * u[1] + (f * d[2]) * u[2] + p)
    pattern /= math.sqrt(8.0)
    sulci = 4.0 * np.clip(pattern, 0.0, None)  # sulci dip into the brain; gyri stay at the surface
    inner_skull = _SCALP_MM + _SKULL_MM
    brain_depth = depth - inner_skull - sizes["csf_mm"] - sulci
    image = np.zeros(shape, dtype=np.float32)
    _blend(image, _soft(depth, width), _SCALP)
    _blend(image, _soft(depth - _SCALP_MM, width), _SKULL)
    _blend(image, _soft(depth - inner_skull, width), _CSF)
    brain = _soft(brain_depth, width)
    _blend(image, brain, _GREY)
    _blend(image, _soft(brain_depth - sizes["cortex_mm"], width), _WHITE)

    # --- the interhemispheric fissure (grey medial cortex lined with CSF), everywhere but the central core
    # (corpus callosum, diencephalon, brainstem: an elliptic cylinder along x) ---
    core_centre, core_axes = at((0.0, -6.0, -6.0), (1e4, 42.0, 28.0))
    outside_core = 1.0 - _soft(_ellipsoid_depth(q, core_centre, core_axes), width)
    fissure = _FISSURE_MM + 0.3 * sizes["csf_mm"] + 0.6 * sulci  # medial sulci widen it
    medial = np.abs(q[0])
    _blend(image, _soft(fissure + sizes["cortex_mm"] - medial, width) * outside_core * brain, _GREY)
    _blend(image, _soft(fissure - medial, width) * outside_core * brain, _CSF)

    # --- cerebellum with folia, brainstem, deep grey matter ---
    folia = _CEREBELLUM + 60.0 * np.sin(2.0 * math.pi * q[2] / 6.0)
    paint(image, (0.0, -52.0, -42.0), (46.0, 26.0, 20.0), folia, within=brain)
    paint(image, (0.0, -22.0, -40.0), (11.0, 12.0, 24.0), _BRAINSTEM, within=brain)
    for side in (-1.0, 1.0):
        paint(image, (side * 10.0, -14.0, 4.0), (8.0, 13.0, 8.0), _DEEP_GREY)  # thalamus
        paint(image, (side * 24.0, 3.0, 2.0), (6.0, 13.0, 9.0), _DEEP_GREY)  # putamen
        paint(image, (side * 12.0, 12.0, 12.0), (5.0, 9.0, 7.0), _DEEP_GREY)  # caudate head

    # --- ventricles: volume x sizes["ventricles"], the septum stays near the midline ---
    for side, asymmetry in (
        (-1.0, anatomy["ventricle_asymmetry"]),
        (1.0, 1.0 / anatomy["ventricle_asymmetry"]),
    ):
        v = (sizes["ventricles"] * asymmetry) ** (1.0 / 3.0)
        # the body, then the occipital horn
        paint(image, (side * (1.5 + 4.5 * v), 0.0, 14.0), (4.5 * v, 24.0 * v, 7.0 * v), _CSF)
        paint(image, (side * (10.0 + 5.0 * v), -28.0, 8.0), (5.0 * v, 12.0 * v, 6.0 * v), _CSF)
    third_ventricle_width = 1.2 * math.sqrt(sizes["ventricles"])
    paint(image, (0.0, -10.0, 2.0), (third_ventricle_width, 11.0, 8.0), _CSF)

    # --- hippocampi in their CSF pocket, temporal horns ---
    h, t, pocket = sizes["hippocampus"], sizes["temporal_horn"], sizes["hippocampal_pocket"]
    for side in (-1.0, 1.0):
        paint(image, (side * 27.0, -20.0, -16.0), (6.5 * pocket, 19.0 * pocket, 7.5 * pocket), _CSF)
        paint(image, (side * 27.0, -20.0, -16.0), (5.5 * h, 17.0 * h, 6.5 * h), _HIPPOCAMPUS)
        paint(image, (side * 31.0, -16.0, -9.0), (2.0 * t, 13.0 * t, 2.5 * t), _CSF)

    # --- acquisition: bias field, gain, Rician noise ---
    x, y, z = (c / 100.0 for c in world)
    log_field = (
        bias[0] * x + bias[1] * y + bias[2] * z
        + bias[3] * (x * x - 0.33) + bias[4] * (y * y - 0.33) + bias[5] * (z * z - 0.33)
        + bias[6] * x * y + bias[7] * y * z + bias[8] * x * z
    )  # fmt: skip
    image *= (gain * np.exp(log_field)).astype(np.float32)
    real = image + scan.normal(0.0, sigma, size=shape).astype(np.float32)
    imaginary = scan.normal(0.0, sigma, size=shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary)


# ---------------------------------------------------------------------------------------------------
# NIfTI files and the cohort
# ---------------------------------------------------------------------------------------------------


def volume_to_nifti(volume: np.ndarray, spacing: float | Sequence[float], orientation: str = "RAS"):
    """A `nibabel.Nifti1Image` (int16, mm units, qform = sform, code 1 "scanner") of a RAS-ordered volume,
    stored with its voxel axes in `orientation` (the anatomy and its world coordinates do not change)."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, ornt_transform

    code = _check_orientation(orientation)
    spacing = _check_spacing(spacing)
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D (x, y, z), got shape {volume.shape}")
    data = np.clip(np.rint(volume), -32768, 32767).astype(np.int16)
    image = nib.Nifti1Image(data, ras_affine(volume.shape, spacing))
    if code != "RAS":
        image = image.as_reoriented(ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(code)))
    affine = image.affine
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = b"hfmed synthetic T1w twin"
    return image


def write_synthetic_brain(
    root: str | os.PathLike,
    num_subjects: int = 100,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: float | Sequence[float] = DEFAULT_SPACING,
    orientation: str = "RAS",
    ad_fraction: float = 0.0,
    second_session_fraction: float = 0.2,
    age_range: Sequence[float] = DEFAULT_AGE_RANGE,
    seed: int = 0,
) -> Path:
    """Writes the synthetic brain MRI twin into `root` (created if needed) and returns it as a `Path`.

    Subjects are `sub-0001` ... ; `round(ad_fraction * num_subjects)` of them are AD and
    `round(second_session_fraction * num_subjects)` have a second session 1-3 years after the first (both
    chosen at random). Deterministic: the same arguments give identical files. Existing files with the same
    names are overwritten; other files in `root` are left alone.
    """
    import nibabel as nib

    num_subjects = _check_int("num_subjects", num_subjects, 2)
    shape, spacing = _check_geometry(shape, spacing)
    orientation = _check_orientation(orientation)
    ad_fraction = _check_fraction("ad_fraction", ad_fraction)
    second_session_fraction = _check_fraction("second_session_fraction", second_session_fraction)
    low, high = _check_age_range(age_range)
    seed = _check_int("seed", seed, 0)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ad_subjects = set(rng.permutation(num_subjects)[: round(ad_fraction * num_subjects)].tolist())
    repeated = set(rng.permutation(num_subjects)[: round(second_session_fraction * num_subjects)].tolist())
    rows = []
    for subject in range(num_subjects):
        subject_id = f"sub-{subject + 1:04d}"
        diagnosis = "AD" if subject in ad_subjects else "CN"
        first_age = round(float(rng.uniform(low, high)), 1)
        ages = [first_age] + (
            [round(first_age + float(rng.uniform(1.0, 3.0)), 1)] if subject in repeated else []
        )
        for session, age in enumerate(ages, start=1):
            relative = f"images/{subject_id}/ses-{session}/anat/{subject_id}_ses-{session}_T1w.nii.gz"
            volume = synthetic_brain_volume(
                age,
                diagnosis,
                shape,
                spacing,
                subject_seed=[seed, subject],
                scan_seed=[seed, subject, session],
            )
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(volume_to_nifti(volume, spacing, orientation), path)
            rows.append([relative, subject_id, session, f"{age:.1f}", diagnosis])
    with open(root / CSV_NAME, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "subject_id", "session", "age", "diagnosis"])
        writer.writerows(rows)
    return root


def default_cache_root() -> Path:
    """`$HFMED_CACHE/synthetic_brain`, where HFMED_CACHE defaults to `~/.cache/hfmed`."""
    return Path(os.environ.get("HFMED_CACHE", "~/.cache/hfmed")).expanduser() / "synthetic_brain"


def ensure_synthetic_brain(
    root: str | os.PathLike | None = None,
    num_subjects: int = 100,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: float | Sequence[float] = DEFAULT_SPACING,
    orientation: str = "RAS",
    ad_fraction: float = 0.0,
    second_session_fraction: float = 0.2,
    age_range: Sequence[float] = DEFAULT_AGE_RANGE,
    seed: int = 0,
) -> Path:
    """Returns a folder holding the brain twin for these parameters, writing it first when needed.

    `root=None` uses `default_cache_root() / <hash of the parameters>`; see `hfmed.data.twin_cache.ensure_twin`
    (a twin written with other parameters is replaced; a folder holding other files is refused).
    """
    shape, spacing = _check_geometry(shape, spacing)
    low, high = _check_age_range(age_range)
    params = {
        "generator_version": GENERATOR_VERSION,
        "num_subjects": _check_int("num_subjects", num_subjects, 2),
        "shape": list(shape),
        "spacing": list(spacing),
        "orientation": _check_orientation(orientation),
        "ad_fraction": _check_fraction("ad_fraction", ad_fraction),
        "second_session_fraction": _check_fraction("second_session_fraction", second_session_fraction),
        "age_range": [low, high],
        "seed": _check_int("seed", seed, 0),
    }
    return ensure_twin(
        root,
        params,
        lambda folder: write_synthetic_brain(
            folder,
            params["num_subjects"],
            shape,
            spacing,
            params["orientation"],
            params["ad_fraction"],
            params["second_session_fraction"],
            (low, high),
            params["seed"],
        ),
        kind="synthetic brain MRI",
        cache_root=default_cache_root(),
        marker=MARKER_NAME,
        known_entries=_KNOWN_ENTRIES,
    )


def load_synthetic_brain(
    root: str | os.PathLike | None = None,
    num_subjects: int = 100,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: float | Sequence[float] = DEFAULT_SPACING,
    target: str = "age",
    orientation: str = "RAS",
    ad_fraction: float | None = None,
    second_session_fraction: float = 0.2,
    age_range: Sequence[float] = DEFAULT_AGE_RANGE,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    split_seed: int | None = None,
):
    """Builder `synthetic_brain`: writes the brain twin if needed (`ensure_synthetic_brain`), then reads it
    with `load_nifti_csv` (the code path of real data).

    Args:
        target: "age" (regression, years) or "diagnosis" (AD = 1, CN = 0).
        ad_fraction: share of AD subjects; `None` is 0 for `target="age"` (a healthy ageing cohort) and 0.5 for
            `target="diagnosis"`.
        seed: seeds the data; the subject split uses `split_seed` (default: `seed`).
        Others: see `write_synthetic_brain` and `load_nifti_csv`.

    Returns:
        `datasets.DatasetDict` with `train`, `validation` (and `test` when `test_fraction > 0`); columns
        `path`, `image` (`datasets.Nifti`), `labels` (float32, length 1), `subject_id`.
    """
    from .nifti_csv import load_nifti_csv

    if target not in ("age", "diagnosis"):
        raise ValueError(f"target must be 'age' or 'diagnosis', got {target!r}")
    if ad_fraction is None:
        ad_fraction = 0.0 if target == "age" else 0.5
    if target == "diagnosis" and not 0.0 < ad_fraction < 1.0:
        raise ValueError(
            f"target='diagnosis' needs both CN and AD subjects: ad_fraction must be in (0, 1), got {ad_fraction!r}"
        )
    folder = ensure_synthetic_brain(
        root, num_subjects, shape, spacing, orientation, ad_fraction, second_session_fraction, age_range, seed
    )
    return load_nifti_csv(
        folder / CSV_NAME,
        target=target,
        subject_column="subject_id",
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed if split_seed is None else split_seed,
    )


BUILDER = Builder(name="synthetic_brain", load=load_synthetic_brain)

__all__ = [
    "BUILDER",
    "DEFAULT_AGE_RANGE",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "DIAGNOSES",
    "GENERATOR_VERSION",
    "MIN_FIELD_OF_VIEW_MM",
    "default_cache_root",
    "ensure_synthetic_brain",
    "load_synthetic_brain",
    "ras_affine",
    "synthetic_brain_volume",
    "volume_to_nifti",
    "write_synthetic_brain",
]
