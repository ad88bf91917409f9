"""Builder `image_folder`: images sorted into one sub-folder per class, for single-label classification.

    root/<class>/<image>                     one folder per class: validation (and test) carved from it
    root/<split>/<class>/<image>             or the dataset's own splits: train, validation (also val, valid,
                                             dev), test, test_ood

Class names are the sub-folder names, sorted (so the class index of a folder never depends on the file
system's listing order), unless `label_names` gives them (then that order, and every folder must be one of
them). Any file the image processor decodes counts as an image (`EXTENSIONS`: PNG, JPEG, BMP, TIFF, DICOM);
other files and hidden entries (".name") are skipped. `ood_root` (a folder of class sub-folders from a shifted
source: another scanner, site or stain) becomes the `test_ood` split.

Columns: `path` (absolute), `labels` (a ClassLabel: one int64 class index per row) and `patient_id`: the part of
the file name that `patient_pattern` (a regular expression, its first group) captures, so all images of a
patient share a split when the split is carved here; without it every image is its own patient.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from .builder import Builder
from .single_label import OOD_SPLIT, dataset_dict_from_rows
from .splits import check_fractions, check_label_names, first_items, patient_split

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
SPLIT_FOLDERS = {
    "train": "train", "training": "train",
    "validation": "validation", "val": "validation", "valid": "validation", "dev": "validation",
    "test": "test",
    OOD_SPLIT: OOD_SPLIT,
}  # fmt: skip
"""Folder name (lower case) -> split, for a root laid out by split."""


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in extensions
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip


def _class_folders(folder: Path, extensions, what: str) -> dict[str, list[Path]]:
    """{class name: images} of a folder holding one sub-folder per class."""
    classes = {d.name: _images(d, extensions) for d in _visible_dirs(folder)}
    if not classes:
        raise ValueError(
            f"{what} {str(folder)!r} has no class sub-folders: lay it out as <root>/<class>/<image> (one folder per "
            "class) or <root>/<split>/<class>/<image>"
        )
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise ValueError(
            f"class folder(s) {first_items(empty)} in {str(folder)!r} hold no image ({', '.join(EXTENSIONS)}): "
            "add images or remove the folder"
        )
    return classes


def _patient_ids(paths: list[Path], root: Path, pattern: re.Pattern | None) -> list[str]:
    if pattern is None:
        return [p.relative_to(root).as_posix() for p in paths]
    ids = []
    for path in paths:
        match = pattern.search(path.name)
        if match is None:
            raise ValueError(
                f"patient_pattern {pattern.pattern!r} does not match the file name {path.name!r} ({str(path)!r}): "
                "fix the pattern (its first group is the patient id) or pass patient_pattern=None"
            )
        ids.append(match.group(1) if match.groups() else match.group(0))
    return ids


def _class_names(found, label_names) -> list[str]:
    names = sorted(found) if label_names is None else check_label_names(label_names)
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ValueError(
            f"class folder(s) {first_items(unknown)} are not in label_names {names}: add them to label_names "
            "(or rename the folders)"
        )
    return names


def _split_folders(root: Path, folders: dict[str, Path], extensions) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: images}} of a root laid out as <root>/<split>/<class>/<image>."""
    splits: dict[str, dict[str, list[Path]]] = {}
    for name in sorted(folders):
        split = SPLIT_FOLDERS[name]
        if split in splits:
            raise ValueError(f"{str(root)!r} has two folders for the {split} split: keep one")
        splits[split] = _class_folders(folders[name], extensions, f"the {split} folder")
    missing = [s for s in ("train", "validation") if s not in splits]
    if missing:
        raise ValueError(
            f"{str(root)!r} is laid out by split but has no {missing[0]} folder: add {root / missing[0]} "
            "(or put the class folders directly under root to carve the splits)"
        )
    return splits


