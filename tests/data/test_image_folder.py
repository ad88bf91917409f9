"""The `image_folder` builder (one sub-folder per class) on small PNG trees written in tmp_path."""

import numpy as np
import pytest
import torch
from PIL import Image

from hfmed.data.image_folder import load_image_folder
from hfmed.data.transforms import collate, make_transform


def write_tree(root, counts, size=16, prefix="img"):
    """`counts` = {class: n}: n PNGs per class folder; returns {path: class}."""
    written = {}
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = root / name / f"{prefix}{i:03d}.png"
            Image.fromarray(np.full((size, size), (7 * i) % 256, dtype=np.uint8)).save(path)
            written[str(path)] = name
    return written


def test_classes_are_the_sorted_folders_and_labels_their_indices(tmp_path):
    written = write_tree(tmp_path / "data", {"tumour": 12, "normal": 12, "debris": 12})
    (tmp_path / "data" / "normal" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / ".hidden").mkdir()
    data = load_image_folder(tmp_path / "data", val_fraction=0.25, test_fraction=0.25, seed=0)
    assert list(data) == ["train", "validation", "test"]
    names = data["train"].features["labels"].names
    assert names == ["debris", "normal", "tumour"]
    rows = [row for split in data.values() for row in split]
    assert len(rows) == 36 and len({row["path"] for row in rows}) == 36  # every image once, in one split
    assert all(names[row["labels"]] == written[row["path"]] for row in rows)
    assert all(split.num_rows > 0 for split in data.values())


def test_split_folders_are_used_and_ood_root_becomes_test_ood(tmp_path):
    write_tree(tmp_path / "data" / "train", {"a": 3, "b": 2})
    write_tree(tmp_path / "data" / "val", {"a": 1, "b": 1})
    write_tree(tmp_path / "data" / "test", {"b": 2})  # a split may lack a class
    write_tree(tmp_path / "shifted", {"a": 2, "b": 2}, prefix="scannerB")
    data = load_image_folder(tmp_path / "data", ood_root=tmp_path / "shifted")
    assert {s: data[s].num_rows for s in data} == {"train": 5, "validation": 2, "test": 2, "test_ood": 4}
    assert data["test"]["labels"] == [1, 1]
    assert all("/shifted/" in p for p in data["test_ood"]["path"])
    assert data["test_ood"]["labels"] == [0, 0, 1, 1]


def test_label_names_fix_the_order_and_patient_pattern_keeps_patients_together(tmp_path):
    root = tmp_path / "data"
    for name in ("benign", "malignant"):
        (root / name).mkdir(parents=True)
        for patient in range(6):
            for view in range(3):
                Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / name / f"p{name[0]}{patient}_v{view}.png")
    data = load_image_folder(root, label_names=["malignant", "benign"], val_fraction=0.3, seed=1,
                             patient_pattern=r"^(p\w\d+)_")
    assert data["train"].features["labels"].names == ["malignant", "benign"]
    assert all(("/malignant/" in p) == (label == 0) for p, label in zip(data["train"]["path"], data["train"]["labels"],
                                                                         strict=True))
    train, validation = set(data["train"]["patient_id"]), set(data["validation"]["patient_id"])
    assert train and validation and not train & validation
    assert len(train | validation) == 12


def test_a_batch_has_int64_class_labels(tmp_path):
    from hfmed import MoVLImageProcessor

    write_tree(tmp_path / "data" / "train", {"a": 2, "b": 2, "c": 2})
    write_tree(tmp_path / "data" / "validation", {"a": 1, "c": 1})
    data = load_image_folder(tmp_path / "data")
    processor = MoVLImageProcessor(size={"height": 32, "width": 32})
    batch = collate([data["train"].with_transform(make_transform(processor))[i] for i in range(6)])
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch["pixel_values"].shape == (6, 3, 32, 32)


def test_bad_layouts_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(tmp_path / "empty")
    write_tree(tmp_path / "mixed" / "train", {"a": 2})
    write_tree(tmp_path / "mixed", {"b": 2})
    with pytest.raises(ValueError, match="mixes split folders"):
        load_image_folder(tmp_path / "mixed")
    write_tree(tmp_path / "only_train" / "train", {"a": 2})
    with pytest.raises(ValueError, match="no validation folder"):
        load_image_folder(tmp_path / "only_train")
    write_tree(tmp_path / "flat", {"a": 4, "b": 4})
    (tmp_path / "flat" / "c").mkdir()
    with pytest.raises(ValueError, match=r"class folder\(s\) 'c' .* hold no image"):
        load_image_folder(tmp_path / "flat")
    (tmp_path / "flat" / "c").rmdir()
    with pytest.raises(ValueError, match=r"'b' are not in label_names \['a'\]"):
        load_image_folder(tmp_path / "flat", label_names=["a"])
    with pytest.raises(ValueError, match="patient_pattern .* does not match the file name 'img000.png'"):
        load_image_folder(tmp_path / "flat", patient_pattern=r"x(\d)")
    with pytest.raises(ValueError, match="validation split carved .* is empty"):
        load_image_folder(tmp_path / "flat", val_fraction=0.0)
