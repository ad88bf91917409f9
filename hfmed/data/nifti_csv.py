"""Builder `nifti_csv`: 3-D MRI volumes (NIfTI) listed in a CSV with an age and / or a diagnosis per scan.

    path,subject_id,age,diagnosis
    images/sub-0001/ses-1/anat/sub-0001_ses-1_T1w.nii.gz,sub-0001,72.4,CN
    /data/adni/002_S_0295/T1w.nii.gz,002_S_0295,84.9,AD

One row per scan; `path` is absolute or relative to the CSV's folder (or `image_root`), and must end in
`.nii` or `.nii.gz`. A `.tsv` file is read tab-separated (BIDS). The target is chosen by an argument: `age`
(regression, years) or `diagnosis` mapped to 0 / 1 by `diagnosis_map` (default ADNI: CN -> 0, AD -> 1).
Other diagnosis values (MCI, EMCI, ...) are an error unless `drop_unmapped=True` leaves those scans out.

The split is by subject: every scan of a subject (longitudinal sessions) lands in the same split, from a
seeded hash of the subject id (`hfmed.data.rsna.patient_split`). The CSV must name its subject column; a CSV
without one is refused rather than split per scan (which would leak repeat scans across splits) unless
`subject_column=None` asks for exactly that.

Columns of every split: `path` (absolute str), `image` (`datasets.Nifti`), `labels` (float32, length 1) and
`subject_id` (str). The `image` column points at the same file as `path`. Decoding it is lazy: a row's
`image` is a `nibabel.Nifti1Image` whose header is read (about 2 ms for a 1 mm T1 `.nii.gz`, measured) and
whose voxels are read only when asked (`get_fdata()`, about 0.1-0.3 s for a 182 x 218 x 182 volume). The
training transform (`hfmed.data.transforms.make_transform`) hands `path` to the image processor, which reads
the voxels once; the `image` column costs it one header read per example and serves notebooks, the Hub
viewer and `push_to_hub` (which embeds the files).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import DatasetDict, Features, Nifti, Value

from .builder import Builder
from .splits import (
    check_fractions,
    file_fingerprint,
    first_items,
    label_feature,
    labels_array,
    make_dataset_dict,
    patient_split,
)

logger = logging.getLogger(__name__)

NIFTI_TARGETS = ("age", "diagnosis")
ADNI_DIAGNOSIS_MAP = {"CN": 0, "AD": 1}
"""ADNI-style labels: cognitively normal -> 0, Alzheimer's disease -> 1 (MCI and others are not mapped)."""
NIFTI_SUFFIXES = (".nii", ".nii.gz")
MAX_AGE = 150.0

FEATURES = Features(
    {
        "path": Value("string"),
        "image": Nifti(),
        "labels": label_feature(1),
        "subject_id": Value("string"),
    }
)
"""The columns of every split of `load_nifti_csv` (and `load_synthetic_brain`)."""


def _read_table(path: Path) -> pd.DataFrame:
    # Everything as text: subject ids like "002_S_0295" or "007" stay as written, blanks stay "".
    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        return pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{str(path)!r} could not be read as a scan list: {' '.join(str(err).split())}"
        ) from err


def _check_diagnosis_map(diagnosis_map: Mapping[str, int] | None) -> dict[str, int]:
    if diagnosis_map is None:
        return dict(ADNI_DIAGNOSIS_MAP)
    if not isinstance(diagnosis_map, Mapping) or not diagnosis_map:
        raise ValueError(f"diagnosis_map must be a non-empty dict {{value: 0 or 1}}, got {diagnosis_map!r}")
    folded: dict[str, str] = {}
    for key, value in diagnosis_map.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"diagnosis_map keys must be non-empty strings, got {key!r}")
        if isinstance(value, bool) or value not in (0, 1):
            raise ValueError(f"diagnosis_map[{key!r}] must be 0 or 1, got {value!r}")
        name = key.strip().casefold()
        if name in folded:
            raise ValueError(
                f"diagnosis_map has {folded[name]!r} and {key!r}, the same value up to case and spaces"
            )
        folded[name] = key
    return {key.strip(): int(value) for key, value in diagnosis_map.items()}


