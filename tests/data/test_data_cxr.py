"""hfmed.data chest X-ray: the NIH and CheXpert builders and the synthetic CXR twin (offline, small)."""

import csv
import filecmp
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hfmed.data import (
    BUILDERS,
    CHEXPERT_LABELS,
    LABEL_REGIONS,
    NIH_LABELS,
    SYNTHETIC_CXR_LABELS,
    build_dataset,
    load_chexpert,
    load_nih_chestxray14,
    load_synthetic_cxr,
    synthetic_cxr_image,
    write_synthetic_chexpert,
    write_synthetic_nih,
)

SMALL = {"num_patients": 20, "images_per_patient": 3, "image_size": 32}


# ------------------------------------------------------------------------------------------------
# helpers: read the twin back with the standard library only (independent of the builders)
# ------------------------------------------------------------------------------------------------


def read_entries(root):
    """[{column: value}] from Data_Entry_2017.csv, parsed by hand (its header has 12 fields)."""
    with open(root / "Data_Entry_2017.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    assert header[:7] == [
        "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
        "View Position",
    ]  # fmt: skip
    assert len(header) == 12 and header[-1] == ""
    assert all(len(row) == 12 for row in rows[1:])
    return [dict(zip(header[:7], row[:7], strict=True)) for row in rows[1:]]


def expected_vector(findings, names):
    present = set(findings.split("|"))
    return [1.0 if name in present else 0.0 for name in names]


def read_list(path):
    return [line for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def nih(tmp_path_factory):
    return write_synthetic_nih(tmp_path_factory.mktemp("nih"), seed=0, **SMALL)


@pytest.fixture
def nih_copy(nih, tmp_path):
    return Path(shutil.copytree(nih, tmp_path / "copy"))


# ------------------------------------------------------------------------------------------------
# NIH ChestX-ray14 builder
# ------------------------------------------------------------------------------------------------


def test_label_constants():
    assert len(NIH_LABELS) == 14 and NIH_LABELS[0] == "Atelectasis" and NIH_LABELS[-1] == "Hernia"
    assert CHEXPERT_LABELS == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    assert set(SYNTHETIC_CXR_LABELS) <= set(NIH_LABELS) and set(LABEL_REGIONS) == set(SYNTHETIC_CXR_LABELS)


def test_nih_builder_splits_and_labels(nih):
    entries = read_entries(nih)
    test_names = set(read_list(nih / "test_list.txt"))
    train_val_names = set(read_list(nih / "train_val_list.txt"))
    data = load_nih_chestxray14(nih, label_names=SYNTHETIC_CXR_LABELS, val_fraction=0.25, seed=0)
    assert set(data) == {"train", "validation", "test"}
    assert data["train"].column_names == ["path", "labels", "patient_id", "image_id", "view"]
    assert sum(s.num_rows for s in data.values()) == len(entries) == 60
    # the official test list is respected, and the lists are patient-wise
    assert set(data["test"]["image_id"]) == test_names
    assert set(data["train"]["image_id"]) | set(data["validation"]["image_id"]) == train_val_names
    patients = {name: set(data[name]["patient_id"]) for name in data}
    assert patients["validation"] and patients["test"]
    assert not patients["train"] & patients["validation"]
    assert not (patients["train"] | patients["validation"]) & patients["test"]
    # labels, patient and view equal the CSV, parsed by hand
    by_name = {row["Image Index"]: row for row in entries}
    for split in data.values():
        for row in split:
            entry = by_name[row["image_id"]]
            assert row["labels"] == expected_vector(entry["Finding Labels"], SYNTHETIC_CXR_LABELS)
            assert row["patient_id"] == entry["Patient ID"] and row["view"] == entry["View Position"]
            assert row["path"] == str(nih / "images" / row["image_id"])
            if entry["Finding Labels"] == "No Finding":
                assert row["labels"] == [0.0] * 5
    assert any(r["Finding Labels"] == "No Finding" for r in entries)
    assert any("|" in r["Finding Labels"] for r in entries)
    # a subset, in another order; the full NIH list gives zeros for findings the twin never draws
    subset = load_nih_chestxray14(nih, label_names=["Pneumothorax", "Atelectasis"], val_fraction=0.25)
    for row in subset["test"]:
        assert row["labels"] == expected_vector(
            by_name[row["image_id"]]["Finding Labels"], ["Pneumothorax", "Atelectasis"]
        )
    full = load_nih_chestxray14(nih, val_fraction=0.25)
    assert len(full["train"][0]["labels"]) == 14
    assert np.array(full["train"]["labels"])[:, [3, 4, 5]].sum() == 0
    # same seed, same split; val_fraction=0 leaves validation empty
    assert (
        load_nih_chestxray14(nih, label_names=SYNTHETIC_CXR_LABELS, val_fraction=0.25, seed=0)["validation"][
            "image_id"
        ]
        == data["validation"]["image_id"]
    )
    assert load_nih_chestxray14(nih, val_fraction=0.0)["validation"].num_rows == 0


def test_nih_extracted_archive_layout(nih_copy):
    # the 12 extracted archives: images_001/images/, images_002/images/, ...
    names = sorted(p.name for p in (nih_copy / "images").iterdir())
    for index, name in enumerate(names):
        folder = nih_copy / f"images_{index % 3 + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.move(nih_copy / "images" / name, folder / name)
    (nih_copy / "images").rmdir()
    data = load_nih_chestxray14(nih_copy, label_names=SYNTHETIC_CXR_LABELS)
    paths = [p for split in data.values() for p in split["path"]]
    assert len(paths) == 60 and all(Path(p).is_file() for p in paths)
    assert {Path(p).parent.parent.name for p in paths} == {"images_001", "images_002", "images_003"}


def test_nih_errors(nih_copy):
    # missing files: the error lists the first few
    for name in ("00000002_000.png", "00000002_001.png"):
        (nih_copy / "images" / name).unlink()
    with pytest.raises(FileNotFoundError, match=r"2 of 60 images.*00000002_000\.png.*00000002_001\.png"):
        load_nih_chestxray14(nih_copy, label_names=SYNTHETIC_CXR_LABELS)
    data = load_nih_chestxray14(nih_copy, label_names=SYNTHETIC_CXR_LABELS, check_files=False)
    assert sum(s.num_rows for s in data.values()) == 60
    # an unknown finding name
    csv_path = nih_copy / "Data_Entry_2017.csv"
    text = csv_path.read_text()
    first = text.splitlines()[1].split(",")
    csv_path.write_text(text.replace(",".join(first[:2]), f"{first[0]},Cardiomegaly|Pneumonitis", 1))
    with pytest.raises(ValueError, match=r"unknown finding name\(s\) \['Pneumonitis'\]"):
        load_nih_chestxray14(nih_copy, label_names=SYNTHETIC_CXR_LABELS, check_files=False)
    csv_path.write_text(text)
    with pytest.raises(ValueError, match="not NIH ChestX-ray14 findings"):
        load_nih_chestxray14(nih_copy, label_names=["Atelectasis", "Lung Opacity"], check_files=False)
    # a listed image the CSV does not know
    with open(nih_copy / "test_list.txt", "a") as handle:
        handle.write("99999999_000.png\n")
    with pytest.raises(ValueError, match="99999999_000.png"):
        load_nih_chestxray14(nih_copy, check_files=False)


def test_parse_finding_labels_by_hand():
    from hfmed.data.nih_chestxray14 import parse_finding_labels

    matrix = parse_finding_labels(["No Finding", "Effusion|Atelectasis", "Hernia", " Mass | Nodule "],
                                  ["Atelectasis", "Effusion", "Mass", "Nodule"])  # fmt: skip
    assert matrix.dtype == np.float32
    assert matrix.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]]
    with pytest.raises(ValueError, match="No Finding.*together"):
        parse_finding_labels(["No Finding|Mass"])
    with pytest.raises(ValueError, match="empty entries"):
        parse_finding_labels(["Mass|"])


