"""Builder `nih_chestxray14`: NIH ChestX-ray14 as a multi-label `DatasetDict`.

NIH ChestX-ray14 (the NIH Box download, or the synthetic twin of `hfmed.data.synthetic_cxr`):

    root/Data_Entry_2017.csv      Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,...
    root/train_val_list.txt       one image name per line (the official, patient-wise split)
    root/test_list.txt
    root/images/00000001_000.png  or the 12 extracted archives root/images_001/images/ ... images_012/images/

`Finding Labels` is `|`-separated (`Cardiomegaly|Effusion`); `No Finding` gives an all-zero vector.

The chest X-ray builders (`nih_chestxray14`, `chexpert`) give the columns `path` (absolute), `labels`
(float32, one per `label_names`), `patient_id` (str), `image_id` (NIH: the image name; CheXpert: the CSV's
`Path`) and `view` (NIH: `PA` / `AP`; CheXpert: the `AP/PA` column, or `Lateral` where it is blank). No pixel
is read.
"""

from __future__ import annotations

import glob
import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import DatasetDict

from .builder import Builder
from .chest_xray import (
    NIH_LABELS,
    NO_FINDING,
    blank_rows,
    cxr_features,
    read_csv_text,
    require_columns,
)
from .splits import (
    check_fractions,
    check_label_names,
    file_fingerprint,
    first_items,
    labels_array,
    make_dataset_dict,
    patient_split,
)

_NIH_COLUMNS = ["Image Index", "Finding Labels", "Patient ID", "View Position"]




def parse_finding_labels(
    findings: Sequence[str] | pd.Series,
    label_names: Sequence[str] = NIH_LABELS,
    source: str = "Finding Labels",
) -> np.ndarray:
    """Multi-hot float32 matrix (len(findings), len(label_names)) from `|`-separated NIH finding strings.

    `No Finding` gives zeros; findings of NIH ChestX-ray14 not in `label_names` are ignored. An unknown
    finding name, an empty entry, or `No Finding` together with a finding raises `ValueError`.
    """
    label_names = check_label_names(label_names)
    series = pd.Series(findings, dtype=object).reset_index(drop=True).astype(str)
    exploded = series.str.split("|").explode().str.strip()
    known = {*NIH_LABELS, *label_names, NO_FINDING}
    unknown = sorted(set(exploded.unique()) - known)
    if unknown:
        rows = np.unique(exploded.index[exploded.isin(unknown).to_numpy()])
        raise ValueError(
            f"{source}: unknown finding name(s) {[u for u in unknown if u][:10]}"
            f"{' and empty entries' if '' in unknown else ''} on {len(rows)} row(s), e.g. data row(s) "
            f"{first_items(rows + 1)}; known: {NIH_LABELS} and {NO_FINDING!r}"
        )
    is_none = exploded == NO_FINDING
    per_row = exploded.groupby(level=0).size()
    mixed = np.unique(exploded.index[is_none.to_numpy()])
    mixed = mixed[per_row.loc[mixed].to_numpy() > 1]
    if len(mixed):
        raise ValueError(
            f"{source}: {NO_FINDING!r} together with findings on {len(mixed)} row(s), e.g. "
            f"{first_items(series.iloc[mixed].tolist())}"
        )
    matrix = np.zeros((len(series), len(label_names)), dtype=np.float32)
    column = pd.Index(label_names).get_indexer(exploded)  # -1: a finding not in label_names
    hit = column >= 0
    matrix[exploded.index.to_numpy()[hit], column[hit]] = 1.0
    return matrix


def _read_list(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"NIH {what} list not found at {str(path)!r}: expected a text file with one image name per line "
            "(or pass None)"
        )
    names = [line.strip() for line in path.read_text().splitlines()]
    return [name for name in names if name]


