"""A synthetic twin with a real domain shift, for offline demos and tests of frozen-backbone adaptation.

Two domains, written as PNG files under one root (one sub-folder per class, plus an index):

    root/index.csv                          path,label,split (every image; paths relative to root)
    root/source/<class>/000000.png          the "natural image" source set a small backbone is pretrained on
    root/target/<split>/<class>/000000.png  the medical-like target task: train, validation, test, test_ood

Source ("natural images"): ten classes of shapes (`SOURCE_CLASSES`: disk, square, triangle, ...) at a random
place, size and angle, in a random colour on a random, smoothly shaded background, with pixel noise. Labels
say which shape is drawn; colour carries no information, so a backbone pretrained on it learns shape and
edges over many colours.

Target ("stained cells"): four classes of a cell seen under a microscope (`TARGET_CLASSES`), told apart by
the nucleus' morphology only: one round nucleus, a lobed nucleus (3-4 lobes), a spindle-shaped nucleus, or a
small nucleus in a cytoplasm full of dark granules. Each image holds the central cell (random size, angle,
place), parts of neighbouring cells, debris and a textured slide background. Pixels follow Beer-Lambert
staining: two stain densities (haematoxylin for nuclei and granules, eosin for cytoplasm and background)
times each stain's optical density per channel, `I = exp(-OD)`.

The domain shift: `train`, `validation` and `test` come from scanner A (H&E-like stain vectors, full
contrast, little noise); `test_ood` from scanner B (`ood`): `"stain"` another pair of stain colours,
`"contrast"` paler stain with a lower dynamic range, `"noise"` strong sensor noise and blur, `"scanner"` (the
default) all three. The morphology, and so the label, is drawn the same way in both.

All of this is our choice, not a published dataset's: the twin only has to be learnable, medical-like, and
to shift between scanners as real slides do.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .builder import Builder
from .twin_cache import ensure_twin

SOURCE_CLASSES = [
    "disk", "square", "triangle", "cross", "ring", "bar", "star", "two_disks", "crescent", "frame",
]  # fmt: skip
"""The source set's classes (shapes)."""

TARGET_CLASSES = ["round_nucleus", "lobed_nucleus", "spindle_nucleus", "granular"]
"""The target task's classes (nucleus morphology)."""

TARGET_SPLITS = ("train", "validation", "test", "test_ood")
"""The target's splits: scanner A (train, validation, in-distribution test) and scanner B (`test_ood`)."""

OOD_SHIFTS = ("scanner", "stain", "contrast", "noise")

# Bump when the drawing changes: cached twins written by an older version are regenerated.
GENERATOR_VERSION = 1
MARKER_NAME = ".hfmed_synthetic_shift.json"
_KNOWN_ENTRIES = {"index.csv", "source", "target", "backbones", MARKER_NAME}

# Optical density per unit stain, RGB (rows normalised below). Scanner A: the usual H&E vectors
# (Ruifrok & Johnston 2001); scanner B: a bluer haematoxylin and an orange eosin.
_STAIN_A = (np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11]))
_STAIN_B = (np.array([0.80, 0.55, 0.25]), np.array([0.12, 0.60, 0.80]))


# ---------------------------------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------------------------------


def _soft(distance: np.ndarray, width: float) -> np.ndarray:
    """A smooth step: 1 inside (distance << 0), 0 outside, over about `width`."""
    return 0.5 * (1.0 - np.tanh(distance / width))


