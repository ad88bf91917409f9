"""hfmed.data brain MRI: the `nifti_csv` builder and the synthetic brain twin (offline, small volumes).

Measurements on the twin read the written files back with nibabel and find structures by world (RAS mm)
position, so they are independent of how the generator draws them.
"""

import csv
import filecmp
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.stats import spearmanr

from hfmed.data import (
    ADNI_DIAGNOSIS_MAP,
    BUILDERS,
    build_dataset,
    load_nifti_csv,
    load_synthetic_brain,
    make_transform,
    synthetic_brain_volume,
    write_synthetic_brain,
)
from hfmed.data.synthetic_brain import MARKER_NAME, MIN_FIELD_OF_VIEW_MM, ras_affine

SMALL = {"num_subjects": 24, "second_session_fraction": 0.25}
CSF_BELOW = 350.0  # T1 intensities: CSF ~160, grey matter >= 460, white matter ~700 (times a 0.9-1.1 gain)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def read_rows(root):
    with open(root / "participants.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def world_grid(image):
    """The RAS mm coordinates (3, x, y, z) of every voxel of a canonical (RAS) image."""
    ijk = np.indices(image.shape).reshape(3, -1)
    return (image.affine[:3, :3] @ ijk + image.affine[:3, 3:]).reshape(3, *image.shape)


def voxel_ml(image):
    return float(np.prod(image.header.get_zooms()[:3])) / 1000.0


def ventricle_ml(image):
    """CSF volume (mL) in a box around the lateral and third ventricles (below the fissure's reach)."""
    image = nib.as_closest_canonical(image)
    x, y, z = world_grid(image)
    box = (np.abs(x) < 22) & (np.abs(y) < 30) & (z > 4) & (z < 20)
    return float((image.get_fdata()[box] < CSF_BELOW).sum()) * voxel_ml(image)


def hippocampal_tissue_ml(image):
    """Tissue (not CSF) volume (mL) in boxes around both hippocampi."""
    image = nib.as_closest_canonical(image)
    x, y, z = world_grid(image)
    box = (np.abs(np.abs(x) - 27) < 7) & (np.abs(y + 20) < 20) & (np.abs(z + 16) < 8)
    return float((image.get_fdata()[box] >= CSF_BELOW).sum()) * voxel_ml(image)


def brain_tissue_ml(image):
    """Tissue volume (mL) within 60 mm of the head centre (inside the skull: CSF vs brain)."""
    image = nib.as_closest_canonical(image)
    x, y, z = world_grid(image)
    inside = (x / 55) ** 2 + (y / 72) ** 2 + (z / 58) ** 2 < 1
    return float((image.get_fdata()[inside] >= CSF_BELOW).sum()) * voxel_ml(image)


def as_image(volume, spacing):
    return nib.Nifti1Image(volume, ras_affine(volume.shape, [spacing] * 3))


def one_line_error(excinfo):
    assert "\n" not in str(excinfo.value)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return write_synthetic_brain(tmp_path_factory.mktemp("brain"), seed=0, **SMALL)


@pytest.fixture(scope="module")
def ad_twin(tmp_path_factory):
    return write_synthetic_brain(
        tmp_path_factory.mktemp("brain_ad"), num_subjects=30, ad_fraction=0.5, seed=1
    )


@pytest.fixture
def twin_copy(twin, tmp_path):
    return Path(shutil.copytree(twin, tmp_path / "copy"))


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------------
# the synthetic twin: files
# ------------------------------------------------------------------------------------------------


def test_twin_layout_and_participants_csv(twin):
    rows = read_rows(twin)
    assert list(rows[0]) == ["path", "subject_id", "session", "age", "diagnosis"]
    subjects = {row["subject_id"] for row in rows}
    assert subjects == {f"sub-{i:04d}" for i in range(1, 25)}
    repeated = [s for s in subjects if sum(row["subject_id"] == s for row in rows) == 2]
    assert len(repeated) == 6 and len(rows) == 30  # round(0.25 * 24) subjects with a second session
    for subject in repeated:
        first, second = (float(row["age"]) for row in rows if row["subject_id"] == subject)
        assert 1.0 <= second - first <= 3.05
    firsts = [float(row["age"]) for row in rows if row["session"] == "1"]
    assert min(firsts) >= 45.0 and max(firsts) <= 85.0 and np.std(firsts) > 5.0
    assert {row["diagnosis"] for row in rows} == {"CN"}  # ad_fraction defaults to 0
    for row in rows:
        assert row["path"] == (
            f"images/{row['subject_id']}/ses-{row['session']}/anat/{row['subject_id']}_ses-{row['session']}_T1w.nii.gz"
        )
        assert (twin / row["path"]).is_file()


def test_twin_writes_valid_nifti_with_a_ras_affine(twin):
    row = read_rows(twin)[0]
    image = nib.load(twin / row["path"])
    assert isinstance(image, nib.Nifti1Image)
    assert image.shape == (48, 56, 48) and image.get_data_dtype() == np.int16
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    np.testing.assert_allclose(image.affine, ras_affine((48, 56, 48), (4.0, 4.0, 4.0)))
    np.testing.assert_allclose(image.header.get_zooms(), (4.0, 4.0, 4.0))
    assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
    np.testing.assert_allclose(image.get_qform(), image.get_sform())
    assert image.header.get_xyzt_units()[0] == "mm"
    centre = image.affine @ np.array([23.5, 27.5, 23.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)  # the head is centred at world (0, 0, 0)
    data = image.get_fdata()
    assert np.isfinite(data).all() and data.min() >= 0 and 600 < np.percentile(data, 99) < 1000


@pytest.mark.parametrize("orientation", ["LPS", "ASL"])
def test_twin_orientation_changes_storage_not_anatomy(tmp_path, orientation):
    geometry = {"num_subjects": 2, "shape": (48, 56, 40), "spacing": (4.0, 4.0, 4.5), "seed": 3}
    ras = write_synthetic_brain(tmp_path / "ras", **geometry)
    other = write_synthetic_brain(tmp_path / "other", orientation=orientation, **geometry)
    for row in read_rows(ras):
        reference = nib.load(ras / row["path"])
        image = nib.load(other / row["path"])
        assert nib.aff2axcodes(image.affine) == tuple(orientation)
        expected_shape = {"LPS": (48, 56, 40), "ASL": (56, 40, 48)}[orientation]
        assert image.shape == expected_shape
        canonical = nib.as_closest_canonical(image)
        np.testing.assert_allclose(canonical.affine, reference.affine, atol=1e-6)
        np.testing.assert_array_equal(canonical.get_fdata(), reference.get_fdata())
        np.testing.assert_allclose(sorted(image.header.get_zooms()), sorted((4.0, 4.0, 4.5)))


def test_twin_is_deterministic(twin, tmp_path):
    again = write_synthetic_brain(tmp_path / "again", seed=0, **SMALL)
    rows = read_rows(twin)
    assert read_rows(again) == rows
    for row in rows[:5]:
        assert filecmp.cmp(twin / row["path"], again / row["path"], shallow=False)
    other = write_synthetic_brain(tmp_path / "other", seed=5, num_subjects=2)
    assert read_rows(other)[0]["age"] != rows[0]["age"]


def test_twin_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="smaller than the synthetic head") as excinfo:
        write_synthetic_brain(tmp_path, num_subjects=2, shape=(48, 56, 48), spacing=2.0)
    one_line_error(excinfo)
    assert MIN_FIELD_OF_VIEW_MM[1] > 190
    with pytest.raises(ValueError, match="orientation must be a 3-letter axis code"):
        write_synthetic_brain(tmp_path, num_subjects=2, orientation="RRS")
    with pytest.raises(ValueError, match="spacing must be"):
        write_synthetic_brain(tmp_path, num_subjects=2, spacing=(4.0, 4.0))
    with pytest.raises(ValueError, match="ad_fraction"):
        write_synthetic_brain(tmp_path, num_subjects=2, ad_fraction=1.5)
    with pytest.raises(ValueError, match="diagnosis must be one of"):
        synthetic_brain_volume(60, "MCI")
    with pytest.raises(ValueError, match="age must be"):
        synthetic_brain_volume(130)


# ------------------------------------------------------------------------------------------------
# the synthetic twin: what age and AD change
# ------------------------------------------------------------------------------------------------


def test_older_ages_have_larger_ventricles_in_the_written_files(twin):
    rows = read_rows(twin)
    ages = [float(row["age"]) for row in rows]
    volumes = [ventricle_ml(nib.load(twin / row["path"])) for row in rows]
    assert spearmanr(ages, volumes).statistic > 0.7
    # Longitudinal: 1-3 years add ~5 % ventricle volume, close to the scan-to-scan noise at 4 mm, so only
    # the average change is asserted.
    by_subject = {}
    for row, volume in zip(rows, volumes, strict=True):
        by_subject.setdefault(row["subject_id"], []).append((float(row["age"]), volume))
    pairs = [sorted(scans) for scans in by_subject.values() if len(scans) == 2]
    assert len(pairs) == 6
    assert np.mean([later[1] - earlier[1] for earlier, later in pairs]) > 0


def test_age_enlarges_ventricles_and_shrinks_the_brain_of_one_subject():
    kwargs = {"shape": (91, 109, 91), "spacing": 2.0, "subject_seed": 7, "scan_seed": 7}
    young, old = (as_image(synthetic_brain_volume(age, "CN", **kwargs), 2.0) for age in (50.0, 80.0))
    assert ventricle_ml(old) > 1.6 * ventricle_ml(young)
    assert brain_tissue_ml(old) < brain_tissue_ml(young) - 20.0  # wider CSF, thinner cortex
    assert hippocampal_tissue_ml(old) < hippocampal_tissue_ml(young)


def test_ad_adds_atrophy_beyond_age():
    kwargs = {"shape": (91, 109, 91), "spacing": 2.0, "subject_seed": 11, "scan_seed": 11}
    cn, ad = (as_image(synthetic_brain_volume(70.0, diagnosis, **kwargs), 2.0) for diagnosis in ("CN", "AD"))
    assert ventricle_ml(ad) > 1.4 * ventricle_ml(cn)
    assert hippocampal_tissue_ml(ad) < 0.75 * hippocampal_tissue_ml(cn)
    assert brain_tissue_ml(ad) < brain_tissue_ml(cn) - 20.0


def test_ad_subjects_have_larger_ventricles_than_controls_of_their_age(ad_twin):
    rows = read_rows(ad_twin)
    first = [row for row in rows if row["session"] == "1"]
    assert sum(row["diagnosis"] == "AD" for row in first) == 15  # exactly round(0.5 * 30)
    ages = np.array([float(row["age"]) for row in rows])
    ad = np.array([row["diagnosis"] == "AD" for row in rows])
    volumes = np.log([ventricle_ml(nib.load(ad_twin / row["path"])) for row in rows])
    # log ventricle volume ~ age + diagnosis: the AD coefficient is positive and clear.
    design = np.column_stack([np.ones_like(ages), ages, ad])
    coefficients, *_ = np.linalg.lstsq(design, volumes, rcond=None)
    assert coefficients[1] > 0 and coefficients[2] > 0.25


# ------------------------------------------------------------------------------------------------
# the nifti_csv builder
# ------------------------------------------------------------------------------------------------


def test_builder_columns_types_and_labels(twin):
    rows = {str((twin / row["path"]).absolute()): row for row in read_rows(twin)}
    data = build_dataset("nifti_csv", csv_path=twin / "participants.csv")
    assert set(data) == {"train", "validation"}
    assert sum(split.num_rows for split in data.values()) == len(rows)
    for split in data.values():
        assert split.column_names == ["path", "image", "labels", "subject_id"]
        assert type(split.features["image"]).__name__ == "Nifti"
        assert split.features["labels"].feature.dtype == "float32" and split.features["labels"].length == 1
        table = split.with_format(None, columns=["path", "labels", "subject_id"])[:]
        for path, label, subject in zip(table["path"], table["labels"], table["subject_id"], strict=True):
            assert Path(path).is_absolute() and path in rows
            assert label == [pytest.approx(float(rows[path]["age"]), abs=1e-4)]
            assert subject == rows[path]["subject_id"]


def test_image_column_decodes_lazily_to_a_nibabel_image(twin):
    data = load_nifti_csv(twin / "participants.csv")
    example = data["train"][0]
    image = example["image"]
    assert isinstance(image, nib.Nifti1Image)
    assert nib.is_proxy(image.dataobj)  # header read, voxels not yet
    assert image.shape == (48, 56, 48)
    np.testing.assert_array_equal(image.get_fdata(), nib.load(example["path"]).get_fdata())


def test_split_is_by_subject_without_leakage(twin):
    data = load_nifti_csv(twin / "participants.csv", val_fraction=0.3, test_fraction=0.2, seed=4)
    assert set(data) == {"train", "validation", "test"}
    subjects = {name: set(split["subject_id"]) for name, split in data.items()}
    assert not subjects["train"] & subjects["validation"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["validation"] & subjects["test"]
    paths = [p for split in data.values() for p in split["path"]]
    assert len(paths) == len(set(paths)) == len(read_rows(twin))
    # Repeat scans: both sessions of a subject are in the same split.
    for split in data.values():
        for subject in set(split["subject_id"]):
            sessions = [row for row in read_rows(twin) if row["subject_id"] == subject]
            assert sum(s == subject for s in split["subject_id"]) == len(sessions)
    again = load_nifti_csv(twin / "participants.csv", val_fraction=0.3, test_fraction=0.2, seed=4)
    assert again["validation"]["path"] == data["validation"]["path"]


def test_diagnosis_target_and_mapping(ad_twin, tmp_path):
    data = load_nifti_csv(ad_twin / "participants.csv", target="diagnosis")
    rows = {str((ad_twin / row["path"]).absolute()): row for row in read_rows(ad_twin)}
    labels = {}
    for split in data.values():
        labels.update(zip(split["path"], (value[0] for value in split["labels"]), strict=True))
    assert labels == {path: float(ADNI_DIAGNOSIS_MAP[row["diagnosis"]]) for path, row in rows.items()}
    assert set(labels.values()) == {0.0, 1.0}

    # Other values (MCI) are an error naming them, unless dropped explicitly; matching ignores case.
    listing = [
        (str(ad_twin / row["path"]), row["subject_id"], row["age"], row["diagnosis"])
        for row in read_rows(ad_twin)
    ]
    listing[0] = (*listing[0][:3], "MCI")
    listing[1] = (*listing[1][:3], " cn ")
    csv_path = write_csv(tmp_path / "mixed.csv", ["path", "subject_id", "age", "diagnosis"], listing)
    with pytest.raises(ValueError, match=r"\['MCI'\].*drop_unmapped=True") as excinfo:
        load_nifti_csv(csv_path, target="diagnosis")
    one_line_error(excinfo)
    kept = load_nifti_csv(csv_path, target="diagnosis", drop_unmapped=True)
    kept_paths = [p for split in kept.values() for p in split["path"]]
    assert len(kept_paths) == len(listing) - 1 and listing[0][0] not in kept_paths
    assert listing[1][0] in kept_paths
    # A custom map (ADNIMERGE's DX column says "Dementia"): MCI as positive.
    custom = load_nifti_csv(csv_path, target="diagnosis", diagnosis_map={"CN": 0, "AD": 1, "MCI": 1})
    assert sum(split.num_rows for split in custom.values()) == len(listing)
    with pytest.raises(ValueError, match="must be 0 or 1"):
        load_nifti_csv(csv_path, target="diagnosis", diagnosis_map={"CN": 0, "AD": 2})
    # The age target ignores the diagnosis column entirely.
    assert sum(split.num_rows for split in load_nifti_csv(csv_path).values()) == len(listing)


def test_relative_paths_resolve_against_the_csv_folder_or_image_root(twin, tmp_path):
    rows = read_rows(twin)
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    relative = [(f"../{twin.name}/{row['path']}", row["subject_id"], row["age"]) for row in rows]
    shutil.copytree(twin, tmp_path / twin.name)
    data = load_nifti_csv(write_csv(elsewhere / "scans.csv", ["path", "subject_id", "age"], relative))
    for path in data["train"]["path"]:
        assert path.startswith(str(tmp_path / twin.name)) and ".." not in path and Path(path).is_file()
    plain = [(row["path"], row["subject_id"], row["age"]) for row in rows]
    data = load_nifti_csv(
        write_csv(elsewhere / "plain.csv", ["path", "subject_id", "age"], plain), image_root=twin
    )
    assert all(path.startswith(str(twin)) for path in data["validation"]["path"])
    # TSV (BIDS) is read tab-separated.
    tsv = elsewhere / "scans.tsv"
    tsv.write_text("path\tsubject_id\tage\n" + "".join(f"{p}\t{s}\t{a}\n" for p, s, a in plain))
    assert sum(split.num_rows for split in load_nifti_csv(tsv, image_root=twin).values()) == len(rows)


def test_builder_errors_are_clear(twin_copy, tmp_path):
    rows = read_rows(twin_copy)
    header = ["path", "subject_id", "age", "diagnosis"]
    good = [(row["path"], row["subject_id"], row["age"], row["diagnosis"]) for row in rows]

    def load(name, table, columns=header, **kwargs):
        return load_nifti_csv(write_csv(twin_copy / name, columns, table), **kwargs)

    cases = [
        (FileNotFoundError, "do not exist", dict(name="a.csv", table=[("images/nope.nii.gz", "s", "60")] + good)),
        (ValueError, r"no column\(s\) \['age'\]", dict(name="b.csv", table=[r[:2] + r[3:] for r in good],
                                                      columns=["path", "subject_id", "diagnosis"])),
        (ValueError, r"no column\(s\) \['subject_id'\].*subject_column=None",
         dict(name="c.csv", table=[(r[0], r[2]) for r in good], columns=["path", "age"])),
        (ValueError, r"ages in years.*'seventy' on data row 2",
         dict(name="d.csv", table=[good[0], (*good[1][:2], "seventy", "CN"), *good[2:]])),
        (ValueError, r"ages in years.*'' on data row 1", dict(name="e.csv", table=[(*good[0][:2], "", "CN"), *good[1:]])),
        (ValueError, r"not NIfTI files.*scan\.dcm", dict(name="f.csv", table=[("scan.dcm", "s", "60", "CN"), *good])),
        (ValueError, "more than once", dict(name="g.csv", table=[good[0], *good])),
        (ValueError, r"column 'subject_id' is empty", dict(name="h.csv", table=[(good[0][0], " ", "60", "CN"), *good[1:]])),
        (ValueError, "target must be one of", dict(name="i.csv", table=good, target="sex")),
        (ValueError, "split is empty", dict(name="j.csv", table=good[:1], val_fraction=0.1)),
    ]  # fmt: skip
    for error, pattern, kwargs in cases:
        with pytest.raises(error, match=pattern) as excinfo:
            load(**kwargs)
        one_line_error(excinfo)
    with pytest.raises(FileNotFoundError, match="scan list not found"):
        load_nifti_csv(tmp_path / "missing.csv")
    # subject_column=None: each scan is its own subject, by request.
    data = load("k.csv", [(r[0], r[2]) for r in good], columns=["path", "age"], subject_column=None)
    assert all(
        subject == path
        for split in data.values()
        for subject, path in zip(split["subject_id"], split["path"], strict=True)
    )


# ------------------------------------------------------------------------------------------------
# the synthetic_brain builder and its cache
# ------------------------------------------------------------------------------------------------


def test_synthetic_brain_builder_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "cache"))
    kwargs = {"num_subjects": 10, "shape": (24, 28, 24), "spacing": 8.0}
    data = build_dataset("synthetic_brain", val_fraction=0.3, **kwargs)
    assert {"nifti_csv", "synthetic_brain"} <= set(BUILDERS)
    assert set(data) == {"train", "validation"}
    assert data["train"].column_names == ["path", "image", "labels", "subject_id"]
    folder = Path(data["train"]["path"][0]).parents[4]
    assert folder.parent == tmp_path / "cache" / "synthetic_brain"
    assert (folder / MARKER_NAME).is_file()
    mtime = (folder / "participants.csv").stat().st_mtime_ns
    again = load_synthetic_brain(val_fraction=0.3, **kwargs)
    assert (folder / "participants.csv").stat().st_mtime_ns == mtime  # read from the cache
    assert again["validation"]["path"] == data["validation"]["path"]
    # Another parameter: another cached twin.
    lps = load_synthetic_brain(orientation="LPS", val_fraction=0.3, **kwargs)
    lps_folder = Path(lps["train"]["path"][0]).parents[4]
    assert lps_folder != folder and nib.aff2axcodes(nib.load(lps["train"]["path"][0]).affine) == (
        "L",
        "P",
        "S",
    )
    # target="diagnosis": half of the subjects are AD by default.
    diagnosis = load_synthetic_brain(target="diagnosis", val_fraction=0.3, **kwargs)
    labels = [value[0] for split in diagnosis.values() for value in split["labels"]]
    assert set(labels) == {0.0, 1.0}
    # An explicit root is rewritten (with a warning) when the parameters change, and refused when foreign.
    root = tmp_path / "mine"
    load_synthetic_brain(root=root, **kwargs)
    with pytest.warns(UserWarning, match="replacing"):
        load_synthetic_brain(root=root, seed=1, **kwargs)
    assert (root / "participants.csv").is_file()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="did not write"):
        load_synthetic_brain(root=tmp_path / "foreign", **kwargs)


