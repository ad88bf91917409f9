"""Builder `seg_folder`: 2-D segmentation data as image + mask folders, in the published layouts.

    data = build_dataset("seg_folder", root="data/Kvasir-SEG")                 # layout found from the folder
    data = build_dataset("seg_folder", root="data/CVC-ClinicDB", layout="cvc_clinicdb")
    data = build_dataset("seg_folder", root="data/isic", layout="generic", image_dir="img", mask_dir="gt",
                         mask_suffix="_seg")

Rows are file paths only (`path`, `mask_path`, `image_id`, `group_id`; BUSI adds `category`); pixels are
decoded by the image processor in the transform. The masks of every layout below are 0/255 (JPEG ones with
intermediate values at the edges): give the processor `mask_binarize_threshold: 128` (the recipes do).
`group_id` is the unit the split keeps together: a video sequence for CVC-ClinicDB, the `groups_csv` group
(e.g. a patient) when given, else the image itself.

Layouts (facts of the public releases; `layout="auto"` recognises them by their folder names):

    kvasir_seg    Kvasir-SEG (Jha et al., MMM 2020): 1000 colonoscopy images with one polyp mask each,
                  `images/<id>.jpg` and `masks/<id>.jpg` (same name; ids such as cju0qkwl35piu0993l0dewei2),
                  plus `kavsir_bboxes.json` (ignored). No patient ids: the split is image by image. The
                  published 880 / 120 split (`train.txt`, `val.txt`: one id per line) is used when the files
                  are in the folder (`official_split=True`).
    cvc_clinicdb  CVC-ClinicDB (Bernal et al., CMIG 2015): 612 frames (384x288) from 29 colonoscopy video
                  sequences, `Original/<n>.tif` and `Ground Truth/<n>.tif`, n = 1..612 (the Kaggle copy: a
                  `PNG/` and a `TIF/` folder each holding `Original/` and `Ground Truth/` with `<n>.png` /
                  `<n>.tif`; PNG is read when both exist). Frames of a sequence show the same polyp, so the
                  split is sequence-wise (`CVC_CLINICDB_SEQUENCES`: the first and last frame of each).
    isic2018      ISIC 2018 Task 1 (lesion boundary segmentation; Codella et al. 2019, Tschandl et al. 2018):
                  `ISIC2018_Task1-2_Training_Input/ISIC_<7 digits>.jpg` (2594) with
                  `ISIC2018_Task1_Training_GroundTruth/ISIC_<7 digits>_segmentation.png`, and the same for
                  `Validation` (100) and `Test` (1000) when present: those official splits are used
                  (`official_split=True`); otherwise all images are pooled and split anew. The input
                  folders also hold ATTRIBUTION.txt / LICENSE.txt (ignored). No patient ids in Task 1.
    busi          BUSI, Breast Ultrasound Images (Al-Dhabyani et al., Data in Brief 2020): 780 PNGs from 600
                  women in `benign/` (437), `malignant/` (210), `normal/` (133), e.g. `benign (4).png` with
                  `benign (4)_mask.png` and, where the image has several lesions, `benign (4)_mask_1.png`,
                  ... Several masks of one image are merged (their union, written once as a 0/255 PNG under
                  `merged_mask_dir`); normal images have empty masks (`include_normal=False` drops them).
                  The class is kept in `category`. No patient ids: the split is image by image.
    generic       any `image_dir` / `mask_dir` pair under `root`; the mask of `<stem>.<ext>` is
                  `<stem><mask_suffix>.<any image ext>`.

Not decided by the papers, our choices: the validation / test split is hash-based (`splits.patient_split`,
stable when the folder grows), `val_fraction=0.1`; every image must have exactly one mask (BUSI: at least one),
and every mask an image, else a one-line error lists the first offenders.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import DatasetDict, Features, Value

from .builder import Builder
from .splits import check_fractions, file_fingerprint, first_items, make_dataset_dict, patient_split

LAYOUTS = ("auto", "kvasir_seg", "cvc_clinicdb", "isic2018", "busi", "generic")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")

CVC_CLINICDB_SEQUENCES: tuple[tuple[int, int], ...] = (
    (1, 25), (26, 50), (51, 67), (68, 78), (79, 103), (104, 126), (127, 151), (152, 177), (178, 199),
    (200, 205), (206, 227), (228, 252), (253, 277), (278, 297), (298, 317), (318, 342), (343, 363),
    (364, 383), (384, 408), (409, 428), (429, 447), (448, 466), (467, 478), (479, 503), (504, 528),
    (529, 546), (547, 571), (572, 591), (592, 612),
)
"""First and last frame number of each of CVC-ClinicDB's 29 video sequences (frames 1..612)."""

