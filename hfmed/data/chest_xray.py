"""What the chest X-ray builders (`nih_chestxray14`, `chexpert`) share: the label sets, the columns they give,
and strict CSV reading.

The chest X-ray builders (`nih_chestxray14`, `chexpert`) give the columns `path` (absolute), `labels`
(float32, one per `label_names`), `patient_id` (str), `image_id` (NIH: the image name; CheXpert: the CSV's
`Path`) and `view` (NIH: `PA` / `AP`; CheXpert: the `AP/PA` column, or `Lateral` where it is blank). No pixel
is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Features, Value

from hfmed.models.lt_vit.configuration_lt_vit import CHEXPERT_LABELS as _MODEL_CHEXPERT_LABELS
from hfmed.models.lt_vit.configuration_lt_vit import NIH_LABELS as _MODEL_NIH_LABELS

from .splits import first_items, label_feature

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

_FEATURES = Features(
    {
        "path": Value("string"),
        "labels": None,  # set per call (its length is len(label_names))
        "patient_id": Value("string"),
        "image_id": Value("string"),
        "view": Value("string"),
    }
)


def cxr_features(num_labels: int) -> Features:
    features = Features(dict(_FEATURES))
    features["labels"] = label_feature(num_labels)
    return features


def read_csv_text(path: Path, what: str) -> pd.DataFrame:
    # Everything as text: ids like "00000001" stay as written, blanks stay "".
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{str(path)!r} could not be read as the {what} CSV: {' '.join(str(err).split())}"
        ) from err


def require_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path, what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{str(path)!r} is not a {what} CSV: it has no column(s) {missing}; its columns are "
            f"{list(frame.columns)}"
        )
    if frame.empty:
        raise ValueError(f"{str(path)!r} has no data rows")


def blank_rows(values: pd.Series, column: str, path: Path) -> None:
    blank = np.flatnonzero((values == "").to_numpy())
    if len(blank):
        raise ValueError(f"{str(path)!r}: column {column!r} is empty on data row(s) {first_items(blank + 1)}")


__all__ = [
    "CHEXPERT_LABELS",
    "CHEXPERT_OBSERVATIONS",
    "NIH_LABELS",
    "NO_FINDING",
    "UNCERTAIN_POLICIES",
    "blank_rows",
    "cxr_features",
    "read_csv_text",
    "require_columns",
]