def _smooth_field(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """A smooth random field in about [-1, 1], (size, size): bilinear upsampling of a coarse grid."""
    coarse = rng.normal(0.0, 1.0, size=(cells, cells))
    grid = np.linspace(0.0, 1.0, cells)
    target = (np.arange(size) + 0.5) / size
    rows = np.stack([np.interp(target, grid, row) for row in coarse])
    return np.stack([np.interp(target, grid, col) for col in rows.T], axis=1) / 1.5


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return (yy + 0.5) / size, (xx + 0.5) / size


def _local(yy, xx, cy, cx, scale, angle):
    """Coordinates of each pixel in a shape's frame: centred, rotated by `angle`, in units of `scale`."""
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(angle), np.sin(angle)
    return (cos * dx + sin * dy) / scale, (-sin * dx + cos * dy) / scale


def _blur(channel: np.ndarray, passes: int) -> np.ndarray:
    """A small separable [1, 2, 1] / 4 blur, `passes` times (edges repeated)."""
    for _ in range(passes):
        padded = np.pad(channel, 1, mode="edge")
        channel = (padded[:-2, 1:-1] + 2 * padded[1:-1, 1:-1] + padded[2:, 1:-1]) / 4
        padded = np.pad(channel, 1, mode="edge")
        channel = (padded[1:-1, :-2] + 2 * padded[1:-1, 1:-1] + padded[1:-1, 2:]) / 4
    return channel


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# Source: shapes in random colours
# ---------------------------------------------------------------------------------------------------


def _shape_distance(label: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (in the shape's units, negative inside) of each pixel to the shape `label`."""
    r = np.hypot(u, v)
    if label == "disk":
        return r - 1.0
    if label == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.85
    if label == "triangle":
        # equilateral, circumradius 1: the max over its three edge normals
        angles = np.pi / 2 + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
        return np.max([-(u * np.cos(a) + v * np.sin(a)) for a in angles], axis=0) - 0.5
    if label == "cross":
        return np.minimum(np.maximum(np.abs(u) - 1.0, np.abs(v) - 0.3), np.maximum(np.abs(u) - 0.3, np.abs(v) - 1.0))
    if label == "ring":
        return np.abs(r - 0.72) - 0.28
    if label == "bar":
        return np.maximum(np.abs(u) - 1.1, np.abs(v) - 0.32)
    if label == "star":
        theta = np.arctan2(v, u)
        return r - (0.62 + 0.38 * np.cos(5 * theta))
    if label == "two_disks":
        return np.minimum(np.hypot(u - 0.55, v), np.hypot(u + 0.55, v)) - 0.45
    if label == "crescent":
        return np.maximum(r - 1.0, 0.8 - np.hypot(u - 0.45, v))
    if label == "frame":
        return np.abs(np.maximum(np.abs(u), np.abs(v)) - 0.72) - 0.2
    raise ValueError(f"unknown source class {label!r}: choose one of {SOURCE_CLASSES}")


def _contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    luminance = np.array([0.299, 0.587, 0.114])
    while True:
        background, foreground = rng.uniform(0.0, 1.0, size=3), rng.uniform(0.0, 1.0, size=3)
        if abs(float(luminance @ (background - foreground))) > 0.2:
            return background, foreground


def synthetic_source_image(label: str, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """One source image: the shape `label` (one of `SOURCE_CLASSES`) in a random colour on a random shaded
    background; uint8 RGB (image_size, image_size, 3)."""
    size = _check_size(image_size)
    yy, xx = _grid(size)
    background, foreground = _contrasting_colours(rng)
    cy, cx = rng.uniform(0.35, 0.65, size=2)
    scale, angle = rng.uniform(0.17, 0.3), rng.uniform(0.0, 2 * np.pi)
    shading = [_smooth_field(rng, size) for _ in range(3)]
    texture = rng.uniform(0.0, 0.15)
    noise = rng.normal(0.0, 0.03, size=(size, size, 3))
    u, v = _local(yy, xx, cy, cx, scale, angle)
    mask = _soft(_shape_distance(label, u, v), 0.8 / (size * scale))
    image = np.empty((size, size, 3))
    for c in range(3):
        back = background[c] + 0.12 * shading[c]
        front = foreground[c] * (1.0 + texture * shading[(c + 1) % 3])
        image[..., c] = back * (1.0 - mask) + front * mask
    return _to_uint8(image + noise)


# ---------------------------------------------------------------------------------------------------
# Target: stained cells
# ---------------------------------------------------------------------------------------------------


def _scanner(ood: str | None, rng: np.random.Generator) -> dict:
    """The imaging parameters of one target image: scanner A (`ood=None`) or scanner B with the shift `ood`."""
    stain = _STAIN_B if ood in ("scanner", "stain") else _STAIN_A
    jitter = rng.normal(0.0, 0.04, size=(2, 3))
    vectors = [np.clip(s + j, 0.01, None) for s, j in zip(stain, jitter, strict=True)]
    vectors = [s / np.linalg.norm(s) for s in vectors]
    strength = rng.uniform(0.9, 1.1)
    pale = ood in ("scanner", "contrast")
    noisy = ood in ("scanner", "noise")
    return {
        "haematoxylin": vectors[0],
        "eosin": vectors[1],
        "density": strength * (0.55 if pale else 1.0),
        "brightness": 0.92 if pale else 1.0,  # a darker lamp: white glass is no longer white
        "noise": 0.07 if noisy else 0.02,
        "blur": 1 if noisy else 0,
    }


def _nucleus(label: str, yy, xx, cy, cx, rng: np.random.Generator, pixel: float):
    """Haematoxylin density of the central cell's nucleus (and granules), by class."""
    angle = rng.uniform(0.0, 2 * np.pi)
    edge = 0.8 * pixel
    if label == "round_nucleus":
        u, v = _local(yy, xx, cy, cx, 1.0, angle)
        a, b = rng.uniform(0.13, 0.18), rng.uniform(0.12, 0.16)
        return _soft(np.hypot(u / a, v / b) - 1.0, edge / b)
    if label == "lobed_nucleus":
        lobes, ring, radius = int(rng.integers(3, 5)), rng.uniform(0.09, 0.12), rng.uniform(0.065, 0.085)
        density = np.zeros_like(yy)
        for k in range(lobes):
            phi = angle + 2 * np.pi * k / lobes + rng.uniform(-0.3, 0.3)
            ly, lx = cy + ring * np.sin(phi), cx + ring * np.cos(phi)
            density = np.maximum(density, _soft(np.hypot(yy - ly, xx - lx) - radius, edge))
        return density
    if label == "spindle_nucleus":
        u, v = _local(yy, xx, cy, cx, 1.0, angle)
        a, b = rng.uniform(0.22, 0.3), rng.uniform(0.06, 0.085)
        # pointed ends: |u/a|^1.4 + |v/b|^2 = 1
        return _soft((np.abs(u / a) ** 1.4 + (v / b) ** 2) - 1.0, 2 * edge / b)
    if label == "granular":
        radius = rng.uniform(0.08, 0.11)
        density = _soft(np.hypot(yy - cy, xx - cx) - radius, edge)
        for _ in range(int(rng.integers(10, 16))):
            phi, dist = rng.uniform(0, 2 * np.pi), rng.uniform(radius + 0.04, 0.3)
            gy, gx = cy + dist * np.sin(phi), cx + dist * np.cos(phi)
            density = np.maximum(density, 0.8 * _soft(np.hypot(yy - gy, xx - gx) - rng.uniform(0.018, 0.03), edge))
        return density
    raise ValueError(f"unknown target class {label!r}: choose one of {TARGET_CLASSES}")


def synthetic_target_image(
    label: str, image_size: int, rng: np.random.Generator, ood: str | None = None
) -> np.ndarray:
    """One target image: a stained cell of class `label` (one of `TARGET_CLASSES`) seen by scanner A, or by
    scanner B with the shift `ood` (one of `OOD_SHIFTS`); uint8 RGB (image_size, image_size, 3).

    The morphology draws come first from `rng`, the scanner's after them, so the same rng state gives the
    same cell under both scanners.
    """
    size = _check_size(image_size)
    if ood is not None and ood not in OOD_SHIFTS:
        raise ValueError(f"ood must be one of {list(OOD_SHIFTS)} or None, got {ood!r}")
    yy, xx = _grid(size)
    pixel = 1.0 / size
    # --- morphology ---
    cy, cx = rng.uniform(0.4, 0.6, size=2)
    cell_a, cell_b, cell_angle = rng.uniform(0.3, 0.4), rng.uniform(0.26, 0.34), rng.uniform(0, 2 * np.pi)
    u, v = _local(yy, xx, cy, cx, 1.0, cell_angle)
    cytoplasm = _soft(np.hypot(u / cell_a, v / cell_b) - 1.0, 1.5 * pixel / cell_b)
    nucleus = _nucleus(label, yy, xx, cy, cx, rng, pixel)
    chromatin = 0.8 + 0.2 * _smooth_field(rng, size, cells=8)
    haematoxylin = nucleus * chromatin
    eosin = 0.08 + 0.04 * _smooth_field(rng, size) + 0.35 * cytoplasm * (0.9 + 0.1 * _smooth_field(rng, size))
    for _ in range(int(rng.integers(1, 3))):  # neighbours cut by the image border
        phi = rng.uniform(0, 2 * np.pi)
        ny, nx = 0.5 + 0.62 * np.sin(phi), 0.5 + 0.62 * np.cos(phi)
        r = np.hypot(yy - ny, xx - nx)
        eosin = eosin + 0.3 * _soft(r - rng.uniform(0.25, 0.32), 1.5 * pixel) * (1 - cytoplasm)
        haematoxylin = np.maximum(haematoxylin, _soft(r - rng.uniform(0.1, 0.14), pixel) * (1 - cytoplasm))
    for _ in range(int(rng.integers(0, 4))):  # debris
        dy, dx = rng.uniform(0.0, 1.0, size=2)
        haematoxylin = np.maximum(haematoxylin, 0.5 * _soft(np.hypot(yy - dy, xx - dx) - 0.015, pixel) * (1 - cytoplasm))
    # --- scanner ---
    scan = _scanner(ood, rng)
    optical = scan["density"] * (
        1.6 * haematoxylin[..., None] * scan["haematoxylin"] + 1.2 * eosin[..., None] * scan["eosin"]
    )
    image = scan["brightness"] * np.exp(-optical)
    image = np.stack([_blur(image[..., c], scan["blur"]) for c in range(3)], axis=-1)
    image = image + rng.normal(0.0, scan["noise"], size=image.shape)
    return _to_uint8(image)


def _check_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    return int(image_size)


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------------
# On disk
# ---------------------------------------------------------------------------------------------------


def _counts(num: int, classes: int) -> list[int]:
    """`num` examples over `classes` classes, as even as possible (the first classes get the remainder)."""
    return [num // classes + (k < num % classes) for k in range(classes)]


def write_synthetic_shift(
    root: str | os.PathLike,
    image_size: int = 32,
    num_source: int = 3000,
    num_train: int = 400,
    num_validation: int = 200,
    num_test: int = 400,
    num_ood: int = 400,
    ood: str = "scanner",
    seed: int = 0,
) -> Path:
    """Writes the twin into `root` (created if needed) and returns it as a `Path`.

    Class counts are balanced (within one) in every set. Deterministic: the same arguments give identical
    pixels and an identical `index.csv`.
    """
    from PIL import Image

    size = _check_size(image_size)
    counts = {
        "source": _check_count("num_source", num_source, len(SOURCE_CLASSES)),
        "train": _check_count("num_train", num_train, len(TARGET_CLASSES)),
        "validation": _check_count("num_validation", num_validation, len(TARGET_CLASSES)),
        "test": _check_count("num_test", num_test, len(TARGET_CLASSES)),
        "test_ood": _check_count("num_ood", num_ood, len(TARGET_CLASSES)),
    }
    if ood not in OOD_SHIFTS:
        raise ValueError(f"ood must be one of {list(OOD_SHIFTS)}, got {ood!r}")
    _check_count("seed", seed, 0)
    root = Path(root).expanduser()
    rows = []
    for split_index, (split, total) in enumerate(counts.items()):
        classes = SOURCE_CLASSES if split == "source" else TARGET_CLASSES
        folder = root / "source" if split == "source" else root / "target" / split
        for label, (name, count) in enumerate(zip(classes, _counts(total, len(classes)), strict=True)):
            (folder / name).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                rng = np.random.default_rng([seed, split_index, label, index])
                if split == "source":
                    pixels = synthetic_source_image(name, size, rng)
                else:
                    pixels = synthetic_target_image(name, size, rng, ood if split == "test_ood" else None)
                path = folder / name / f"{index:06d}.png"
                Image.fromarray(pixels).save(path)
                rows.append([path.relative_to(root).as_posix(), label, split])
    with open(root / "index.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return root


def default_cache_root() -> Path:
    """`$HFMED_CACHE/synthetic_shift`, where HFMED_CACHE defaults to `~/.cache/hfmed`."""
    return Path(os.environ.get("HFMED_CACHE", "~/.cache/hfmed")).expanduser() / "synthetic_shift"


def twin_params(
    image_size: int = 32,
    num_source: int = 3000,
    num_train: int = 400,
    num_validation: int = 200,
    num_test: int = 400,
    num_ood: int = 400,
    ood: str = "scanner",
    seed: int = 0,
) -> dict:
    """The generation parameters that identify one twin (its cache key and marker)."""
    return {
        "generator_version": GENERATOR_VERSION,
        "image_size": int(image_size),
        "num_source": int(num_source),
        "num_train": int(num_train),
        "num_validation": int(num_validation),
        "num_test": int(num_test),
        "num_ood": int(num_ood),
        "ood": str(ood),
        "seed": int(seed),
    }


def ensure_synthetic_shift(root: str | os.PathLike | None = None, **params) -> Path:
    """Returns a folder holding the twin for these parameters (those of `write_synthetic_shift`), writing it
    first when needed.

    `root=None` uses `default_cache_root() / <hash of the parameters>`. A marker file (written last, so an
    interrupted write is redone) records the parameters; a twin written with other parameters is replaced
    (with the source backbones cached in it); a folder holding anything else is refused rather than touched.
    """
    key = twin_params(**params)
    return ensure_twin(
        root,
        key,
        lambda folder: write_synthetic_shift(folder, **params),
        kind="synthetic_shift",
        cache_root=default_cache_root(),
        marker=MARKER_NAME,
        known_entries=_KNOWN_ENTRIES,
    )


def read_index(folder: Path) -> dict[str, list[tuple[str, int]]]:
    """`{split: [(absolute path, label), ...]}` from a twin's index.csv (`source` and the target splits)."""
    index: dict[str, list[tuple[str, int]]] = {}
    with open(folder / "index.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            index.setdefault(row["split"], []).append((str(folder / row["path"]), int(row["label"])))
    return index


def load_synthetic_shift(
    root: str | os.PathLike | None = None,
    image_size: int = 32,
    num_source: int = 3000,
    num_train: int = 400,
    num_validation: int = 200,
    num_test: int = 400,
    num_ood: int = 400,
    ood: str = "scanner",
    seed: int = 0,
    splits: Sequence[str] = TARGET_SPLITS,
):
    """Builder `synthetic_shift`: writes the twin if needed (`ensure_synthetic_shift`), then reads the target
    task's splits.

    Args:
        splits: the splits to return, from `TARGET_SPLITS` (`train`, `validation`, `test`, `test_ood`) and
            `source` (the pretraining set, labels over `SOURCE_CLASSES`).

    Returns:
        `datasets.DatasetDict`, one entry per split, columns `path` (absolute PNG path), `labels` (a ClassLabel:
        one int64 class index per image, over `TARGET_CLASSES`, or `SOURCE_CLASSES` for `source`) and `image_id`.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    known = ("source", *TARGET_SPLITS)
    unknown = [s for s in splits if s not in known]
    if isinstance(splits, str) or unknown or not splits:
        raise ValueError(f"splits must be a non-empty list from {list(known)}, got {splits!r}")
    folder = ensure_synthetic_shift(
        root, image_size=image_size, num_source=num_source, num_train=num_train, num_validation=num_validation,
        num_test=num_test, num_ood=num_ood, ood=ood, seed=seed,
    )  # fmt: skip
    index = read_index(folder)

    def features(split):
        names = SOURCE_CLASSES if split == "source" else TARGET_CLASSES
        return Features({"path": Value("string"), "labels": ClassLabel(names=names), "image_id": Value("string")})

    return DatasetDict({
        split: Dataset.from_dict(
            {
                "path": [path for path, _ in index[split]],
                "labels": [label for _, label in index[split]],
                "image_id": [Path(path).relative_to(folder).as_posix() for path, _ in index[split]],
            },
            features=features(split),
        )
        for split in splits
    })


def pretrained_source_backbone(config, root: str | os.PathLike | None = None, **data_args) -> Path:
    """The backbone of `config` pretrained on the twin's source set: a `.safetensors` file of the timm model's
    state dict (no classifier), trained once and cached inside the twin (`backbones/<hash>/`); what
    `model.backbone_weights: data-source` gives `from_pretrained_backbones`.

    `data_args` are the builder's (`image_size`, `num_source`, ..., `seed`); `splits` is ignored. See
    `hfmed.data.source_backbone` for the pretraining.
    """
    from .source_backbone import ensure_source_backbone

    data_args = {k: v for k, v in data_args.items() if k != "splits"}
    folder = ensure_synthetic_shift(root, **data_args)
    source = read_index(folder)["source"]
    # The generator is deterministic: its parameters identify the source images wherever the twin lies.
    key = json.dumps(twin_params(**data_args), sort_keys=True)
    return ensure_source_backbone(config, source, len(SOURCE_CLASSES), folder / "backbones", source_key=key)


BUILDER = Builder(name="synthetic_shift", load=load_synthetic_shift, source_backbone=pretrained_source_backbone)

__all__ = [
    "BUILDER",
    "OOD_SHIFTS",
    "SOURCE_CLASSES",
    "TARGET_CLASSES",
    "TARGET_SPLITS",
    "default_cache_root",
    "ensure_synthetic_shift",
    "load_synthetic_shift",
    "pretrained_source_backbone",
    "read_index",
    "synthetic_source_image",
    "synthetic_target_image",
    "twin_params",
    "write_synthetic_shift",
]
