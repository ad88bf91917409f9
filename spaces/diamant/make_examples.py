"""Writes the Space's example inputs into `spaces/diamant/examples/` (run once; the files are committed).

    .venv/bin/python spaces/diamant/make_examples.py            # rewrites examples/
    .venv/bin/python spaces/diamant/make_examples.py --out DIR  # somewhere else (the tests do)

Each example is one synthetic colonoscopy frame from `hfmed.data.synthetic_lesion.synthetic_lesion_image`, the
twin the demo model (configs/diamant-demo.yaml) trains on, drawn larger than the model's input (the Space
resizes it and brings the mask back to the image's size), in the formats of the public polyp datasets:

- JPEG (Kvasir-SEG's format) and PNG (CVC-ClinicDB's frames, converted) RGB images;
- one DICOM file (Modality ES, endoscopy; VL Endoscopic Image Storage; RGB, 8 bits per sample).

The file names say what each shows. Deterministic: the same code writes byte-identical files. This script
needs hfmed (it is not part of the Space's runtime: app.py never imports it, and upload.py leaves it out).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from hfmed.data.synthetic_lesion import synthetic_lesion_image

SEED = 2304  # arXiv 2304.14571
IMAGE_SIZE = 192
DICOM_SIZE = 128  # an uncompressed RGB DICOM: 128 x 128 x 3 bytes
VL_ENDOSCOPIC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.1"
HERE = Path(__file__).resolve().parent
# (file name, seed index): the seeds were picked by looking at the pictures, so that the names are true.
EXAMPLES: list[tuple[str, int]] = [
    ("synthetic_polyp.jpg", 3),
    ("synthetic_small_polyp.png", 1),
    ("synthetic_two_polyps.png", 8),
    ("synthetic_low_contrast_polyp.dcm", 11),
]


def draw_example(index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`(image, mask)` of seed index `index`: uint8 `(size, size, 3)` RGB and its bool mask."""
    return synthetic_lesion_image(np.random.default_rng([SEED, index]), size, "polyp")


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["hfmed-diamant-space-example", *map(str, parts)])  # deterministic


def write_dicom(path: Path, pixels: np.ndarray, index: int) -> None:
    """A single-frame endoscopy DICOM (Modality ES, RGB, 8 bits per sample) holding `pixels`."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {pixels.dtype} {pixels.shape}")
    sop_uid = _uid(index, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VL_ENDOSCOPIC_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = VL_ENDOSCOPIC_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid(index, "study")
    ds.SeriesInstanceUID = _uid(index, "series")
    ds.Modality = "ES"
    ds.PatientID = f"SYNTHETIC-POLYP-{index:03d}"
    ds.PatientName = "Synthetic^Example"
    ds.StudyID = ""
    ds.BodyPartExamined = "COLON"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_examples(out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, index in EXAMPLES:
        path = out / name
        if path.suffix == ".dcm":
            write_dicom(path, draw_example(index, DICOM_SIZE)[0], index)
        elif path.suffix == ".jpg":
            Image.fromarray(draw_example(index, IMAGE_SIZE)[0]).save(path, quality=90)
        else:
            Image.fromarray(draw_example(index, IMAGE_SIZE)[0]).save(path, optimize=True)
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
