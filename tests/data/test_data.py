"""hfmed.data: the synthetic RSNA twin, the builders, transforms, sampler and pos_weight (offline, small)."""

import csv
import filecmp
import pickle
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from torch.utils.data import DataLoader

import hfmed.data.rsna_ich as rsna_module
from hfmed import ScopeformerImageProcessor
from hfmed.data import (
    BUILDERS,
    balanced_sampler,
    build_dataset,
    collate,
    load_hub_dataset,
    load_image_csv,
    load_rsna_ich,
    load_synthetic_ct,
    make_transform,
    pos_weight_from_data,
    synthetic_ct_slice,
    write_synthetic_rsna,
)
from hfmed.models.scopeformer import RSNA_LABELS

SUBTYPES = RSNA_LABELS[1:]
SMALL = {"num_patients": 10, "slices_per_patient": 3, "image_size": 32}


# ------------------------------------------------------------------------------------------------
# helpers: read the twin back with the standard library only (independent of the builders)
# ------------------------------------------------------------------------------------------------


def read_stage2_csv(path):
    """{image_id: {subtype: int}} from an RSNA label CSV, parsed by hand."""
    labels = {}
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["ID", "Label"]
        for row_id, value in reader:
            image_id, subtype = row_id.rsplit("_", 1)
            labels.setdefault(image_id, {})[subtype] = int(value)
    return labels


def hu_of(path):
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return write_synthetic_rsna(tmp_path_factory.mktemp("twin"), seed=0, **SMALL)


@pytest.fixture
def twin_copy(twin, tmp_path):
    """A private copy of the twin that a test may modify."""
    return Path(shutil.copytree(twin, tmp_path / "copy"))


@pytest.fixture(scope="module")
def processor():
    return ScopeformerImageProcessor(size={"height": 32, "width": 32})


# ------------------------------------------------------------------------------------------------
# synthetic twin
# ------------------------------------------------------------------------------------------------


def test_twin_is_deterministic_in_its_seed(twin, tmp_path):
    same = write_synthetic_rsna(tmp_path / "same", seed=0, **SMALL)
    other = write_synthetic_rsna(tmp_path / "other", seed=1, **SMALL)
    for name in ("stage_2_train.csv", "labels.csv"):
        assert filecmp.cmp(twin / name, same / name, shallow=False)
        assert not filecmp.cmp(twin / name, other / name, shallow=False)
    files = sorted(p.name for p in (twin / "stage_2_train").iterdir())
    assert files == sorted(p.name for p in (same / "stage_2_train").iterdir())
    for name in files:
        assert np.array_equal(hu_of(twin / "stage_2_train" / name), hu_of(same / "stage_2_train" / name))
    other_files = sorted((other / "stage_2_train").iterdir())
    assert not set(files) & {p.name for p in other_files}
    # different seed, different pixels (not only different names)
    assert not np.array_equal(hu_of(twin / "stage_2_train" / files[0]), hu_of(other_files[0]))


