"""Writes the Space's example inputs into `spaces/slice_cnn/examples/` (run once; the files are committed).

    .venv/bin/python spaces/slice_cnn/make_examples.py            # rewrites examples/
    .venv/bin/python spaces/slice_cnn/make_examples.py --out DIR  # somewhere else (the tests do)

Each example is one synthetic T1-weighted head volume from `hfmed.data.synthetic_brain.synthetic_brain_volume`
(the twin the demo model is trained on), at the twin's default grid: 48x56x48 voxels of 4 mm (the MNI box at
half its 2 mm resolution), int16, written as `.nii.gz` with a real affine (qform = sform, RAS+ mm). The KNOWN
age and diagnosis are spelled in the file name, `synthetic_<cn|ad>_age<years>[_<orientation>].nii.gz`; one
example is stored in LPS voxel order (the affine says so), which exercises the processor's reorientation.

Deterministic: the same code writes byte-identical files (gzip without a time stamp or file name). This script
needs hfmed (it is not part of the Space's runtime: app.py never imports it).
"""

from __future__ import annotations

import argparse
import gzip
import re
from pathlib import Path

from hfmed.data.synthetic_brain import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    synthetic_brain_volume,
    volume_to_nifti,
)

SEED = 2021
SHAPE = tuple(DEFAULT_SHAPE)
SPACING = float(DEFAULT_SPACING)
# (age in whole years, diagnosis, stored orientation). Order matters only for the seeds: example i uses
# subject_seed [SEED, i] and scan_seed [SEED, i, 1].
EXAMPLES: list[tuple[int, str, str]] = [
    (52, "CN", "RAS"),
    (79, "CN", "RAS"),
    (76, "AD", "LPS"),
]
HERE = Path(__file__).resolve().parent
_NAME = re.compile(r"^synthetic_(cn|ad)_age(\d{1,3})(?:_([a-z]{3}))?\.nii\.gz$")


def example_name(age: int, diagnosis: str, orientation: str = "RAS") -> str:
    """`synthetic_cn_age52.nii.gz`; a non-RAS orientation is appended: `synthetic_ad_age76_lps.nii.gz`."""
    if diagnosis not in ("CN", "AD"):
        raise ValueError(f"diagnosis must be 'CN' or 'AD', got {diagnosis!r}")
    if not isinstance(age, int) or not 20 <= age <= 100:
        raise ValueError(f"age must be whole years in [20, 100], got {age!r}")
    suffix = "" if orientation.upper() == "RAS" else f"_{orientation.lower()}"
    return f"synthetic_{diagnosis.lower()}_age{age}{suffix}.nii.gz"


def truth_from_name(name: str) -> dict:
    """The inverse of `example_name`: `{"age", "diagnosis", "orientation"}` from a file name."""
    match = _NAME.match(Path(name).name)
    if match is None:
        raise ValueError(
            f"{name!r} is not a synthetic example name (synthetic_<cn|ad>_age<N>[_<orient>].nii.gz)"
        )
    diagnosis, age, orientation = match.groups()
    return {"age": int(age), "diagnosis": diagnosis.upper(), "orientation": (orientation or "ras").upper()}


def nifti_gz_bytes(image) -> bytes:
    """A nibabel image as `.nii.gz` bytes, without gzip's time stamp (so the bytes are reproducible)."""
    return gzip.compress(image.to_bytes(), compresslevel=9, mtime=0)


def write_example(out: Path, index: int) -> Path:
    """Writes example `index` of `EXAMPLES` into `out` and returns its path."""
    age, diagnosis, orientation = EXAMPLES[index]
    volume = synthetic_brain_volume(
        age, diagnosis, SHAPE, SPACING, subject_seed=[SEED, index], scan_seed=[SEED, index, 1]
    )
    path = Path(out) / example_name(age, diagnosis, orientation)
    path.write_bytes(nifti_gz_bytes(volume_to_nifti(volume, SPACING, orientation)))
    return path


def write_examples(out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [write_example(out, index) for index in range(len(EXAMPLES))]


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
