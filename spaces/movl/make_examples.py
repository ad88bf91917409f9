"""Writes the Space's example inputs into `spaces/movl/examples/` (run once; the files are committed).

    .venv/bin/python spaces/movl/make_examples.py            # rewrites examples/
    .venv/bin/python spaces/movl/make_examples.py --out DIR  # somewhere else (the tests do)

Each example is one target image of hfmed's shifted twin (`hfmed.data.synthetic_shift.synthetic_target_image`:
a stained cell whose class is its nucleus' morphology), at the twin's (and the demo's) size, 32x32, with its
KNOWN class and domain in its file name, `<domain>_<class>.<ext>`:

- `in_distribution_...`: scanner A, as the target's train / validation / test splits;
- `ood_...`: scanner B (`ood="scanner"`: other stain colours, paler, noisier), as its `test_ood` split;
- RGB PNGs, and one colour DICOM file (Modality SM, secondary capture, RGB, 8-bit) to show DICOM input.

Deterministic: the same code writes byte-identical files. This script needs hfmed (it is not part of the
Space's runtime: app.py never imports it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from hfmed.data.synthetic_shift import TARGET_CLASSES, synthetic_target_image

IMAGE_SIZE = 32
SEED = 2405  # arXiv 2405.07411
OOD_SHIFT = "scanner"
DOMAINS = {"in_distribution": None, "ood": OOD_SHIFT}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# (class, domain, format). Order matters only for the seeds: example i uses default_rng([SEED, i]).
EXAMPLES: list[tuple[str, str, str]] = [
    ("round_nucleus", "in_distribution", "png"),
    ("lobed_nucleus", "in_distribution", "png"),
    ("spindle_nucleus", "ood", "png"),
    ("granular", "ood", "dcm"),
]
HERE = Path(__file__).resolve().parent


def example_name(label: str, domain: str, fmt: str) -> str:
    """`in_distribution_round_nucleus.png`, `ood_granular.dcm`, ..."""
    if label not in TARGET_CLASSES:
        raise ValueError(f"unknown class {label!r}: use one of {TARGET_CLASSES}")
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}: use one of {sorted(DOMAINS)}")
    return f"{domain}_{label}.{fmt}"


def parse_name(name: str) -> tuple[str, str]:
    """The inverse of `example_name`: `(class, domain)` from a file name."""
    stem = Path(name).stem
    for domain in DOMAINS:
        if stem.startswith(f"{domain}_") and stem[len(domain) + 1 :] in TARGET_CLASSES:
            return stem[len(domain) + 1 :], domain
    raise ValueError(f"{name!r} is not an example name (<domain>_<class>.<ext>, domain one of {sorted(DOMAINS)})")


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["hfmed-movl-space-example", *map(str, parts)])  # deterministic


def write_dicom(path: Path, pixels: np.ndarray, index: int) -> None:
    """A single-frame colour secondary-capture DICOM (Modality SM, RGB, 8-bit, interleaved) holding `pixels`."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {pixels.dtype} {pixels.shape}")
    sop_uid = _uid(index, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid(index, "study")
    ds.SeriesInstanceUID = _uid(index, "series")
    ds.Modality = "SM"
    ds.ConversionType = "SYN"  # synthesised image
    ds.PatientID = f"SYNTHETIC-CELL-{index:03d}"
    ds.PatientName = "Synthetic^Example"
    ds.StudyID = ""
    rows, columns, _ = pixels.shape
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = columns
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
    for index, (label, domain, fmt) in enumerate(EXAMPLES):
        rng = np.random.default_rng([SEED, index])
        pixels = synthetic_target_image(label, IMAGE_SIZE, rng, ood=DOMAINS[domain])
        path = out / example_name(label, domain, fmt)
        if fmt == "png":
            Image.fromarray(pixels).save(path, optimize=True)
        elif fmt == "dcm":
            write_dicom(path, pixels, index)
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