def test_twin_layout_and_labels(twin):
    labels = read_stage2_csv(twin / "stage_2_train.csv")
    files = {p.stem for p in (twin / "stage_2_train").glob("*.dcm")}
    assert set(labels) == files
    assert len(files) == SMALL["num_patients"] * SMALL["slices_per_patient"]
    assert all(re.fullmatch(r"ID_[0-9a-f]{12}", image_id) for image_id in files)
    for image_id, row in labels.items():
        assert set(row) == set(RSNA_LABELS), image_id
        assert row["any"] == max(row[s] for s in SUBTYPES), image_id
    # labels.csv agrees with stage_2_train.csv and with the DICOM PatientID
    with open(twin / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(labels)
    for row in rows:
        image_id = Path(row["path"]).stem
        assert {n: int(row[n]) for n in RSNA_LABELS} == labels[image_id]
        assert pydicom.dcmread(twin / row["path"]).PatientID == row["patient_id"]
    assert len({row["patient_id"] for row in rows}) == SMALL["num_patients"]


def test_twin_label_prevalence(tmp_path):
    root = write_synthetic_rsna(tmp_path, num_patients=100, slices_per_patient=4, image_size=16, seed=3)
    labels = np.array(
        [[row[n] for n in RSNA_LABELS] for row in read_stage2_csv(root / "stage_2_train.csv").values()]
    )
    negative = 1 - labels[:, 0].mean()
    assert 0.3 <= negative <= 0.5
    for j, name in enumerate(SUBTYPES, start=1):
        assert 0.18 <= labels[:, j].mean() <= 0.36, name


def test_twin_dicom_tags_and_hounsfield_ranges(twin, processor):
    paths = sorted((twin / "stage_2_train").glob("*.dcm"))
    for path in paths[:5]:
        ds = pydicom.dcmread(path)
        assert ds.Modality == "CT"
        assert (ds.Rows, ds.Columns) == (32, 32)
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 1
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert float(ds.RescaleSlope) == 1 and float(ds.RescaleIntercept) == -1024
        assert ds.pixel_array.dtype == np.int16
        assert re.fullmatch(r"ID_[0-9a-f]+", ds.PatientID)
        assert ds.StudyInstanceUID and ds.SOPInstanceUID and len(ds.PixelSpacing) == 2
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        hu = hu_of(path)
        corners = np.concatenate(
            [hu[:2, :2].ravel(), hu[:2, -2:].ravel(), hu[-2:, :2].ravel(), hu[-2:, -2:].ravel()]
        )
        assert corners.max() <= -900  # air
        middle_row = hu[16]
        bone = np.flatnonzero(middle_row > 300)
        assert len(bone) >= 2 and bone.min() < 10 and bone.max() > 22  # skull on both sides
        assert middle_row[bone.min() : bone.max()].min() < 300  # and no bone in between
        assert hu.max() <= 1600
        soft_tissue = hu[(hu > -200) & (hu < 200)]
        assert 20 <= np.median(soft_tissue) <= 50
    pixel_values = processor([str(p) for p in paths[:4]], return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (4, 3, 32, 32) and torch.isfinite(pixel_values).all()


def _blood(labels, seed=5, size=64):
    """Pixels the blood changed: same seed, so the same head, with and without the lesion."""
    with_blood = synthetic_ct_slice(labels, size, np.random.default_rng(seed))
    without = synthetic_ct_slice({}, size, np.random.default_rng(seed))
    changed = np.abs(with_blood - without) > 10
    return with_blood, without, changed


def _inner_skull_distance(without):
    """Per pixel, the distance in pixels to the nearest skull (> 300 HU) pixel."""
    skull = np.argwhere(without > 300)
    yy, xx = np.mgrid[0 : without.shape[0], 0 : without.shape[1]]
    points = np.stack([yy.ravel(), xx.ravel()], 1)
    distance = np.min(np.linalg.norm(points[:, None, :] - skull[None, :, :], axis=2), axis=1)
    return distance.reshape(without.shape)


@pytest.mark.parametrize("seed", [5, 6])
def test_subtypes_differ_in_place_and_shape(seed):
    size = 64
    _, without, _ = _blood({}, seed)
    to_skull = _inner_skull_distance(without)
    found = {}
    for name in SUBTYPES:
        with_blood, _, changed = _blood({name: 1}, seed)
        assert changed.sum() >= 15, name  # large enough to learn at 64 px
        assert 50 <= np.median(with_blood[changed]) <= 90, name  # acute blood HU
        found[name] = changed
    assert to_skull[found["epidural"]].min() <= 1.5 and to_skull[found["subdural"]].min() <= 1.5
    assert to_skull[found["subarachnoid"]].min() <= 1.5
    assert to_skull[found["intraparenchymal"]].min() >= 3
    assert to_skull[found["intraventricular"]].min() >= 8
    # the ventricles: CSF-dark pixels near the centre, which intraventricular blood fills
    centre = np.zeros((size, size), bool)
    centre[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    assert (without[found["intraventricular"]] < 20).mean() > 0.8 and (
        found["intraventricular"] <= centre
    ).all()
    # epidural is a thick lens, subdural a thin crescent: depth of blood measured from the skull
    assert to_skull[found["epidural"]].max() > to_skull[found["subdural"]].max() + 1
    # labels are not drawn when 0, and `any` must agree
    assert np.array_equal(synthetic_ct_slice([0] * 6, size, np.random.default_rng(seed)), without)
    with pytest.raises(ValueError, match="any"):
        synthetic_ct_slice({"any": 1}, size, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown label"):
        synthetic_ct_slice({"edh": 1}, size, np.random.default_rng(0))


def test_load_synthetic_ct_caches_and_regenerates(tmp_path, monkeypatch):
    root = tmp_path / "synthetic"
    data = load_synthetic_ct(
        root, num_patients=6, slices_per_patient=2, image_size=16, val_fraction=0.3, seed=2
    )
    assert data["train"].num_rows + data["validation"].num_rows == 12
    calls = []
    monkeypatch.setattr(
        "hfmed.data.synthetic_ct.write_synthetic_rsna",
        lambda *a, **k: calls.append(a) or pytest.fail("rewrote"),
    )
    again = load_synthetic_ct(
        root, num_patients=6, slices_per_patient=2, image_size=16, val_fraction=0.3, seed=2
    )
    assert again["train"]["path"] == data["train"]["path"] and not calls
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="other parameters"):
        bigger = load_synthetic_ct(
            root, num_patients=8, slices_per_patient=2, image_size=16, val_fraction=0.3
        )
    assert bigger["train"].num_rows + bigger["validation"].num_rows == 16
    assert len(list((root / "stage_2_train").iterdir())) == 16  # old files removed
    # default root: a cache folder per parameter set
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "cache"))
    load_synthetic_ct(num_patients=4, slices_per_patient=1, image_size=16, val_fraction=0.5, seed=1)
    (folder,) = (tmp_path / "cache" / "synthetic_ct").iterdir()
    assert (folder / "stage_2_train.csv").is_file()
    # a folder holding other things is not touched
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        load_synthetic_ct(foreign, num_patients=4, slices_per_patient=1, image_size=16)


# ------------------------------------------------------------------------------------------------
# rsna_ich builder
# ------------------------------------------------------------------------------------------------


def test_rsna_builder_rows_labels_patients(twin):
    data = load_rsna_ich(twin, val_fraction=0.3, test_fraction=0.2, seed=0)
    assert set(data) == {"train", "validation", "test"}
    expected = read_stage2_csv(twin / "stage_2_train.csv")
    seen = {}
    for split in data.values():
        assert split.column_names == ["path", "labels", "patient_id", "image_id"]
        assert split.features["labels"].length == 6 and split.features["labels"].feature.dtype == "float32"
        for row in split:
            assert Path(row["path"]).is_absolute() and Path(row["path"]).is_file()
            assert Path(row["path"]).stem == row["image_id"]
            assert row["labels"] == [float(expected[row["image_id"]][n]) for n in RSNA_LABELS]
            assert row["patient_id"] == pydicom.dcmread(row["path"]).PatientID
            seen[row["image_id"]] = row
    assert set(seen) == set(expected)
    patients = [set(split["patient_id"]) for split in data.values()]
    assert all(patients) and not (
        patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2]
    )