def _image_folders(root: Path, image_dirs: str | Sequence[str]) -> list[Path]:
    patterns = [image_dirs] if isinstance(image_dirs, (str, os.PathLike)) else list(image_dirs)
    folders: list[Path] = []
    for pattern in patterns:
        for match in sorted(glob.glob(os.path.join(root, os.fspath(pattern)))):
            path = Path(match)
            if path.is_dir() and path not in folders:
                folders.append(path)
    return folders


def _scan_images(folders: list[Path]) -> dict[str, str]:
    """{file name: folder} over `folders`, scanned once; the first folder holding a name wins."""
    where: dict[str, str] = {}
    for folder in reversed(folders):
        text = str(folder)
        where.update((entry.name, text) for entry in os.scandir(folder))
    return where


def load_nih_chestxray14(
    root: str | os.PathLike,
    label_names: Sequence[str] = NIH_LABELS,
    csv_name: str = "Data_Entry_2017.csv",
    train_val_list: str | None = "train_val_list.txt",
    test_list: str | None = "test_list.txt",
    image_dirs: str | Sequence[str] = ("images", "images_*/images"),
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
) -> DatasetDict:
    """Builder `nih_chestxray14`: NIH ChestX-ray14 with its official patient-wise test split.

    Args:
        root: the folder holding `csv_name`, the split lists and the image folders.
        label_names: findings to keep, in the order of the `labels` vectors (NIH names; a subset is fine).
        csv_name: the label CSV inside `root` (`Data_Entry_2017.csv`; extra columns are ignored).
        train_val_list: list of train + validation images (one name per line) inside `root`; `None`: every
            CSV image not in `test_list`.
        test_list: list of test images inside `root`; `None`: no test split.
        image_dirs: folders (glob patterns, relative to `root` or absolute) scanned once for the images; the
            first folder holding a name wins. The default covers both `images/` and the 12 extracted
            archives `images_001/images/` ... `images_012/images/`.
        val_fraction: share of the train_val patients moved to validation (see `patient_split`); 0 leaves
            validation empty.
        seed: seeds the patient hash of the validation split.
        check_files: raise when an image has no file (the message lists the first few); without the check a
            missing image's path points into the first image folder.

    Returns:
        `DatasetDict` with `train`, `validation` and (unless `test_list=None`) `test`; columns `path`,
        `labels`, `patient_id`, `image_id`, `view`. CSV images in neither list are dropped, with a warning.
    """
    label_names = check_label_names(label_names)
    not_nih = [name for name in label_names if name not in NIH_LABELS]
    if not_nih:
        raise ValueError(f"label_names {not_nih} are not NIH ChestX-ray14 findings; choose from {NIH_LABELS}")
    val_fraction, _ = check_fractions(val_fraction, 0.0)
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(
            f"NIH ChestX-ray14 root {str(root)!r} is not a folder: expected the folder holding {csv_name}, "
            "the split lists and images/"
        )
    csv_path = root / csv_name
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"NIH label CSV not found at {str(csv_path)!r}: expected Data_Entry_2017.csv (columns Image "
            "Index, Finding Labels, Follow-up #, Patient ID, ...)"
        )
    frame = read_csv_text(csv_path, "NIH ChestX-ray14")
    require_columns(frame, _NIH_COLUMNS, csv_path, "NIH ChestX-ray14 (Data_Entry_2017)")
    frame = frame[_NIH_COLUMNS].apply(lambda column: column.str.strip())
    for column in ("Image Index", "Patient ID"):
        blank_rows(frame[column], column, csv_path)
    duplicated = frame["Image Index"].duplicated()
    if duplicated.any():
        raise ValueError(
            f"{str(csv_path)!r} lists {int(duplicated.sum())} image(s) more than once, e.g. "
            f"{first_items(frame.loc[duplicated, 'Image Index'].unique())}"
        )
    labels = parse_finding_labels(frame["Finding Labels"], label_names, source=repr(str(csv_path)))

    # Split from the official lists: 0 train (or validation, below), 2 test, -1 in neither.
    names = frame["Image Index"]
    assignment = np.full(len(frame), -1, dtype=np.int8)
    lists = []
    test_names: set[str] = set()
    if test_list is not None:
        test_path = root / test_list
        test_names = set(_read_list(test_path, "test"))
        lists.append((test_path, test_names))
        assignment[names.isin(test_names).to_numpy()] = 2
    if train_val_list is not None:
        train_path = root / train_val_list
        train_names = set(_read_list(train_path, "train_val"))
        lists.append((train_path, train_names))
        both = sorted(train_names & test_names)
        if both:
            raise ValueError(
                f"{len(both)} image(s) are in both {train_val_list!r} and {test_list!r}, e.g. {first_items(both)}"
            )
        assignment[names.isin(train_names).to_numpy()] = 0
    else:
        assignment[assignment < 0] = 0
    known = set(names)
    for path, listed in lists:
        unlisted = sorted(listed - known)
        if unlisted:
            raise ValueError(
                f"{len(unlisted)} image(s) of {str(path)!r} are not in {csv_name}, e.g. {first_items(unlisted)}"
            )
    dropped = assignment < 0
    if dropped.any():
        warnings.warn(
            f"{int(dropped.sum())} image(s) of {csv_name} are in neither split list and are left out, e.g. "
            f"{first_items(names[dropped])}",
            UserWarning,
            stacklevel=2,
        )
        keep = ~dropped
        frame, labels, assignment = frame[keep].reset_index(drop=True), labels[keep], assignment[keep]
        names = frame["Image Index"]
    if len(frame) == 0:
        raise ValueError(f"no image of {str(csv_path)!r} is in the split lists")

    patients = frame["Patient ID"]
    train_val = assignment == 0
    assignment[train_val] = patient_split(patients[train_val].tolist(), val_fraction, 0.0, seed)
    if test_list is not None:
        shared = sorted(set(patients[train_val]) & set(patients[assignment == 2]))
        if shared:
            warnings.warn(
                f"{len(shared)} patient(s) have images in both the train_val and the test list, e.g. "
                f"{first_items(shared)}: the test split is not patient-disjoint",
                UserWarning,
                stacklevel=2,
            )

    folders = _image_folders(root, image_dirs)
    where = _scan_images(folders)
    folder = names.map(where)
    absent = folder.isna().to_numpy()
    if check_files and absent.any():
        raise FileNotFoundError(
            f"{int(absent.sum())} of {len(names)} images listed in {str(csv_path)!r} have no file in "
            f"{[str(f) for f in folders] or image_dirs}, e.g. {first_items(names[absent])}: complete the "
            "download (and extract every images_*.tar.gz), or fix image_dirs"
        )
    fallback = str(folders[0] if folders else root / "images")
    paths = folder.fillna(fallback) + os.sep + names

    table = pa.table(
        {
            "path": pa.array(paths.tolist(), pa.string()),
            "labels": labels_array(labels),
            "patient_id": pa.array(patients.tolist(), pa.string()),
            "image_id": pa.array(names.tolist(), pa.string()),
            "view": pa.array(frame["View Position"].tolist(), pa.string()),
        }
    )
    fingerprint = "|".join(
        map(
            str,
            (
                "nih_chestxray14",
                file_fingerprint(csv_path),
                *(file_fingerprint(path) for path, _ in lists),
                train_val_list,
                test_list,
                folders,
                label_names,
                val_fraction,
                seed,
            ),
        )
    )
    return make_dataset_dict(
        table,
        cxr_features(len(label_names)),
        assignment,
        {
            "train": 1.0 - val_fraction,
            "validation": val_fraction,
            "test": 1.0 if test_list is not None else 0.0,
        },
        hashlib.sha256(fingerprint.encode()).hexdigest(),
        description=f"NIH ChestX-ray14 from {root}; labels: {label_names}",
    )


BUILDER = Builder(name="nih_chestxray14", load=load_nih_chestxray14, path_args=("root",))

__all__ = ["BUILDER", "NIH_LABELS", "load_nih_chestxray14", "parse_finding_labels"]
