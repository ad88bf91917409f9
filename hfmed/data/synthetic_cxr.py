"""A synthetic twin of NIH ChestX-ray14 (and a small CheXpert-layout one), for offline demos and tests.

`write_synthetic_nih` writes the real NIH on-disk layout, so the same code path (`load_nih_chestxray14`)
reads the twin and the real data:

    root/Data_Entry_2017.csv      the real header (Image Index,Finding Labels,Follow-up #,Patient ID,...)
    root/train_val_list.txt       images of ~85 % of the patients
    root/test_list.txt            images of the other ~15 % (patient-wise, like the official lists)
    root/images/00000001_000.png  <patient:08d>_<follow-up:03d>.png, 8-bit (or 16-bit) grey PNG

Each image is a frontal chest radiograph in miniature (intensities in [0, 1] before quantisation): air
around a soft-tissue body (~0.42) with a visible border, two dark lung fields (~0.2) with vessel markings
radiating from the hila and a faint texture, a brighter mediastinum, the spine with vertebral segments, the
heart (~0.62) low in the middle, faint curved ribs over the lungs, a global gain/offset and pixel noise.
Images follow the radiological convention (the patient's right on the image's left). Each finding is drawn
only inside its fixed box `LABEL_REGIONS[name]` (fractions of the image: y0, x0, y1, x1), so attention maps
can be checked against it:

    Atelectasis    a dense bright band (wedge) in the upper part of the image's left lung field
    Cardiomegaly   the heart shadow widened (cardiothoracic ratio ~0.5 -> ~0.75)
    Consolidation  a bright fluffy patch in the middle of the image's right lung field
    Effusion       homogeneous fluid filling the base of the image's right lung, with a meniscus rising
                   laterally (blunted costophrenic angle)
    Pneumothorax   a very dark crescent without lung markings along the apex / lateral edge of the image's
                   right lung, bounded by a thin bright visceral pleural line

Labels: 35 % of images have `No Finding`; the others draw each finding independently with probability
0.38, redrawn until at least one is positive, so each finding has a prevalence of about 27 %. All of this
is our choice; the twin only has to be learnable and CXR-like.

`write_synthetic_chexpert` writes a small CheXpert-layout twin (train.csv / valid.csv with 1 / 0 / -1 /
blank values) for the tests of `load_chexpert`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .builder import Builder
from .chest_xray import CHEXPERT_OBSERVATIONS
from .twin_cache import ensure_twin

SYNTHETIC_CXR_LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Consolidation", "Pneumothorax"]
"""The findings the twin draws (NIH names)."""

LABEL_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "Atelectasis": (0.12, 0.12, 0.42, 0.47),
    "Cardiomegaly": (0.44, 0.25, 0.86, 0.83),
    "Effusion": (0.58, 0.53, 0.90, 0.92),
    "Consolidation": (0.36, 0.55, 0.62, 0.88),
    "Pneumothorax": (0.06, 0.60, 0.44, 0.92),
}
"""Where each finding is drawn: (y0, x0, y1, x1) as fractions of the image height / width (fixed)."""

# Bump when the drawing changes: cached twins written by an older version are regenerated.
GENERATOR_VERSION = 1
MARKER_NAME = ".hfmed_synthetic_cxr.json"
NO_FINDING_FRACTION = 0.35
FINDING_PROBABILITY = 0.38
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
"""The header line of the real Data_Entry_2017.csv (its brackets hold unquoted commas, and it ends in one)."""
_KNOWN_ENTRIES = {"images", "Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt", MARKER_NAME}
_FIELD_OF_VIEW_MM = 400.0
# CheXpert column -> the twin's finding drawn for it (the others have no picture).
_CHEXPERT_DRAWN = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Pleural Effusion": "Effusion",
    "Pneumothorax": "Pneumothorax",
}


# ---------------------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------------------


def _normalise_labels(labels: Mapping[str, Any] | Sequence[Any]) -> dict[str, bool]:
    """{finding: bool} for the 5 findings from a dict, a list of names, or 5 values in label order."""
    if isinstance(labels, Mapping):
        unknown = sorted(set(labels) - set(SYNTHETIC_CXR_LABELS))
        if unknown:
            raise ValueError(f"unknown label name(s) {unknown}: use names from {SYNTHETIC_CXR_LABELS}")
        values = dict(labels)
    elif isinstance(labels, (str, bytes)):
        raise ValueError(f"labels must be a dict, a list of names or 5 0/1 values, got {labels!r}")
    else:
        items = list(labels)
        if all(isinstance(item, str) for item in items):  # a list of names (empty: no finding)
            return _normalise_labels(dict.fromkeys(items, 1))
        items = list(np.asarray(items).ravel())
        if len(items) != len(SYNTHETIC_CXR_LABELS):
            raise ValueError(
                f"labels has {len(items)} values: give {len(SYNTHETIC_CXR_LABELS)} in the order "
                f"{SYNTHETIC_CXR_LABELS}, a list of names, or a dict"
            )
        values = dict(zip(SYNTHETIC_CXR_LABELS, items, strict=True))
    for name, value in values.items():
        if value not in (0, 1):
            raise ValueError(f"label {name!r} must be 0 or 1, got {value!r}")
    return {name: bool(values.get(name, 0)) for name in SYNTHETIC_CXR_LABELS}


def _soft(distance: np.ndarray, width: float) -> np.ndarray:
    """A smooth step: 0 for distance << 0, 1 for distance >> 0, over about `width`."""
    return 0.5 * (1.0 + np.tanh(distance / width))


def _upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a small grid to (size, size): smooth texture without scipy."""
    grid = np.linspace(0.0, 1.0, coarse.shape[0])
    target = (np.arange(size) + 0.5) / size
    rows = np.stack([np.interp(target, grid, row) for row in coarse])  # (coarse, size)
    return np.stack([np.interp(target, grid, col) for col in rows.T], axis=1)