def test_rsna_split_is_deterministic_and_stable(twin):
    def split_of(data):
        return {pid: name for name, split in data.items() for pid in split["patient_id"]}

    first = split_of(load_rsna_ich(twin, val_fraction=0.3, seed=0))
    assert split_of(load_rsna_ich(twin, val_fraction=0.3, seed=0)) == first
    assert split_of(load_rsna_ich(twin, val_fraction=0.3, seed=1)) != first
    # asking for a test split takes patients from train only: validation does not move
    with_test = split_of(load_rsna_ich(twin, val_fraction=0.3, test_fraction=0.3, seed=0))
    assert {p for p, s in with_test.items() if s == "validation"} == {
        p for p, s in first.items() if s == "validation"
    }
    # a label subset, in the caller's order
    subset = load_rsna_ich(twin, label_names=["subdural", "any"], val_fraction=0.3)
    expected = read_stage2_csv(twin / "stage_2_train.csv")
    row = subset["train"][0]
    assert row["labels"] == [expected[row["image_id"]]["subdural"], expected[row["image_id"]]["any"]]
    assert load_rsna_ich(twin, val_fraction=0.3, limit=7)["train"].num_rows <= 7


def test_rsna_patient_cache_is_written_and_reused(twin_copy, monkeypatch):
    cache = twin_copy / "patient_ids.csv"
    cache.unlink(missing_ok=True)
    first = load_rsna_ich(twin_copy, val_fraction=0.3)
    with open(cache, newline="") as handle:
        rows = {r["image_id"]: r["patient_id"] for r in csv.DictReader(handle)}
    assert rows == {r["image_id"]: r["patient_id"] for s in first.values() for r in s}

    def no_headers(path):
        raise AssertionError(f"read a header although it is cached: {path}")

    monkeypatch.setattr(rsna_module, "_read_patient_id", no_headers)
    second = load_rsna_ich(twin_copy, val_fraction=0.3)
    assert second["train"]["image_id"] == first["train"]["image_id"]
    # an explicit patient map replaces both headers and cache
    mapping = twin_copy / "my_map.csv"
    mapping.write_text("image_id,patient_id\n" + "".join(f"{i},P{n % 2}\n" for n, i in enumerate(rows)))
    mapped = load_rsna_ich(twin_copy, val_fraction=0.5, seed=3, patient_map=mapping)
    assert {p for s in mapped.values() for p in s["patient_id"]} == {"P0", "P1"}
    mapping.write_text("image_id,patient_id\n" + "".join(f"{i},P\n" for i in list(rows)[1:]))
    with pytest.raises(ValueError, match="no row for 1 image"):
        load_rsna_ich(twin_copy, patient_map=mapping)


