"""A synthetic twin of polyp (Kvasir-SEG) and skin-lesion (ISIC 2018) segmentation data, for offline demos and
tests.

`write_synthetic_lesion` writes the real on-disk layout, so the same code path (`load_seg_folder`) reads the
twin and the real data:

    layout="kvasir_seg"  root/images/<id>.jpg, root/masks/<id>.jpg (0/255 JPEG masks, as Kvasir-SEG's),
                         ids of Kvasir-SEG's form (25 lower-case letters and digits)
    layout="isic2018"    root/ISIC2018_Task1-2_Training_Input/ISIC_<7 digits>.jpg,
                         root/ISIC2018_Task1_Training_GroundTruth/ISIC_<7 digits>_segmentation.png (0/255)

Each image is an RGB picture in miniature:

    polyp  colonoscopy: pink-red mucosa with a low-frequency brightness field, a dark branching vessel
           pattern, light falling off from a random spot, the dark corners outside the endoscope's round field
           of view, specular glints; one polyp (two in 15 % of images): an irregular rounded outline (a radius
           with random 2nd-4th harmonics), a raised dome (shading), its own colour shift and fine pit texture,
           a dark rim where it meets the wall, a glint on top.
    skin   dermoscopy: beige skin with fine texture, a dark dermoscope vignette, a few dark hairs crossing the
           image (over the lesion too); one pigmented lesion with an irregular border, brown with darker
           blotches and a blurred edge.

Sizes (lesion radius 10-30 % of the image side) and contrast (how far the lesion's colour and shading stand
out, a factor in [0.3, 1]) vary per image; the mask is exactly the drawn outline (union for two polyps). All of
this is our choice: the twin only has to be learnable, varied and shaped like the real data. No patient
structure: the split is image by image, as for Kvasir-SEG and ISIC 2018 Task 1.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import numpy as np
from PIL import Image

from .builder import Builder
from .seg_folder import ISIC2018_FOLDERS, load_seg_folder
from .twin_cache import ensure_twin

# Bump when the drawing changes: cached twins written by an older version are regenerated.
GENERATOR_VERSION = 1
MARKER_NAME = ".hfmed_synthetic_lesion.json"
TWIN_LAYOUTS = {"kvasir_seg": "polyp", "isic2018": "skin"}
"""The layouts the twin writes, and the picture it draws for each."""
_KNOWN_ENTRIES = {"images", "masks", *ISIC2018_FOLDERS["train"], MARKER_NAME}
_ID_ALPHABET = np.array(list(string.ascii_lowercase + string.digits))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in about [-1, 1]: a `cells` x `cells` grid of normals, bicubically upsampled."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(field, dtype=np.float32) / 1.5


def _soft(distance: np.ndarray, width: float) -> np.ndarray:
    """A smooth step: 0 for distance << 0, 1 for distance >> 0, over about `width`."""
    return 0.5 * (1.0 + np.tanh(distance / width))


def _outline(rng, yy, xx, cy, cx, radius):
    """Normalised radial distance to an irregular rounded outline (< 1 inside) and the outline's mask."""
    angle = np.arctan2(yy - cy, xx - cx)
    shape = np.ones_like(angle)
    for harmonic in (2, 3, 4):
        shape += rng.uniform(0.0, 0.14 / harmonic * 2) * np.cos(harmonic * angle + rng.uniform(0, 2 * np.pi))
    r = np.hypot(yy - cy, xx - cx) / (radius * shape)
    return r, r < 1.0


