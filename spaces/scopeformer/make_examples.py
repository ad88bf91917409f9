"""Writes the Space's example inputs into `spaces/scopeformer/examples/` (run once; the files are committed).

    .venv/bin/python spaces/scopeformer/make_examples.py            # rewrites examples/
    .venv/bin/python spaces/scopeformer/make_examples.py --out DIR  # somewhere else (the tests do)

Each example is one synthetic axial head-CT slice from `hfmed.data.synthetic_ct.synthetic_ct_slice`, 64x64,
with KNOWN labels spelled in its file name (`synthetic_<subtype>[_<subtype>...].<ext>`, `synthetic_negative`):

- DICOM files (Modality CT, int16 stored = HU + 1024, RescaleSlope 1, RescaleIntercept -1024), like RSNA's;
- one PNG that is already windowed: the processor's brain / subdural / bone windows as its R / G / B channels.

Deterministic: the same code writes byte-identical files. This script needs hfmed (it is not part of the
Space's runtime: app.py never imports it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from hfmed import ScopeformerImageProcessor
from hfmed.data.synthetic_ct import SUBTYPES, _uid, _write_dicom, synthetic_ct_slice

IMAGE_SIZE = 64
SEED = 2019
# (subtypes present, format). Order matters only for the seeds: example i uses default_rng([SEED, i]).
EXAMPLES: list[tuple[tuple[str, ...], str]] = [
    (("subdural",), "dcm"),
    (("epidural", "intraparenchymal"), "dcm"),
    ((), "dcm"),
    (("intraventricular", "subarachnoid"), "png"),
]
HERE = Path(__file__).resolve().parent


def example_name(subtypes: tuple[str, ...], fmt: str) -> str:
    """`synthetic_subdural.dcm`, `synthetic_epidural_intraparenchymal.dcm`, `synthetic_negative.dcm`, ..."""
    unknown = sorted(set(subtypes) - set(SUBTYPES))
    if unknown:
        raise ValueError(f"unknown subtype(s) {unknown}: use names from {SUBTYPES}")
    ordered = [name for name in SUBTYPES if name in subtypes]  # canonical order
    return f"synthetic_{'_'.join(ordered) or 'negative'}.{fmt}"


def labels_from_name(name: str) -> dict[str, int]:
    """The inverse of `example_name`: `{"any": 0/1, subtype: 0/1, ...}` from a file name."""
    stem = Path(name).stem
    if not stem.startswith("synthetic_"):
        raise ValueError(f"{name!r} is not a synthetic example name (synthetic_<subtypes>.<ext>)")
    parts = stem[len("synthetic_") :]
    present = set() if parts == "negative" else {s for s in SUBTYPES if s in parts.split("_")}
    # "intraparenchymal" etc. hold no "_", so a plain split recovers the names; check nothing was left over.
    if example_name(tuple(present), "x") != f"synthetic_{parts}.x":
        raise ValueError(f"{name!r} does not spell a set of subtypes from {SUBTYPES}")
    labels = {s: int(s in present) for s in SUBTYPES}
    return {"any": int(bool(present)), **labels}


def write_examples(out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    processor = ScopeformerImageProcessor()
    written = []
    for index, (subtypes, fmt) in enumerate(EXAMPLES):
        labels = {name: int(name in subtypes) for name in SUBTYPES}
        hu = synthetic_ct_slice(labels, IMAGE_SIZE, np.random.default_rng([SEED, index]))
        path = out / example_name(subtypes, fmt)
        if fmt == "dcm":
            _write_dicom(
                path,
                hu,
                patient_id=f"SYNTHETIC-{index:03d}",
                study_uid=_uid("space-example", index, "study"),
                series_uid=_uid("space-example", index, "series"),
                sop_uid=_uid("space-example", index, "sop"),
                z_mm=0.0,
            )
        elif fmt == "png":
            windows = processor.window(hu)[0]  # (3, H, W) in [0, 1]: brain, subdural, bone
            rgb = np.rint(np.clip(windows, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
            Image.fromarray(rgb).save(path, optimize=True)
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
