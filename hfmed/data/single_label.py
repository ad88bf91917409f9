"""Helpers the single-label builders share (`medmnist`, `image_folder`): class names, the `labels` column of
one class index per row, and the `DatasetDict` assembly with an optional out-of-distribution split.

A single-label dataset has the columns `path` (absolute image path), `labels` (a `datasets.ClassLabel`: one
int64 class index per row, the class names in the feature) and `patient_id` (str). The transforms turn an
integer `labels` column into int64 (B,) batches, what a cross-entropy model takes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, NamedSplit, Value
from datasets.table import InMemoryTable

from .splits import check_label_names, label_feature, labels_array

OOD_SPLIT = "test_ood"
"""The split of examples from a second, shifted source (another scanner, site or corruption)."""

SPLIT_ORDER = ("train", "validation", "test", OOD_SPLIT)


def class_features(label_names: Sequence[str]) -> Features:
    """`path`, `labels` (ClassLabel over `label_names`), `patient_id`."""
    return Features(
        {
            "path": Value("string"),
            "labels": ClassLabel(names=check_label_names(label_names)),
            "patient_id": Value("string"),
        }
    )


def dataset_dict_from_rows(
    splits: Mapping[str, tuple[Sequence[str], Sequence, Sequence[str]]],
    label_names: Sequence[str],
    fingerprint: str,
    description: str,
    multi_label: bool = False,
) -> DatasetDict:
    """A `DatasetDict` from `{split: (paths, labels, patient ids)}`, splits in `SPLIT_ORDER`.

    Labels are class indices (N,) for the ClassLabel column; with `multi_label=True` they are (N, L) 0/1 rows
    instead (float32 per label, the multi-label builders' column), for sets such as ChestMNIST.

    Raises:
        ValueError: an empty split, unequal column lengths, or a class index outside `label_names`.
    """
    features = class_features(label_names)
    if multi_label:
        features["labels"] = label_feature(len(label_names))
    out = {}
    for name in sorted(splits, key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER)):
        paths, labels, patients = splits[name]
        if not len(paths):
            raise ValueError(f"the {name} split is empty: {description}")
        if not len(paths) == len(labels) == len(patients):
            raise ValueError(f"the {name} split has {len(paths)} paths, {len(labels)} labels, {len(patients)} ids")
        if multi_label:
            column = labels_array(np.asarray(labels, dtype=np.float32).reshape(len(paths), len(label_names)))
        else:
            labels = np.asarray(labels, dtype=np.int64).reshape(-1)
            if labels.min() < 0 or labels.max() >= len(label_names):
                raise ValueError(
                    f"the {name} split holds class indices {int(labels.min())}..{int(labels.max())} but there are "
                    f"{len(label_names)} label_names {list(label_names)[:12]}: give one name per class"
                )
            column = pa.array(labels, pa.int64())
        table = pa.table(
            {
                "path": pa.array([str(p) for p in paths], pa.string()),
                "labels": column,
                "patient_id": pa.array([str(p) for p in patients], pa.string()),
            }
        ).cast(features.arrow_schema)
        out[name] = Dataset(
            InMemoryTable(table),
            info=DatasetInfo(description=description, features=features),
            split=NamedSplit(name),
            # Stable, from the source's description (not the rows' Python objects), as the other builders do.
            fingerprint=hashlib.sha256(f"{fingerprint}:{name}".encode()).hexdigest()[:16],
        )
    return DatasetDict(out)


__all__ = ["OOD_SPLIT", "SPLIT_ORDER", "class_features", "dataset_dict_from_rows"]