def _segment_distance(yy, xx, y0, x0, y1, x1):
    """Distance from each pixel to the segment (y0, x0)-(y1, x1), and the position t in [0, 1] along it."""
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx), 0.0, 1.0)
    return np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx)), t


def _box_mask(yy, xx, name: str) -> np.ndarray:
    y0, x0, y1, x1 = LABEL_REGIONS[name]
    return ((yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)).astype(np.float64)


def _blend(image: np.ndarray, weight: np.ndarray, value) -> None:
    image *= 1.0 - weight
    image += weight * value


def synthetic_cxr_float(labels: Mapping[str, Any] | Sequence[Any], image_size: int, rng: np.random.Generator):
    """The image of `synthetic_cxr_image` as float64 intensities in [0, 1] (before quantisation)."""
    findings = _normalise_labels(labels)
    size = int(image_size)
    if size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size!r}")
    pixel = 1.0 / size
    edge = 0.7 * pixel  # width of soft edges: about a pixel at any size

    # --- every random draw, in a fixed order, whatever the labels (same rng -> same anatomy) ---
    gain, offset = rng.uniform(0.9, 1.1), rng.uniform(-0.03, 0.03)
    lung_cy = 0.47 + rng.uniform(-0.012, 0.012)
    lung_dx = 0.21 + rng.uniform(-0.01, 0.01)
    lung_shift = rng.uniform(-0.01, 0.01)
    heart_ax, heart_ay = rng.uniform(0.12, 0.14), rng.uniform(0.12, 0.14)
    big_ax, big_ay = rng.uniform(0.22, 0.25), rng.uniform(0.16, 0.18)
    rib_phase = rng.uniform(-0.015, 0.015)
    vessel_angles = rng.uniform(-1.1, 1.1, size=(2, 5))
    vessel_lengths = rng.uniform(0.12, 0.2, size=(2, 5))
    texture = rng.normal(0.0, 1.0, size=(10, 10))
    atel_y0, atel_x1 = rng.uniform(0.35, 0.39), rng.uniform(0.17, 0.22)
    atel_y1, atel_width = rng.uniform(0.17, 0.22), rng.uniform(0.045, 0.06)
    cons_centre = np.array([0.49, 0.715]) + rng.uniform(-0.03, 0.03, size=2)
    cons_blobs = cons_centre + rng.normal(0.0, 0.035, size=(5, 2))
    cons_sigmas = rng.uniform(0.03, 0.045, size=5)
    cons_texture = rng.normal(0.0, 1.0, size=(8, 8))
    effusion_level, meniscus = rng.uniform(0.66, 0.7), rng.uniform(0.06, 0.09)
    ptx_inner = rng.uniform(0.58, 0.66)
    noise = rng.normal(0.0, 1.0, size=(size, size))

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    yy, xx = (yy + 0.5) * pixel, (xx + 0.5) * pixel

    # --- anatomy ---
    image = np.full((size, size), 0.04)
    body_r = np.hypot((yy - 0.55) / 0.6, (xx - 0.5) / 0.46)
    body = _soft(1.0 - body_r, edge / 0.46)
    _blend(image, body, 0.42 + 0.04 * _soft(body_r - 0.93, 0.02))  # brighter skin / soft-tissue border
    mediastinum = _soft(0.075 - np.abs(xx - 0.5), edge) * _soft(yy - 0.05, edge) * body
    _blend(image, mediastinum, 0.55)
    spine = _soft(0.03 - np.abs(xx - 0.5), edge) * body
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * (yy - rib_phase) / 0.075)
    image += spine * (0.08 + 0.05 * vertebrae)

    lungs, lung_r = [], []
    tex = 0.025 * _upsample(texture, size)
    for index, side in enumerate((-1.0, 1.0)):
        cx = 0.5 + side * lung_dx + lung_shift
        u, v = (xx - cx) / 0.155, (yy - lung_cy) / 0.35
        # a round apex (2-norm above the centre), a flat base (4-norm below)
        r = np.where(v < 0, np.hypot(u, v), (np.abs(u) ** 4 + np.abs(v) ** 4) ** 0.25)
        lung = _soft(1.0 - r, edge / 0.155)
        markings = tex.copy()
        hilum_y, hilum_x = lung_cy - 0.02, 0.5 + side * 0.1
        for angle, length in zip(vessel_angles[index], vessel_lengths[index], strict=True):
            y1 = hilum_y + length * np.sin(angle)
            x1 = hilum_x + side * length * np.cos(angle)
            distance, t = _segment_distance(yy, xx, hilum_y, hilum_x, y1, x1)
            markings += 0.09 * (1.0 - 0.6 * t) * np.exp(-((distance / (0.9 * pixel + 0.004)) ** 2))
        _blend(image, lung, 0.2 + markings)
        lungs.append(lung)
        lung_r.append(r)

    heart_r = np.hypot((yy - 0.66) / heart_ay, (xx - 0.54) / heart_ax)
    _blend(image, _soft(1.0 - heart_r, edge / heart_ax), 0.62)

    # --- findings, each only inside its box ---
    if findings["Cardiomegaly"]:
        big_r = np.hypot((yy - 0.645) / big_ay, (xx - 0.54) / big_ax)
        _blend(image, _soft(1.0 - big_r, edge / big_ax) * _box_mask(yy, xx, "Cardiomegaly"), 0.62)
    if findings["Atelectasis"]:
        hilum_x = 0.5 - lung_dx + lung_shift + 0.12  # medial part of the image's left lung
        distance, t = _segment_distance(yy, xx, atel_y0, hilum_x, atel_y1, atel_x1)
        wedge = _soft(atel_width * (0.5 + 0.5 * t) - distance, edge)  # widening towards the periphery
        _blend(image, wedge * lungs[0] * _box_mask(yy, xx, "Atelectasis"), 0.66)
    if findings["Consolidation"]:
        blobs = sum(
            np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * s * s))
            for (by, bx), s in zip(cons_blobs, cons_sigmas, strict=True)
        )
        fluffy = np.clip(1.6 * blobs - 0.25, 0.0, 1.0) * (0.85 + 0.15 * _upsample(cons_texture, size))
        weight = np.clip(fluffy, 0.0, 1.0) * lungs[1] * _box_mask(yy, xx, "Consolidation")
        _blend(image, weight, 0.6)
    if findings["Effusion"]:
        lateral = np.clip((xx - 0.53) / 0.34, 0.0, 1.0)
        level = effusion_level - meniscus * lateral**2  # the meniscus climbs the lateral chest wall
        fluid = _soft(yy - level, 1.5 * edge) * _soft(1.06 - lung_r[1], edge / 0.155)
        _blend(image, fluid * _box_mask(yy, xx, "Effusion"), 0.6)
    if findings["Pneumothorax"]:
        cx = 0.5 + lung_dx + lung_shift
        apex_lateral = _soft(0.42 - yy, 2 * edge) * _soft(xx - (cx - 0.03), 2 * edge)
        where = lungs[1] * apex_lateral * _box_mask(yy, xx, "Pneumothorax")
        _blend(image, _soft(lung_r[1] - ptx_inner, edge / 0.155) * where, 0.03)  # air, no markings
        pleura = np.exp(-(((lung_r[1] - ptx_inner) * 0.155 / (0.6 * pixel)) ** 2))
        _blend(image, 0.9 * pleura * where, 0.5)

    # --- ribs (bone is superimposed on everything), gain, noise ---
    midline = np.abs(xx - 0.5)
    for k in range(8):
        y_rib = 0.13 + rib_phase + 0.085 * k + 1.2 * (midline - 0.22) ** 2 - 0.03
        rib = np.exp(-(((yy - y_rib) / (0.6 * pixel + 0.006)) ** 2)) * _soft(midline - 0.06, edge)
        image += 0.06 * rib * _soft(0.42 - midline, edge) * body
    image = gain * image + offset + 0.015 * noise
    return np.clip(image, 0.0, 1.0)