def test_rsna_duplicates_dropped_conflicts_raise(twin_copy):
    csv_path = twin_copy / "stage_2_train.csv"
    lines = csv_path.read_text().splitlines()
    reference = load_rsna_ich(twin_copy, val_fraction=0.3)
    csv_path.write_text("\n".join([*lines, *lines[1:4], lines[7]]) + "\n")
    deduplicated = load_rsna_ich(twin_copy, val_fraction=0.3)
    for name in reference:
        assert deduplicated[name][:] == reference[name][:]
    row_id, value = lines[2].split(",")
    csv_path.write_text("\n".join([*lines, f"{row_id},{1 - int(value)}"]) + "\n")
    with pytest.raises(ValueError, match=f"conflicting.*{row_id}"):
        load_rsna_ich(twin_copy)
    incomplete = [line for line in lines if not line.startswith(lines[1].rsplit("_", 1)[0] + "_subdural")]
    csv_path.write_text("\n".join(incomplete) + "\n")
    with pytest.raises(ValueError, match=r"miss a row.*\['subdural'\]"):
        load_rsna_ich(twin_copy)
    csv_path.write_text("\n".join([*lines, f"{row_id},2"]) + "\n")
    with pytest.raises(ValueError, match="0 or 1"):
        load_rsna_ich(twin_copy)
    csv_path.write_text("image,label\nID_1_any,0\n")
    with pytest.raises(ValueError, match="ID.*Label"):
        load_rsna_ich(twin_copy)


def test_rsna_missing_files_raise(twin_copy, tmp_path):
    with pytest.raises(FileNotFoundError, match="stage_1_train.csv"):
        load_rsna_ich(twin_copy, csv_name="stage_1_train.csv")
    with pytest.raises(FileNotFoundError, match="stage_1_train_images"):
        load_rsna_ich(twin_copy, dicom_dir="stage_1_train_images")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_rsna_ich(tmp_path / "nowhere")
    victim = sorted((twin_copy / "stage_2_train").iterdir())[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=f"1 of 30 images.*{victim.name}"):
        load_rsna_ich(twin_copy)
    # check_files=False skips the check (the benchmark's setting)
    data = load_rsna_ich(
        twin_copy, check_files=False, patient_map=twin_copy / "patient_ids.csv", val_fraction=0.3
    )
    assert sum(s.num_rows for s in data.values()) == 30


