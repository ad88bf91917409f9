"""Writes the Space's example inputs into `spaces/diamant/examples/` (run once; the files are committed).

    .venv/bin/python spaces/diamant/make_examples.py            # rewrites examples/
    .venv/bin/python spaces/diamant/make_examples.py --out DIR  # somewhere else (the tests do)

Each example is one synthetic 2-D image with one lesion whose mask is known (`draw_example` returns both), in
the formats the public DIAMANT datasets use, non-square on purpose (the model sees a square resize; the mask
comes back at the image's own size):

- `synthetic_polyp.jpg`: an endoscopy-like RGB frame with a polyp (Kvasir-SEG is JPEG);
- `synthetic_polyp_flat.png`: a smaller, lower-contrast polyp (CVC-ClinicDB-like, as PNG);
- `synthetic_skin_lesion.png`: a dermoscopy-like RGB image with a pigmented lesion (ISIC 2018);
- `synthetic_breast_lesion.dcm`: an ultrasound-like grey image with a hypoechoic mass, as a DICOM file
  (Modality US, MONOCHROME2, 8-bit; BUSI's images are PNG exports of such scans).

The drawing is ours and simple (smooth random fields, an irregular blob, a few highlights): enough for a
model trained on hfmed's synthetic lesion twin to show a mask. Deterministic: the same code writes
byte-identical files. It needs numpy, PIL and pydicom only, never app.py's runtime.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 2304  # arXiv 2304.14571
WIDTH, HEIGHT = 192, 160
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
HERE = Path(__file__).resolve().parent
# (file name, kind). Example i uses default_rng([SEED, i]).
EXAMPLES: list[tuple[str, str]] = [
    ("synthetic_polyp.jpg", "polyp"),
    ("synthetic_polyp_flat.png", "flat_polyp"),
    ("synthetic_skin_lesion.png", "skin"),
    ("synthetic_breast_lesion.dcm", "ultrasound"),
]


def _smooth_field(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1]: a `cells`-wide grid of noise, upsampled bicubically."""
    grid = rng.random((cells, max(2, round(cells * width / height))), dtype=np.float32)
    image = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
    field = np.asarray(image, dtype=np.float32)
    return (field - field.min()) / max(float(np.ptp(field)), 1e-6)


def _blob(rng: np.random.Generator, height: int, width: int, radius: float, wobble: float):
    """An irregular filled blob (radius modulated by three harmonics of the angle): (mask, distance ratio)."""
    cy = rng.uniform(0.35, 0.65) * height
    cx = rng.uniform(0.35, 0.65) * width
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = np.arctan2(yy - cy, xx - cx)
    boundary = np.ones_like(angle)
    for harmonic in (2, 3, 5):
        boundary += wobble / harmonic * np.sin(harmonic * angle + rng.uniform(0, 2 * np.pi))
    stretch = rng.uniform(0.75, 1.0)
    ratio = np.hypot((yy - cy) / stretch, xx - cx) / (radius * boundary)
    return ratio <= 1.0, ratio


def _vignette(height: int, width: int, strength: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    distance = np.hypot((yy - height / 2) / (height / 2), (xx - width / 2) / (width / 2))
    return np.clip(1.0 - strength * distance**2, 0.0, 1.0)


def draw_example(kind: str, rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH):
    """`(image, mask)`: uint8 RGB `(H, W, 3)` (grey `(H, W)` for "ultrasound") and the uint8 0/1 lesion mask."""
    texture = _smooth_field(rng, height, width, 24)
    shading = _smooth_field(rng, height, width, 3)
    if kind in ("polyp", "flat_polyp"):
        radius = min(height, width) * (0.28 if kind == "polyp" else 0.17)
        mask, ratio = _blob(rng, height, width, radius, wobble=0.25)
        contrast = 1.0 if kind == "polyp" else 0.45
        mucosa = np.array([0.78, 0.36, 0.32], np.float32)
        polyp = mucosa + contrast * np.array([0.14, 0.16, 0.10], np.float32)
        dome = np.clip(1.0 - ratio, 0.0, 1.0) ** 0.5  # brighter towards the centre, as a raised lesion
        colour = np.where(mask[..., None], polyp * (0.85 + 0.25 * dome[..., None]), mucosa)
        light = (0.55 + 0.45 * shading) * _vignette(height, width, 0.7)
        image = colour * light[..., None] * (0.9 + 0.2 * texture[..., None])
        glints = (_smooth_field(rng, height, width, 40) > 0.93) & (rng.random((height, width)) > 0.3)
        image[glints] = 0.97  # specular highlights of the endoscope's light
    elif kind == "skin":
        mask, ratio = _blob(rng, height, width, min(height, width) * 0.3, wobble=0.4)
        skin = np.array([0.88, 0.70, 0.60], np.float32) * (0.92 + 0.1 * shading[..., None])
        depth = np.clip(1.0 - ratio, 0.0, 1.0)[..., None]
        pigment = np.array([0.50, 0.30, 0.18], np.float32) * (1.0 - 0.5 * depth) * (0.8 + 0.4 * texture[..., None])
        image = np.where(mask[..., None], pigment, skin) * _vignette(height, width, 0.45)[..., None]
    elif kind == "ultrasound":
        mask, _ = _blob(rng, height, width, min(height, width) * 0.22, wobble=0.15)
        depth = np.linspace(1.0, 0.55, height, dtype=np.float32)[:, None]  # attenuation with depth
        speckle = rng.rayleigh(0.35, (height, width)).astype(np.float32)
        tissue = (0.35 + 0.35 * texture) * depth * speckle
        image = np.clip(np.where(mask, 0.12 * speckle, tissue), 0.0, 1.0)  # a hypoechoic (dark) mass
        return np.rint(image * 255.0).astype(np.uint8), mask.astype(np.uint8)
    else:
        raise ValueError(f"unknown example kind {kind!r}: use one of {sorted({k for _, k in EXAMPLES})}")
    image = np.clip(image, 0.0, 1.0)
    return np.rint(image * 255.0).astype(np.uint8), mask.astype(np.uint8)


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["hfmed-diamant-space-example", *map(str, parts)])  # deterministic


def write_dicom(path: Path, pixels: np.ndarray, index: int) -> None:
    """A single-frame ultrasound DICOM (Modality US, MONOCHROME2, uint8) holding `pixels`."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 image, got {pixels.dtype} {pixels.shape}")
    sop_uid = _uid(index, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = US_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid(index, "study")
    ds.SeriesInstanceUID = _uid(index, "series")
    ds.Modality = "US"
    ds.PatientID = f"SYNTHETIC-LESION-{index:03d}"
    ds.PatientName = "Synthetic^Example"
    ds.StudyID = ""
    ds.BodyPartExamined = "BREAST"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_examples(out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (name, kind) in enumerate(EXAMPLES):
        image, _ = draw_example(kind, np.random.default_rng([SEED, index]))
        path = out / name
        if path.suffix == ".dcm":
            write_dicom(path, image, index)
        elif path.suffix == ".jpg":
            Image.fromarray(image).save(path, quality=90)
        else:
            Image.fromarray(image).save(path, optimize=True)
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "examples", help="default: examples/")
    args = parser.parse_args(argv)
    for path in write_examples(args.out):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