# ------------------------------------------------------------------------------------------------
# CheXpert builder
# ------------------------------------------------------------------------------------------------

HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices"
)


def chexpert_row(path, side, ap_pa, atel, cardio, consol, edema, effusion):
    # columns in file order; only the 5 competition ones vary
    return (
        f"CheXpert-v1.0-small/{path},Female,50,{side},{ap_pa},,,{cardio},1.0,,{edema},{consol},,{atel},0.0,"
        f"{effusion},,,1.0"
    )


@pytest.fixture
def chexpert(tmp_path):
    folder = tmp_path / "CheXpert-v1.0-small"
    train = [  # Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion
        chexpert_row("train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP", "1.0", "-1.0", "", "0.0", "-1.0"),
        chexpert_row("train/patient00001/study1/view2_lateral.jpg", "Lateral", "", "1.0", "-1.0", "", "0.0", "-1.0"),
        chexpert_row("train/patient00002/study1/view1_frontal.jpg", "Frontal", "PA", "", "", "-1.0", "1.0", "0.0"),
        chexpert_row("train/patient00003/study2/view1_frontal.jpg", "Frontal", "AP", "0.0", "1.0", "1.0", "", ""),
    ]  # fmt: skip
    valid = [chexpert_row("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP", "0.0", "1.0", "0.0",
                          "0.0", "1.0")]  # fmt: skip
    folder.mkdir()
    (folder / "train.csv").write_text("\n".join([HEADER, *train]) + "\n")
    (folder / "valid.csv").write_text("\n".join([HEADER, *valid]) + "\n")
    for line in train + valid:
        path = tmp_path / line.split(",")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return tmp_path