# ------------------------------------------------------------------------------------------------
# the training transform (needs the Slice-CNN image processor)
# ------------------------------------------------------------------------------------------------


def test_make_transform_batches_volumes_through_the_slice_cnn_processor(tmp_path):
    processing = pytest.importorskip("hfmed.models.slice_cnn.image_processing_slice_cnn")
    processor = processing.SliceCNNImageProcessor(target_spacing=[8.0, 8.0, 8.0], target_shape=[24, 28, 24])
    geometry = {"num_subjects": 6, "shape": (24, 28, 24), "spacing": 8.0, "seed": 2}
    ras = load_synthetic_brain(root=tmp_path / "ras", val_fraction=0.3, **geometry)
    batch = ras["train"].with_transform(make_transform(processor))[:4]
    assert set(batch) == {"pixel_values", "labels"}
    assert batch["pixel_values"].shape == (4, 24, 28, 24) and batch["pixel_values"].dtype.is_floating_point
    assert batch["labels"].shape == (4, 1)
    np.testing.assert_allclose(batch["labels"].numpy(), np.asarray(ras["train"]["labels"][:4]), rtol=0)
    mean = batch["pixel_values"].mean(dim=(1, 2, 3))
    assert mean.abs().max() < 1e-4  # z-scored per volume
    # The same anatomy stored LPS comes out of the processor voxel for voxel the same (reorientation).
    lps = load_synthetic_brain(root=tmp_path / "lps", orientation="LPS", val_fraction=0.3, **geometry)
    lps_batch = lps["train"].with_transform(make_transform(processor))[:4]
    np.testing.assert_allclose(lps_batch["pixel_values"].numpy(), batch["pixel_values"].numpy(), atol=1e-5)
