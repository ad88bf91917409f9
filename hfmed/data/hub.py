"""Builder `hub`: a dataset from the Hugging Face Hub (or any `datasets.load_dataset` source) with images.

The images stay in the `image` column and are decoded lazily by `datasets` (as PIL images), then windowed /
normalised by the image processor in the transform. The label column is turned into the common `labels`
vectors in `label_names` order, or, with `single_label=True`, into one class index per row (a ClassLabel over
`label_names`) for cross-entropy models.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, IterableDataset, IterableDatasetDict, Value

from .builder import Builder
from .splits import carve_validation, check_fractions, check_label_names, first_items, label_feature

VALIDATION_NAMES = ("validation", "valid", "val", "dev")
_FALSE_STRINGS = {"", "0", "false", "no", "off"}


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    from_env = value is not None and value.strip().lower() not in _FALSE_STRINGS
    return bool(constants.HF_HUB_OFFLINE) or from_env


def _load_error(err: Exception, repo_id: str, revision: str | None) -> Exception:
    state = os.environ.get("HF_HUB_OFFLINE", "unset")
    detail = " ".join(str(err).split()) or type(err).__name__
    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    if _offline():
        advice = (
            f"HF_HUB_OFFLINE={state} (offline mode): only datasets already in the local cache or local folders "
            "load; run once with HF_HUB_OFFLINE unset (or 0) and network access to download it"
        )
    else:
        advice = (
            f"HF_HUB_OFFLINE={state}: check the repo id, the revision, your access (`hf auth login` for gated "
            "or private datasets) and the network; set HF_HUB_OFFLINE=1 to use the local cache only"
        )
    message = f"could not load dataset {where} with datasets.load_dataset ({type(err).__name__}: {detail}); {advice}"
    try:
        wrapped = type(err)(message)  # keep the exception type callers may catch
    except Exception:
        wrapped = RuntimeError(message)
    return wrapped if str(wrapped) == message else RuntimeError(message)


def _names_to_multi_hot(rows: Sequence[Sequence[str]], label_names: list[str], column: str) -> np.ndarray:
    index = {name: i for i, name in enumerate(label_names)}
    out = np.zeros((len(rows), len(label_names)), dtype=np.float32)
    unknown = set()
    for row, names in enumerate(rows):
        for name in names or ():
            position = index.get(name)
            if position is None:
                unknown.add(name)
            else:
                out[row, position] = 1.0
    if unknown:
        raise ValueError(
            f"label column {column!r} holds name(s) {sorted(unknown)[:10]} that are not in label_names="
            f"{label_names}: add them to label_names (or map them first)"
        )
    return out


def _check_unit_interval(matrix: np.ndarray, column: str) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    bad = ~np.isfinite(matrix) | (matrix < 0) | (matrix > 1)
    if bad.any():
        raise ValueError(
            f"label column(s) {column!r} must hold values in [0, 1] (multi-hot), found "
            f"{matrix[bad][:5].tolist()}"
        )
    return matrix


def _labels_of(dataset: Dataset, label_column: str | Sequence[str], label_names: list[str]) -> np.ndarray:
    """The (num_rows, len(label_names)) float32 label matrix of one split."""
    if not isinstance(label_column, str):
        columns = list(label_column)
        if len(columns) != len(label_names):
            raise ValueError(
                f"label_column lists {len(columns)} columns but label_names has {len(label_names)} names: give "
                "one column per label, in label_names order"
            )
        table = dataset.select_columns(columns).with_format("numpy")[:]
        return _check_unit_interval(
            np.stack([np.asarray(table[c], dtype=np.float32) for c in columns], 1), str(columns)
        )
    feature = dataset.features[label_column]
    values = dataset.select_columns([label_column]).with_format(None)[:][label_column]
    if isinstance(feature, ClassLabel):  # single-label classification: one-hot
        return _names_to_multi_hot([[feature.int2str(int(v))] for v in values], label_names, label_column)
    inner = getattr(feature, "feature", None)
    if isinstance(inner, ClassLabel):  # multi-label as a list of class indices
        return _names_to_multi_hot(
            [[inner.int2str(int(v)) for v in row] for row in values], label_names, label_column
        )
    if isinstance(inner, Value) and inner.dtype in ("string", "large_string"):
        return _names_to_multi_hot(values, label_names, label_column)
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return _names_to_multi_hot([[v] for v in values], label_names, label_column)
    if inner is not None:
        lengths = {len(row) for row in values}
        if lengths - {len(label_names)}:
            raise ValueError(
                f"label column {label_column!r} holds lists of length {sorted(lengths)} but there are "
                f"{len(label_names)} label_names: a multi-hot list needs one value per label, in label_names order"
            )
        return _check_unit_interval(
            np.asarray(values, dtype=np.float32).reshape(len(values), -1), label_column
        )
    raise ValueError(
        f"label column {label_column!r} has feature {feature}; expected a list of label names, a "
        "multi-hot list of numbers, a ClassLabel, or a list of ClassLabel"
    )


def _class_indices_of(dataset: Dataset, label_column: str | Sequence[str], label_names: list[str]) -> np.ndarray:
    """The (num_rows,) int64 class indices (in `label_names` order) of one split's single-label column."""
    if not isinstance(label_column, str):
        raise ValueError(
            f"single_label=True reads one class per row from one column, got label_column={list(label_column)}: "
            "pass the name of a ClassLabel, class-name or class-index column"
        )
    feature = dataset.features[label_column]
    values = dataset.select_columns([label_column]).with_format(None)[:][label_column]
    if isinstance(feature, ClassLabel):
        values = [feature.int2str(int(v)) for v in values]
    elif isinstance(feature, Value) and feature.dtype.startswith(("int", "uint")):
        indices = np.asarray(values, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(label_names)):
            raise ValueError(
                f"label column {label_column!r} holds class indices {int(indices.min())}..{int(indices.max())} but "
                f"there are {len(label_names)} label_names: give one name per class, in index order"
            )
        return indices
    elif not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise ValueError(
            f"label column {label_column!r} has feature {feature}; single_label=True expects a ClassLabel, class "
            "names (strings) or class indices (integers)"
        )
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({str(v) for v in values if v not in index})
    if unknown:
        raise ValueError(
            f"label column {label_column!r} holds class name(s) {unknown[:10]} that are not in label_names="
            f"{label_names}: add them to label_names (or map them first)"
        )
    return np.asarray([index[v] for v in values], dtype=np.int64)


