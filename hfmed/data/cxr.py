"""Builders `nih_chestxray14` and `chexpert`: multi-label chest X-ray datasets as `DatasetDict`s.

NIH ChestX-ray14 (the NIH Box download, or the synthetic twin of `hfmed.data.synthetic_cxr`):

    root/Data_Entry_2017.csv      Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,...
    root/train_val_list.txt       one image name per line (the official, patient-wise split)
    root/test_list.txt
    root/images/00000001_000.png  or the 12 extracted archives root/images_001/images/ ... images_012/images/

`Finding Labels` is `|`-separated (`Cardiomegaly|Effusion`); `No Finding` gives an all-zero vector.

CheXpert (Stanford; `CheXpert-v1.0-small` or the full-resolution `CheXpert-v1.0`):

    <parent>/CheXpert-v1.0-small/train.csv   Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,...,Support Devices
    <parent>/CheXpert-v1.0-small/valid.csv
    <parent>/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg

`Path` is relative to `<parent>`; pass either `<parent>` or the CheXpert folder itself as `root`. Label
values are 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned, read as 0).

Uncertain-label contract (`uncertain="ignore"`): the `labels` vector keeps -1 for uncertain findings, and the
model masks entries equal to -1 out of its loss (and metrics must skip them). With "ones" (U-Ones) or
"zeros" (U-Zeros) every entry is 0 or 1.

Both builders give the columns `path` (absolute), `labels` (float32, one per `label_names`), `patient_id`
(str), `image_id` (NIH: the image name; CheXpert: the CSV's `Path`) and `view` (NIH: `PA` / `AP`; CheXpert:
the `AP/PA` column, or `Lateral` where it is blank). No pixel is read.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import DatasetDict, Features, Value

from hfmed.models.lt_vit.configuration_lt_vit import CHEXPERT_LABELS as _MODEL_CHEXPERT_LABELS
from hfmed.models.lt_vit.configuration_lt_vit import NIH_LABELS as _MODEL_NIH_LABELS

from .rsna import (
    _file_fingerprint,
    _first,
    check_fractions,
    check_label_names,
    label_feature,
    labels_array,
    make_dataset_dict,
    patient_split,
)

# The label sets are the model's: one definition, which the data layer reads (dependencies point inward).
NIH_LABELS = list(_MODEL_NIH_LABELS)
"""The 14 findings of NIH ChestX-ray14, in the order of the paper (Wang et al., 2017)."""

CHEXPERT_LABELS = list(_MODEL_CHEXPERT_LABELS)
"""The 5 CheXpert competition findings (Irvin et al., 2019)."""

CHEXPERT_OBSERVATIONS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
"""The 14 label columns of CheXpert's train.csv / valid.csv, in file order."""

NO_FINDING = "No Finding"
UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")
_NIH_COLUMNS = ["Image Index", "Finding Labels", "Patient ID", "View Position"]
_CHEXPERT_COLUMNS = ["Path", "Frontal/Lateral", "AP/PA"]
_PATIENT_PATTERN = r"(patient\d+)"

_FEATURES = Features(
    {
        "path": Value("string"),
        "labels": None,  # set per call (its length is len(label_names))
        "patient_id": Value("string"),
        "image_id": Value("string"),
        "view": Value("string"),
    }
)


def _features(num_labels: int) -> Features:
    features = Features(dict(_FEATURES))
    features["labels"] = label_feature(num_labels)
    return features


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    # Everything as text: ids like "00000001" stay as written, blanks stay "".
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{str(path)!r} could not be read as the {what} CSV: {' '.join(str(err).split())}"
        ) from err


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path, what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{str(path)!r} is not a {what} CSV: it has no column(s) {missing}; its columns are "
            f"{list(frame.columns)}"
        )
    if frame.empty:
        raise ValueError(f"{str(path)!r} has no data rows")


def _blank_rows(values: pd.Series, column: str, path: Path) -> None:
    blank = np.flatnonzero((values == "").to_numpy())
    if len(blank):
        raise ValueError(f"{str(path)!r}: column {column!r} is empty on data row(s) {_first(blank + 1)}")


