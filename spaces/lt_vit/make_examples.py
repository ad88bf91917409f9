"""Writes the Space's example inputs into `spaces/lt_vit/examples/` (run once; the files are committed).

    .venv/bin/python spaces/lt_vit/make_examples.py            # rewrites examples/
    .venv/bin/python spaces/lt_vit/make_examples.py --out DIR  # somewhere else (the tests do)

Each example is one synthetic frontal chest X-ray from `hfmed.data.synthetic_cxr.synthetic_cxr_image`,
128x128, with KNOWN findings spelled in its file name (`synthetic_<finding>[_<finding>...].<ext>`, lower case,
in `SYNTHETIC_CXR_LABELS` order; `synthetic_no_finding` for none):

- 8-bit greyscale PNGs, like NIH ChestX-ray14's;
- one DICOM file (Modality DX, Digital X-Ray Image Storage - For Presentation, MONOCHROME2, 16-bit unsigned).

Deterministic: the same code writes byte-identical files. This script needs hfmed (it is not part of the
Space's runtime: app.py never imports it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from hfmed.data.synthetic_cxr import SYNTHETIC_CXR_LABELS, synthetic_cxr_image

IMAGE_SIZE = 128
SEED = 2017
NO_FINDING = "no_finding"
FIELD_OF_VIEW_MM = 400.0
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
# (findings present, format). Order matters only for the seeds: example i uses default_rng([SEED, i]).
EXAMPLES: list[tuple[tuple[str, ...], str]] = [
    (("Cardiomegaly",), "png"),
    (("Effusion", "Consolidation"), "png"),
    ((), "png"),
    (("Atelectasis", "Pneumothorax"), "dcm"),
]
HERE = Path(__file__).resolve().parent
_SLUGS = {name.lower(): name for name in SYNTHETIC_CXR_LABELS}


def example_name(findings: tuple[str, ...], fmt: str) -> str:
    """`synthetic_cardiomegaly.png`, `synthetic_effusion_consolidation.png`, `synthetic_no_finding.png`, ..."""
    unknown = sorted(set(findings) - set(SYNTHETIC_CXR_LABELS))
    if unknown:
        raise ValueError(f"unknown finding(s) {unknown}: use names from {SYNTHETIC_CXR_LABELS}")
    ordered = [name.lower() for name in SYNTHETIC_CXR_LABELS if name in findings]  # canonical order
    return f"synthetic_{'_'.join(ordered) or NO_FINDING}.{fmt}"


def labels_from_name(name: str) -> dict[str, int]:
    """The inverse of `example_name`: `{finding: 0/1}` for the five synthetic findings, from a file name."""
    stem = Path(name).stem
    if not stem.startswith("synthetic_"):
        raise ValueError(f"{name!r} is not a synthetic example name (synthetic_<findings>.<ext>)")
    parts = stem[len("synthetic_") :]
    present = set() if parts == NO_FINDING else {_SLUGS[s] for s in parts.split("_") if s in _SLUGS}
    if example_name(tuple(present), "x") != f"synthetic_{parts}.x":
        raise ValueError(f"{name!r} does not spell a set of findings from {SYNTHETIC_CXR_LABELS}")
    return {label: int(label in present) for label in SYNTHETIC_CXR_LABELS}


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["hfmed-lt-vit-space-example", *map(str, parts)])  # deterministic


def write_dicom(path: Path, pixels: np.ndarray, index: int) -> None:
    """A single-frame DX DICOM (MONOCHROME2, uint16) holding `pixels`."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    if pixels.dtype != np.uint16 or pixels.ndim != 2:
        raise ValueError(f"expected a 2-D uint16 image, got {pixels.dtype} {pixels.shape}")
    sop_uid = _uid(index, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid(index, "study")
    ds.SeriesInstanceUID = _uid(index, "series")
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PatientID = f"SYNTHETIC-CXR-{index:03d}"
    ds.PatientName = "Synthetic^Example"
    ds.StudyID = ""
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    rows, columns = pixels.shape
    spacing = round(FIELD_OF_VIEW_MM / max(rows, columns), 6)
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.PixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_examples(out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (findings, fmt) in enumerate(EXAMPLES):
        labels = {name: int(name in findings) for name in SYNTHETIC_CXR_LABELS}
        rng = np.random.default_rng([SEED, index])
        path = out / example_name(findings, fmt)
        if fmt == "png":
            Image.fromarray(synthetic_cxr_image(labels, IMAGE_SIZE, rng)).save(path, optimize=True)
        elif fmt == "dcm":
            write_dicom(path, synthetic_cxr_image(labels, IMAGE_SIZE, rng, bit_depth=16), index)
        else:
            raise ValueError(f"unknown example format {fmt!r}")
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "examples", help="default: examples/")
    args = parser.parse_args(argv)
    for path in write_examples(args.out):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
