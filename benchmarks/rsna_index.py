"""Index building for the full-size RSNA 2019 ICH label CSV: 750,000 images x 6 subtypes = 4.5M rows.

The CSV and a patient map are synthetic (no DICOM is read or checked): this times parsing, pivoting,
duplicate / completeness checks, the patient lookup, the patient split and the Arrow tables (`benchmarks.shared`).
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from hfmed.models.scopeformer.configuration_scopeformer import RSNA_LABELS

NUM_IMAGES = 750_000
NUM_PATIENTS = 19_000
CSV_ORDER = [*RSNA_LABELS[1:], "any"]


def _hex_ids(rng, count, digits):
    values = rng.choice(16**digits, size=count, replace=False)
    return pa.array(np.char.add("ID_", np.char.mod(f"%0{digits}x", values)).astype(object), pa.string())


def write_inputs(root):
    rng = np.random.default_rng(0)
    image_ids = _hex_ids(rng, NUM_IMAGES, 9)  # the real RSNA image ids have 9 hex digits
    patients = _hex_ids(rng, NUM_PATIENTS, 8).take(pa.array(rng.integers(0, NUM_PATIENTS, NUM_IMAGES)))
    (root / "stage_2_train").mkdir()
    labels = (rng.random((NUM_IMAGES, len(CSV_ORDER))) < 0.1).astype(np.int8)
    labels[:, -1] = labels[:, :-1].max(axis=1)
    repeated = image_ids.take(pa.array(np.repeat(np.arange(NUM_IMAGES), len(CSV_ORDER))))
    subtypes = pa.array(np.tile(np.array(CSV_ORDER, dtype=object), NUM_IMAGES), pa.string())
    rows = pa.table(
        {
            "ID": pc.binary_join_element_wise(repeated, subtypes, "_"),
            "Label": pa.array(labels.reshape(-1)),
        }
    )
    pa_csv.write_csv(rows, root / "stage_2_train.csv", pa_csv.WriteOptions(quoting_style="none"))
    pa_csv.write_csv(
        pa.table({"image_id": image_ids, "patient_id": patients}),
        root / "patient_ids.csv",
        pa_csv.WriteOptions(quoting_style="none"),
    )
    return labels


def check_index(data, labels) -> None:
    """The index holds every image, paths where the layout puts them, and the per-label positive counts survive
    the pivot (CSV order -> RSNA_LABELS order); raises AssertionError otherwise, so a wrong index is never timed."""
    assert sum(split.num_rows for split in data.values()) == NUM_IMAGES
    first = data["train"][0]
    assert first["path"].endswith(f"{first['image_id']}.dcm")
    counts = sum(
        np.asarray(split.data.column("labels").combine_chunks().flatten()).reshape(-1, 6).sum(axis=0)
        for split in data.values()
    )
    expected = {name: labels[:, CSV_ORDER.index(name)].sum() for name in RSNA_LABELS}
    assert dict(zip(RSNA_LABELS, counts.tolist(), strict=True)) == expected