def synthetic_cxr_image(
    labels: Mapping[str, Any] | Sequence[Any], image_size: int, rng: np.random.Generator, bit_depth: int = 8
) -> np.ndarray:
    """One synthetic frontal chest X-ray, (image_size, image_size) grey, uint8 (or uint16 for bit_depth=16).

    Args:
        labels: the findings shown: a dict {name: 0/1}, a list of names, or 5 values in
            `SYNTHETIC_CXR_LABELS` order.
        image_size: height = width in pixels (>= 16).
        rng: draws the anatomy and the findings' shapes. The same rng state gives the same image up to the
            findings: with and without a finding, only pixels in that finding's `LABEL_REGIONS` box differ.
        bit_depth: 8 or 16.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    image = synthetic_cxr_float(labels, image_size, rng)
    top = 255 if bit_depth == 8 else 65535
    return np.rint(image * top).astype(np.uint8 if bit_depth == 8 else np.uint16)


def _draw_findings(rng: np.random.Generator) -> dict[str, int]:
    if rng.random() < NO_FINDING_FRACTION:
        return dict.fromkeys(SYNTHETIC_CXR_LABELS, 0)
    while True:
        draws = rng.random(len(SYNTHETIC_CXR_LABELS)) < FINDING_PROBABILITY
        if draws.any():
            return {name: int(flag) for name, flag in zip(SYNTHETIC_CXR_LABELS, draws, strict=True)}


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)  # uint8 -> mode L, uint16 -> mode I;16


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


# ---------------------------------------------------------------------------------------------------
# NIH layout
# ---------------------------------------------------------------------------------------------------


def write_synthetic_nih(
    root: str | os.PathLike,
    num_patients: int = 80,
    images_per_patient: int = 3,
    image_size: int = 64,
    seed: int = 0,
    bit_depth: int = 8,
    test_fraction: float = 0.15,
) -> Path:
    """Writes the synthetic NIH ChestX-ray14 twin into `root` (created if needed) and returns it as a `Path`.

    Patients are numbered 1..num_patients, each with `images_per_patient` follow-ups (`Follow-up #` 0, 1,
    ...); `round(test_fraction * num_patients)` patients (at least 1, at most num_patients - 1) form
    `test_list.txt`. Deterministic: the same arguments give byte-identical CSV / lists and identical pixels.
    Existing files with the same names are overwritten; other files in `root` are left alone.
    """
    _check_int("num_patients", num_patients, 2)
    _check_int("images_per_patient", images_per_patient, 1)
    _check_int("image_size", image_size, 16)
    _check_int("seed", seed, 0)
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    if isinstance(test_fraction, bool) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    root = Path(root).expanduser()
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    num_test = min(max(1, round(test_fraction * num_patients)), num_patients - 1)
    test_patients = {int(p) + 1 for p in rng.permutation(num_patients)[:num_test]}
    spacing = f"{_FIELD_OF_VIEW_MM / image_size:.3f}"
    rows, train_val, test = [], [], []
    for patient in range(1, num_patients + 1):
        gender = "M" if rng.random() < 0.55 else "F"
        age = int(rng.integers(18, 86))
        for follow_up in range(images_per_patient):
            name = f"{patient:08d}_{follow_up:03d}.png"
            findings = _draw_findings(rng)
            view = "PA" if rng.random() < 0.6 else "AP"
            pixels = synthetic_cxr_image(
                findings, image_size, np.random.default_rng([seed, patient, follow_up]), bit_depth
            )
            _save_png(image_dir / name, pixels)
            positive = sorted(n for n, v in findings.items() if v)  # the real CSV lists them alphabetically
            text = "|".join(positive) or "No Finding"
            rows.append([name, text, follow_up, patient, age + follow_up // 4, gender, view,
                         image_size, image_size, spacing, spacing, ""])  # fmt: skip
            (test if patient in test_patients else train_val).append(name)
    with open(root / "Data_Entry_2017.csv", "w", newline="") as handle:
        handle.write(NIH_HEADER + "\n")
        csv.writer(handle, lineterminator="\n").writerows(rows)
    (root / "train_val_list.txt").write_text("".join(f"{n}\n" for n in sorted(train_val)))
    (root / "test_list.txt").write_text("".join(f"{n}\n" for n in sorted(test)))
    return root


def default_cache_root() -> Path:
    """`$HFMED_CACHE/synthetic_cxr`, where HFMED_CACHE defaults to `~/.cache/hfmed`."""
    return Path(os.environ.get("HFMED_CACHE", "~/.cache/hfmed")).expanduser() / "synthetic_cxr"


def ensure_synthetic_nih(
    root: str | os.PathLike | None = None,
    num_patients: int = 80,
    images_per_patient: int = 3,
    image_size: int = 64,
    seed: int = 0,
    bit_depth: int = 8,
    test_fraction: float = 0.15,
) -> Path:
    """Returns a folder holding the NIH twin for these parameters, writing it first when needed.

    `root=None` uses `default_cache_root() / <hash of the parameters>`. A marker file (written last, so an
    interrupted write is redone) records the parameters; a twin written with other parameters is replaced.
    A non-empty `root` that holds anything else than a twin is refused rather than touched.
    """
    params = {
        "generator_version": GENERATOR_VERSION,
        "num_patients": int(num_patients),
        "images_per_patient": int(images_per_patient),
        "image_size": int(image_size),
        "seed": int(seed),
        "bit_depth": int(bit_depth),
        "test_fraction": float(test_fraction),
    }
    args = (num_patients, images_per_patient, image_size, seed, bit_depth, test_fraction)
    return ensure_twin(
        root,
        params,
        lambda folder: write_synthetic_nih(folder, *args),
        kind="synthetic CXR",
        cache_root=default_cache_root(),
        marker=MARKER_NAME,
        known_entries=_KNOWN_ENTRIES,
    )


def load_synthetic_cxr(
    root: str | os.PathLike | None = None,
    num_patients: int = 80,
    images_per_patient: int = 3,
    image_size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.2,
    label_names: Sequence[str] = SYNTHETIC_CXR_LABELS,
    bit_depth: int = 8,
    test_fraction: float = 0.15,
    split_seed: int | None = None,
):
    """Builder `synthetic_cxr`: writes the NIH twin if needed (`ensure_synthetic_nih`), then
    `load_nih_chestxray14`.

    `seed` seeds the data; the validation split (a `val_fraction` share of the train_val patients) uses
    `split_seed` (default: `seed`). The test split is the twin's `test_list.txt` (`test_fraction` of the
    patients).

    Returns:
        `datasets.DatasetDict` with `train`, `validation`, `test`; columns `path`, `labels`, `patient_id`,
        `image_id`, `view`.
    """
    from .nih_chestxray14 import load_nih_chestxray14

    folder = ensure_synthetic_nih(
        root, num_patients, images_per_patient, image_size, seed, bit_depth, test_fraction
    )
    return load_nih_chestxray14(
        folder,
        label_names=label_names,
        val_fraction=val_fraction,
        seed=seed if split_seed is None else split_seed,
    )


# ---------------------------------------------------------------------------------------------------
# CheXpert layout
# ---------------------------------------------------------------------------------------------------


def write_synthetic_chexpert(
    root: str | os.PathLike,
    num_patients: int = 12,
    studies_per_patient: int = 2,
    num_valid_patients: int = 4,
    image_size: int = 32,
    seed: int = 0,
    image_format: str = "jpg",
    folder_name: str = "CheXpert-v1.0-small",
) -> Path:
    """Writes a small CheXpert-layout twin under `root/folder_name` and returns that CheXpert folder.

    Train patients are `patient00001...`, validation patients follow them (like the real valid.csv, whose
    patients are not in train.csv). Every study has a frontal view (`view1_frontal`), half of them also a
    lateral one (`view2_lateral`). train.csv holds `1.0`, `0.0`, `-1.0` and blank values for all 14
    observations (`No Finding` is `1.0` when nothing is positive, else blank); valid.csv holds `1.0` / `0.0`
    only, as the radiologist-labelled real one. Images show the twin's findings for the positive (1.0)
    CheXpert columns that have a picture (Atelectasis, Cardiomegaly, Consolidation, Pleural Effusion,
    Pneumothorax); lateral views are drawn the same way (this twin only tests the builder).
    """
    _check_int("num_patients", num_patients, 1)
    _check_int("studies_per_patient", studies_per_patient, 1)
    _check_int("num_valid_patients", num_valid_patients, 0)
    _check_int("image_size", image_size, 16)
    _check_int("seed", seed, 0)
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    from PIL import Image

    root = Path(root).expanduser()
    folder = root / folder_name
    rng = np.random.default_rng(seed)
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS]
    observations = CHEXPERT_OBSERVATIONS[1:]
    for split, patients, values, probabilities in (
        ("train", range(1, num_patients + 1), ["1.0", "0.0", "-1.0", ""], [0.25, 0.15, 0.15, 0.45]),
        ("valid", range(num_patients + 1, num_patients + num_valid_patients + 1), ["1.0", "0.0"], [0.3, 0.7]),
    ):
        rows = []
        for patient in patients:
            sex, age = ("Male" if rng.random() < 0.5 else "Female"), int(rng.integers(18, 90))
            for study in range(1, studies_per_patient + 1):
                drawn = dict(zip(observations, rng.choice(values, size=len(observations), p=probabilities),
                                 strict=True))  # fmt: skip
                any_positive = any(value == "1.0" for value in drawn.values())
                no_finding = ("0.0" if split == "valid" else "") if any_positive else "1.0"
                labels = {ours: int(drawn[theirs] == "1.0") for theirs, ours in _CHEXPERT_DRAWN.items()}
                views = [("view1_frontal", "Frontal", "PA" if rng.random() < 0.4 else "AP")]
                if rng.random() < 0.5:
                    views.append(("view2_lateral", "Lateral", ""))
                for view_name, side, ap_pa in views:
                    relative = (
                        f"{folder_name}/{split}/patient{patient:05d}/study{study}/{view_name}.{image_format}"
                    )
                    path = root / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    pixels = synthetic_cxr_image(
                        labels, image_size, np.random.default_rng([seed, patient, study])
                    )
                    Image.fromarray(pixels).save(path)
                    rows.append([relative, sex, age, side, ap_pa, no_finding, *drawn.values()])
        with open(folder / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
    return folder


BUILDER = Builder(name="synthetic_cxr", load=load_synthetic_cxr, label_regions=LABEL_REGIONS)

__all__ = [
    "BUILDER",
    "LABEL_REGIONS",
    "SYNTHETIC_CXR_LABELS",
    "default_cache_root",
    "ensure_synthetic_nih",
    "load_synthetic_cxr",
    "synthetic_cxr_float",
    "synthetic_cxr_image",
    "write_synthetic_chexpert",
    "write_synthetic_nih",
]