def test_rsna_bad_arguments(twin):
    with pytest.raises(ValueError, match="val_fraction"):
        load_rsna_ich(twin, val_fraction=1.5)
    with pytest.raises(ValueError, match="sum"):
        load_rsna_ich(twin, val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="validation split is empty"):
        load_rsna_ich(twin, val_fraction=0.001)
    data = load_rsna_ich(twin, val_fraction=0.0)
    assert data["validation"].num_rows == 0 and data["train"].num_rows == 30


# ------------------------------------------------------------------------------------------------
# image_csv builder
# ------------------------------------------------------------------------------------------------


def _write_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_image_csv_relative_paths_and_random_split(twin):
    data = load_image_csv(twin / "labels.csv", val_fraction=0.3, seed=0)
    expected = read_stage2_csv(twin / "stage_2_train.csv")
    rows = [r for s in data.values() for r in s]
    assert len(rows) == 30 and data["train"].column_names == ["path", "labels", "patient_id"]
    for row in rows:
        assert Path(row["path"]) == twin / "stage_2_train" / f"{Path(row['path']).stem}.dcm"
        assert row["labels"] == [float(expected[Path(row["path"]).stem][n]) for n in RSNA_LABELS]
    assert not set(data["train"]["patient_id"]) & set(data["validation"]["patient_id"])
    # same patients, same hash: the CSV builder and the RSNA builder agree on the split
    rsna = load_rsna_ich(twin, val_fraction=0.3, seed=0)
    assert set(rsna["validation"]["path"]) == set(data["validation"]["path"])


def test_image_csv_options(tmp_path):
    _write_images(tmp_path / "imgs", ["a.png", "b.png", "c.png", "d.png"])
    csv_path = tmp_path / "meta" / "list.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(
        "file,EDH,SDH,fold,patient\n"
        "a.png,1,0,train,007\nb.png,0,1,val,NA\nc.png,true,false,test,x\nd.png,0,0,train,007\n"
    )
    data = load_image_csv(
        csv_path, image_root=tmp_path / "imgs", path_column="file", label_columns=["EDH", "SDH"],
        label_names=["epidural", "subdural"], patient_column="patient", split_column="fold",
    )  # fmt: skip
    assert {k: v.num_rows for k, v in data.items()} == {"train": 2, "validation": 1, "test": 1}
    assert data["train"]["patient_id"] == ["007", "007"] and data["validation"]["patient_id"] == ["NA"]
    assert data["test"][0]["labels"] == [1.0, 0.0]
    assert data["train"]["path"] == [str(tmp_path / "imgs" / "a.png"), str(tmp_path / "imgs" / "d.png")]
    # no patient column: per-image split with a warning; None silences it
    with pytest.warns(UserWarning, match="split one by one"):
        load_image_csv(csv_path, image_root=tmp_path / "imgs", path_column="file", label_columns=["EDH", "SDH"],
                       label_names=["epidural", "subdural"], split_column="fold")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image_csv(csv_path, image_root=tmp_path / "imgs", path_column="file", label_columns=["EDH", "SDH"],
                       label_names=["epidural", "subdural"], split_column="fold", patient_column=None)  # fmt: skip
    # missing files: the error lists them, resolved against image_root (default: the CSV's folder)
    with pytest.raises(FileNotFoundError, match=r"4 of 4 images.*a\.png.*b\.png"):
        load_image_csv(csv_path, path_column="file", label_columns=["EDH", "SDH"], label_names=["e", "s"])
    with pytest.raises(ValueError, match="no column"):
        load_image_csv(csv_path, image_root=tmp_path / "imgs", path_column="file", label_names=["e", "s"])
    csv_path.write_text("file,EDH,SDH,fold\na.png,1,0,train\nb.png,-1,0,holdout\n")
    with pytest.raises(ValueError, match="'EDH'.*-1"):
        load_image_csv(csv_path, image_root=tmp_path / "imgs", path_column="file", label_columns=["EDH", "SDH"],
                       label_names=["e", "s"], patient_column=None)  # fmt: skip
    csv_path.write_text("file,EDH,SDH,fold\na.png,1,0,train\nb.png,0,0,holdout\n")
    with pytest.raises(ValueError, match="holdout"):
        load_image_csv(csv_path, image_root=tmp_path / "imgs", path_column="file", label_columns=["EDH", "SDH"],
                       label_names=["e", "s"], patient_column=None, split_column="fold")  # fmt: skip


