"""The `hub` builder's single-label mode (one class index per row) and its `ood_split`, on local sources
(`datasets`' imagefolder and json loaders; offline)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hfmed.data import load_hub_dataset
from hfmed.data.transforms import collate, make_transform


def test_a_class_label_column_becomes_class_indices_in_label_names_order(tmp_path):
    from hfmed import MoVLImageProcessor

    for split, counts in {"train": {"benign": 3, "malignant": 2, "normal": 1}, "validation": {"malignant": 1,
                                                                                            "normal": 2}}.items():
        for name, n in counts.items():
            (tmp_path / "imgs" / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((12, 12, 3), 40 * i, dtype=np.uint8)).save(
                    tmp_path / "imgs" / split / name / f"{i}.png"
                )
    # Our order differs from the folders' alphabetical one: classes are mapped by name, not by index.
    names = ["normal", "benign", "malignant"]
    data = load_hub_dataset("imagefolder", names, label_column="label", single_label=True,
                            data_dir=str(tmp_path / "imgs"), cache_dir=str(tmp_path / "cache"))
    assert data["train"].features["labels"].names == names
    assert sorted(data["train"]["labels"]) == [0, 1, 1, 1, 2, 2]
    assert sorted(data["validation"]["labels"]) == [0, 0, 2]
    batch = collate([data["train"].with_transform(make_transform(MoVLImageProcessor(size={"height": 16, "width": 16})))[i]
                     for i in range(6)])
    assert batch["labels"].dtype == torch.int64 and sorted(batch["labels"].tolist()) == [0, 1, 1, 1, 2, 2]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_names_or_indices_and_an_ood_split(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"image": f"t{i}.png", "dx": ["a", "b", "c"][i % 3]}
                                                   for i in range(6)])
    val = write_jsonl(tmp_path / "val.jsonl", [{"image": "v.png", "dx": "c"}])
    shifted = write_jsonl(tmp_path / "site_b.jsonl", [{"image": "s.png", "dx": "b"}, {"image": "r.png", "dx": "a"}])
    data = load_hub_dataset("json", ["a", "b", "c"], label_column="dx", single_label=True, ood_split="site_b",
                            data_files={"train": train, "validation": val, "site_b": shifted},
                            cache_dir=str(tmp_path / "cache"))
    assert list(data) == ["train", "validation", "test_ood"]
    assert data["train"]["labels"] == [0, 1, 2, 0, 1, 2] and data["test_ood"]["labels"] == [1, 0]
    indices = write_jsonl(tmp_path / "idx.jsonl", [{"image": "i.png", "y": 2}, {"image": "j.png", "y": 0}])
    data = load_hub_dataset("json", ["a", "b", "c"], label_column="y", single_label=True,
                            data_files={"train": indices, "validation": indices}, cache_dir=str(tmp_path / "cache"))
    assert data["validation"]["labels"] == [2, 0]


def test_single_label_errors_name_the_fix(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"image": "t.png", "dx": "d", "y": 5, "other": "x"}])
    files = {"data_files": {"train": train, "validation": train}, "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(ValueError, match=r"class name\(s\) \['d'\] that are not in label_names"):
        load_hub_dataset("json", ["a", "b"], label_column="dx", single_label=True, **files)
    with pytest.raises(ValueError, match=r"class indices 5\.\.5 but there are 2 label_names"):
        load_hub_dataset("json", ["a", "b"], label_column="y", single_label=True, **files)
    with pytest.raises(ValueError, match="reads one class per row from one column"):
        load_hub_dataset("json", ["a", "b"], label_column=["dx", "y"], single_label=True, **files)
    with pytest.raises(ValueError, match="ood_split 'shifted' must name a split"):
        load_hub_dataset("json", ["a", "b", "d"], label_column="dx", single_label=True, ood_split="shifted",
                         **files)