def _carve(root: Path, classes, val_fraction, test_fraction, seed, pattern) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: images}} carved patient-wise (`patient_split`) from <root>/<class>/<image>."""
    flat = [(path, name) for name, paths in classes.items() for path in paths]
    assignment = patient_split(_patient_ids([p for p, _ in flat], root, pattern), val_fraction, test_fraction, seed)
    wanted = {"train": 0, "validation": 1, **({"test": 2} if test_fraction > 0 else {})}
    splits = {}
    for split, code in wanted.items():
        chosen = np.flatnonzero(assignment == code)
        if not len(chosen):
            raise ValueError(
                f"the {split} split carved from {str(root)!r} is empty ({len(flat)} images, fractions "
                f"val={val_fraction}, test={test_fraction}): add images or change the fractions or the seed"
            )
        per_class: dict[str, list[Path]] = {}
        for i in chosen:
            per_class.setdefault(flat[i][1], []).append(flat[i][0])
        splits[split] = per_class
    return splits


def load_image_folder(
    root: str | os.PathLike,
    label_names: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    ood_root: str | os.PathLike | None = None,
    patient_pattern: str | None = None,
    extensions: Sequence[str] = EXTENSIONS,
) -> DatasetDict:
    """Builder `image_folder`: one sub-folder per class (see the module docstring for the two layouts).

    Args:
        root: the dataset folder.
        label_names: the classes in label order; default: the class folder names, sorted.
        val_fraction, test_fraction, seed: used only when `root` has no split folders: the share of patients
            (images, without `patient_pattern`) in validation / test (`hfmed.data.splits.patient_split`).
        ood_root: a folder of class sub-folders from a shifted source, returned as `test_ood`.
        patient_pattern: a regular expression searched in each file name; its first group (or the whole match)
            is the patient id.
        extensions: file suffixes counted as images.

    Returns:
        `DatasetDict` with `train`, `validation` (and `test`, `test_ood` when present or asked for); columns
        `path`, `labels` (ClassLabel), `patient_id`.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist: pass the folder that holds the classes")
    extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    pattern = re.compile(patient_pattern) if patient_pattern else None
    subfolders = {d.name.lower(): d for d in _visible_dirs(root)}
    by_split = [name for name in subfolders if name in SPLIT_FOLDERS]
    if by_split and len(by_split) != len(subfolders):
        raise ValueError(
            f"{str(root)!r} mixes split folders {sorted(by_split)} with other folders "
            f"{sorted(set(subfolders) - set(by_split))}: use either <root>/<split>/<class> or <root>/<class>"
        )

    if by_split:
        splits = _split_folders(root, {name: subfolders[name] for name in by_split}, extensions)
    else:
        val_fraction, test_fraction = check_fractions(val_fraction, test_fraction)
        classes = _class_folders(root, extensions, "image folder")
        _class_names(classes, label_names)  # before carving: a wrong name is the error to report
        splits = _carve(root, classes, val_fraction, test_fraction, seed, pattern)
    if ood_root is not None:
        ood_root = Path(ood_root).expanduser().absolute()
        if not ood_root.is_dir():
            raise FileNotFoundError(f"ood_root {str(ood_root)!r} does not exist: pass a folder of class sub-folders")
        if OOD_SPLIT in splits:
            raise ValueError(f"{str(root)!r} already has a {OOD_SPLIT} folder: drop ood_root or that folder")
        splits[OOD_SPLIT] = _class_folders(ood_root, extensions, "ood_root")

    names = _class_names({name for per_class in splits.values() for name in per_class}, label_names)
    index = {name: i for i, name in enumerate(names)}
    rows = {}
    for split, per_class in splits.items():
        pairs = sorted((path, name) for name, paths in per_class.items() for path in paths)
        paths = [p for p, _ in pairs]
        base = ood_root if split == OOD_SPLIT else root
        rows[split] = (
            [str(p) for p in paths],
            [index[name] for _, name in pairs],
            [f"{OOD_SPLIT}/{i}" for i in _patient_ids(paths, base, pattern)] if split == OOD_SPLIT
            else _patient_ids(paths, base, pattern),
        )
    listing = hashlib.sha256("\n".join(
        f"{split}:{path}:{os.stat(path).st_mtime_ns}" for split, (paths, _, _) in rows.items() for path in paths
    ).encode()).hexdigest()  # fmt: skip
    fingerprint = f"image_folder|{listing}|{names}|{val_fraction}|{test_fraction}|{seed}|{patient_pattern}"
    description = f"images in class folders under {root}" + (f", test_ood from {ood_root}" if ood_root else "")
    return dataset_dict_from_rows(rows, names, fingerprint, description)


BUILDER = Builder(name="image_folder", load=load_image_folder, path_args=("root",))

__all__ = ["BUILDER", "EXTENSIONS", "load_image_folder"]
