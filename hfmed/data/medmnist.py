"""Builder `medmnist`: a MedMNIST `.npz` file (any 2-D set, any size) with its official train / val / test split.

    data = build_dataset("medmnist", npz_path="~/data/pathmnist_224.npz")            # 9 tissue classes
    data = build_dataset("medmnist", npz_path="bloodmnist.npz", ood_npz_path="blood_other_site.npz")

A MedMNIST file (Yang et al., "MedMNIST v2", Scientific Data 2023; files on https://zenodo.org/records/10519652)
holds `train_images`, `train_labels`, `val_images`, `val_labels`, `test_images`, `test_labels`: uint8 images
(N, H, W) grey or (N, H, W, 3) RGB, H = W = 28 (`<set>.npz`) or 64 / 128 / 224 (`<set>_<size>.npz`), and labels
(N, 1) class indices, or (N, 14) 0/1 findings for ChestMNIST. The set is read from the file name (`flag=` for a
renamed file) and its class names come from `MEDMNIST_2D` (facts from MedMNIST's own metadata, `medmnist/info.py`).

Images are written once as PNG files to a cache folder (`$HFMED_CACHE/medmnist/<hash of the file's path, size and
modification time>`, or `cache_dir`), read from the `.npz` a chunk at a time so a 224-px file never sits in memory
whole; the image processor decodes the PNGs lazily in the DataLoader workers, as for every other builder. A file
that changes is written again; an interrupted write is redone (`twin_cache.ensure_twin`). Writing is the one
slow step: about 1,400 images/s at 28 px and 60 images/s at 224 px on one busy CPU core here (PathMNIST at 224 px:
about half an hour, once); `max_per_split` writes only the first images of each split, for quick runs.

Splits: `train`, `validation` (MedMNIST's `val`), `test`, and, with `ood_npz_path`, `test_ood`: one split of a
second MedMNIST-layout file from a shifted source (another site or scanner, or a corrupted copy such as
MedMNIST-C), with the same classes. Columns `path`, `labels` (single-label sets: a ClassLabel, one int64 class
index per row; ChestMNIST: float32 0/1 per finding) and `patient_id` (MedMNIST gives none: `<split>/<row>`).
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from .builder import Builder
from .single_label import OOD_SPLIT, dataset_dict_from_rows
from .splits import check_label_names
from .twin_cache import ensure_twin


@dataclass(frozen=True)
class MedMNISTSet:
    """One 2-D MedMNIST set, as MedMNIST's metadata describes it."""

    task: str
    """"multi-class", "binary-class", "ordinal-regression" (five grades, used as classes) or
    "multi-label, binary-class" (ChestMNIST)."""
    num_channels: int
    labels: tuple[str, ...]
    """Class (or finding) names, by label index."""
    license: str

    @property
    def multi_label(self) -> bool:
        return self.task.startswith("multi-label")


_ORGANS = (
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
    "lung-right", "pancreas", "spleen",
)  # fmt: skip

MEDMNIST_2D: dict[str, MedMNISTSet] = {
    "pathmnist": MedMNISTSet("multi-class", 3, (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium",
    ), "CC BY 4.0"),  # fmt: skip
    "chestmnist": MedMNISTSet("multi-label, binary-class", 1, (
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia", "pneumothorax",
        "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia",
    ), "CC BY 4.0"),  # fmt: skip
    "dermamnist": MedMNISTSet("multi-class", 3, (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions",
    ), "CC BY-NC 4.0"),  # fmt: skip
    "octmnist": MedMNISTSet("multi-class", 1, (
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal",
    ), "CC BY 4.0"),  # fmt: skip
    "pneumoniamnist": MedMNISTSet("binary-class", 1, ("normal", "pneumonia"), "CC BY 4.0"),
    "retinamnist": MedMNISTSet("ordinal-regression", 3, ("0", "1", "2", "3", "4"), "CC BY 4.0"),
    "breastmnist": MedMNISTSet("binary-class", 1, ("malignant", "normal, benign"), "CC BY 4.0"),
    "bloodmnist": MedMNISTSet("multi-class", 3, (
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
        "neutrophil", "platelet",
    ), "CC BY 4.0"),  # fmt: skip
    "tissuemnist": MedMNISTSet("multi-class", 1, (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb",
    ), "CC BY 4.0"),  # fmt: skip
    "organamnist": MedMNISTSet("multi-class", 1, _ORGANS, "CC BY 4.0"),
    "organcmnist": MedMNISTSet("multi-class", 1, _ORGANS, "CC BY 4.0"),
    "organsmnist": MedMNISTSet("multi-class", 1, _ORGANS, "CC BY 4.0"),
}
"""Every 2-D MedMNIST set (v2 / v3 and MedMNIST+ sizes): task, channels, class names in label order, license."""

