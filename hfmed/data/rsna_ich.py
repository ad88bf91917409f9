"""Builder `rsna_ich`: the RSNA 2019 intracranial-hemorrhage dataset (Kaggle layout) as a `DatasetDict`.

Layout read (the Kaggle download, or the synthetic twin of `hfmed.data.synthetic_ct`):

    root/stage_2_train.csv        header `ID,Label`, rows `ID_<image>_<subtype>,<0|1>` (6 rows per image)
    root/stage_2_train/<image>.dcm

Datasets hold paths and labels only; pixels are decoded later, by the image processor, in DataLoader
workers. The patient of each image comes from the DICOM header (`PatientID`), read once and cached in
`root/patient_ids.csv`; the train / validation / test split is by patient, from a seeded hash of the
patient id (see `patient_split`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from datasets import DatasetDict, Features, Value

from hfmed.models.scopeformer.configuration_scopeformer import RSNA_LABELS

from .builder import Builder
from .splits import (
    check_fractions,
    check_label_names,
    file_fingerprint,
    first_items,
    label_feature,
    labels_array,
    make_dataset_dict,
    patient_split,
)

logger = logging.getLogger(__name__)

PATIENT_CACHE_NAME = "patient_ids.csv"
# Below this many headers to read, a process pool costs more than it saves.
_PARALLEL_MIN_FILES = 2000
_CHUNK = 512
_EXAMPLES = 5  # rows named in an error message


# ---------------------------------------------------------------------------------------------------
# Label CSV
# ---------------------------------------------------------------------------------------------------


def read_rsna_labels(csv_path: str | os.PathLike, label_names: Sequence[str] = RSNA_LABELS):
    """Parses an RSNA label CSV into one row per image.

    Returns:
        `(image_ids, labels)`: a `pyarrow.StringArray` of image ids in the order of their first row, and a
        float32 matrix (num_images, len(label_names)) in `label_names` order.

    Exact duplicate rows are dropped; an image with two different values for a subtype, or with no row for
    one of `label_names`, raises `ValueError`. Subtypes not in `label_names` are ignored.
    """
    label_names = check_label_names(label_names)
    csv_path = Path(csv_path)
    try:
        table = pa_csv.read_csv(
            csv_path,
            convert_options=pa_csv.ConvertOptions(
                column_types={"ID": pa.string(), "Label": pa.float64()}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as err:
        raise ValueError(
            f"{str(csv_path)!r} is not an RSNA label CSV (header ID,Label; rows ID_<image>_<subtype>,<0|1>): "
            f"{' '.join(str(err).split())}"
        ) from err
    if table.column_names != ["ID", "Label"]:
        raise ValueError(
            f"{str(csv_path)!r} has columns {table.column_names}, expected exactly ['ID', 'Label'] "
            "(rows ID_<image>_<subtype>,<0|1>)"
        )
    if table.num_rows == 0:
        raise ValueError(f"{str(csv_path)!r} has no rows: expected rows ID_<image>_<subtype>,<0|1>")
    ids = table.column("ID").combine_chunks()
    values = table.column("Label").to_numpy()
    bad = np.flatnonzero(~np.isin(values, (0.0, 1.0)))
    if len(bad):
        raise ValueError(
            f"{str(csv_path)!r}: Label must be 0 or 1, found {values[bad[0]]!r} on the row of "
            f"{ids[int(bad[0])].as_py()!r} ({len(bad)} such row(s))"
        )
    parts = pc.split_pattern(ids, pattern="_", max_splits=1, reverse=True)
    malformed = np.flatnonzero(pc.list_value_length(parts).to_numpy(zero_copy_only=False) != 2)
    if len(malformed):
        raise ValueError(
            f"{str(csv_path)!r}: IDs must look like ID_<image>_<subtype>, found "
            f"{first_items(ids.take(pa.array(malformed[:_EXAMPLES])).to_pylist())} ({len(malformed)} such row(s))"
        )
    image_column = pc.list_element(parts, 0)
    subtype_column = pc.list_element(parts, 1)

    if isinstance(image_column, pa.ChunkedArray):
        image_column = image_column.combine_chunks()
    encoded = pc.dictionary_encode(image_column)
    image_ids = encoded.dictionary
    image_index = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    label_index = pc.index_in(subtype_column, value_set=pa.array(label_names)).to_numpy(zero_copy_only=False)
    label_index = np.nan_to_num(label_index.astype(np.float64), nan=-1).astype(np.int64)
    known = label_index >= 0
    num_labels = len(label_names)
    keys = image_index[known] * num_labels + label_index[known]
    known_values = values[known]

    order = np.argsort(keys, kind="stable")
    sorted_keys, sorted_values = keys[order], known_values[order]
    same_key = sorted_keys[1:] == sorted_keys[:-1]
    conflicts = same_key & (sorted_values[1:] != sorted_values[:-1])
    if conflicts.any():
        bad_keys = np.unique(sorted_keys[1:][conflicts])
        bad_images = image_ids.take(pa.array(np.unique(bad_keys // num_labels))).to_pylist()
        examples = [
            f"{image_ids[int(k // num_labels)].as_py()}_{label_names[int(k % num_labels)]}" for k in bad_keys
        ]
        raise ValueError(
            f"{str(csv_path)!r} gives conflicting labels (both 0 and 1) for {len(bad_keys)} (image, subtype) "
            f"pair(s), e.g. {first_items(examples)}, in {len(bad_images)} image(s): fix or remove those rows"
        )
    if same_key.any():
        logger.info("%s: dropped %d exact duplicate row(s)", csv_path, int(same_key.sum()))

    matrix = np.full(len(image_ids) * num_labels, np.nan, dtype=np.float32)
    matrix[keys] = known_values
    matrix = matrix.reshape(len(image_ids), num_labels)
    missing = np.isnan(matrix)
    if missing.any():
        rows = np.flatnonzero(missing.any(axis=1))
        examples = [
            f"{image_ids[int(r)].as_py()} (no {[label_names[j] for j in np.flatnonzero(missing[r])]})"
            for r in rows[:_EXAMPLES]
        ]
        found = sorted(set(pc.unique(subtype_column).to_pylist()))
        raise ValueError(
            f"{str(csv_path)!r}: {len(rows)} image(s) miss a row for some of label_names={label_names}, "
            f"e.g. {', '.join(examples)}; subtypes present in the CSV: {found}"
        )
    return image_ids.cast(pa.string()), matrix


# ---------------------------------------------------------------------------------------------------
# Patient ids
# ---------------------------------------------------------------------------------------------------


def _read_patient_id(path: str) -> str:
    """PatientID from one DICOM header (pixels are not read)."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception as err:
        raise ValueError(
            f"{path!r} could not be read as DICOM to get its PatientID: {' '.join(str(err).split())}"
        ) from err
    value = header.get("PatientID")
    patient_id = "" if value is None else str(value).strip()
    if not patient_id:
        raise ValueError(
            f"{path!r} has no PatientID in its header, so it cannot be split by patient: pass "
            "patient_map= a CSV with columns image_id,patient_id"
        )
    return patient_id


