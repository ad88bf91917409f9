"""Builder `image_csv`: any folder of images described by one CSV (a path column and one 0/1 column per label).

    path,patient_id,any,epidural,...
    stage_2_train/ID_0a1b2c3d4e5f.dcm,ID_1234abcd,1,0,...

Paths may be absolute or relative to `image_root` (default: the CSV's folder). Any file the image processor
decodes works (DICOM, PNG, JPEG); the builder only records paths.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import DatasetDict, Features, Value

from hfmed.models.scopeformer.configuration_scopeformer import RSNA_LABELS

from .builder import Builder
from .splits import (
    check_fractions,
    check_label_names,
    file_fingerprint,
    first_items,
    label_feature,
    labels_array,
    make_dataset_dict,
    patient_split,
)

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
}
_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


def _label_column(values: pd.Series, column: str, csv_path: Path) -> np.ndarray:
    text = values.str.strip().str.lower()
    out = np.full(len(text), np.nan, dtype=np.float32)
    out[text.isin(_TRUE).to_numpy()] = 1.0
    out[text.isin(_FALSE).to_numpy()] = 0.0
    bad = np.flatnonzero(np.isnan(out))
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"{str(csv_path)!r}: column {column!r} must hold 0/1 (or true/false), found {values.iloc[row]!r} "
            f"on data row {row + 1} ({len(bad)} such row(s)); map uncertain or missing labels to 0 or 1 first"
        )
    return out


def load_image_csv(
    csv_path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    path_column: str = "path",
    label_columns: Sequence[str] | None = None,
    patient_column: str | None = "patient_id",
    label_names: Sequence[str] = RSNA_LABELS,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    split_column: str | None = None,
    check_files: bool = True,
) -> DatasetDict:
    """Builder `image_csv`: images listed in a CSV, split by patient.

    Args:
        csv_path: the CSV.
        image_root: folder that relative paths resolve against; default: the CSV's folder.
        path_column: column of image paths.
        label_columns: CSV columns holding the labels, one per `label_names` and in that order (0/1,
            true/false); default: `label_names`.
        patient_column: column of patient ids. When the CSV has no such column, every image counts as its own
            patient (`patient_id` is then its path) and a warning says that the split is per image; pass
            `None` to ask for that without the warning.
        label_names: names of the labels, in the order of the `labels` vectors.
        val_fraction, test_fraction, seed: the patient split (see `hfmed.data.rsna.patient_split`); unused
            with `split_column`.
        split_column: use this column's values (train / validation / test; also train/val/valid) instead of
            a random split.
        check_files: check that every path exists.

    Returns:
        `DatasetDict` with `train`, `validation` (and `test` when `test_fraction > 0`, or when `split_column`
        has test rows); columns `path` (absolute), `labels` (float32), `patient_id`.
    """
    label_names = check_label_names(label_names)
    label_columns = list(label_names) if label_columns is None else check_label_names(label_columns)
    if len(label_columns) != len(label_names):
        raise ValueError(
            f"label_columns has {len(label_columns)} columns but label_names has {len(label_names)} names: "
            "give one column per label, in label_names order"
        )
    if split_column is None:
        val_fraction, test_fraction = check_fractions(val_fraction, test_fraction)
    csv_path = Path(csv_path).expanduser().absolute()
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"image CSV not found at {str(csv_path)!r}: expected a CSV with a {path_column!r} column and the "
            f"label columns {label_columns}"
        )
    root = csv_path.parent if image_root is None else Path(image_root).expanduser().absolute()
    # Everything as text: patient ids like "007" or "NA" stay as written.
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    wanted = [path_column, *label_columns] + ([split_column] if split_column else [])
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{str(csv_path)!r} has no column(s) {missing}; its columns are {list(frame.columns)} "
            "(set path_column / label_columns / split_column)"
        )
    if frame.empty:
        raise ValueError(f"{str(csv_path)!r} has no data rows")

    relative = frame[path_column].str.strip()
    empty = np.flatnonzero((relative == "").to_numpy())
    if len(empty):
        raise ValueError(
            f"{str(csv_path)!r}: column {path_column!r} is empty on data row(s) {first_items(empty + 1)}"
        )
    paths = [os.path.abspath(os.path.join(root, p)) for p in relative]
    if check_files:
        absent = [p for p in paths if not os.path.isfile(p)]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} of {len(paths)} images listed in {str(csv_path)!r} do not exist, e.g. "
                f"{first_items(absent)} (relative paths resolve against {str(root)!r}; set image_root)"
            )

    labels = np.stack([_label_column(frame[c], c, csv_path) for c in label_columns], axis=1)

    if patient_column is not None and patient_column in frame.columns:
        patients = frame[patient_column].str.strip()
        blank = np.flatnonzero((patients == "").to_numpy())
        if len(blank):
            raise ValueError(
                f"{str(csv_path)!r}: column {patient_column!r} is empty on data row(s) {first_items(blank + 1)}"
            )
        patient_ids = patients.tolist()
    else:
        if patient_column is not None:
            warnings.warn(
                f"{str(csv_path)!r} has no {patient_column!r} column, so images are split one by one and "
                "slices of one patient may land in both train and validation; add a patient column (or pass "
                "patient_column=None to silence this)",
                UserWarning,
                stacklevel=2,
            )
        patient_ids = relative.tolist()

    if split_column is not None:
        raw = frame[split_column].str.strip().str.lower()
        unknown = sorted(set(raw) - set(SPLIT_ALIASES))
        if unknown:
            raise ValueError(
                f"{str(csv_path)!r}: column {split_column!r} has value(s) {unknown}; allowed: "
                f"{sorted(SPLIT_ALIASES)}"
            )
        names = raw.map(SPLIT_ALIASES)
        assignment = names.map({"train": 0, "validation": 1, "test": 2}).to_numpy(dtype=np.int8)
        requested = {"train": 1.0, "validation": 1.0, "test": 1.0 if (assignment == 2).any() else 0.0}
        shared = pd.DataFrame({"p": patient_ids, "s": assignment}).groupby("p")["s"].nunique()
        if (shared > 1).any():
            warnings.warn(
                f"{str(csv_path)!r}: {int((shared > 1).sum())} patient(s) appear in more than one split of "
                f"{split_column!r}, e.g. {first_items(shared[shared > 1].index)}",
                UserWarning,
                stacklevel=2,
            )
    else:
        assignment = patient_split(patient_ids, val_fraction, test_fraction, seed)
        requested = {
            "train": 1.0 - val_fraction - test_fraction,
            "validation": val_fraction,
            "test": test_fraction,
        }

    features = Features(
        {
            "path": Value("string"),
            "labels": label_feature(len(label_names)),
            "patient_id": Value("string"),
        }
    )
    table = pa.table(
        {
            "path": pa.array(paths, pa.string()),
            "labels": labels_array(labels),
            "patient_id": pa.array(patient_ids, pa.string()),
        }
    )
    fingerprint = "|".join(
        map(
            str,
            (
                "image_csv",
                file_fingerprint(csv_path),
                root,
                path_column,
                label_columns,
                patient_column,
                label_names,
                val_fraction,
                test_fraction,
                seed,
                split_column,
            ),
        )
    )
    return make_dataset_dict(
        table,
        features,
        assignment,
        requested,
        hashlib.sha256(fingerprint.encode()).hexdigest(),
        description=f"images listed in {csv_path}; labels: {label_names}",
        empty_hint=(
            f"give rows of every needed split in column {split_column!r}"
            if split_column
            else "use more data or change the fractions or the seed"
        ),
    )


BUILDER = Builder(name="image_csv", load=load_image_csv, path_args=("csv_path",))

__all__ = ["BUILDER", "load_image_csv"]