# ------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------


def test_build_dataset_registry(twin):
    assert {"synthetic_ct", "rsna_ich", "image_csv", "hub", "synthetic_cxr", "nih_chestxray14", "chexpert", "nifti_csv",
            "synthetic_brain", "medmnist", "image_folder"} <= set(BUILDERS)
    with pytest.raises(
        ValueError, match=r"unknown dataset builder 'rsna'.*image_csv.*rsna_ich.*synthetic_ct"
    ):
        build_dataset("rsna")
    with pytest.raises(TypeError, match="rsna_ich.*val_fracton.*csv_name"):
        build_dataset("rsna_ich", root=twin, val_fracton=0.2)
    data = build_dataset("rsna_ich", root=twin, val_fraction=0.3)
    assert set(data) == {"train", "validation"}


def test_import_hfmed_does_not_import_data():
    import subprocess
    import sys

    code = (
        "import sys, hfmed; print(any(m == 'hfmed.data' or m.startswith('hfmed.data.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------
# transforms, collate, sampler, pos_weight
# ------------------------------------------------------------------------------------------------


def test_transform_shapes_and_labels(twin, processor):
    data = load_rsna_ich(twin, val_fraction=0.3)
    view = data["train"].with_transform(make_transform(processor))
    batch = view[0:4]
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == data["train"][0:4]["labels"]
    # equals the processor on the same paths: eval mode does nothing else
    direct = processor(data["train"][0:4]["path"], return_tensors="pt")["pixel_values"]
    assert torch.equal(batch["pixel_values"], direct)
    loader = DataLoader(view, batch_size=5, collate_fn=collate)
    first = next(iter(loader))
    assert first["pixel_values"].shape == (5, 3, 32, 32) and first["labels"].shape == (5, 6)
    assert torch.equal(first["pixel_values"][:4], direct)


def test_augmentation_only_in_train_mode_and_reproducible(twin, processor):
    data = load_rsna_ich(twin, val_fraction=0.3)["train"]
    paths = data[0:3]["path"]
    clean = processor(paths, return_tensors="pt")["pixel_values"]
    flip = {"hflip": 1.0}
    assert torch.equal(
        data.with_transform(make_transform(processor, flip, train=False))[0:3]["pixel_values"], clean
    )
    flipped = data.with_transform(make_transform(processor, flip, train=True))[0:3]["pixel_values"]
    assert torch.equal(flipped, torch.flip(clean, dims=[-1]))

    heavy = {"hflip": 0.5, "rotate_degrees": 30, "scale": [0.8, 1.2], "translate": 0.1}
    view = data.with_transform(make_transform(processor, heavy, train=True))
    torch.manual_seed(0)
    a = view[0:3]["pixel_values"]
    torch.manual_seed(0)
    b = view[0:3]["pixel_values"]
    c = view[0:3]["pixel_values"]
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, clean)
    # pixels moved in from outside are black (air) after normalisation, not zero
    black = (0.0 - torch.tensor(processor.image_mean)) / torch.tensor(processor.image_std)
    view = data.with_transform(make_transform(processor, {"translate": 0.4}, train=True))
    torch.manual_seed(1)
    shifted = view[0:3]["pixel_values"]
    assert torch.isclose(shifted.amin(dim=(0, 2, 3)), black, atol=1e-5).all()

    # DataLoader workers: the transform pickles (spawn), and worker seeds follow torch.manual_seed
    transform = make_transform(processor, heavy, train=True)
    clone = pickle.loads(pickle.dumps(transform))
    torch.manual_seed(3)
    expected = clone({"path": paths, "labels": [[0.0] * 6] * 3})["pixel_values"]
    torch.manual_seed(3)
    assert torch.equal(transform({"path": paths, "labels": [[0.0] * 6] * 3})["pixel_values"], expected)

    def epoch():
        torch.manual_seed(7)
        loader = DataLoader(data.with_transform(transform), batch_size=2, num_workers=2, collate_fn=collate)
        return torch.cat([batch["pixel_values"] for batch in loader])

    assert torch.equal(epoch(), epoch())

    with pytest.raises(ValueError, match=r"unknown augment key\(s\) \['flip'\].*hflip.*rotate_degrees"):
        make_transform(processor, {"flip": 0.5}, train=True)
    with pytest.raises(ValueError, match="scale"):
        make_transform(processor, {"scale": [1.2, 0.8]}, train=True)