# ---------------------------------------------------------------------------------------------------
# NIH ChestX-ray14
# ---------------------------------------------------------------------------------------------------


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
            f"{_first(rows + 1)}; known: {NIH_LABELS} and {NO_FINDING!r}"
        )
    is_none = exploded == NO_FINDING
    per_row = exploded.groupby(level=0).size()
    mixed = np.unique(exploded.index[is_none.to_numpy()])
    mixed = mixed[per_row.loc[mixed].to_numpy() > 1]
    if len(mixed):
        raise ValueError(
            f"{source}: {NO_FINDING!r} together with findings on {len(mixed)} row(s), e.g. "
            f"{_first(series.iloc[mixed].tolist())}"
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
    frame = _read_csv(csv_path, "NIH ChestX-ray14")
    _require_columns(frame, _NIH_COLUMNS, csv_path, "NIH ChestX-ray14 (Data_Entry_2017)")
    frame = frame[_NIH_COLUMNS].apply(lambda column: column.str.strip())
    for column in ("Image Index", "Patient ID"):
        _blank_rows(frame[column], column, csv_path)
    duplicated = frame["Image Index"].duplicated()
    if duplicated.any():
        raise ValueError(
            f"{str(csv_path)!r} lists {int(duplicated.sum())} image(s) more than once, e.g. "
            f"{_first(frame.loc[duplicated, 'Image Index'].unique())}"
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
                f"{len(both)} image(s) are in both {train_val_list!r} and {test_list!r}, e.g. {_first(both)}"
            )
        assignment[names.isin(train_names).to_numpy()] = 0
    else:
        assignment[assignment < 0] = 0
    known = set(names)
    for path, listed in lists:
        unlisted = sorted(listed - known)
        if unlisted:
            raise ValueError(
                f"{len(unlisted)} image(s) of {str(path)!r} are not in {csv_name}, e.g. {_first(unlisted)}"
            )
    dropped = assignment < 0
    if dropped.any():
        warnings.warn(
            f"{int(dropped.sum())} image(s) of {csv_name} are in neither split list and are left out, e.g. "
            f"{_first(names[dropped])}",
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
                f"{_first(shared)}: the test split is not patient-disjoint",
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
            f"{[str(f) for f in folders] or image_dirs}, e.g. {_first(names[absent])}: complete the "
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
                _file_fingerprint(csv_path),
                *(_file_fingerprint(path) for path, _ in lists),
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
        _features(len(label_names)),
        assignment,
        {
            "train": 1.0 - val_fraction,
            "validation": val_fraction,
            "test": 1.0 if test_list is not None else 0.0,
        },
        hashlib.sha256(fingerprint.encode()).hexdigest(),
        description=f"NIH ChestX-ray14 from {root}; labels: {label_names}",
    )


# ---------------------------------------------------------------------------------------------------
# CheXpert
# ---------------------------------------------------------------------------------------------------


def _chexpert_csv_folder(root: Path, train_csv: str) -> Path:
    """The folder holding `train_csv`: `root` itself, else its CheXpert-v1.0* subfolder."""
    if (root / train_csv).is_file():
        return root
    for candidate in sorted(root.glob("CheXpert-v1.0*")):
        if (candidate / train_csv).is_file():
            return candidate
    raise FileNotFoundError(
        f"CheXpert {train_csv!r} not found in {str(root)!r} nor in a CheXpert-v1.0*/ folder inside it: pass "
        "the CheXpert-v1.0-small folder or the folder that contains it"
    )


def _path_bases(relative: pd.Series, root: Path, csv_folder: Path) -> pd.Series:
    """The folder each relative `Path` resolves against, decided once per first path component.

    `Path` starts with the CheXpert folder's name (`CheXpert-v1.0-small/train/...`), so it resolves against
    the folder that contains the CheXpert folder: `root` when `root` is that parent, `root.parent` when `root`
    is the CheXpert folder itself.
    """
    top = relative.str.split("/", n=1).str[0]
    bases = {}
    for component in top.unique():
        candidates = [root, root.parent, csv_folder, csv_folder.parent]
        chosen = next((c for c in candidates if (c / component).is_dir()), None)
        if chosen is None:  # nothing on disk to go by (check_files=False): go by the names
            chosen = root.parent if root.name == component else root
        bases[component] = str(chosen)
    return top.map(bases)


def _chexpert_values(frame: pd.DataFrame, label_names: list[str], path: Path, uncertain: str) -> np.ndarray:
    matrix = np.zeros((len(frame), len(label_names)), dtype=np.float32)
    for j, name in enumerate(label_names):
        text = frame[name].str.strip()
        values = np.array(pd.to_numeric(text.where(text != "", "0"), errors="coerce"), dtype=np.float64)
        bad = np.flatnonzero(~np.isin(values, (-1.0, 0.0, 1.0)))
        if len(bad):
            raise ValueError(
                f"{str(path)!r}: column {name!r} must hold 1, 0, -1 or blank, found {text.iloc[bad[0]]!r} on "
                f"data row {bad[0] + 1} ({len(bad)} such row(s))"
            )
        if uncertain == "ones":
            values[values == -1.0] = 1.0
        elif uncertain == "zeros":
            values[values == -1.0] = 0.0
        matrix[:, j] = values
    return matrix


def _read_chexpert_csv(
    path: Path, root: Path, csv_folder: Path, label_names: list[str], uncertain: str, frontal_only: bool,
    check_files: bool,
) -> pd.DataFrame:  # fmt: skip
    if not path.is_file():
        raise FileNotFoundError(f"CheXpert CSV not found at {str(path)!r}")
    frame = _read_csv(path, "CheXpert")
    _require_columns(frame, [*_CHEXPERT_COLUMNS, *label_names], path, "CheXpert")
    relative = frame["Path"].str.strip()
    _blank_rows(relative, "Path", path)
    patient = relative.str.extract(_PATIENT_PATTERN, expand=False)
    no_patient = np.flatnonzero(patient.isna().to_numpy())
    if len(no_patient):
        raise ValueError(
            f"{str(path)!r}: no patient id (patientNNNNN) in the Path of {len(no_patient)} row(s), e.g. "
            f"{_first(relative.iloc[no_patient])}"
        )
    side = frame["Frontal/Lateral"].str.strip()
    view = frame["AP/PA"].str.strip()
    out = pd.DataFrame(
        {
            "image_id": relative,
            "patient_id": patient,
            "view": view.where(view != "", side),
        }
    )
    labels = _chexpert_values(frame, label_names, path, uncertain)
    if frontal_only:
        keep = (side.str.lower() == "frontal").to_numpy()
        out, labels = out[keep].reset_index(drop=True), labels[keep]
    out["path"] = (_path_bases(out["image_id"], root, csv_folder) + "/" + out["image_id"]).map(
        os.path.normpath
    )
    out["labels"] = list(labels)
    if check_files:
        absent = [p for p in out["path"] if not os.path.isfile(p)]
        if absent:
            raise FileNotFoundError(
                f"{len(absent)} of {len(out)} images listed in {str(path)!r} do not exist, e.g. {_first(absent)} "
                f"(Path resolves against the folder that contains the CheXpert folder)"
            )
    return out


def load_chexpert(
    root: str | os.PathLike,
    label_names: Sequence[str] = CHEXPERT_LABELS,
    train_csv: str = "train.csv",
    valid_csv: str | None = "valid.csv",
    uncertain: str = "ones",
    frontal_only: bool = True,
    val_fraction: float = 0.0,
    seed: int = 0,
    check_files: bool = True,
) -> DatasetDict:
    """Builder `chexpert`: CheXpert with uncertain labels mapped by `uncertain`.

    Args:
        root: the CheXpert folder (`CheXpert-v1.0-small/`, holding the CSVs) or the folder containing it.
        label_names: CSV label columns to keep, in the order of the `labels` vectors (default: the 5
            competition findings; any of `CHEXPERT_OBSERVATIONS`).
        train_csv, valid_csv: the CSVs, in the CheXpert folder. `valid_csv=None`: no official validation.
        uncertain: what -1 (uncertain) becomes: "ones" (U-Ones) -> 1, "zeros" (U-Zeros) -> 0, "ignore" -> -1
            kept in `labels`, for the model to mask out of its loss. Blank (not mentioned) is always 0.
        frontal_only: keep frontal views only (`Frontal/Lateral == Frontal`).
        val_fraction: 0 (default): `validation` is `valid_csv` (the radiologist-labelled official set). > 0:
            that share of train.csv's patients becomes `validation` (see `patient_split`) and `valid_csv`
            becomes `test`.
        seed: seeds the patient hash.
        check_files: check that every image exists (one stat per image: slower on 200k images).

    Returns:
        `DatasetDict` with `train`, `validation` (and `test` when `val_fraction > 0` and `valid_csv` is set);
        columns `path`, `labels`, `patient_id` (`patientNNNNN` from the path), `image_id` (the CSV's `Path`),
        `view` (AP / PA / LL / RL, or `Lateral` when the AP/PA column is blank).
    """
    label_names = check_label_names(label_names)
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {list(UNCERTAIN_POLICIES)}, got {uncertain!r}")
    val_fraction, _ = check_fractions(val_fraction, 0.0)
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"CheXpert root {str(root)!r} is not a folder")
    csv_folder = _chexpert_csv_folder(root, train_csv)
    read = {
        "label_names": label_names,
        "uncertain": uncertain,
        "frontal_only": frontal_only,
        "check_files": check_files,
    }
    train = _read_chexpert_csv(csv_folder / train_csv, root, csv_folder, **read)
    assignment = patient_split(train["patient_id"].tolist(), val_fraction, 0.0, seed)
    parts, codes = [train], [assignment]
    requested = {"train": 1.0 - val_fraction, "validation": val_fraction}
    csv_paths = [csv_folder / train_csv]
    if valid_csv is not None:
        valid = _read_chexpert_csv(csv_folder / valid_csv, root, csv_folder, **read)
        code = 2 if val_fraction > 0 else 1
        parts.append(valid)
        codes.append(np.full(len(valid), code, dtype=np.int8))
        requested["test" if code == 2 else "validation"] = 1.0
        csv_paths.append(csv_folder / valid_csv)
        if len(valid):
            shared = sorted(set(valid["patient_id"]) & set(train["patient_id"]))
            if shared:
                warnings.warn(
                    f"{len(shared)} patient(s) are in both {train_csv!r} and {valid_csv!r}, e.g. {_first(shared)}",
                    UserWarning,
                    stacklevel=2,
                )
    frame = pd.concat(parts, ignore_index=True)
    matrix = (
        np.stack(frame["labels"].to_list()) if len(frame) else np.zeros((0, len(label_names)), np.float32)
    )
    table = pa.table(
        {
            "path": pa.array(frame["path"].tolist(), pa.string()),
            "labels": labels_array(matrix.reshape(len(frame), len(label_names))),
            "patient_id": pa.array(frame["patient_id"].tolist(), pa.string()),
            "image_id": pa.array(frame["image_id"].tolist(), pa.string()),
            "view": pa.array(frame["view"].tolist(), pa.string()),
        }
    )
    fingerprint = "|".join(
        map(
            str,
            (
                "chexpert",
                *(_file_fingerprint(p) for p in csv_paths),
                root,
                label_names,
                uncertain,
                frontal_only,
                val_fraction,
                seed,
            ),
        )
    )
    return make_dataset_dict(
        table,
        _features(len(label_names)),
        np.concatenate(codes),
        requested,
        hashlib.sha256(fingerprint.encode()).hexdigest(),
        description=f"CheXpert from {csv_folder}; labels: {label_names}; uncertain: {uncertain}",
    )


def chexpert_patient_id(path: str) -> str:
    """`patientNNNNN` from a CheXpert `Path` (ValueError when there is none)."""
    match = re.search(_PATIENT_PATTERN, path)
    if match is None:
        raise ValueError(f"no patient id (patientNNNNN) in {path!r}")
    return match.group(1)


__all__ = [
    "CHEXPERT_LABELS",
    "CHEXPERT_OBSERVATIONS",
    "NIH_LABELS",
    "chexpert_patient_id",
    "load_chexpert",
    "load_nih_chestxray14",
    "parse_finding_labels",
]
