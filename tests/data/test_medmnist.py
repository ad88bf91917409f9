"""The `medmnist` builder on synthetic .npz files in MedMNIST's layout, written in tmp_path."""

import numpy as np
import pytest
import torch
from PIL import Image

from hfmed.data.medmnist import MEDMNIST_2D, load_medmnist, medmnist_flag
from hfmed.data.transforms import collate, make_transform

SIZES = {"train": 10, "val": 4, "test": 6}


def write_npz(path, flag="pathmnist", size=28, seed=0, sizes=SIZES, compressed=False, **replace):
    """A MedMNIST-layout file: uint8 images, (N, 1) class labels (or (N, 14) 0/1 for ChestMNIST)."""
    spec = MEDMNIST_2D[flag]
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in sizes.items():
        shape = (n, size, size, 3) if spec.num_channels == 3 else (n, size, size)
        arrays[f"{prefix}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        if spec.multi_label:
            arrays[f"{prefix}_labels"] = rng.integers(0, 2, (n, len(spec.labels)), dtype=np.uint8)
        else:
            arrays[f"{prefix}_labels"] = (np.arange(n) % len(spec.labels)).astype(np.uint8)[:, None]
    arrays.update(replace)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


def test_every_2d_set_has_its_class_names_and_license():
    assert len(MEDMNIST_2D) == 12
    counts = {flag: len(spec.labels) for flag, spec in MEDMNIST_2D.items()}
    assert counts == {
        "pathmnist": 9, "chestmnist": 14, "dermamnist": 7, "octmnist": 4, "pneumoniamnist": 2, "retinamnist": 5,
        "breastmnist": 2, "bloodmnist": 8, "tissuemnist": 8, "organamnist": 11, "organcmnist": 11,
        "organsmnist": 11,
    }  # fmt: skip
    assert MEDMNIST_2D["pathmnist"].labels[8] == "colorectal adenocarcinoma epithelium"
    assert MEDMNIST_2D["breastmnist"].labels == ("malignant", "normal, benign")
    assert [flag for flag, spec in MEDMNIST_2D.items() if spec.license != "CC BY 4.0"] == ["dermamnist"]
    assert [flag for flag, spec in MEDMNIST_2D.items() if spec.multi_label] == ["chestmnist"]


def test_the_set_is_read_from_the_file_name():
    assert medmnist_flag("/data/pathmnist.npz") == "pathmnist"
    assert medmnist_flag("BloodMNIST_224.npz") == "bloodmnist"
    with pytest.raises(ValueError, match="pass flag="):
        medmnist_flag("my_data.npz")


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_official_splits_pngs_and_int_labels(tmp_path, compressed):
    arrays = write_npz(tmp_path / "pathmnist_28.npz", compressed=compressed)
    data = load_medmnist(tmp_path / "pathmnist_28.npz", cache_dir=tmp_path / "cache")
    assert list(data) == ["train", "validation", "test"]
    assert {s: data[s].num_rows for s in data} == {"train": 10, "validation": 4, "test": 6}
    assert data["train"].features["labels"].names == list(MEDMNIST_2D["pathmnist"].labels)
    for split, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
        assert data[split]["labels"] == arrays[f"{prefix}_labels"][:, 0].tolist()
        # The PNG holds the exact pixels of the file's row.
        row = 3
        np.testing.assert_array_equal(np.asarray(Image.open(data[split][row]["path"])), arrays[f"{prefix}_images"][row])
    assert len(set(data["train"]["patient_id"])) == 10


def test_grey_set_and_a_batch_of_int64_labels(tmp_path):
    from hfmed import MoVLImageProcessor

    arrays = write_npz(tmp_path / "organamnist.npz", flag="organamnist")
    data = load_medmnist(tmp_path / "organamnist.npz", cache_dir=tmp_path / "cache")
    image = Image.open(data["test"][0]["path"])
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), arrays["test_images"][0])
    processor = MoVLImageProcessor(size={"height": 32, "width": 32})
    batch = collate([data["train"].with_transform(make_transform(processor))[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [0, 1, 2, 3]


def test_chestmnist_gives_multi_hot_float_labels(tmp_path):
    arrays = write_npz(tmp_path / "chestmnist.npz", flag="chestmnist")
    data = load_medmnist(tmp_path / "chestmnist.npz", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(data["validation"]["labels"]), arrays["val_labels"].astype(np.float32))


def test_ood_split_from_a_second_file_and_max_per_split(tmp_path):
    write_npz(tmp_path / "bloodmnist.npz", flag="bloodmnist")
    # Only a test split, e.g. a corrupted copy of the test set.
    shifted = write_npz(tmp_path / "blood_site_b.npz", flag="bloodmnist", seed=1, sizes={"test": 5})
    data = load_medmnist(tmp_path / "bloodmnist.npz", cache_dir=tmp_path / "cache", max_per_split=3,
                         ood_npz_path=tmp_path / "blood_site_b.npz")
    assert {s: data[s].num_rows for s in data} == {"train": 3, "validation": 3, "test": 3, "test_ood": 3}
    np.testing.assert_array_equal(np.asarray(Image.open(data["test_ood"][2]["path"])), shifted["test_images"][2])
    assert data["test_ood"]["labels"] == shifted["test_labels"][:3, 0].tolist()
    assert (tmp_path / "cache-ood").is_dir()


def test_the_cache_is_written_once_and_again_when_the_file_changes(tmp_path):
    write_npz(tmp_path / "pneumoniamnist.npz", flag="pneumoniamnist")
    first = load_medmnist(tmp_path / "pneumoniamnist.npz", cache_dir=tmp_path / "cache")
    png = first["train"][0]["path"]
    stamp = (tmp_path / "cache" / "train" / "000000.png").stat().st_mtime_ns
    again = load_medmnist(tmp_path / "pneumoniamnist.npz", cache_dir=tmp_path / "cache")
    assert again["train"][0]["path"] == png
    assert (tmp_path / "cache" / "train" / "000000.png").stat().st_mtime_ns == stamp  # not rewritten
    arrays = write_npz(tmp_path / "pneumoniamnist.npz", flag="pneumoniamnist", seed=5)
    with pytest.warns(UserWarning, match="replacing"):
        changed = load_medmnist(tmp_path / "pneumoniamnist.npz", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(Image.open(changed["train"][0]["path"])), arrays["train_images"][0])


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="zenodo.org/records/10519652"):
        load_medmnist(tmp_path / "pathmnist.npz")
    (tmp_path / "pathmnist.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="is not an .npz file"):
        load_medmnist(tmp_path / "pathmnist.npz")
    write_npz(tmp_path / "dermamnist.npz", flag="octmnist")  # grey images under a colour set's name
    with pytest.raises(ValueError, match="1 channel.*has 3: pass the flag="):
        load_medmnist(tmp_path / "dermamnist.npz", cache_dir=tmp_path / "c1")
    write_npz(tmp_path / "octmnist.npz", flag="octmnist", test_labels=np.full((6, 1), 7, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"class indices 7\.\.7 but the set has 4 classes"):
        load_medmnist(tmp_path / "octmnist.npz", cache_dir=tmp_path / "c2")
    assert not (tmp_path / "c2").exists()  # checked before any image is written
    write_npz(tmp_path / "breastmnist.npz", flag="breastmnist", sizes={"train": 4, "test": 4})
    with pytest.raises(ValueError, match="no array 'val_images'"):
        load_medmnist(tmp_path / "breastmnist.npz", cache_dir=tmp_path / "c3")
    with pytest.raises(ValueError, match="label_names has 2 names but pathmnist has 9"):
        load_medmnist(tmp_path / "octmnist.npz", flag="pathmnist", label_names=["a", "b"])
