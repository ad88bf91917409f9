"""A synthetic twin of the RSNA 2019 intracranial-hemorrhage dataset, for offline demos and tests.

`write_synthetic_rsna` writes the real RSNA on-disk layout, so the same code path (`load_rsna_ich`) reads
the twin and the real data:

    root/stage_2_train/ID_<12 hex>.dcm    real CT DICOM files (int16, RescaleIntercept -1024)
    root/stage_2_train.csv                header `ID,Label`, rows `ID_<image>_<subtype>,<0|1>`
    root/labels.csv                       path,patient_id,any,epidural,... (for the `image_csv` builder)

Each slice is a CT-like axial head slice in Hounsfield units: air (-1000) around an elliptical skull ring
(+700..+1500 HU), brain (white matter ~30 HU, a grey-matter cortex ~40 HU), two CSF lateral ventricles and
radial CSF sulci near the surface (~5-10 HU), Gaussian noise (~3 HU), plus acute blood (clotted 65-85 HU;
mixed with CSF in ventricles and sulci 55-72 HU) whose place and shape encode the subtype:

    epidural           a thick, short biconvex lens against the inner skull
    subdural           a thin, long crescent along the inner skull
    intraparenchymal   a round blob deep in the brain, with a hypodense edema rim
    intraventricular   blood layering in the posterior part of one or both ventricles
    subarachnoid       several sulci filled with blood (bright radial lines near the surface)

Labels: 40 % of slices are negative; a positive slice draws each of the 5 subtypes independently with
probability 0.42, redrawn until at least one is positive, so each subtype has a prevalence of about 27 %.
`any` is 1 iff a subtype is 1. All of this is our choice; the twin only has to be learnable and CT-like.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hfmed.models.scopeformer.configuration_scopeformer import RSNA_LABELS

from .builder import Builder
from .twin_cache import ensure_twin

SUBTYPES = RSNA_LABELS[1:]
"""The five hemorrhage subtypes, without `any`."""

# Bump when the drawing changes: cached twins written by an older version are regenerated.
GENERATOR_VERSION = 2
MARKER_NAME = ".hfmed_synthetic_ct.json"
NEGATIVE_FRACTION = 0.4
SUBTYPE_PROBABILITY = 0.42
# The real stage_2_train.csv lists an image's six rows in this order.
_CSV_SUBTYPE_ORDER = [*SUBTYPES, "any"]
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_FIELD_OF_VIEW_MM = 250.0
_SLICE_THICKNESS_MM = 5.0
_KNOWN_ENTRIES = {"stage_2_train", "stage_2_train.csv", "labels.csv", "patient_ids.csv", MARKER_NAME}


def _normalise_labels(labels: Mapping[str, Any] | Sequence[Any]) -> dict[str, bool]:
    """Returns {subtype: bool} for the 5 subtypes; `any`, when given, must agree with them."""
    if isinstance(labels, Mapping):
        unknown = sorted(set(labels) - set(RSNA_LABELS))
        if unknown:
            raise ValueError(f"unknown label name(s) {unknown}: use names from {RSNA_LABELS}")
        values = {name: labels[name] for name in labels}
    else:
        if isinstance(labels, (str, bytes)):
            raise ValueError(f"labels must be a dict or a list of 0/1 values, got {labels!r}")
        labels = list(np.asarray(labels).ravel())
        if len(labels) == len(RSNA_LABELS):
            values = dict(zip(RSNA_LABELS, labels, strict=True))
        elif len(labels) == len(SUBTYPES):
            values = dict(zip(SUBTYPES, labels, strict=True))
        else:
            raise ValueError(
                f"labels has {len(labels)} values: give {len(RSNA_LABELS)} in the order {RSNA_LABELS}, "
                f"or {len(SUBTYPES)} in the order {SUBTYPES}"
            )
    for name, value in values.items():
        if value not in (0, 1):  # True/False and 0.0/1.0 compare equal to 0/1
            raise ValueError(f"label {name!r} must be 0 or 1, got {value!r}")
    subtypes = {name: bool(values.get(name, 0)) for name in SUBTYPES}
    if "any" in values and bool(values["any"]) != any(subtypes.values()):
        raise ValueError(
            f"label 'any' is {int(values['any'])} but the subtypes are {subtypes}: 'any' must be 1 exactly "
            "when a subtype is 1 (or leave 'any' out)"
        )
    return subtypes


def _soft(signed_distance_px: np.ndarray) -> np.ndarray:
    """Partial-volume coverage in [0, 1] from a signed distance in pixels (positive inside)."""
    return np.clip(signed_distance_px + 0.5, 0.0, 1.0)


def _blend(image: np.ndarray, alpha: np.ndarray, value: np.ndarray | float) -> None:
    image += alpha * (value - image)


def _segment_distance(yy, xx, y0, x0, y1, x1):
    """Distance in pixels from every pixel to the segment (y0, x0)-(y1, x1)."""
    dy, dx = y1 - y0, x1 - x0
    length2 = max(dy * dy + dx * dx, 1e-9)
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / length2, 0.0, 1.0)
    return np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))


def _angle_difference(phi: np.ndarray, center: float) -> np.ndarray:
    return np.angle(np.exp(1j * (phi - center)))


def synthetic_ct_slice(
    labels: Mapping[str, Any] | Sequence[Any], image_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Draws one synthetic axial head-CT slice in Hounsfield units.

    Args:
        labels: `{name: 0/1}` with names from `RSNA_LABELS` (missing subtypes are 0), or a list of 6 values
            in `RSNA_LABELS` order, or of 5 values in `SUBTYPES` order. `any`, when given, must be 1 exactly
            when a subtype is 1.
        image_size: height and width in pixels (>= 16). Every size is drawn to the same anatomy.
        rng: the source of randomness. The generator is consumed identically whatever the labels, so the
            same seed with different labels gives the same head, noise and lesion places, differing only
            by the drawn blood.

    Returns:
        `np.ndarray` of shape (image_size, image_size), float32 HU.
    """
    subtypes = _normalise_labels(labels)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    size = int(image_size)

    # --- every random draw, in a fixed order (independent of the labels) ---
    cy, cx = size / 2 + rng.uniform(-0.03, 0.03, size=2) * size
    semi_ap = size * rng.uniform(0.40, 0.44)  # anterior-posterior (vertical) semi-axis, pixels
    semi_lr = size * rng.uniform(0.33, 0.37)  # left-right (horizontal) semi-axis, pixels
    tilt = rng.uniform(-0.15, 0.15)
    skull_thickness = rng.uniform(0.08, 0.11)  # normalised radius
    skull_level = rng.uniform(950.0, 1250.0)
    skull_texture = rng.uniform(80.0, 200.0)
    skull_phase = rng.uniform(0, 2 * np.pi, size=3)
    white_hu = rng.uniform(30.0, 35.0)
    grey_hu = rng.uniform(39.0, 44.0)
    cortex_depth = rng.uniform(0.12, 0.18)
    csf_hu = rng.uniform(5.0, 10.0)
    ventricle_offset = rng.uniform(0.13, 0.17)
    ventricle_axes = (rng.uniform(0.09, 0.11), rng.uniform(0.24, 0.3))
    ventricle_shift = rng.uniform(-0.06, 0.02)
    num_sulci = 12
    sulcus_angles = (np.arange(num_sulci) + rng.uniform(-0.3, 0.3, size=num_sulci)) * 2 * np.pi / num_sulci
    sulcus_depths = rng.uniform(0.16, 0.24, size=num_sulci)
    # Acute blood: clotted (epidural, subdural, parenchymal) is denser than blood mixed with CSF (sulci,
    # ventricles).
    blood_hu = dict(
        zip(("epidural", "subdural", "intraparenchymal"), rng.uniform(65.0, 85.0, size=3), strict=True)
    )
    blood_hu.update(zip(("intraventricular", "subarachnoid"), rng.uniform(55.0, 72.0, size=2), strict=True))
    # epidural: a short thick lens
    edh_angle = rng.uniform(0, 2 * np.pi)
    edh_halfwidth = rng.uniform(0.35, 0.5)
    edh_depth = rng.uniform(0.25, 0.32)
    # subdural: a long thin crescent
    sdh_angle = rng.uniform(0, 2 * np.pi)
    sdh_halfwidth = rng.uniform(1.1, 1.5)
    sdh_depth = rng.uniform(0.09, 0.12)
    # intraparenchymal: a round blob between the ventricles and the cortex
    iph_angle, iph_radius_pos = rng.uniform(0, 2 * np.pi), rng.uniform(0.42, 0.55)
    iph_radius = rng.uniform(0.13, 0.18)
    iph_wobble, iph_wobble_phase = rng.uniform(0.0, 0.15), rng.uniform(0, 2 * np.pi)
    # intraventricular: which ventricle(s), and how high the blood layers
    ivh_sides = rng.choice(3, p=[0.25, 0.25, 0.5])  # 0 left, 1 right, 2 both
    ivh_level = rng.uniform(-0.8, -0.1)
    # subarachnoid: which sulci hold blood
    sah_filled = rng.permutation(num_sulci)[: rng.integers(6, 10)]
    noise = rng.normal(0.0, 1.0, size=(size, size))
    skull_noise = rng.normal(0.0, 1.0, size=(size, size))

    # --- geometry: normalised elliptic coordinates (rho = 1 on the outer skull surface) ---
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dy, dx = yy - cy, xx - cx
    cos_t, sin_t = np.cos(tilt), np.sin(tilt)
    p = (dx * cos_t + dy * sin_t) / semi_lr  # left-right, in units of the semi-axis
    q = (-dx * sin_t + dy * cos_t) / semi_ap  # anterior-posterior (posterior is +)
    rho = np.hypot(p, q)
    phi = np.arctan2(q, p)
    px_per_unit = min(semi_lr, semi_ap)  # converts normalised distances to (about) pixels
    # at least 2 pixels of bone, so small images still show a closed ring
    inner = 1.0 - max(skull_thickness, 2.0 / px_per_unit)

    def to_pixels(u, v):  # normalised (p, q) -> pixel (y, x)
        ddx, ddy = u * semi_lr, v * semi_ap
        return cy + ddx * sin_t + ddy * cos_t, cx + ddx * cos_t - ddy * sin_t

    # --- anatomy ---
    hu = np.full((size, size), -1000.0)
    head = _soft((1.0 - rho) * px_per_unit)
    brain = _soft((inner - rho) * px_per_unit)
    skull_hu = (
        skull_level
        + skull_texture * np.cos(3 * phi + skull_phase[0]) * np.sin(2 * phi + skull_phase[1])
        + 40.0 * skull_noise
    )
    _blend(hu, head, np.clip(skull_hu, 700.0, 1500.0))
    cortex = _soft((rho - (inner - cortex_depth)) * px_per_unit)
    tissue = white_hu + (grey_hu - white_hu) * cortex
    _blend(hu, brain, tissue)

    ventricles = []
    for side in (-1.0, 1.0):
        vp, vq = (p - side * ventricle_offset) / ventricle_axes[0], (q - ventricle_shift) / ventricle_axes[1]
        ventricle = _soft((1.0 - np.hypot(vp, vq)) * ventricle_axes[0] * px_per_unit)
        ventricles.append((ventricle, vq))
        _blend(hu, ventricle * brain, csf_hu)

    sulci = []
    for angle, depth in zip(sulcus_angles, sulcus_depths, strict=True):
        y0, x0 = to_pixels(inner * np.cos(angle), inner * np.sin(angle))
        y1, x1 = to_pixels((inner - depth) * np.cos(angle), (inner - depth) * np.sin(angle))
        distance = _segment_distance(yy, xx, y0, x0, y1, x1)
        sulci.append(distance)
        width = max(1.0, size / 64)
        _blend(hu, _soft(width / 2 - distance) * brain, csf_hu)

    # --- blood (each drawn only when labelled) ---
    if subtypes["epidural"]:
        along = _angle_difference(phi, edh_angle) / edh_halfwidth
        thickness = edh_depth * np.sqrt(np.clip(1.0 - along**2, 0.0, None))
        lens = _soft((thickness - (inner - rho)) * px_per_unit) * (np.abs(along) < 1) * brain
        _blend(hu, lens, blood_hu["epidural"])
    if subtypes["subdural"]:
        along = _angle_difference(phi, sdh_angle) / sdh_halfwidth
        thickness = sdh_depth * np.clip(1.0 - along**2, 0.0, None) ** 0.25
        crescent = _soft((thickness - (inner - rho)) * px_per_unit) * (np.abs(along) < 1) * brain
        _blend(hu, crescent, blood_hu["subdural"])
    if subtypes["intraparenchymal"]:
        bp, bq = iph_radius_pos * np.cos(iph_angle), iph_radius_pos * np.sin(iph_angle)
        local = np.hypot(p - bp, q - bq)
        local_angle = np.arctan2(q - bq, p - bp)
        radius = iph_radius * (1.0 + iph_wobble * np.sin(3 * local_angle + iph_wobble_phase))
        edema = _soft((radius + 0.05 - local) * px_per_unit) * brain
        _blend(hu, edema, white_hu - 10.0)
        _blend(hu, _soft((radius - local) * px_per_unit) * brain, blood_hu["intraparenchymal"])
    if subtypes["intraventricular"]:
        for side, (ventricle, vq) in enumerate(ventricles):
            if ivh_sides in (side, 2):
                layer = _soft((vq - ivh_level) * ventricle_axes[1] * px_per_unit)
                _blend(hu, ventricle * layer * brain, blood_hu["intraventricular"])
    if subtypes["subarachnoid"]:
        width = max(2.0, 2.0 * size / 64)
        for index in sah_filled:
            _blend(hu, _soft(width / 2 - sulci[index]) * brain, blood_hu["subarachnoid"])

    # --- quantum noise: stronger inside the head, as on CT ---
    hu += noise * (1.5 + 1.5 * head)
    return hu.astype(np.float32)