def test_chexpert_uncertain_policies(chexpert):
    expected = {  # frontal rows of train.csv, by hand
        "ones": [[1, 1, 0, 0, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]],
        "zeros": [[1, 0, 0, 0, 0], [0, 0, 0, 1, 0], [0, 1, 1, 0, 0]],
        "ignore": [[1, -1, 0, 0, -1], [0, 0, -1, 1, 0], [0, 1, 1, 0, 0]],
    }
    for policy, vectors in expected.items():
        data = load_chexpert(chexpert, uncertain=policy)
        assert set(data) == {"train", "validation"}
        assert data["train"]["labels"] == vectors, policy
        assert data["validation"]["labels"] == [[0, 1, 0, 0, 1]]
    with pytest.raises(ValueError, match="uncertain must be one of"):
        load_chexpert(chexpert, uncertain="maybe")
    # another label choice and order (blank -> 0)
    data = load_chexpert(chexpert, label_names=["Support Devices", "Pneumothorax", "Pneumonia"])
    assert data["train"]["labels"] == [[1, 0, 0]] * 3
    with pytest.raises(ValueError, match="no column"):
        load_chexpert(chexpert, label_names=["Hernia"])


def test_chexpert_views_paths_patients(chexpert):
    folder = chexpert / "CheXpert-v1.0-small"
    for root in (chexpert, folder):  # the parent, or the CheXpert folder itself
        data = load_chexpert(root)
        assert data["train"]["path"][0] == str(folder / "train/patient00001/study1/view1_frontal.jpg")
        assert data["train"]["patient_id"] == ["patient00001", "patient00002", "patient00003"]
        assert data["train"]["view"] == ["AP", "PA", "AP"]
        assert data["validation"]["patient_id"] == ["patient64541"]
        assert (
            data["train"]["image_id"][2] == "CheXpert-v1.0-small/train/patient00003/study2/view1_frontal.jpg"
        )
    both = load_chexpert(chexpert, frontal_only=False)
    assert both["train"].num_rows == 4 and both["train"]["view"][1] == "Lateral"
    (folder / "train/patient00002/study1/view1_frontal.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 images.*patient00002"):
        load_chexpert(chexpert)
    assert load_chexpert(folder, check_files=False)["train"].num_rows == 3
    with pytest.raises(FileNotFoundError, match="train.csv"):
        load_chexpert(chexpert / "CheXpert-v1.0-small" / "train")


def test_chexpert_val_fraction_carves_validation_from_train(tmp_path):
    folder = write_synthetic_chexpert(tmp_path, num_patients=12, num_valid_patients=3, image_size=16, seed=0)
    with open(folder / "valid.csv", newline="") as handle:
        valid_paths = {row["Path"] for row in csv.DictReader(handle) if row["Frontal/Lateral"] == "Frontal"}
    data = load_chexpert(tmp_path, val_fraction=0.3, seed=0)
    assert set(data) == {"train", "validation", "test"}
    assert set(data["test"]["image_id"]) == valid_paths
    assert data["validation"].num_rows and data["train"].num_rows
    assert not set(data["train"]["patient_id"]) & set(data["validation"]["patient_id"])
    assert set(data["train"]["patient_id"]) | set(data["validation"]["patient_id"]) == {
        f"patient{i:05d}" for i in range(1, 13)
    }
    official = load_chexpert(folder, uncertain="ignore")
    assert set(official["validation"]["image_id"]) == valid_paths
    train = np.array(official["train"]["labels"])
    assert set(np.unique(train)) == {-1.0, 0.0, 1.0}
    assert set(np.unique(official["validation"]["labels"])) <= {0.0, 1.0}
    assert Image.open(official["train"]["path"][0]).format == "JPEG"


# ------------------------------------------------------------------------------------------------
# synthetic CXR twin
# ------------------------------------------------------------------------------------------------