def _standardise(
    dataset: Dataset,
    split: str,
    label_names: list[str],
    image_column: str,
    label_column: str | Sequence[str],
    patient_column: str | None,
    single_label: bool = False,
) -> tuple[Dataset, bool]:
    """Keeps `image`, `labels`, `patient_id`; returns the dataset and whether real patient ids were found."""
    wanted = [image_column, *([label_column] if isinstance(label_column, str) else label_column)]
    missing = [c for c in wanted if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"split {split!r} has no column(s) {missing}; its columns are {dataset.column_names} "
            "(set image_column / label_column)"
        )
    if single_label:
        labels, labels_feature = _class_indices_of(dataset, label_column, label_names), ClassLabel(names=label_names)
    else:
        labels, labels_feature = _labels_of(dataset, label_column, label_names), label_feature(len(label_names))
    has_patients = patient_column is not None and patient_column in dataset.column_names
    if has_patients:
        patients = [
            str(p) for p in dataset.select_columns([patient_column]).with_format(None)[:][patient_column]
        ]
    else:
        patients = [f"{split}/{i}" for i in range(dataset.num_rows)]
    out = dataset.select_columns([image_column])
    if image_column != "image":
        out = out.rename_column(image_column, "image")
    out = out.add_column("labels", labels.tolist(), feature=labels_feature)
    out = out.add_column("patient_id", patients, feature=Value("string"))
    return out, has_patients


