"""Builder `chexpert`: CheXpert (Stanford) as a multi-label `DatasetDict`.

CheXpert (Stanford; `CheXpert-v1.0-small` or the full-resolution `CheXpert-v1.0`):

    <parent>/CheXpert-v1.0-small/train.csv   Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,...,Support Devices
    <parent>/CheXpert-v1.0-small/valid.csv
    <parent>/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg

`Path` is relative to `<parent>`; pass either `<parent>` or the CheXpert folder itself as `root`. Label
values are 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned, read as 0).

Uncertain-label contract (`uncertain="ignore"`): the `labels` vector keeps -1 for uncertain findings, and the
model masks entries equal to -1 out of its loss (and metrics must skip them). With "ones" (U-Ones) or
"zeros" (U-Zeros) every entry is 0 or 1.

The chest X-ray builders (`nih_chestxray14`, `chexpert`) give the columns `path` (absolute), `labels`
(float32, one per `label_names`), `patient_id` (str), `image_id` (NIH: the image name; CheXpert: the CSV's
`Path`) and `view` (NIH: `PA` / `AP`; CheXpert: the `AP/PA` column, or `Lateral` where it is blank). No pixel
is read.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import DatasetDict

from .builder import Builder
from .chest_xray import (
    CHEXPERT_LABELS,
    CHEXPERT_OBSERVATIONS,
    UNCERTAIN_POLICIES,
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

_CHEXPERT_COLUMNS = ["Path", "Frontal/Lateral", "AP/PA"]
_PATIENT_PATTERN = r"(patient\d+)"




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
    frame = read_csv_text(path, "CheXpert")
    require_columns(frame, [*_CHEXPERT_COLUMNS, *label_names], path, "CheXpert")
    relative = frame["Path"].str.strip()
    blank_rows(relative, "Path", path)
    patient = relative.str.extract(_PATIENT_PATTERN, expand=False)
    no_patient = np.flatnonzero(patient.isna().to_numpy())
    if len(no_patient):
        raise ValueError(
            f"{str(path)!r}: no patient id (patientNNNNN) in the Path of {len(no_patient)} row(s), e.g. "
            f"{first_items(relative.iloc[no_patient])}"
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
                f"{len(absent)} of {len(out)} images listed in {str(path)!r} do not exist, e.g. {first_items(absent)} "
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
                    f"{len(shared)} patient(s) are in both {train_csv!r} and {valid_csv!r}, e.g. {first_items(shared)}",
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
                *(file_fingerprint(p) for p in csv_paths),
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
        cxr_features(len(label_names)),
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


BUILDER = Builder(name="chexpert", load=load_chexpert, path_args=("root",))

__all__ = ["BUILDER", "CHEXPERT_LABELS", "CHEXPERT_OBSERVATIONS", "chexpert_patient_id", "load_chexpert"]