SPLITS = {"train": "train", "validation": "val", "test": "test"}
"""hfmed split -> the key prefix in a MedMNIST file."""
SIZES = (28, 64, 128, 224)
_FILE_NAME = re.compile(r"^(?P<flag>[a-z]+mnist)(?:_(?P<size>\d+))?$")
# Bump when the cache layout changes: older caches are written again.
CACHE_VERSION = 1
MARKER_NAME = ".hfmed_medmnist.json"
_CHUNK = 1024  # images decoded from the .npz at a time


def default_cache_root() -> Path:
    """`$HFMED_CACHE/medmnist`, where HFMED_CACHE defaults to `~/.cache/hfmed`."""
    return Path(os.environ.get("HFMED_CACHE", "~/.cache/hfmed")).expanduser() / "medmnist"


def medmnist_flag(npz_path: str | os.PathLike) -> str:
    """The set a MedMNIST file holds, from its name (`pathmnist.npz`, `pathmnist_224.npz` -> "pathmnist")."""
    match = _FILE_NAME.match(Path(npz_path).stem.lower())
    if match is None or match["flag"] not in MEDMNIST_2D:
        raise ValueError(
            f"cannot tell the MedMNIST set from the file name {Path(npz_path).name!r}: name it <set>.npz or "
            f"<set>_<size>.npz, or pass flag= (one of {sorted(MEDMNIST_2D)})"
        )
    return match["flag"]


def _npy_member(archive: zipfile.ZipFile, key: str, npz_path: Path):
    name = f"{key}.npy"
    if name not in archive.namelist():
        keys = sorted(n.removesuffix(".npy") for n in archive.namelist())
        raise ValueError(
            f"{str(npz_path)!r} has no array {key!r} (its arrays: {keys}); a MedMNIST file holds train_images, "
            "train_labels, val_images, val_labels, test_images and test_labels"
        )
    return archive.open(name)


def _read_header(handle):
    version = np.lib.format.read_magic(handle)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return reader(handle)


def _image_shape(archive, key: str, npz_path: Path) -> tuple[int, ...]:
    """The shape of one images array, from its .npy header (no pixel is read)."""
    with _npy_member(archive, key, npz_path) as handle:
        shape, fortran, dtype = _read_header(handle)
    if dtype != np.uint8 or fortran or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
        raise ValueError(
            f"{str(npz_path)!r}: {key} must be uint8 images (N, H, W) or (N, H, W, 3) in C order, got "
            f"{dtype} {shape}"
        )
    return tuple(shape)


def _image_chunks(archive, key: str, npz_path: Path, count: int):
    """The first `count` images of one images array, `_CHUNK` at a time (a 224-px file never sits in memory)."""
    shape = _image_shape(archive, key, npz_path)
    per_image = int(np.prod(shape[1:]))
    with _npy_member(archive, key, npz_path) as handle:
        _read_header(handle)
        for start in range(0, count, _CHUNK):
            n = min(_CHUNK, count - start)
            yield np.frombuffer(handle.read(n * per_image), dtype=np.uint8).reshape((n, *shape[1:]))


def _count(shape, limit: int | None) -> int:
    return shape[0] if limit is None else min(shape[0], limit)