LABELS = np.array(
    [  # any, a, b
        [1, 1, 0],
        [1, 1, 1],
        [1, 0, 1],
        [1, 1, 0],
        [0, 0, 0],
        [0, 0, 0],
    ],
    dtype=np.float32,
)


def test_balanced_sampler_weights_by_rarest_positive_label():
    # counts: any 4, a 3, b 2, all-negative 2 (worked out by hand from LABELS)
    expected = [1 / 3, 1 / 2, 1 / 2, 1 / 3, 1 / 2, 1 / 2]
    from datasets import Dataset

    dataset = Dataset.from_dict({"path": ["x"] * 6, "labels": LABELS.tolist()})
    sampler = balanced_sampler(dataset, ["any", "a", "b"], seed=0)
    assert np.allclose(sampler.weights.numpy(), expected)
    assert len(sampler) == 6 and sampler.replacement
    assert list(sampler) == list(balanced_sampler(dataset, ["any", "a", "b"], seed=0))
    # a transform on the dataset is bypassed (no image is decoded)
    exploding = dataset.with_transform(lambda batch: 1 / 0)
    assert np.allclose(balanced_sampler(exploding, ["any", "a", "b"]).weights.numpy(), expected)
    with pytest.raises(ValueError, match="2 names"):
        balanced_sampler(dataset, ["any", "a"])


def test_pos_weight_from_data_matches_counts():
    from datasets import Dataset

    dataset = Dataset.from_dict({"labels": LABELS.tolist()})
    assert pos_weight_from_data(dataset) == pytest.approx([2 / 4, 3 / 3, 4 / 2])
    with pytest.warns(UserWarning, match="no positive"):
        assert pos_weight_from_data(np.zeros((3, 2))) == [1.0, 1.0]


# ------------------------------------------------------------------------------------------------
# hub builder (offline: HF_HUB_OFFLINE=1 from tests/conftest.py)
# ------------------------------------------------------------------------------------------------


def test_hub_builder_offline_error_names_repo_and_setting():
    with pytest.raises(Exception, match=r"hfmed-test/no-such-dataset.*HF_HUB_OFFLINE=1") as info:
        load_hub_dataset("hfmed-test/no-such-dataset", RSNA_LABELS)
    assert isinstance(info.value, ConnectionError)


