"""Datasets for training: builders returning `datasets.DatasetDict`s of file paths and labels.

    from hfmed.data import build_dataset
    data = build_dataset("synthetic_ct", num_patients=60, slices_per_patient=8)   # or "rsna_ich", ...
    data = build_dataset("synthetic_cxr")   # multi-label chest X-ray: or "nih_chestxray14", "chexpert"
    data = build_dataset("synthetic_brain", target="age")   # 3-D brain MRI (NIfTI): or "nifti_csv"
    data = build_dataset("medmnist", npz_path="pathmnist_224.npz")   # single-label: or "image_folder"
    data = build_dataset("synthetic_lesion")   # segmentation (Kvasir-SEG layout): or "seg_folder", "hub_segmentation"
    data = build_dataset("synthetic_shift")   # one class per image; test and test_ood (scanner shift) splits

Every builder returns `train` and `validation` splits (and `test` when asked for) with the columns `path`
(absolute file path; the `hub` builder has an `image` column instead), `labels` (float32, one value per
label in the builder's `label_names` order, default `RSNA_LABELS`) and `patient_id` (str). The MRI builders
(`nifti_csv`, `synthetic_brain`) give `path`, `image` (a `datasets.Nifti` of the same file, decoded lazily),
`labels` (float32, length 1: age in years, or AD = 1 / CN = 0) and `subject_id` instead. The segmentation
builders (`seg_folder`, `synthetic_lesion`) give `path`, `mask_path`, `image_id` and `group_id` (the unit the
split keeps together); `hub_segmentation` gives `image`, `mask` and `group_id`. The single-label builders
(`medmnist`, `image_folder`, `synthetic_shift`, and `hub` with `single_label=True`) give `labels` as one int64
class index per row (a ClassLabel where the builder knows the names), and a `test_ood` split when a second,
shifted source is given. Pixels are never stored: `hfmed.data.transforms.make_transform` decodes them lazily, in DataLoader workers.

Each builder is the module named by its builder key (`hfmed/data/<builder>.py`), which declares itself as
`BUILDER = Builder(name, load, path_args=...)`: the recipe checks the declared path arguments before a run.
The helpers builders share (patient-wise split, label columns, fingerprints) are public in `splits.py`.

Not imported by `import hfmed` (it needs the `train` extra: datasets, pandas).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from datasets import DatasetDict

from . import (
    chexpert,
    hub,
    hub_segmentation,
    image_csv,
    image_folder,
    medmnist,
    nifti_csv,
    nih_chestxray14,
    rsna_ich,
    seg_folder,
    synthetic_brain,
    synthetic_ct,
    synthetic_cxr,
    synthetic_lesion,
    synthetic_shift,
)
from .builder import Builder
from .chest_xray import CHEXPERT_LABELS, NIH_LABELS
from .chexpert import load_chexpert
from .hub import load_hub_dataset
from .hub_segmentation import load_hub_segmentation
from .image_csv import load_image_csv
from .image_folder import load_image_folder
from .medmnist import MEDMNIST_2D, load_medmnist
from .nifti_csv import ADNI_DIAGNOSIS_MAP, load_nifti_csv
from .nih_chestxray14 import load_nih_chestxray14
from .rsna_ich import load_rsna_ich
from .seg_folder import load_seg_folder
from .splits import patient_split
from .synthetic_brain import (
    ensure_synthetic_brain,
    load_synthetic_brain,
    synthetic_brain_volume,
    write_synthetic_brain,
)
from .synthetic_ct import ensure_synthetic_rsna, load_synthetic_ct, synthetic_ct_slice, write_synthetic_rsna
from .synthetic_cxr import (
    LABEL_REGIONS,
    SYNTHETIC_CXR_LABELS,
    load_synthetic_cxr,
    synthetic_cxr_image,
    write_synthetic_chexpert,
    write_synthetic_nih,
)
from .synthetic_lesion import load_synthetic_lesion, synthetic_lesion_image, write_synthetic_lesion
from .transforms import balanced_sampler, collate, make_transform, pos_weight_from_data

# Each builder module declares itself (`BUILDER`, named by its builder key).
BUILDER_SPECS: dict[str, Builder] = {
    module.BUILDER.name: module.BUILDER
    for module in (
        synthetic_ct,
        rsna_ich,
        image_csv,
        image_folder,
        medmnist,
        hub,
        synthetic_cxr,
        nih_chestxray14,
        chexpert,
        nifti_csv,
        synthetic_brain,
        synthetic_shift,
        seg_folder,
        hub_segmentation,
        synthetic_lesion,
    )
}
BUILDERS: dict[str, Callable[..., DatasetDict]] = {name: spec.load for name, spec in BUILDER_SPECS.items()}


def builder_spec(builder: str) -> Builder:
    """The `Builder` declaration named `builder` (ValueError listing the known ones)."""
    if builder not in BUILDER_SPECS:
        raise ValueError(f"unknown dataset builder {builder!r}: choose one of {sorted(BUILDER_SPECS)}")
    return BUILDER_SPECS[builder]


def check_builder_args(builder: str, args: dict) -> None:
    """Raise before any data is read when `args` do not fit the builder's signature.

    Raises:
        ValueError: unknown builder name (the message lists the known ones).
        TypeError: an argument the builder does not take, or a required one missing (the message lists the
            builder's parameters).
    """
    signature = inspect.signature(builder_spec(builder).load)
    try:
        signature.bind(**args)
    except TypeError as err:
        raise TypeError(f"dataset builder {builder!r}: {err}; its parameters are {signature}") from None


def class_names(data) -> list[str] | None:
    """The class names a single-label dataset carries: the names of the training split's `labels` ClassLabel
    (`medmnist`, `image_folder`, `synthetic_shift`, `hub` with `single_label=True`); `None` where its labels are
    not a ClassLabel (multi-label vectors, regression targets, masks)."""
    from datasets import ClassLabel

    split = data["train"] if "train" in data else next(iter(data.values()), None)
    feature = (getattr(split, "features", None) or {}).get("labels")
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def build_dataset(builder: str, **kwargs) -> DatasetDict:
    """Calls the builder named `builder` (a key of `BUILDERS`) with `kwargs` (e.g. a recipe's `data.args`).

    Raises:
        ValueError: unknown builder name (the message lists the known ones).
        TypeError: an argument the builder does not take, or a required one missing (the message lists the
            builder's parameters).
    """
    check_builder_args(builder, kwargs)
    return BUILDERS[builder](**kwargs)


__all__ = [
    "ADNI_DIAGNOSIS_MAP",
    "BUILDERS",
    "BUILDER_SPECS",
    "Builder",
    "builder_spec",
    "check_builder_args",
    "class_names",
    "CHEXPERT_LABELS",
    "LABEL_REGIONS",
    "MEDMNIST_2D",
    "NIH_LABELS",
    "SYNTHETIC_CXR_LABELS",
    "balanced_sampler",
    "build_dataset",
    "collate",
    "ensure_synthetic_brain",
    "ensure_synthetic_rsna",
    "load_hub_dataset",
    "load_hub_segmentation",
    "load_chexpert",
    "load_image_csv",
    "load_image_folder",
    "load_medmnist",
    "load_nifti_csv",
    "load_nih_chestxray14",
    "load_rsna_ich",
    "load_seg_folder",
    "load_synthetic_brain",
    "load_synthetic_ct",
    "load_synthetic_cxr",
    "load_synthetic_lesion",
    "make_transform",
    "patient_split",
    "pos_weight_from_data",
    "synthetic_brain_volume",
    "synthetic_ct_slice",
    "synthetic_cxr_image",
    "synthetic_lesion_image",
    "write_synthetic_brain",
    "write_synthetic_chexpert",
    "write_synthetic_lesion",
    "write_synthetic_nih",
    "write_synthetic_rsna",
]
