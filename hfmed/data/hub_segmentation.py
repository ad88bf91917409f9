"""Builder `hub_segmentation`: a segmentation dataset from the Hugging Face Hub (or anything
`datasets.load_dataset` reads) with an image column and a mask column.

    data = build_dataset("hub_segmentation", repo_id="org/polyps", mask_column="annotation")

Images and masks stay `datasets.Image` columns, renamed `image` and `mask` and decoded lazily (PIL) in the
transform, where the image processor reads the mask (`segmentation_maps`) with its declared value rule
(`mask_binarize_threshold` for 0/255 masks, `label_mapping`, or class indices as they are). Masks are never
converted here, so no value rule is applied twice.
"""

from __future__ import annotations

import warnings
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, Value

from .builder import Builder
from .hub import VALIDATION_NAMES, _load_error
from .splits import carve_validation, check_fractions, first_items


def _standardise(dataset: Dataset, split: str, image_column: str, mask_column: str, group_column: str | None):
    """Keeps `image`, `mask`, `group_id`; returns the dataset and whether real group ids were found."""
    missing = [c for c in (image_column, mask_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"split {split!r} has no column(s) {missing}; its columns are {dataset.column_names} "
            "(set image_column / mask_column)"
        )
    if image_column == mask_column:
        raise ValueError(f"image_column and mask_column are both {image_column!r}: name the mask column")
    for role, column in (("image", image_column), ("mask", mask_column)):
        feature = dataset.features[column]
        if not isinstance(feature, (datasets.Image, Value)):
            raise ValueError(
                f"{role} column {column!r} of split {split!r} has feature {feature}: expected images (datasets.Image) "
                "or file paths (strings)"
            )
        if isinstance(feature, Value) and feature.dtype not in ("string", "large_string"):
            raise ValueError(f"{role} column {column!r} holds {feature.dtype}, not images or file paths")
    has_groups = group_column is not None and group_column in dataset.column_names
    if has_groups:
        groups = [str(g) for g in dataset.select_columns([group_column]).with_format(None)[:][group_column]]
    else:
        groups = [f"{split}/{i}" for i in range(dataset.num_rows)]
    out = dataset.select_columns([image_column, mask_column])
    # Keep the column order image, mask whatever the names were (a rename may otherwise collide).
    out = out.rename_columns({image_column: "__image", mask_column: "__mask"})
    out = out.rename_columns({"__image": "image", "__mask": "mask"})
    for column in ("image", "mask"):
        if isinstance(out.features[column], Value):  # paths: decode them as images
            out = out.cast_column(column, datasets.Image())
    out = out.add_column("group_id", groups, feature=Value("string"))
    return out, has_groups


def load_hub_segmentation(
    repo_id: str,
    image_column: str = "image",
    mask_column: str = "mask",
    revision: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    group_column: str | None = "patient_id",
    **load_kwargs: Any,
) -> DatasetDict:
    """Builder `hub_segmentation`: `datasets.load_dataset(repo_id, revision=revision, **load_kwargs)` with an
    image and a mask column.

    Args:
        repo_id: a Hub dataset id (or anything `load_dataset` takes: a local folder, "parquet", ...).
        image_column, mask_column: the image and mask columns (images, or file paths), renamed `image` / `mask`.
        revision: git revision of the dataset repo.
        val_fraction, seed: when the dataset has no validation split (also looked up as valid / val / dev), this
            share of the train split becomes validation, by `group_column` when it exists, otherwise image by
            image (with a warning).
        group_column: column of patient (or video, source) ids kept as `group_id`; without it `group_id` is
            `"<split>/<row>"`.
        **load_kwargs: passed to `datasets.load_dataset` (e.g. `name`, `data_dir`, `data_files`, `cache_dir`).

    Returns:
        `DatasetDict` with `train`, `validation` (and `test` when the source has one); columns `image`, `mask`
        (`datasets.Image`), `group_id`.
    """
    val_fraction, _ = check_fractions(val_fraction, 0.0)
    if load_kwargs.get("streaming"):
        raise ValueError("streaming=True is not supported by the hub_segmentation builder: it needs random access")
    try:
        loaded = datasets.load_dataset(repo_id, revision=revision, **load_kwargs)
    except Exception as err:
        raise _load_error(err, repo_id, revision) from err
    if isinstance(loaded, (IterableDataset, IterableDatasetDict)):
        raise ValueError("the hub_segmentation builder needs a map-style dataset, got an iterable one")
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({str(loaded.split or "train"): loaded})
    splits = dict(loaded)
    if "train" not in splits:
        raise ValueError(
            f"dataset {repo_id!r} has no 'train' split (splits: {sorted(splits)}): pass split= or data_files= "
            "so that one is called train"
        )
    validation_name = next((name for name in VALIDATION_NAMES if name in splits), None)
    train, has_groups = _standardise(splits["train"], "train", image_column, mask_column, group_column)
    out = {}
    if validation_name is None:
        out["train"], out["validation"] = carve_validation(
            train, train["group_id"], has_groups, group_column, val_fraction, seed, repo_id
        )
    else:
        out["train"] = train
        out["validation"], _ = _standardise(
            splits[validation_name], validation_name, image_column, mask_column, group_column
        )
    if "test" in splits:
        out["test"], _ = _standardise(splits["test"], "test", image_column, mask_column, group_column)
    ignored = sorted(set(splits) - {"train", "test", *([validation_name] if validation_name else [])})
    if ignored:
        warnings.warn(f"dataset {repo_id!r}: split(s) {first_items(ignored)} are not used", UserWarning, stacklevel=2)
    return DatasetDict(out)


BUILDER = Builder(name="hub_segmentation", load=load_hub_segmentation)

__all__ = ["BUILDER", "load_hub_segmentation"]