def test_hub_builder_maps_labels_from_local_files(tmp_path):
    import json

    def write(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    names = ["any", "epidural", "subdural"]
    train = write("train.jsonl", [
        {"picture": f"img{i}.png", "findings": f, "patient_id": f"P{i % 5}"}
        for i, f in enumerate([["any", "epidural"], [], ["subdural", "any"], ["any", "epidural", "subdural"]] * 5)
    ])  # fmt: skip
    data = load_hub_dataset(
        "json", names, image_column="picture", label_column="findings", val_fraction=0.4, seed=0,
        data_files={"train": train}, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    assert set(data) == {"train", "validation"}
    assert data["train"].column_names == ["image", "labels", "patient_id"]
    rows = [r for s in data.values() for r in s]
    assert len(rows) == 20
    by_image = {r["image"]: r["labels"] for r in rows}
    assert by_image["img0.png"] == [1.0, 1.0, 0.0] and by_image["img1.png"] == [0.0, 0.0, 0.0]
    assert by_image["img2.png"] == [1.0, 0.0, 1.0] and by_image["img3.png"] == [1.0, 1.0, 1.0]
    assert not set(data["train"]["patient_id"]) & set(data["validation"]["patient_id"])

    multi_hot = write(
        "mh.jsonl", [{"image": "a.png", "labels": [1, 0, 1]}, {"image": "b.png", "labels": [0, 0, 0]}]
    )
    val = write("val.jsonl", [{"image": "c.png", "labels": [1, 1, 0]}])
    data = load_hub_dataset("json", names, data_files={"train": multi_hot, "validation": val},
                            cache_dir=str(tmp_path / "cache"))  # fmt: skip
    assert data["train"]["labels"] == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert data["validation"]["labels"] == [[1.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="not in label_names"):
        load_hub_dataset("json", ["any"], image_column="picture", label_column="findings",
                         data_files={"train": train}, cache_dir=str(tmp_path / "cache"))  # fmt: skip


def test_seeded_augmentation_ignores_the_global_rng_and_follows_the_epoch(tmp_path):
    root = write_synthetic_rsna(tmp_path / "twin", num_patients=2, slices_per_patient=1, image_size=32, seed=0)
    paths = sorted(str(p) for p in (root / "stage_2_train").glob("*.dcm"))
    batch = {"path": paths, "labels": [[0.0] * 6] * len(paths)}
    processor = ScopeformerImageProcessor(size={"height": 32, "width": 32})
    transform = make_transform(processor, {"rotate_degrees": 30, "translate": 0.1}, train=True, seed=7)
    torch.manual_seed(1)
    first = transform(batch)["pixel_values"]
    torch.manual_seed(2)
    again = transform(batch)["pixel_values"]
    assert torch.equal(first, again)
    single = transform({"path": paths[1:], "labels": [[0.0] * 6]})["pixel_values"]
    assert torch.equal(single[0], first[1])  # batch position does not matter either
    transform.set_epoch(1)
    assert not torch.equal(transform(batch)["pixel_values"], first)


def test_carve_validation_is_group_wise_warns_without_groups_and_rejects_an_empty_split():
    import pytest
    from datasets import Dataset

    from hfmed.data.splits import carve_validation

    rows = Dataset.from_dict({"group_id": [f"p{i // 2}" for i in range(40)], "x": list(range(40))})
    train, validation = carve_validation(rows, rows["group_id"], True, "patient", 0.5, 0, "org/set")
    assert train.num_rows + validation.num_rows == 40 and validation.num_rows > 0
    assert not set(train["group_id"]) & set(validation["group_id"])  # no group on both sides
    with pytest.warns(UserWarning, match="no 'patient' column: validation is carved from train image by image"):
        carve_validation(rows, [str(i) for i in range(40)], False, "patient", 0.5, 0, "org/set")
    with pytest.raises(ValueError, match=r"carved from 'org/set' \(val_fraction=1e-06\) is empty"):
        carve_validation(rows, rows["group_id"], True, "patient", 1e-6, 0, "org/set")


def test_an_empty_split_error_counts_rows_and_only_counts_patients_when_there_are_any():
    import pyarrow as pa
    from datasets import Features, Value

    from hfmed.data.splits import make_dataset_dict

    features = Features({"path": Value("string")})
    table = pa.table({"path": ["a.png", "b.png", "c.png"]})
    everything_in_train = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match=r"^the validation split is empty: 3 rows split with fractions") as error:
        make_dataset_dict(table, features, everything_in_train, {"validation": 0.1}, "f", "d")
    assert "patients" not in str(error.value) and "None" not in str(error.value)
    features = Features({"path": Value("string"), "patient_id": Value("string")})
    table = pa.table({"path": ["a.png", "b.png", "c.png"], "patient_id": ["p1", "p1", "p2"]})
    with pytest.raises(ValueError, match=r"^the validation split is empty: 3 rows from 2 patients split with"):
        make_dataset_dict(table, features, everything_in_train, {"validation": 0.1}, "f", "d")