def _labels(archive, key: str, npz_path: Path) -> np.ndarray:
    with _npy_member(archive, key, npz_path) as handle:
        array = np.lib.format.read_array(handle)
    return np.asarray(array)


def _write_pngs(folder: Path, npz_path: Path, splits: dict[str, str], limit: int | None) -> None:
    from PIL import Image

    with zipfile.ZipFile(npz_path) as archive:
        for split, prefix in splits.items():
            (folder / split).mkdir(parents=True)
            count = _count(_image_shape(archive, f"{prefix}_images", npz_path), limit)
            index = 0
            for chunk in _image_chunks(archive, f"{prefix}_images", npz_path, count):
                for image in chunk:
                    pixels = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
                    Image.fromarray(pixels).save(folder / split / f"{index:06d}.png", compress_level=1)
                    index += 1


def _file_key(npz_path: Path) -> dict:
    stat = npz_path.stat()
    return {"file": str(npz_path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def ensure_medmnist_pngs(
    npz_path: Path, splits: dict[str, str], cache_dir=None, max_per_split: int | None = None
) -> Path:
    """The folder holding `<split>/<row:06d>.png` for `splits` ({hfmed split: npz key prefix}) of `npz_path`,
    written first when missing or stale."""
    params = {
        "version": CACHE_VERSION, **_file_key(npz_path), "splits": splits, "max_per_split": max_per_split,
    }  # fmt: skip
    return ensure_twin(
        cache_dir,
        params,
        lambda folder: _write_pngs(folder, npz_path, splits, max_per_split),
        kind="medmnist cache",
        cache_root=default_cache_root(),
        marker=MARKER_NAME,
        known_entries=set(splits),
    )


def _check_file(path, argument: str) -> Path:
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(
            f"{argument} {str(path)!r} does not exist: download a MedMNIST .npz (e.g. pathmnist_224.npz) from "
            "https://zenodo.org/records/10519652 and pass its path"
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{argument} {str(path)!r} is not an .npz file (a zip of .npy arrays): pass a MedMNIST .npz")
    return path


def _read_split(npz_path: Path, prefix: str, spec: MedMNISTSet, names, limit) -> np.ndarray:
    """One split's labels (checked against the set) for its first `limit` images: class indices (N,), or
    float32 0/1 rows (N, L) for a multi-label set."""
    with zipfile.ZipFile(npz_path) as archive:
        shape = _image_shape(archive, f"{prefix}_images", npz_path)
        labels = _labels(archive, f"{prefix}_labels", npz_path)
    channels = 3 if len(shape) == 4 and shape[3] == 3 else 1
    if channels != spec.num_channels:
        raise ValueError(
            f"{str(npz_path)!r}: {prefix}_images have {channels} channel(s) but this set has {spec.num_channels}: "
            "pass the flag= of the set the file holds"
        )
    if labels.shape[0] != shape[0]:
        raise ValueError(f"{str(npz_path)!r}: {prefix}_labels has {labels.shape[0]} rows for {shape[0]} images")
    width = len(names) if spec.multi_label else 1
    labels = labels.reshape(shape[0], -1)[: _count(shape, limit)]
    if labels.shape[1] != width:
        raise ValueError(
            f"{str(npz_path)!r}: {prefix}_labels has {labels.shape[1]} column(s) per image but the set "
            f"({spec.task}) takes {width}: pass the flag= of the set the file holds"
        )
    if spec.multi_label:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{str(npz_path)!r}: {prefix}_labels of a multi-label set must be 0 or 1")
        return labels.astype(np.float32)
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(
            f"{str(npz_path)!r}: {prefix}_labels hold class indices {int(labels.min())}..{int(labels.max())} but the "
            f"set has {len(names)} classes: pass the flag= of the set the file holds"
        )
    return labels[:, 0].astype(np.int64)


def _rows(folder: Path, split: str, labels: np.ndarray):
    paths = [str(folder / split / f"{i:06d}.png") for i in range(len(labels))]
    return paths, labels, [f"{split}/{i}" for i in range(len(labels))]


def load_medmnist(
    npz_path: str | os.PathLike,
    flag: str | None = None,
    label_names: list[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_per_split: int | None = None,
    ood_npz_path: str | os.PathLike | None = None,
    ood_split: str = "test",
) -> DatasetDict:
    """Builder `medmnist`: a MedMNIST `.npz` file as `train`, `validation`, `test` (+ `test_ood`).

    Args:
        npz_path: the `.npz` file (`<set>.npz` or `<set>_<size>.npz`).
        flag: the set (a key of `MEDMNIST_2D`); default: read from the file name.
        label_names: class names in label order; default: the set's (`MEDMNIST_2D[flag].labels`).
        cache_dir: where the PNGs are written; default `$HFMED_CACHE/medmnist/<hash>` (see the module docstring).
            The `ood_npz_path` images go to `<cache_dir>-ood`.
        max_per_split: keep the first N images of each split (quick runs); `None`: all.
        ood_npz_path: a second file in MedMNIST's layout, from a shifted source with the same classes; its
            `ood_split` split becomes `test_ood`.
        ood_split: which split of `ood_npz_path` ("train", "validation" or "test").

    Returns:
        `DatasetDict` with `train`, `validation`, `test` (and `test_ood`); columns `path` (absolute PNG path),
        `labels` (ClassLabel: one int64 class index per row; ChestMNIST: float32 0/1 per finding), `patient_id`.
    """
    npz_path = _check_file(npz_path, "npz_path")
    flag = medmnist_flag(npz_path) if flag is None else flag
    if flag not in MEDMNIST_2D:
        raise ValueError(f"flag must be a 2-D MedMNIST set, one of {sorted(MEDMNIST_2D)}; got {flag!r}")
    spec = MEDMNIST_2D[flag]
    names = check_label_names(list(spec.labels) if label_names is None else label_names)
    if len(names) != len(spec.labels):
        raise ValueError(f"label_names has {len(names)} names but {flag} has {len(spec.labels)} classes: {spec.labels}")
    if max_per_split is not None and (isinstance(max_per_split, bool) or not isinstance(max_per_split, int)
                                      or max_per_split < 1):
        raise ValueError(f"max_per_split must be a positive integer or None, got {max_per_split!r}")
    if ood_split not in SPLITS:
        raise ValueError(f"ood_split must be one of {list(SPLITS)}, got {ood_split!r}")

    labels = {split: _read_split(npz_path, prefix, spec, names, max_per_split) for split, prefix in SPLITS.items()}
    fingerprint = f"medmnist|{CACHE_VERSION}|{_file_key(npz_path)}|{flag}|{names}|{max_per_split}"
    ood_labels = None
    if ood_npz_path is not None:
        ood_path = _check_file(ood_npz_path, "ood_npz_path")
        ood_labels = _read_split(ood_path, SPLITS[ood_split], spec, names, max_per_split)
        fingerprint += f"|{_file_key(ood_path)}|{ood_split}"

    folder = ensure_medmnist_pngs(npz_path, SPLITS, cache_dir, max_per_split)
    rows = {split: _rows(folder, split, labels[split]) for split in SPLITS}
    if ood_labels is not None:
        # A cache_dir of its own beside the main one: each cache folder holds one file's images.
        ood_cache = None if cache_dir is None else Path(f"{Path(cache_dir).expanduser().absolute()}-ood")
        ood_folder = ensure_medmnist_pngs(ood_path, {OOD_SPLIT: SPLITS[ood_split]}, ood_cache, max_per_split)
        rows[OOD_SPLIT] = _rows(ood_folder, OOD_SPLIT, ood_labels)
    description = f"MedMNIST {flag} from {npz_path}" + (f", test_ood from {ood_npz_path}" if ood_npz_path else "")
    return dataset_dict_from_rows(rows, names, fingerprint, description, multi_label=spec.multi_label)


BUILDER = Builder(name="medmnist", load=load_medmnist, path_args=("npz_path",))

__all__ = ["BUILDER", "MEDMNIST_2D", "MedMNISTSet", "default_cache_root", "ensure_medmnist_pngs", "load_medmnist",
           "medmnist_flag"]
