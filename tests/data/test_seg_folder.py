"""Builder `seg_folder` (Kvasir-SEG, CVC-ClinicDB, ISIC 2018, BUSI and generic layouts) and the synthetic lesion
twin written in two of those layouts."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hfmed.data import build_dataset
from hfmed.data.seg_folder import CVC_CLINICDB_SEQUENCES, cvc_clinicdb_sequence, load_seg_folder
from hfmed.data.synthetic_lesion import (
    ensure_synthetic_lesion,
    load_synthetic_lesion,
    synthetic_lesion_image,
    write_synthetic_lesion,
)
from hfmed.models.diamant import DIAMANTImageProcessor


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def _mask(box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((16, 16), dtype=np.uint8)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = 255
    return mask


def _all_rows(data) -> list[dict]:
    return [row | {"split": name} for name, split in data.items() for row in split]


def test_kvasir_layout_pairs_by_name_ignores_other_files_and_uses_the_published_lists(tmp_path):
    root = tmp_path / "Kvasir-SEG"
    ids = [f"cju{i:022d}" for i in range(10)]
    for i, image_id in enumerate(ids):
        _write(root / "images" / f"{image_id}.jpg", _image(i))
        _write(root / "masks" / f"{image_id}.jpg", _mask((2, 2, 8 + i % 4, 9)))
    (root / "kavsir_bboxes.json").write_text("{}")
    data = load_seg_folder(root, val_fraction=0.3, seed=0)
    rows = _all_rows(data)
    assert sorted(r["image_id"] for r in rows) == ids
    for row in rows:
        assert Path(row["mask_path"]).name == Path(row["path"]).name  # same file name, other folder
        assert Path(row["mask_path"]).parent.name == "masks" and row["group_id"] == row["image_id"]
    # The published split, when its lists are in the folder.
    (root / "train.txt").write_text("\n".join(ids[:7]) + "\n")
    (root / "val.txt").write_text("\n".join(ids[7:]) + "\n")
    data = load_seg_folder(root)
    assert sorted(data["validation"]["image_id"]) == ids[7:] and sorted(data["train"]["image_id"]) == ids[:7]
    assert set(load_seg_folder(root, official_split=False, val_fraction=0.3)["validation"]["image_id"]) != set(ids[7:])
    (root / "val.txt").write_text("\n".join(ids[8:]) + "\n")
    with pytest.raises(ValueError, match=r"1 image\(s\) are in neither train.txt nor val.txt .*official_split=False"):
        load_seg_folder(root)


def test_kvasir_layout_names_images_without_masks_and_masks_without_images(tmp_path):
    root = tmp_path / "kvasir"
    for i in range(3):
        _write(root / "images" / f"a{i}.jpg", _image(i))
        _write(root / "masks" / f"a{i}.jpg", _mask((1, 1, 5, 5)))
    (root / "masks" / "a2.jpg").unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) without a mask \('a2.jpg'\)"):
        load_seg_folder(root, layout="kvasir_seg")
    _write(root / "masks" / "a2.jpg", _mask((1, 1, 5, 5)))
    _write(root / "masks" / "b9.jpg", _mask((1, 1, 5, 5)))
    with pytest.raises(ValueError, match=r"1 mask\(s\) without an image \('b9.jpg'\)"):
        load_seg_folder(root, layout="kvasir_seg")


def test_cvc_clinicdb_sequences_cover_the_612_frames_once():
    frames = [frame for first, last in CVC_CLINICDB_SEQUENCES for frame in range(first, last + 1)]
    assert frames == list(range(1, 613)) and len(CVC_CLINICDB_SEQUENCES) == 29
    assert cvc_clinicdb_sequence(25) == 1 and cvc_clinicdb_sequence(26) == 2 and cvc_clinicdb_sequence(612) == 29
    with pytest.raises(ValueError, match="numbered 1..612, got 613"):
        cvc_clinicdb_sequence(613)


def test_cvc_clinicdb_split_keeps_each_sequence_together_and_prefers_png(tmp_path):
    root = tmp_path / "CVC-ClinicDB"
    frames = list(range(1, 80))  # sequences 1-5
    for frame in frames:
        _write(root / "PNG" / "Original" / f"{frame}.png", _image(frame))
        _write(root / "PNG" / "Ground Truth" / f"{frame}.png", _mask((3, 3, 9, 9)))
    _write(root / "TIF" / "Original" / "1.tif", _image(1))  # the Kaggle copy's other folder: not read
    _write(root / "TIF" / "Ground Truth" / "1.tif", _mask((3, 3, 9, 9)))
    data = load_seg_folder(root, val_fraction=0.4, seed=3)
    rows = _all_rows(data)
    assert sorted(int(r["image_id"]) for r in rows) == frames
    assert all(r["path"].endswith(".png") for r in rows)
    split_of_sequence = {}
    for row in rows:
        assert row["group_id"] == f"sequence_{cvc_clinicdb_sequence(int(row['image_id'])):02d}"
        assert split_of_sequence.setdefault(row["group_id"], row["split"]) == row["split"]
    assert {"train", "validation"} <= set(split_of_sequence.values())


def test_cvc_clinicdb_rejects_frames_that_are_not_the_release(tmp_path):
    root = tmp_path / "cvc"
    _write(root / "Original" / "700.tif", _image(0))
    _write(root / "Ground Truth" / "700.tif", _mask((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="numbered 1..612, got 700.*layout='generic'"):
        load_seg_folder(root)


def test_isic2018_uses_the_official_validation_folder_and_draws_one_when_it_is_missing(tmp_path):
    root = tmp_path / "isic"
    for split, count in (("Training", 12), ("Validation", 3)):
        for i in range(count):
            name = f"ISIC_{i + (100 if split == 'Validation' else 0):07d}"
            _write(root / f"ISIC2018_Task1-2_{split}_Input" / f"{name}.jpg", _image(i))
            _write(root / f"ISIC2018_Task1_{split}_GroundTruth" / f"{name}_segmentation.png", _mask((0, 0, 5, 5)))
        (root / f"ISIC2018_Task1-2_{split}_Input" / "ATTRIBUTION.txt").write_text("ISIC")
        (root / f"ISIC2018_Task1-2_{split}_Input" / "LICENSE.txt").write_text("CC")
    data = load_seg_folder(root, val_fraction=0.5)
    assert sorted(data["validation"]["image_id"]) == [f"ISIC_{i:07d}" for i in range(100, 103)]
    assert data["train"].num_rows == 12 and "test" not in data
    row = data["train"][0]
    assert Path(row["mask_path"]).name == f"{row['image_id']}_segmentation.png"
    drawn = load_seg_folder(root, official_split=False, val_fraction=0.3, test_fraction=0.2)
    assert sum(split.num_rows for split in drawn.values()) == 15 and set(drawn) == {"train", "validation", "test"}


def test_busi_merges_several_masks_of_one_image_and_keeps_the_class(tmp_path):
    root = tmp_path / "Dataset_BUSI_with_GT"
    _write(root / "benign" / "benign (1).png", _image(1))
    _write(root / "benign" / "benign (1)_mask.png", _mask((0, 0, 4, 4)))
    _write(root / "benign" / "benign (1)_mask_1.png", _mask((8, 8, 12, 14)))
    for i in range(2, 6):
        _write(root / "benign" / f"benign ({i}).png", _image(i))
        _write(root / "benign" / f"benign ({i})_mask.png", _mask((2, 2, 6, 6)))
    for i in range(1, 4):
        _write(root / "malignant" / f"malignant ({i}).png", _image(10 + i))
        _write(root / "malignant" / f"malignant ({i})_mask.png", _mask((5, 5, 12, 12)))
        _write(root / "normal" / f"normal ({i}).png", _image(20 + i))
        _write(root / "normal" / f"normal ({i})_mask.png", np.zeros((16, 16), np.uint8))
    data = load_seg_folder(root, val_fraction=0.3, merged_mask_dir=tmp_path / "merged")
    rows = {r["image_id"]: r for r in _all_rows(data)}
    assert len(rows) == 11
    assert {r["category"] for r in rows.values()} == {"benign", "malignant", "normal"}
    merged = rows["benign/benign (1)"]["mask_path"]
    assert Path(merged).is_relative_to(tmp_path / "merged")
    expected = (_mask((0, 0, 4, 4)) | _mask((8, 8, 12, 14)))
    np.testing.assert_array_equal(np.asarray(Image.open(merged)), expected)
    assert rows["benign/benign (2)"]["mask_path"].endswith("benign (2)_mask.png")  # one mask: the file itself
    without_normal = load_seg_folder(root, include_normal=False, val_fraction=0.5, merged_mask_dir=tmp_path / "merged")
    assert {r["category"] for r in _all_rows(without_normal)} == {"benign", "malignant"}
    (root / "malignant" / "malignant (1).png").unlink()
    with pytest.raises(ValueError, match=r"mask\(s\) without an image \('malignant \(1\)'\)"):
        load_seg_folder(root, merged_mask_dir=tmp_path / "merged")


def test_generic_layout_and_groups_from_a_csv_keep_a_patient_in_one_split(tmp_path):
    for i in range(12):
        _write(tmp_path / "img" / f"case{i}.png", _image(i))
        _write(tmp_path / "gt" / f"case{i}_seg.png", _mask((1, 1, 6, 6)))
    with pytest.raises(ValueError, match="layout='generic' needs image_dir and mask_dir"):
        load_seg_folder(tmp_path, layout="generic")
    (tmp_path / "groups.csv").write_text("image_id,group_id\n" + "".join(f"case{i},p{i // 4}\n" for i in range(12)))
    data = build_dataset(
        "seg_folder", root=str(tmp_path), layout="generic", image_dir="img", mask_dir="gt", mask_suffix="_seg",
        groups_csv=str(tmp_path / "groups.csv"), val_fraction=0.4, seed=1,
    )
    rows = _all_rows(data)
    assert len(rows) == 12
    split_of_patient = {}
    for row in rows:
        assert row["group_id"] == f"p{int(row['image_id'][4:]) // 4}"
        assert split_of_patient.setdefault(row["group_id"], row["split"]) == row["split"]
    with pytest.raises(ValueError, match="none of the known layouts.*layout='generic'"):
        load_seg_folder(tmp_path)


def test_twin_is_reproducible_and_its_masks_read_back_exactly(tmp_path):
    image, mask = synthetic_lesion_image(np.random.default_rng(4), 48, "polyp")
    again, mask_again = synthetic_lesion_image(np.random.default_rng(4), 48, "polyp")
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(mask, mask_again)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8 and 0.02 < mask.mean() < 0.5
    for layout, style in (("kvasir_seg", "polyp"), ("isic2018", "skin")):
        root = write_synthetic_lesion(tmp_path / layout, num_images=5, image_size=32, seed=2, layout=layout)
        rows = _all_rows(load_seg_folder(root, layout=layout, val_fraction=0.4))
        assert len(rows) == 5
        rng = np.random.default_rng(2)
        drawn = [synthetic_lesion_image(rng, 32, style)[1] for _ in range(5)]
        masks_on_disk = {r["image_id"]: np.asarray(Image.open(r["mask_path"]).convert("L")) >= 128 for r in rows}
        if layout == "isic2018":
            for index, expected in enumerate(drawn):
                np.testing.assert_array_equal(masks_on_disk[f"ISIC_{index:07d}"], expected)
        else:  # JPEG masks (as Kvasir-SEG's): thresholding at 128 gives back the drawn mask
            assert sorted(m.sum() for m in masks_on_disk.values()) == sorted(m.sum() for m in drawn)


def test_twin_is_cached_by_its_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "cache"))
    first = ensure_synthetic_lesion(None, num_images=3, image_size=16, seed=0)
    stamp = sorted(p.stat().st_mtime_ns for p in (first / "images").iterdir())
    assert ensure_synthetic_lesion(None, num_images=3, image_size=16, seed=0) == first
    assert sorted(p.stat().st_mtime_ns for p in (first / "images").iterdir()) == stamp  # not rewritten
    other = ensure_synthetic_lesion(None, num_images=3, image_size=16, seed=1)
    assert other != first and first.parent == other.parent == tmp_path / "cache" / "synthetic_lesion"
    with pytest.raises(ValueError, match="layout must be one of"):
        ensure_synthetic_lesion(None, layout="busi")


def test_twin_rows_become_image_and_label_tensors_through_the_diamant_processor(tmp_path):
    data = load_synthetic_lesion(tmp_path / "twin", num_images=6, image_size=32, val_fraction=0.3)
    row = data["train"][0]
    processor = DIAMANTImageProcessor(size={"height": 32, "width": 32}, mask_binarize_threshold=128)
    out = processor([row["path"]], segmentation_maps=[row["mask_path"]], return_tensors="pt")
    labels = out["labels"].numpy()
    assert out["pixel_values"].shape == (1, 3, 32, 32) and labels.shape == (1, 32, 32)
    expected = np.asarray(Image.open(row["mask_path"]).convert("L")) >= 128
    np.testing.assert_array_equal(labels[0], expected.astype(np.int64))


def _hub_folder(tmp_path: Path, splits: dict[str, int]) -> Path:
    import datasets

    folder = tmp_path / "hub"
    for split, count in splits.items():
        columns = {"image": [], "annotation": [], "patient_id": []}
        for i in range(count):
            columns["image"].append(str(_write(tmp_path / "files" / split / f"{i}.png", _image(i))))
            columns["annotation"].append(str(_write(tmp_path / "files" / split / f"{i}_m.png", _mask((0, 0, 3 + i, 4)))))
            columns["patient_id"].append(f"p{i // 2}")
        table = datasets.Dataset.from_dict(columns)
        for column in ("image", "annotation"):
            table = table.cast_column(column, datasets.Image())
        (folder / "data").mkdir(parents=True, exist_ok=True)
        table.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def test_hub_segmentation_keeps_image_and_mask_columns_and_splits_by_patient(tmp_path):
    folder = _hub_folder(tmp_path, {"train": 10})
    data = build_dataset("hub_segmentation", repo_id=str(folder), mask_column="annotation", val_fraction=0.4, seed=2)
    assert set(data) == {"train", "validation"}
    assert data["train"].column_names == ["image", "mask", "group_id"]
    train_groups, val_groups = set(data["train"]["group_id"]), set(data["validation"]["group_id"])
    assert train_groups and val_groups and not train_groups & val_groups  # a patient stays in one split
    row = data["validation"][0]
    size = int(np.asarray(row["mask"]).max() > 0) and (np.asarray(row["mask"]) == 255).sum()
    assert size in {3 * 4 + 4 * i for i in range(10)}  # one of the drawn boxes, decoded as the mask
    with pytest.raises(ValueError, match=r"no column\(s\) \['mask'\].*set image_column / mask_column"):
        build_dataset("hub_segmentation", repo_id=str(folder))


def test_hub_segmentation_uses_the_sources_validation_split(tmp_path):
    folder = _hub_folder(tmp_path, {"train": 4, "validation": 3})
    data = build_dataset("hub_segmentation", repo_id=str(folder), mask_column="annotation")
    assert data["train"].num_rows == 4 and data["validation"].num_rows == 3