def _polyp(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy, xx = (yy + 0.5) / size, (xx + 0.5) / size
    pixel = 1.0 / size
    base = np.array([0.78, 0.40, 0.34]) * rng.uniform(0.85, 1.1) + rng.normal(0, 0.03, 3)
    brightness = 1.0 + 0.12 * _smooth_noise(rng, size, 4) + 0.05 * _smooth_noise(rng, size, 9)
    image = base[:, None, None] * brightness[None]
    # vessels: thin dark-red lines along the level set of a smooth field
    vessels = np.exp(-((_smooth_noise(rng, size, 7) / 0.06) ** 2)) * rng.uniform(0.2, 0.45)
    image = image * (1.0 - vessels[None] * np.array([0.25, 0.55, 0.45])[:, None, None])
    # light falls off from a random spot; the round field of view's dark corners
    ly, lx = rng.uniform(0.3, 0.7, 2)
    image *= (1.15 - 0.6 * np.hypot(yy - ly, xx - lx))[None]
    mask = np.zeros((size, size), dtype=bool)
    contrast = rng.uniform(0.3, 1.0)
    count = 2 if rng.random() < 0.15 else 1
    for _ in range(count):
        radius = rng.uniform(0.1, 0.3) / (1.25 if count == 2 else 1.0)
        cy, cx = rng.uniform(0.15 + radius * 0.6, 0.85 - radius * 0.6, 2)
        r, inside = _outline(rng, yy, xx, cy, cx, radius)
        mask |= inside
        dome = np.sqrt(np.clip(1.0 - r**2, 0.0, 1.0))
        tint = np.array([1.08, 0.82 + rng.uniform(-0.1, 0.2), 0.85]) ** contrast
        pits = 1.0 + 0.06 * contrast * _smooth_noise(rng, size, max(8, size // 4))
        inside_soft = _soft(1.0 - r, 1.2 * pixel / radius)
        polyp = image * tint[:, None, None] * (0.9 + 0.3 * contrast * dome)[None] * pits[None]
        image = image * (1 - inside_soft[None]) + polyp * inside_soft[None]
        rim = np.exp(-(((r - 1.0) * radius / (1.5 * pixel + 0.01)) ** 2)) * (r >= 1.0)
        image *= (1.0 - 0.35 * contrast * rim)[None]
        gy, gx = cy - 0.35 * radius, cx - 0.2 * radius  # a glint on the dome
        image += (0.5 * np.exp(-(np.hypot(yy - gy, xx - gx) / (0.12 * radius + pixel)) ** 2) * inside)[None]
    for _ in range(rng.integers(0, 4)):  # glints on the wall
        gy, gx = rng.uniform(0.1, 0.9, 2)
        image += (0.7 * np.exp(-(np.hypot(yy - gy, xx - gx) / (0.6 * pixel + 0.008)) ** 2))[None]
    field = _soft(0.62 - np.hypot(yy - 0.5, xx - 0.5), 2 * pixel)
    image = image * field[None] + 0.01 * rng.standard_normal((3, size, size))
    return np.clip(image, 0.0, 1.0), mask & (field > 0.5)


def _skin(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy, xx = (yy + 0.5) / size, (xx + 0.5) / size
    pixel = 1.0 / size
    base = np.array([0.86, 0.68, 0.58]) * rng.uniform(0.85, 1.05) + rng.normal(0, 0.03, 3)
    image = base[:, None, None] * (1.0 + 0.05 * _smooth_noise(rng, size, 6) + 0.03 * _smooth_noise(rng, size, 16))
    contrast = rng.uniform(0.3, 1.0)
    radius = rng.uniform(0.1, 0.3)
    cy, cx = rng.uniform(0.5 - 0.3 + radius * 0.5, 0.5 + 0.3 - radius * 0.5, 2)
    r, mask = _outline(rng, yy, xx, cy, cx, radius)
    brown = np.array([0.45, 0.28, 0.2]) * rng.uniform(0.7, 1.2)
    colour = base + contrast * (brown - base)
    blotches = np.clip(_smooth_noise(rng, size, 6), 0.0, None) * 0.35 * contrast
    lesion = colour[:, None, None] * (1.0 - blotches)[None]
    weight = _soft(1.0 - r, 2.0 * pixel / radius)
    image = image * (1 - weight[None]) + lesion * weight[None]
    for _ in range(rng.integers(0, 4)):  # hairs: gently curved dark lines
        y0, x0 = rng.uniform(0, 1, 2)
        angle, bend = rng.uniform(0, np.pi), rng.normal(0, 1.5)
        along = (xx - x0) * np.cos(angle) + (yy - y0) * np.sin(angle)
        across = -(xx - x0) * np.sin(angle) + (yy - y0) * np.cos(angle) - bend * along**2
        image *= (1.0 - 0.7 * np.exp(-((across / (0.5 * pixel + 0.002)) ** 2)))[None]
    vignette = _soft(0.68 - np.hypot(yy - 0.5, xx - 0.5), 0.04)
    image = image * (0.15 + 0.85 * vignette)[None] + 0.01 * rng.standard_normal((3, size, size))
    return np.clip(image, 0.0, 1.0), mask


def synthetic_lesion_image(
    rng: np.random.Generator, image_size: int = 64, style: str = "polyp"
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its mask: `(uint8 (H, W, 3) RGB, bool (H, W))`, H = W = `image_size` (>= 16).

    `style`: "polyp" (colonoscopy) or "skin" (dermoscopy); see the module docstring.
    """
    if style not in ("polyp", "skin"):
        raise ValueError(f"style must be 'polyp' or 'skin', got {style!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    image, mask = (_polyp if style == "polyp" else _skin)(rng, image_size)
    return np.rint(image.transpose(1, 2, 0) * 255).astype(np.uint8), mask


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def write_synthetic_lesion(
    root: str | os.PathLike, num_images: int = 400, image_size: int = 64, seed: int = 0, layout: str = "kvasir_seg"
) -> Path:
    """Writes `num_images` image + mask pairs in `layout` ("kvasir_seg" or "isic2018") under `root`."""
    if layout not in TWIN_LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(TWIN_LAYOUTS)}, got {layout!r}")
    _check_int("num_images", num_images, 1)
    _check_int("image_size", image_size, 16)
    root = Path(root)
    rng = np.random.default_rng(seed)
    id_rng = np.random.default_rng([seed, 1])  # its own stream: the pictures do not depend on the layout
    if layout == "kvasir_seg":
        image_dir, mask_dir = root / "images", root / "masks"
    else:
        image_dir, mask_dir = (root / name for name in ISIC2018_FOLDERS["train"])
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    for index in range(num_images):
        image, mask = synthetic_lesion_image(rng, image_size, TWIN_LAYOUTS[layout])
        mask_pixels = Image.fromarray(mask.astype(np.uint8) * 255)
        if layout == "kvasir_seg":
            name = "".join(id_rng.choice(_ID_ALPHABET, 25))
            Image.fromarray(image).save(image_dir / f"{name}.jpg", quality=95)
            mask_pixels.save(mask_dir / f"{name}.jpg", quality=100)
        else:
            name = f"ISIC_{index:07d}"
            Image.fromarray(image).save(image_dir / f"{name}.jpg", quality=95)
            mask_pixels.save(mask_dir / f"{name}_segmentation.png")
    return root


def default_cache_root() -> Path:
    """`$HFMED_CACHE/synthetic_lesion`, where HFMED_CACHE defaults to `~/.cache/hfmed`."""
    return Path(os.environ.get("HFMED_CACHE", "~/.cache/hfmed")).expanduser() / "synthetic_lesion"


def ensure_synthetic_lesion(
    root: str | os.PathLike | None = None,
    num_images: int = 400,
    image_size: int = 64,
    seed: int = 0,
    layout: str = "kvasir_seg",
) -> Path:
    """A folder holding the twin for these parameters, written first when needed (`twin_cache.ensure_twin`:
    `root=None` is the cache, a marker records the parameters, a folder with foreign files is refused)."""
    if layout not in TWIN_LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(TWIN_LAYOUTS)}, got {layout!r}")
    params = {
        "generator_version": GENERATOR_VERSION,
        "num_images": _check_int("num_images", num_images, 1),
        "image_size": _check_int("image_size", image_size, 16),
        "seed": int(seed),
        "layout": layout,
    }
    return ensure_twin(
        root,
        params,
        lambda folder: write_synthetic_lesion(folder, num_images, image_size, seed, layout),
        kind="synthetic lesion",
        cache_root=default_cache_root(),
        marker=MARKER_NAME,
        known_entries=_KNOWN_ENTRIES,
    )


def load_synthetic_lesion(
    root: str | os.PathLike | None = None,
    num_images: int = 400,
    image_size: int = 64,
    seed: int = 0,
    layout: str = "kvasir_seg",
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    split_seed: int | None = None,
):
    """Builder `synthetic_lesion`: writes the twin if needed (`ensure_synthetic_lesion`), then reads it with
    `load_seg_folder` in its layout; the split is image by image with `split_seed` (default: `seed`).

    Returns:
        `datasets.DatasetDict` with `train`, `validation` (and `test`); columns `path`, `mask_path`, `image_id`,
        `group_id`. Masks are 0/255: the processor needs `mask_binarize_threshold` (the demo recipe sets 128).
    """
    folder = ensure_synthetic_lesion(root, num_images, image_size, seed, layout)
    return load_seg_folder(
        folder,
        layout=layout,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed if split_seed is None else split_seed,
    )


BUILDER = Builder(name="synthetic_lesion", load=load_synthetic_lesion)

__all__ = [
    "BUILDER",
    "TWIN_LAYOUTS",
    "default_cache_root",
    "ensure_synthetic_lesion",
    "load_synthetic_lesion",
    "synthetic_lesion_image",
    "write_synthetic_lesion",
]