def test_twin_layout_is_deterministic_in_its_seed(nih, tmp_path):
    same = write_synthetic_nih(tmp_path / "same", seed=0, **SMALL)
    other = write_synthetic_nih(tmp_path / "other", seed=1, **SMALL)
    for name in ("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt"):
        assert filecmp.cmp(nih / name, same / name, shallow=False)
    assert not filecmp.cmp(nih / "Data_Entry_2017.csv", other / "Data_Entry_2017.csv", shallow=False)
    names = sorted(p.name for p in (nih / "images").iterdir())
    assert names == sorted(p.name for p in (same / "images").iterdir())
    assert names[:4] == ["00000001_000.png", "00000001_001.png", "00000001_002.png", "00000002_000.png"]
    for name in names[:10]:
        a = np.asarray(Image.open(nih / "images" / name))
        assert np.array_equal(a, np.asarray(Image.open(same / "images" / name)))
    assert not np.array_equal(np.asarray(Image.open(nih / "images" / names[0])),
                              np.asarray(Image.open(other / "images" / names[0])))  # fmt: skip
    image = Image.open(nih / "images" / names[0])
    assert image.mode == "L" and image.size == (32, 32)
    entries = read_entries(nih)
    assert [r["Image Index"] for r in entries] == names
    assert {r["Follow-up #"] for r in entries} == {"0", "1", "2"} and {r["View Position"] for r in entries} == {
        "PA", "AP",
    }  # fmt: skip
    found = {f for r in entries for f in r["Finding Labels"].split("|")}
    assert found <= {*SYNTHETIC_CXR_LABELS, "No Finding"}
    test_patients = {n[:8] for n in read_list(nih / "test_list.txt")}
    assert 1 <= len(test_patients) <= 5  # ~15 % of 20


def test_twin_16_bit(tmp_path):
    root = write_synthetic_nih(tmp_path, num_patients=2, images_per_patient=1, image_size=32, bit_depth=16)
    image = Image.open(root / "images" / "00000001_000.png")
    assert image.mode == "I;16"
    pixels = np.asarray(image)
    assert pixels.max() > 255
    eight = synthetic_cxr_image([], 32, np.random.default_rng(0))
    sixteen = synthetic_cxr_image([], 32, np.random.default_rng(0), bit_depth=16)
    assert np.abs(sixteen / 65535.0 - eight / 255.0).max() <= 0.5 / 255 + 1e-9


def test_each_finding_is_drawn_inside_its_region():
    size = 64
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for name in SYNTHETIC_CXR_LABELS:
        y0, x0, y1, x1 = (np.array(LABEL_REGIONS[name]) * size).tolist()
        inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
        for seed in range(4):
            base = synthetic_cxr_image([], size, np.random.default_rng(seed)).astype(np.float64)
            shown = synthetic_cxr_image([name], size, np.random.default_rng(seed)).astype(np.float64)
            difference = np.abs(shown - base)
            assert difference.sum() > 20 * 255 * 0.25, (name, seed)  # a visible pattern, not a few pixels
            assert difference[inside].sum() >= 0.7 * difference.sum(), (name, seed)
            cy, cx = (difference * yy).sum() / difference.sum(), (difference * xx).sum() / difference.sum()
            assert y0 <= cy < y1 and x0 <= cx < x1, (name, seed)
    # the labels can be given as a dict or as 5 values in label order
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    by_name = synthetic_cxr_image(["Effusion"], 32, rng())
    assert np.array_equal(by_name, synthetic_cxr_image({"Effusion": 1}, 32, rng()))
    assert np.array_equal(by_name, synthetic_cxr_image([0, 0, 1, 0, 0], 32, rng()))
    with pytest.raises(ValueError, match="unknown label"):
        synthetic_cxr_image({"Hernia": 1}, 32, rng())


def test_twin_prevalence(tmp_path):
    root = write_synthetic_nih(tmp_path, num_patients=300, images_per_patient=2, image_size=16, seed=3)
    findings = [r["Finding Labels"] for r in read_entries(root)]
    assert 0.28 <= np.mean([f == "No Finding" for f in findings]) <= 0.42
    for name in SYNTHETIC_CXR_LABELS:
        assert 0.18 <= np.mean([name in f.split("|") for f in findings]) <= 0.36, name


def test_synthetic_cxr_builder_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "cache"))
    data = build_dataset(
        "synthetic_cxr", num_patients=10, images_per_patient=2, image_size=16, val_fraction=0.3
    )
    assert set(data) == {"train", "validation", "test"}
    assert sum(s.num_rows for s in data.values()) == 20
    folder = Path(data["train"]["path"][0]).parent.parent
    assert folder.parent == tmp_path / "cache" / "synthetic_cxr"
    assert (folder / ".hfmed_synthetic_cxr.json").is_file()
    mtime = (folder / "Data_Entry_2017.csv").stat().st_mtime_ns
    again = load_synthetic_cxr(num_patients=10, images_per_patient=2, image_size=16, val_fraction=0.3)
    assert (folder / "Data_Entry_2017.csv").stat().st_mtime_ns == mtime  # read from the cache
    assert again["validation"]["image_id"] == data["validation"]["image_id"]
    assert {"nih_chestxray14", "chexpert", "synthetic_cxr"} <= set(BUILDERS)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="did not write"):
        load_synthetic_cxr(root=tmp_path / "foreign", num_patients=4, image_size=16)