ISIC2018_FOLDERS = {
    "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    "validation": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
    "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
}
"""ISIC 2018 Task 1 folder names per official split: (images, masks)."""

BUSI_CATEGORIES = ("benign", "malignant", "normal")
_BUSI_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<index>\d+))?$")
_SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


def _images_in(folder: Path) -> dict[str, Path]:
    """stem -> path of the image files directly in `folder` (hidden files and other types ignored)."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file() or entry.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if entry.stem in found:
            raise ValueError(
                f"{str(folder)!r} holds two images named {entry.stem!r} ({found[entry.stem].name!r}, "
                f"{entry.name!r}): keep one of them"
            )
        found[entry.stem] = entry
    return found


def _pair(images: dict[str, Path], masks: dict[str, Path], where: str, mask_suffix: str = "") -> list:
    """(image_id, image path, mask path) for stems present in both; a one-line error for any unpaired file."""
    wanted = {stem + mask_suffix: stem for stem in images}
    lonely_images = [images[stem].name for key, stem in wanted.items() if key not in masks]
    lonely_masks = [path.name for key, path in masks.items() if key not in wanted]
    if lonely_images:
        raise ValueError(
            f"{where}: {len(lonely_images)} image(s) without a mask ({first_items(lonely_images)}): add their "
            f"masks or remove them (masks are matched by name{f' + {mask_suffix!r}' if mask_suffix else ''})"
        )
    if lonely_masks:
        raise ValueError(
            f"{where}: {len(lonely_masks)} mask(s) without an image ({first_items(lonely_masks)}): remove them "
            "or add their images"
        )
    return [(stem, images[stem], masks[stem + mask_suffix]) for stem in sorted(images)]


def _detect(root: Path) -> str:
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "kvasir_seg"
    if _cvc_folders(root) is not None:
        return "cvc_clinicdb"
    if (root / ISIC2018_FOLDERS["train"][0]).is_dir():
        return "isic2018"
    if any((root / category).is_dir() for category in BUSI_CATEGORIES[:2]):
        return "busi"
    raise ValueError(
        f"{str(root)!r} has none of the known layouts (Kvasir-SEG images/ + masks/, CVC-ClinicDB Original/ + "
        f"'Ground Truth'/, ISIC 2018 {ISIC2018_FOLDERS['train'][0]}/, BUSI benign/ + malignant/): pass "
        "layout='generic' with image_dir and mask_dir"
    )


def _cvc_folders(root: Path) -> tuple[Path, Path] | None:
    for base in (root / "PNG", root / "TIF", root):
        if (base / "Original").is_dir() and (base / "Ground Truth").is_dir():
            return base / "Original", base / "Ground Truth"
    return None


def cvc_clinicdb_sequence(frame: int) -> int:
    """The sequence (1..29) of CVC-ClinicDB frame `frame` (1..612)."""
    for sequence, (first, last) in enumerate(CVC_CLINICDB_SEQUENCES, start=1):
        if first <= frame <= last:
            return sequence
    raise ValueError(
        f"CVC-ClinicDB frames are numbered 1..612, got {frame}: this is not the CVC-ClinicDB release; use "
        "layout='generic'"
    )


def _read_list(path: Path) -> list[str]:
    return [Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()]


def _kvasir(root: Path, official_split: bool):
    rows = _pair(_images_in(root / "images"), _images_in(root / "masks"), f"{str(root)!r} (Kvasir-SEG)")
    groups = [image_id for image_id, _, _ in rows]
    lists = {name: root / f"{name}.txt" for name in ("train", "val")}
    if not (official_split and all(path.is_file() for path in lists.values())):
        return rows, groups, None
    split_of = dict.fromkeys(_read_list(lists["train"]), 0) | dict.fromkeys(_read_list(lists["val"]), 1)
    unlisted = [image_id for image_id in groups if image_id not in split_of]
    if unlisted:
        raise ValueError(
            f"{str(root)!r}: {len(unlisted)} image(s) are in neither train.txt nor val.txt "
            f"({first_items(unlisted)}): fix the lists or pass official_split=False"
        )
    return rows, groups, np.array([split_of[image_id] for image_id in groups], dtype=np.int8)


def _cvc(root: Path):
    images, masks = _cvc_folders(root)
    rows = _pair(_images_in(images), _images_in(masks), f"{str(root)!r} (CVC-ClinicDB)")
    groups = []
    for image_id, path, _ in rows:
        if not image_id.isdigit():
            raise ValueError(
                f"CVC-ClinicDB frames are named <number>.tif / .png, got {path.name!r}: use layout='generic'"
            )
        groups.append(f"sequence_{cvc_clinicdb_sequence(int(image_id)):02d}")
    return rows, groups, None


def _isic(root: Path, official_split: bool):
    rows, codes = [], []
    for split, (image_dir, mask_dir) in ISIC2018_FOLDERS.items():
        if split != "train" and not (root / image_dir).is_dir():
            continue
        if not (root / mask_dir).is_dir():
            raise ValueError(
                f"{str(root)!r} has {image_dir}/ but not {mask_dir}/ (ISIC 2018 Task 1 ground truth): download it "
                "there"
            )
        masks = {
            stem.removesuffix("_segmentation"): path
            for stem, path in _images_in(root / mask_dir).items()
        }
        found = _pair(_images_in(root / image_dir), masks, f"{str(root / image_dir)!r} (ISIC 2018)")
        rows.extend(found)
        codes.extend([_SPLIT_CODES[split]] * len(found))
    official = official_split and len(set(codes)) > 1
    return rows, [image_id for image_id, _, _ in rows], np.array(codes, dtype=np.int8) if official else None


def _busi(root: Path, include_normal: bool, merged_mask_dir: Path | None):
    rows, categories = [], []
    for category in BUSI_CATEGORIES:
        folder = root / category
        if not folder.is_dir() or (category == "normal" and not include_normal):
            continue
        images, masks = {}, {}
        for stem, path in _images_in(folder).items():
            match = _BUSI_MASK.match(stem)
            if match:
                masks.setdefault(match["stem"], []).append(path)
            else:
                images[stem] = path
        lonely_masks = sorted(set(masks) - set(images))
        lonely_images = sorted(set(images) - set(masks))
        for what, lonely in (("mask(s) without an image", lonely_masks), ("image(s) without a mask", lonely_images)):
            if lonely:
                raise ValueError(
                    f"{str(folder)!r} (BUSI): {len(lonely)} {what} ({first_items(lonely)}): BUSI names masks "
                    "'<image name>_mask.png' (and '_mask_1.png', ... for more lesions)"
                )
        for stem in sorted(images):
            paths = sorted(masks[stem], key=lambda p: p.stem)
            mask = paths[0] if len(paths) == 1 else _merge_masks(paths, category, stem, root, merged_mask_dir)
            rows.append((f"{category}/{stem}", images[stem], mask))
            categories.append(category)
    if not rows:
        raise ValueError(f"{str(root)!r} (BUSI) holds no image in {list(BUSI_CATEGORIES)}")
    return rows, [image_id for image_id, _, _ in rows], None, categories


def default_merged_mask_dir(root: Path) -> Path:
    """`$HFMED_CACHE/busi_masks/<hash of root>`, where HFMED_CACHE defaults to `~/.cache/hfmed`."""
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return Path(os.environ.get("HFMED_CACHE", "~/.cache/hfmed")).expanduser() / "busi_masks" / digest


def _merge_masks(paths: list[Path], category: str, stem: str, root: Path, folder: Path | None) -> Path:
    """The union of BUSI masks of one image, as a 0/255 PNG named by the sources' content (rewritten only when
    a source changes)."""
    from PIL import Image

    digest = hashlib.sha256("\x00".join(file_fingerprint(p) for p in paths).encode()).hexdigest()[:12]
    target = (folder or default_merged_mask_dir(root)) / category / f"{stem}_mask_union_{digest}.png"
    if target.is_file():
        return target
    union = None
    for path in paths:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"))
        if union is not None and grey.shape != union.shape:
            raise ValueError(
                f"BUSI masks of {category}/{stem} differ in size ({paths[0].name!r} vs {path.name!r}): fix the files"
            )
        union = grey >= 128 if union is None else union | (grey >= 128)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    Image.fromarray((union * 255).astype(np.uint8)).save(temporary, format="PNG")
    temporary.replace(target)
    return target


def _generic(root: Path, image_dir: str | None, mask_dir: str | None, mask_suffix: str):
    if not image_dir or not mask_dir:
        raise ValueError("layout='generic' needs image_dir and mask_dir (folders under root)")
    folders = {name: root / value for name, value in (("image_dir", image_dir), ("mask_dir", mask_dir))}
    for name, folder in folders.items():
        if not folder.is_dir():
            raise ValueError(f"{name}={str(folder)!r} is not a folder: give a folder of images under root")
    rows = _pair(_images_in(folders["image_dir"]), _images_in(folders["mask_dir"]), f"{str(root)!r}", mask_suffix)
    return rows, [image_id for image_id, _, _ in rows], None


def _read_groups(groups_csv: str | os.PathLike, image_ids: list[str]) -> list[str]:
    import pandas as pd

    table = pd.read_csv(groups_csv, dtype=str, keep_default_na=False)
    missing = [c for c in ("image_id", "group_id") if c not in table.columns]
    if missing:
        raise ValueError(
            f"groups_csv {str(groups_csv)!r} has no column(s) {missing}: it needs image_id,group_id (e.g. a "
            "patient id per image)"
        )
    mapping = dict(zip(table["image_id"], table["group_id"], strict=True))
    unknown = [image_id for image_id in image_ids if not mapping.get(image_id)]
    if unknown:
        raise ValueError(
            f"groups_csv {str(groups_csv)!r} gives no group_id for {len(unknown)} image(s) ({first_items(unknown)}): "
            "add a row per image"
        )
    return [mapping[image_id] for image_id in image_ids]


def load_seg_folder(
    root: str | os.PathLike,
    layout: str = "auto",
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    official_split: bool = True,
    groups_csv: str | os.PathLike | None = None,
    image_dir: str | None = None,
    mask_dir: str | None = None,
    mask_suffix: str = "",
    include_normal: bool = True,
    merged_mask_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """Builder `seg_folder`: image + mask folders in one of `LAYOUTS` (see the module docstring).

    Args:
        root: the dataset folder (e.g. the unpacked Kvasir-SEG/).
        layout: one of `LAYOUTS`; "auto" recognises the published ones by their folder names.
        val_fraction, test_fraction, seed: the hash-based split by `group_id`, used when the layout brings no
            official split (or `official_split=False`).
        official_split: use the split the release publishes (Kvasir-SEG train.txt / val.txt, ISIC 2018's
            Validation and Test folders) when it is in the folder.
        groups_csv: a CSV with `image_id,group_id` (e.g. patient ids from your own records): the split keeps
            each group together. Overrides the layout's own groups and its official split (which may put one
            patient's images on both sides).
        image_dir, mask_dir, mask_suffix: the `generic` layout.
        include_normal: BUSI: keep the `normal/` images (empty masks).
        merged_mask_dir: BUSI: where merged masks are written (default `default_merged_mask_dir(root)`).

    Returns:
        `DatasetDict` with `train`, `validation` (and `test` when asked for or official); columns `path`,
        `mask_path` (absolute), `image_id`, `group_id` (and `category` for BUSI).
    """
    val_fraction, test_fraction = check_fractions(val_fraction, test_fraction)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise ValueError(f"root {str(root)!r} is not a folder: download the dataset there or fix data.args.root")
    if layout == "auto":
        layout = _detect(root)
    categories = None
    if layout == "kvasir_seg":
        rows, groups, assignment = _kvasir(root, official_split)
    elif layout == "cvc_clinicdb":
        if _cvc_folders(root) is None:
            raise ValueError(f"{str(root)!r} has no Original/ and 'Ground Truth'/ folders (CVC-ClinicDB)")
        rows, groups, assignment = _cvc(root)
    elif layout == "isic2018":
        if not (root / ISIC2018_FOLDERS["train"][0]).is_dir():
            raise ValueError(f"{str(root)!r} has no {ISIC2018_FOLDERS['train'][0]}/ folder (ISIC 2018 Task 1)")
        rows, groups, assignment = _isic(root, official_split)
    elif layout == "busi":
        merged = None if merged_mask_dir is None else Path(merged_mask_dir).expanduser().absolute()
        rows, groups, assignment, categories = _busi(root, include_normal, merged)
    else:
        rows, groups, assignment = _generic(root, image_dir, mask_dir, mask_suffix)
    if not rows:
        raise ValueError(f"{str(root)!r} ({layout}) holds no image + mask pair")
    image_ids = [image_id for image_id, _, _ in rows]
    if groups_csv is not None:
        groups = _read_groups(groups_csv, image_ids)
    requested = {"train": 1.0, "validation": val_fraction, "test": test_fraction}
    drawn = patient_split(groups, val_fraction, test_fraction, seed)
    if assignment is not None and groups_csv is None:
        # An official split wins; a split the release lacks (e.g. ISIC without its Validation folder) is drawn
        # from the official training images.
        for name, code in _SPLIT_CODES.items():
            if code and (assignment == code).any():
                requested[name] = 1.0
                drawn[drawn == code] = 0
        official_train = assignment == 0
        assignment = np.where(official_train, drawn, assignment).astype(np.int8)
    else:
        assignment = drawn
    columns = {
        "path": [str(path) for _, path, _ in rows],
        "mask_path": [str(mask) for _, _, mask in rows],
        "image_id": image_ids,
        "group_id": list(groups),
    }
    features = {name: Value("string") for name in columns}
    if categories is not None:
        columns["category"] = categories
        features["category"] = Value("string")
    fingerprint = hashlib.sha256(
        repr((layout, val_fraction, test_fraction, seed, official_split, str(groups_csv))).encode()
        + "\x00".join(f"{file_fingerprint(p)}|{file_fingerprint(m)}" for _, p, m in rows).encode()
    ).hexdigest()
    return make_dataset_dict(
        pa.table(columns),
        Features(features),
        assignment,
        requested,
        fingerprint,
        description=f"seg_folder ({layout}) {root}",
        empty_hint="use more data, change the fractions or the seed (the split keeps each group_id together)",
    )


BUILDER = Builder(name="seg_folder", load=load_seg_folder, path_args=("root",))

__all__ = [
    "BUILDER",
    "BUSI_CATEGORIES",
    "CVC_CLINICDB_SEQUENCES",
    "ISIC2018_FOLDERS",
    "LAYOUTS",
    "cvc_clinicdb_sequence",
    "default_merged_mask_dir",
    "load_seg_folder",
]