def _read_patient_ids_chunk(paths: list[str]) -> list[str]:
    return [_read_patient_id(path) for path in paths]


def _read_headers(paths: list[str], num_proc: int | None) -> list[str]:
    if num_proc is None:
        num_proc = (os.cpu_count() or 1) if len(paths) >= _PARALLEL_MIN_FILES else 1
    if isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"num_proc must be an int >= 1 or None, got {num_proc!r}")
    logger.info("reading PatientID from %d DICOM headers with %d process(es)", len(paths), num_proc)
    if num_proc == 1:
        return _read_patient_ids_chunk(paths)
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    # spawn: the parent holds threads (torch, pyarrow), which fork does not copy safely.
    with ProcessPoolExecutor(max_workers=num_proc, mp_context=get_context("spawn")) as pool:
        return [pid for chunk in pool.map(_read_patient_ids_chunk, chunks) for pid in chunk]


def read_patient_map(path: str | os.PathLike) -> pa.Table:
    """Reads a CSV with columns image_id,patient_id (strings) into a table with those two columns."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"patient map {str(path)!r} not found: expected a CSV with columns image_id,patient_id"
        )
    try:
        table = pa_csv.read_csv(
            path,
            convert_options=pa_csv.ConvertOptions(
                column_types={"image_id": pa.string(), "patient_id": pa.string()},
                include_columns=["image_id", "patient_id"],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, KeyError) as err:
        raise ValueError(
            f"patient map {str(path)!r} could not be read as a CSV with columns image_id,patient_id: "
            f"{' '.join(str(err).split())}"
        ) from err
    table = table.combine_chunks()
    empty = pc.equal(pc.utf8_length(table.column("patient_id")), 0)
    if pc.any(empty).as_py():
        rows = table.filter(empty).column("image_id").to_pylist()
        raise ValueError(f"patient map {str(path)!r} has empty patient_id for image(s) {first_items(rows)}")
    counts = table.group_by("image_id").aggregate([("patient_id", "count_distinct")])
    conflicting = counts.filter(pc.greater(counts.column("patient_id_count_distinct"), 1))
    if conflicting.num_rows:
        raise ValueError(
            f"patient map {str(path)!r} gives several patients for image(s) "
            f"{first_items(conflicting.column('image_id').to_pylist())}: keep one patient per image"
        )
    return table


def _lookup(image_ids: pa.Array, mapping: pa.Table) -> tuple[pa.Array, np.ndarray]:
    """Patient ids for `image_ids` from `mapping` (nulls where absent) and the indices of the absent ones."""
    position = pc.index_in(image_ids, value_set=mapping.column("image_id"))
    patients = mapping.column("patient_id").combine_chunks().take(position)
    absent = np.flatnonzero(position.is_null().to_numpy(zero_copy_only=False))
    return patients, absent


def _write_patient_cache(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pa_csv.write_csv(
            table.select(["image_id", "patient_id"]), tmp, pa_csv.WriteOptions(quoting_style="needed")
        )
        os.replace(tmp, path)
    except OSError as err:
        warnings.warn(
            f"could not write the patient-id cache {str(path)!r} ({err}); the DICOM headers will be read "
            "again next time (pass patient_map= to avoid it)",
            UserWarning,
            stacklevel=4,
        )
        tmp.unlink(missing_ok=True)


def resolve_patient_ids(
    image_ids: pa.Array,
    paths: pa.Array,
    root: Path,
    patient_map: str | os.PathLike | None,
    num_proc: int | None,
) -> pa.Array:
    if patient_map is not None:
        mapping = read_patient_map(patient_map)
        patients, absent = _lookup(image_ids, mapping)
        if len(absent):
            raise ValueError(
                f"patient map {str(patient_map)!r} has no row for {len(absent)} image(s), e.g. "
                f"{first_items(image_ids.take(pa.array(absent[:_EXAMPLES])).to_pylist())}: add them, or leave "
                "patient_map unset to read PatientID from the DICOM headers"
            )
        return patients
    cache = root / PATIENT_CACHE_NAME
    mapping = None
    if cache.is_file():
        try:
            mapping = read_patient_map(cache)
        except ValueError as err:
            warnings.warn(
                f"ignoring the unreadable patient-id cache {str(cache)!r}: {err}", UserWarning, stacklevel=3
            )
    if mapping is None:
        mapping = pa.table({"image_id": pa.array([], pa.string()), "patient_id": pa.array([], pa.string())})
    patients, absent = _lookup(image_ids, mapping)
    if len(absent) == 0:
        return patients
    absent_paths = paths.take(pa.array(absent)).to_pylist()
    new_patients = _read_headers(absent_paths, num_proc)
    new_rows = pa.table(
        {
            "image_id": image_ids.take(pa.array(absent)),
            "patient_id": pa.array(new_patients, pa.string()),
        }
    )
    mapping = pa.concat_tables([mapping.select(["image_id", "patient_id"]), new_rows])
    _write_patient_cache(cache, mapping)
    patients, _ = _lookup(image_ids, mapping)
    return patients


# ---------------------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------------------


def load_rsna_ich(
    root: str | os.PathLike,
    csv_name: str = "stage_2_train.csv",
    dicom_dir: str = "stage_2_train",
    label_names: Sequence[str] = RSNA_LABELS,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    patient_map: str | os.PathLike | None = None,
    num_proc: int | None = None,
    limit: int | None = None,
    check_files: bool = True,
) -> DatasetDict:
    """Builder `rsna_ich`: RSNA 2019 ICH images as a `DatasetDict` split by patient.

    Args:
        root: the folder holding `csv_name` and `dicom_dir`.
        csv_name: label CSV inside `root` (header `ID,Label`, rows `ID_<image>_<subtype>,<0|1>`).
        dicom_dir: folder inside `root` (or an absolute path) holding `<image>.dcm` files.
        label_names: subtypes to keep, in the order of the `labels` vectors; others in the CSV are ignored.
        val_fraction, test_fraction: share of patients in validation / test (see `patient_split`).
        seed: seeds the patient hash.
        patient_map: CSV `image_id,patient_id` to use instead of reading DICOM headers. Without it the
            headers are read once (in `num_proc` processes) and cached in `root/patient_ids.csv`; only
            images missing from the cache are read on later calls.
        num_proc: processes for reading headers; `None` uses every CPU when there are >= 2000 headers to
            read, one process otherwise.
        limit: keep only the first `limit` images of the CSV (quick experiments), before any header is read.
        check_files: check that every image has its DICOM file (one directory listing).

    Returns:
        `DatasetDict` with `train`, `validation` (and `test` when `test_fraction > 0`); columns `path`
        (absolute), `labels` (float32, one per `label_names`), `patient_id`, `image_id`.
    """
    label_names = check_label_names(label_names)
    val_fraction, test_fraction = check_fractions(val_fraction, test_fraction)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an int >= 1 or None, got {limit!r}")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(
            f"RSNA root {str(root)!r} is not a folder: expected the folder holding {csv_name} and {dicom_dir}/"
        )
    csv_path = root / csv_name
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"RSNA label CSV not found at {str(csv_path)!r}: expected a CSV with header ID,Label and rows "
            "ID_<image>_<subtype>,<0|1> (Kaggle's stage_2_train.csv)"
        )
    dicom_path = (root / dicom_dir).absolute()
    if not dicom_path.is_dir():
        raise FileNotFoundError(
            f"RSNA DICOM folder not found at {str(dicom_path)!r}: expected a folder of <image>.dcm files "
            f"named after the IDs in {csv_name} (Kaggle's stage_2_train/)"
        )

    image_ids, labels = read_rsna_labels(csv_path, label_names)
    if limit is not None and limit < len(image_ids):
        image_ids, labels = image_ids.slice(0, limit), labels[:limit]
    file_names = pc.binary_join_element_wise(image_ids, ".dcm", "")
    if check_files:
        present = pa.array([entry.name for entry in os.scandir(dicom_path)], pa.string())
        absent = np.flatnonzero(~pc.is_in(file_names, value_set=present).to_numpy(zero_copy_only=False))
        if len(absent):
            raise FileNotFoundError(
                f"{len(absent)} of {len(image_ids)} images listed in {str(csv_path)!r} have no DICOM file in "
                f"{str(dicom_path)!r}, e.g. {first_items(file_names.take(pa.array(absent[:_EXAMPLES])).to_pylist())}: "
                "complete the download, or fix csv_name / dicom_dir"
            )
    paths = pc.binary_join_element_wise(str(dicom_path) + os.sep, file_names, "")
    patient_ids = resolve_patient_ids(image_ids, paths, root, patient_map, num_proc)

    features = Features(
        {
            "path": Value("string"),
            "labels": label_feature(len(label_names)),
            "patient_id": Value("string"),
            "image_id": Value("string"),
        }
    )
    table = pa.table(
        {
            "path": paths,
            "labels": labels_array(labels),
            "patient_id": patient_ids,
            "image_id": image_ids,
        }
    )
    assignment = patient_split(patient_ids, val_fraction, test_fraction, seed)
    fingerprint = "|".join(
        map(
            str,
            (
                "rsna_ich",
                file_fingerprint(csv_path),
                dicom_path,
                label_names,
                val_fraction,
                test_fraction,
                seed,
                patient_map and file_fingerprint(Path(patient_map).expanduser()),
                limit,
            ),
        )
    )
    return make_dataset_dict(
        table,
        features,
        assignment,
        {"train": 1.0 - val_fraction - test_fraction, "validation": val_fraction, "test": test_fraction},
        hashlib.sha256(fingerprint.encode()).hexdigest(),
        description=f"RSNA 2019 intracranial hemorrhage from {root}; labels: {label_names}",
    )


BUILDER = Builder(name="rsna_ich", load=load_rsna_ich, path_args=("root",))

__all__ = ["BUILDER", "load_rsna_ich", "patient_split", "read_patient_map", "read_rsna_labels"]