def _draw_labels(rng: np.random.Generator) -> dict[str, int]:
    if rng.random() < NEGATIVE_FRACTION:
        subtypes = dict.fromkeys(SUBTYPES, 0)
    else:
        while True:
            draws = rng.random(len(SUBTYPES)) < SUBTYPE_PROBABILITY
            if draws.any():
                break
        subtypes = {name: int(flag) for name, flag in zip(SUBTYPES, draws, strict=True)}
    return {"any": int(any(subtypes.values())), **subtypes}


def _unique_hex(rng: np.random.Generator, digits: int, taken: set[str]) -> str:
    while True:
        value = "".join(f"{b:02x}" for b in rng.integers(0, 256, size=(digits + 1) // 2))[:digits]
        if value not in taken:
            taken.add(value)
            return value


def _uid(*parts: Any) -> str:
    from pydicom.uid import generate_uid

    # Deterministic: generate_uid hashes its entropy sources.
    return generate_uid(entropy_srcs=["hfmed-synthetic-ct", *map(str, parts)])


def _write_dicom(
    path: Path, hu: np.ndarray, *, patient_id: str, study_uid: str, series_uid: str, sop_uid: str, z_mm: float
) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    size = hu.shape[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    # The tags of the real RSNA files (plus SOPClassUID), in the RSNA encoding: int16 stored = HU + 1024.
    ds.SOPClassUID = _CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.ImagePositionPatient = [-_FIELD_OF_VIEW_MM / 2, -_FIELD_OF_VIEW_MM / 2, round(z_mm, 3)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = _SLICE_THICKNESS_MM
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    spacing = round(_FIELD_OF_VIEW_MM / size, 6)
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 80
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    stored = np.clip(np.rint(hu.astype(np.float64) + 1024.0), -32768, 32767).astype("<i2")
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_synthetic_rsna(
    root: str | os.PathLike,
    num_patients: int = 40,
    slices_per_patient: int = 4,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Writes the synthetic RSNA twin into `root` (created if needed) and returns `root` as a `Path`.

    Deterministic: the same arguments give byte-identical CSVs and identical pixels. Existing files with the
    same names are overwritten; other files in `root` are left alone.
    """
    for name, value, minimum in (
        ("num_patients", num_patients, 1),
        ("slices_per_patient", slices_per_patient, 1),
        ("image_size", image_size, 16),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    root = Path(root).expanduser()
    dicom_dir = root / "stage_2_train"
    dicom_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    taken_patients: set[str] = set()
    taken_images: set[str] = set()
    records = []
    for patient in range(num_patients):
        patient_id = "ID_" + _unique_hex(rng, 8, taken_patients)
        study_uid, series_uid = _uid(seed, patient_id, "study"), _uid(seed, patient_id, "series")
        for index in range(slices_per_patient):
            image_id = "ID_" + _unique_hex(rng, 12, taken_images)
            labels = _draw_labels(rng)
            hu = synthetic_ct_slice(labels, image_size, np.random.default_rng([seed, patient, index]))
            _write_dicom(
                dicom_dir / f"{image_id}.dcm",
                hu,
                patient_id=patient_id,
                study_uid=study_uid,
                series_uid=series_uid,
                sop_uid=_uid(seed, image_id),
                z_mm=index * _SLICE_THICKNESS_MM,
            )
            records.append((image_id, patient_id, labels))
    # The real CSV is not grouped by patient: shuffle, deterministically.
    records = [records[i] for i in rng.permutation(len(records))]
    with open(root / "stage_2_train.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ID", "Label"])
        for image_id, _, labels in records:
            writer.writerows([f"{image_id}_{name}", labels[name]] for name in _CSV_SUBTYPE_ORDER)
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "patient_id", *RSNA_LABELS])
        for image_id, patient_id, labels in records:
            writer.writerow([f"stage_2_train/{image_id}.dcm", patient_id, *(labels[n] for n in RSNA_LABELS)])
    return root


def default_cache_root() -> Path:
    """`$HFMED_CACHE/synthetic_ct`, where HFMED_CACHE defaults to `~/.cache/hfmed`."""
    return Path(os.environ.get("HFMED_CACHE", "~/.cache/hfmed")).expanduser() / "synthetic_ct"


def _generation_params(num_patients: int, slices_per_patient: int, image_size: int, seed: int) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "num_patients": int(num_patients),
        "slices_per_patient": int(slices_per_patient),
        "image_size": int(image_size),
        "seed": int(seed),
    }


def ensure_synthetic_rsna(
    root: str | os.PathLike | None = None,
    num_patients: int = 60,
    slices_per_patient: int = 8,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Returns a folder holding the twin for these parameters, writing it first when needed.

    `root=None` uses `default_cache_root() / <hash of the parameters>`. A marker file (written last, so an
    interrupted write is redone) records the parameters; a twin written with other parameters is replaced.
    A non-empty `root` that holds anything else than a twin is refused rather than touched.
    """
    params = _generation_params(num_patients, slices_per_patient, image_size, seed)
    return ensure_twin(
        root,
        params,
        lambda folder: write_synthetic_rsna(folder, num_patients, slices_per_patient, image_size, seed),
        kind="synthetic_ct",
        cache_root=default_cache_root(),
        marker=MARKER_NAME,
        known_entries=_KNOWN_ENTRIES,
    )


def load_synthetic_ct(
    root: str | os.PathLike | None = None,
    num_patients: int = 60,
    slices_per_patient: int = 8,
    image_size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    label_names: Sequence[str] = RSNA_LABELS,
    split_seed: int | None = None,
    num_proc: int | None = None,
    limit: int | None = None,
):
    """Builder `synthetic_ct`: writes the twin if needed (see `ensure_synthetic_rsna`), then `load_rsna_ich`.

    `seed` seeds the data; the patient split uses `split_seed` (default: `seed`).

    Returns:
        `datasets.DatasetDict` with `train`, `validation` (and `test` when `test_fraction > 0`), columns
        `path`, `labels`, `patient_id`, `image_id`.
    """
    from .rsna_ich import load_rsna_ich

    folder = ensure_synthetic_rsna(root, num_patients, slices_per_patient, image_size, seed)
    return load_rsna_ich(
        folder,
        label_names=label_names,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed if split_seed is None else split_seed,
        num_proc=num_proc,
        limit=limit,
    )


BUILDER = Builder(name="synthetic_ct", load=load_synthetic_ct)

__all__ = [
    "BUILDER",
    "SUBTYPES",
    "default_cache_root",
    "ensure_synthetic_rsna",
    "load_synthetic_ct",
    "synthetic_ct_slice",
    "write_synthetic_rsna",
]