def load_nifti_csv(
    csv_path: str | os.PathLike,
    target: str = "age",
    path_column: str = "path",
    age_column: str = "age",
    diagnosis_column: str = "diagnosis",
    subject_column: str | None = "subject_id",
    diagnosis_map: Mapping[str, int] | None = None,
    drop_unmapped: bool = False,
    image_root: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    check_files: bool = True,
) -> DatasetDict:
    """Builder `nifti_csv`: NIfTI volumes listed in a CSV, with age or diagnosis labels, split by subject.

    Args:
        csv_path: the scan list (CSV; `.tsv` is read tab-separated), one row per scan.
        target: "age" (labels = age in years, from `age_column`) or "diagnosis" (labels = 0 / 1 from
            `diagnosis_column` through `diagnosis_map`). Only the target's column is read and checked.
        path_column: column of `.nii` / `.nii.gz` paths.
        age_column, diagnosis_column: the label columns.
        subject_column: column of subject ids (scans of one subject share a split). `None`: every scan is its
            own subject (only right when each subject has a single scan).
        diagnosis_map: {value: 0 or 1}; default `ADNI_DIAGNOSIS_MAP` (CN -> 0, AD -> 1). Values are matched
            after stripping spaces, ignoring case.
        drop_unmapped: leave out scans whose diagnosis is not in `diagnosis_map` (e.g. MCI) instead of raising.
        image_root: folder that relative paths resolve against; default: the CSV's folder.
        val_fraction, test_fraction, seed: the subject split (see `hfmed.data.rsna.patient_split`; sizes are
            close to, not exactly, the fractions).
        check_files: check that every file exists.

    Returns:
        `DatasetDict` with `train`, `validation` (and `test` when `test_fraction > 0`); columns `path`,
        `image` (`datasets.Nifti`, decoded lazily), `labels` (float32, length 1), `subject_id` (see the module
        docstring).
    """
    if target not in NIFTI_TARGETS:
        raise ValueError(f"target must be one of {list(NIFTI_TARGETS)}, got {target!r}")
    mapping = _check_diagnosis_map(diagnosis_map) if target == "diagnosis" else None
    val_fraction, test_fraction = check_fractions(val_fraction, test_fraction)
    csv_path = Path(csv_path).expanduser().absolute()
    label_column = age_column if target == "age" else diagnosis_column
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"scan list not found at {str(csv_path)!r}: expected a CSV with columns {path_column!r}, "
            f"{label_column!r}" + (f" and {subject_column!r}" if subject_column else "")
        )
    root = csv_path.parent if image_root is None else Path(image_root).expanduser().absolute()
    frame = _read_table(csv_path)
    wanted = [path_column, label_column] + ([subject_column] if subject_column else [])
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        hint = (
            "set path_column / age_column / diagnosis_column / subject_column"
            if subject_column not in missing
            else "name the subject column with subject_column=..., or pass subject_column=None to treat every "
            "scan as its own subject"
        )
        raise ValueError(
            f"{str(csv_path)!r} has no column(s) {missing}; its columns are {list(frame.columns)} ({hint})"
        )
    if frame.empty:
        raise ValueError(f"{str(csv_path)!r} has no data rows")

    # --- paths ---
    relative = frame[path_column].str.strip()
    rows = np.arange(1, len(frame) + 1)  # data row numbers, for messages
    empty = (relative == "").to_numpy()
    if empty.any():
        raise ValueError(
            f"{str(csv_path)!r}: column {path_column!r} is empty on data row(s) {first_items(rows[empty])}"
        )
    not_nifti = ~relative.str.lower().str.endswith(NIFTI_SUFFIXES).to_numpy()
    if not_nifti.any():
        raise ValueError(
            f"{str(csv_path)!r}: {int(not_nifti.sum())} path(s) are not NIfTI files (.nii / .nii.gz), e.g. "
            f"{first_items(relative[not_nifti])}"
        )
    paths = pd.Series([os.path.abspath(os.path.join(root, p)) for p in relative])
    duplicated = paths.duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise ValueError(
            f"{str(csv_path)!r} lists {int(paths[duplicated].nunique())} file(s) more than once, e.g. "
            f"{first_items(paths[duplicated].unique())}: keep one row per scan"
        )

    # --- labels ---
    values = frame[label_column].str.strip()
    keep = np.ones(len(frame), dtype=bool)
    if target == "age":
        ages = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(ages) | (ages < 0) | (ages > MAX_AGE)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{str(csv_path)!r}: column {age_column!r} must hold ages in years (numbers in [0, {MAX_AGE:g}]), "
                f"found {values.iloc[first]!r} on data row {first + 1} ({int(bad.sum())} such row(s))"
            )
        labels = ages
    else:
        folded = {key.casefold(): value for key, value in mapping.items()}
        codes = values.str.casefold().map(folded)
        unmapped = codes.isna().to_numpy()
        if unmapped.any():
            found = sorted(set(values[unmapped]))
            if not drop_unmapped:
                raise ValueError(
                    f"{str(csv_path)!r}: column {diagnosis_column!r} holds value(s) {found[:10]} on "
                    f"{int(unmapped.sum())} row(s) that diagnosis_map {mapping} does not map: add them to "
                    "diagnosis_map, or pass drop_unmapped=True to leave those scans out"
                )
            logger.info(
                "%s: left out %d scan(s) with diagnosis %s", csv_path, int(unmapped.sum()), found[:10]
            )
            keep = ~unmapped
            if not keep.any():
                raise ValueError(
                    f"{str(csv_path)!r}: no scan has a diagnosis in diagnosis_map {mapping} (found {found[:10]})"
                )
        labels = codes.to_numpy(dtype=np.float64, na_value=math.nan)

    # --- subjects ---
    if subject_column:
        subjects = frame[subject_column].str.strip()
        blank = (subjects == "").to_numpy() & keep
        if blank.any():
            raise ValueError(
                f"{str(csv_path)!r}: column {subject_column!r} is empty on data row(s) {first_items(rows[blank])}"
            )
    else:
        subjects = paths

    paths, labels, subjects = paths[keep], labels[keep], subjects[keep]
    if check_files:
        absent = [p for p in paths if not os.path.isfile(p)]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} of {len(paths)} files listed in {str(csv_path)!r} do not exist, e.g. "
                f"{first_items(absent)} (relative paths resolve against {str(root)!r}; set image_root)"
            )

    assignment = patient_split(subjects.tolist(), val_fraction, test_fraction, seed)
    requested = {
        "train": 1.0 - val_fraction - test_fraction,
        "validation": val_fraction,
        "test": test_fraction,
    }
    for code, name in enumerate(("train", "validation", "test")):
        if requested[name] > 0 and not (assignment == code).any():
            raise ValueError(
                f"the {name} split is empty: {len(paths)} scans of {subjects.nunique()} subjects split with "
                f"fractions {requested}; use more subjects or change the fractions or the seed"
            )
    path_array = pa.array(paths.tolist(), pa.string())
    table = pa.table(
        {
            "path": path_array,
            "image": pa.StructArray.from_arrays(
                [pa.nulls(len(path_array), pa.binary()), path_array], ["bytes", "path"]
            ),
            "labels": labels_array(labels.astype(np.float32).reshape(-1, 1)),
            "subject_id": pa.array(subjects.tolist(), pa.string()),
        }
    )
    fingerprint = "|".join(
        map(
            str,
            (
                "nifti_csv",
                file_fingerprint(csv_path),
                root,
                target,
                path_column,
                label_column,
                subject_column,
                mapping and sorted(mapping.items()),
                drop_unmapped,
                val_fraction,
                test_fraction,
                seed,
            ),
        )
    )
    described = "age in years" if target == "age" else f"diagnosis {mapping}"
    return make_dataset_dict(
        table,
        FEATURES,
        assignment,
        requested,
        hashlib.sha256(fingerprint.encode()).hexdigest(),
        description=f"NIfTI volumes listed in {csv_path}; labels: {described}",
    )


BUILDER = Builder(name="nifti_csv", load=load_nifti_csv, path_args=("csv_path",))

__all__ = ["BUILDER", "ADNI_DIAGNOSIS_MAP", "FEATURES", "NIFTI_TARGETS", "load_nifti_csv"]