def load_hub_dataset(
    repo_id: str,
    label_names: Sequence[str],
    image_column: str = "image",
    label_column: str | Sequence[str] = "labels",
    revision: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    patient_column: str | None = "patient_id",
    single_label: bool = False,
    ood_split: str | None = None,
    **load_kwargs: Any,
) -> DatasetDict:
    """Builder `hub`: `datasets.load_dataset(repo_id, revision=revision, **load_kwargs)` with common columns.

    Args:
        repo_id: a Hub dataset id (or anything `load_dataset` takes, e.g. a local folder or "imagefolder").
        label_names: names of the labels, in the order of the `labels` vectors.
        image_column: the column of images (renamed to `image`; decoded lazily by `datasets`).
        label_column: a column of label-name lists, of multi-hot lists (one value in [0, 1] per label, in
            `label_names` order), a `ClassLabel` (one-hot), or a list of `ClassLabel`; or a list of columns,
            one 0/1 column per label.
        revision: git revision of the dataset repo.
        val_fraction, seed: when the dataset has no validation split (also looked up as valid / val / dev),
            this share of the train split becomes validation, by patient when `patient_column` exists,
            otherwise image by image (with a warning).
        patient_column: column of patient ids, kept as `patient_id`; without it `patient_id` is
            `"<split>/<row>"`.
        single_label: one class per image (cross-entropy models): `label_column` is one ClassLabel, class-name
            or class-index column, and `labels` becomes a ClassLabel over `label_names` (an int64 class index
            per row; a ClassLabel's own names are mapped to `label_names` by name).
        ood_split: a split of the source from a shifted source (another site, scanner or stain), returned as
            `test_ood`.
        **load_kwargs: passed to `datasets.load_dataset` (e.g. `name`, `data_dir`, `data_files`, `cache_dir`).

    Returns:
        `DatasetDict` with `train`, `validation` (and `test` when the source has one, `test_ood` with
        `ood_split`); columns `image`, `labels` (float32 per label, or int64 class indices with
        `single_label`), `patient_id`.

    Raises:
        The load error, re-raised with the repo id and the `HF_HUB_OFFLINE` state in its message.
    """
    label_names = check_label_names(label_names)
    val_fraction, _ = check_fractions(val_fraction, 0.0)
    if load_kwargs.get("streaming"):
        raise ValueError(
            "streaming=True is not supported by the hub builder: it needs random access for splits"
        )
    try:
        loaded = datasets.load_dataset(repo_id, revision=revision, **load_kwargs)
    except Exception as err:
        raise _load_error(err, repo_id, revision) from err
    if isinstance(loaded, (IterableDataset, IterableDatasetDict)):
        raise ValueError(
            "the hub builder needs a map-style dataset, got an iterable one: drop streaming=True"
        )
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({str(loaded.split or "train"): loaded})
    splits = dict(loaded)
    if "train" not in splits:
        raise ValueError(
            f"dataset {repo_id!r} has no 'train' split (splits: {sorted(splits)}): pass split= or data_files= "
            "so that one is called train"
        )
    validation_name = next((name for name in VALIDATION_NAMES if name in splits), None)
    out = {}
    args = (label_names, image_column, label_column, patient_column, single_label)
    train, train_has_patients = _standardise(splits["train"], "train", *args)
    if validation_name is None:
        out["train"], out["validation"] = carve_validation(
            train, train["patient_id"], train_has_patients, patient_column, val_fraction, seed, repo_id
        )
    else:
        out["train"] = train
        out["validation"], _ = _standardise(splits[validation_name], validation_name, *args)
    if "test" in splits:
        out["test"], _ = _standardise(splits["test"], "test", *args)
    if ood_split is not None:
        if ood_split not in splits or ood_split in ("train", "test", validation_name):
            raise ValueError(
                f"ood_split {ood_split!r} must name a split of {repo_id!r} other than train / validation / test; "
                f"its splits: {sorted(splits)}"
            )
        out["test_ood"], _ = _standardise(splits[ood_split], ood_split, *args)
    used = {"train", "test", *([validation_name] if validation_name else []), *([ood_split] if ood_split else [])}
    ignored = sorted(set(splits) - used)
    if ignored:
        warnings.warn(
            f"dataset {repo_id!r}: split(s) {first_items(ignored)} are not used", UserWarning, stacklevel=2
        )
    return DatasetDict(out)


BUILDER = Builder(name="hub", load=load_hub_dataset)

__all__ = ["BUILDER", "load_hub_dataset"]
