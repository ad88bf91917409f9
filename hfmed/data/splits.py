"""Helpers every dataset builder shares: label and fraction checks, the patient-wise split, label columns,
the `DatasetDict` assembly and file fingerprints."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, DatasetInfo, Features, NamedSplit, Value
from datasets import Sequence as HFSequence
from datasets.table import InMemoryTable

SPLITS = ("train", "validation", "test")



def check_label_names(label_names: Sequence[str]) -> list[str]:
    if isinstance(label_names, (str, bytes)) or not isinstance(label_names, Sequence) or not label_names:
        raise ValueError(f"label_names must be a non-empty list of strings, got {label_names!r}")
    names = list(label_names)
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"label_names must hold non-empty strings only, got {names!r}")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"label_names has duplicates {duplicated}: give each label once")
    return names


def check_fractions(val_fraction: float, test_fraction: float) -> tuple[float, float]:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves nothing to train on: "
            "their sum must be < 1"
        )
    return float(val_fraction), float(test_fraction)


def patient_hash(patient_id: str, seed: int) -> float:
    """A uniform number in [0, 1) from (seed, patient id): stable across runs, machines and Python versions."""
    digest = hashlib.blake2b(f"{seed}\x00{patient_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def patient_split(
    patient_ids: Sequence[str] | pa.Array | np.ndarray,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Assigns every row to a split by patient: 0 train, 1 validation, 2 test (an int8 array).

    Rule: `u = patient_hash(patient_id, seed)`; test if `u < test_fraction`, validation if
    `u >= 1 - val_fraction`, train otherwise. All images of a patient share a split; a patient keeps its split
    when the dataset grows or shrinks, and asking for a test split takes patients from train only (the
    validation set does not move). The split sizes are therefore close to, not exactly, the fractions.
    """
    val_fraction, test_fraction = check_fractions(val_fraction, test_fraction)
    encoded = pc.dictionary_encode(pa.array(patient_ids, type=pa.string()))
    if encoded.null_count:
        raise ValueError("patient ids must not be missing (null)")
    unique = encoded.dictionary.to_pylist()
    hashes = np.fromiter((patient_hash(p, seed) for p in unique), dtype=np.float64, count=len(unique))
    per_patient = np.zeros(len(unique), dtype=np.int8)
    per_patient[hashes >= 1.0 - val_fraction] = 1
    per_patient[hashes < test_fraction] = 2
    return per_patient[encoded.indices.to_numpy(zero_copy_only=False)]


def carve_validation(
    train: Dataset, group_ids, has_groups: bool, group_column: str, val_fraction: float, seed: int, source: str
) -> tuple[Dataset, Dataset]:
    """`(train, validation)` carved from a dataset without a validation split, group-wise by `group_ids`
    (patients; each row its own group when the source has no `group_column`, with a warning saying so).

    Raises:
        ValueError: the carved validation split is empty although `val_fraction` > 0.
    """
    if not has_groups and val_fraction > 0:
        warnings.warn(
            f"dataset {source!r} has no validation split and no {group_column!r} column: validation is carved "
            "from train image by image, so one patient may appear in both",
            UserWarning,
            stacklevel=3,
        )
    assignment = patient_split(group_ids, val_fraction, 0.0, seed)
    validation = train.select(np.flatnonzero(assignment == 1))
    if val_fraction > 0 and validation.num_rows == 0:
        raise ValueError(
            f"the validation split carved from {source!r} (val_fraction={val_fraction}) is empty: raise "
            "val_fraction or change the seed"
        )
    return train.select(np.flatnonzero(assignment == 0)), validation


def label_feature(num_labels: int):
    return HFSequence(Value("float32"), length=num_labels)


def labels_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def make_dataset_dict(
    table: pa.Table,
    features: Features,
    assignment: np.ndarray,
    requested: dict[str, float],
    fingerprint: str,
    description: str,
    empty_hint: str = "use more data or change the fractions or the seed",
) -> DatasetDict:
    """Splits `table` rows by `assignment` (0 train, 1 validation, 2 test) into a DatasetDict.

    `requested` maps split name -> fraction; `train` and `validation` are always present (validation may be
    empty only when its fraction is 0), `test` only when its fraction is > 0. A requested split that comes
    out empty raises, because hashing gave every patient to the other splits.
    """
    table = table.cast(features.arrow_schema)
    output = {}
    for code, name in enumerate(SPLITS):
        fraction = requested.get(name)
        if name == "test" and not fraction:
            continue
        indices = np.flatnonzero(assignment == code)
        if len(indices) == 0 and (name == "train" or fraction):
            rows = f"{len(table)} rows"
            if "patient_id" in table.column_names:
                rows += f" from {len(pc.unique(table.column('patient_id')))} patients"
            raise ValueError(f"the {name} split is empty: {rows} split with fractions {requested}; {empty_hint}")
        part = table.take(pa.array(indices, type=pa.int64())).combine_chunks()
        output[name] = Dataset(
            InMemoryTable(part),
            info=DatasetInfo(description=description, features=features),
            split=NamedSplit(name),
            fingerprint=hashlib.sha256(f"{fingerprint}:{name}".encode()).hexdigest()[:16],
        )
    return DatasetDict(output)


def first_items(items, n: int = 5) -> str:
    """The first `n` items, quoted and comma-separated (with "..." when there are more): for error messages."""
    items = list(items)
    shown = ", ".join(repr(str(i)) for i in items[:n])
    return f"{shown}{', ...' if len(items) > n else ''}"


def file_fingerprint(path: Path) -> str:
    """Path, size and modification time of a file: changes when the file does (dataset fingerprints)."""
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


__all__ = [
    "SPLITS",
    "check_fractions",
    "check_label_names",
    "file_fingerprint",
    "first_items",
    "label_feature",
    "labels_array",
    "make_dataset_dict",
    "patient_hash",
    "patient_split",
]
