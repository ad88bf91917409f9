"""Hostile inputs for every image processor, and a worker that feeds them in with time and memory measured.

Every input goes to every registered family's processor, whatever file kind it reads: a DICOM processor
must refuse a NIfTI bomb as clearly as a NIfTI processor refuses a DICOM. `CASES` is the fixed list (names
known when pytest collects); `write_cases(folder)` writes the files and returns name -> input (a path, bytes
or an array). Each entry's `expect` is a regular expression the one-line error must match: it names the
problem, whichever kind of processor reads it.

    python -m tests.reliability.hostile_files OUT.jsonl      # one JSON line per (family, case)

The worker runs in its own process so that its peak memory is its own: before each case it resets the
kernel's high-water mark (`/proc/self/clear_refs`, "5") and reads `VmHWM - VmRSS` after. Results are written
line by line, so a case that kills the process is the one missing.
"""

from __future__ import annotations

import gc
import gzip
import io
import json
import struct
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NOT_READABLE = r"not a (DICOM|NIfTI)|not an? (readable )?image|nor an image|could not be read|cannot identify"
TRUNCATED = r"truncat|could not be (read|decoded|decompressed)|incomplete|ended before|end of (file|stream)"
TOO_BIG = r"max_voxels|max_image_pixels|pixels|voxels"
NOT_FINITE = r"NaN|inf"


@dataclass(frozen=True)
class Case:
    name: str
    expect: str
    """Regex the error must match, for every processor (alternatives cover DICOM / image / NIfTI readers)."""


CASES = [
    Case("empty.dcm", r"empty \(0 bytes\)"),
    Case("empty.png", r"empty \(0 bytes\)"),
    Case("empty.nii.gz", r"empty \(0 bytes\)"),
    Case("empty bytes", r"empty \(0 bytes\)"),
    Case("truncated CT.dcm", f"{TRUNCATED}|{NOT_READABLE}"),
    Case("truncated CT bytes", f"{TRUNCATED}|{NOT_READABLE}"),
    Case("truncated.png", f"{TRUNCATED}|{NOT_READABLE}"),
    Case("truncated.jpg", f"{TRUNCATED}|{NOT_READABLE}"),
    Case("truncated.nii", f"{TRUNCATED}|{NOT_READABLE}"),
    Case("truncated.nii.gz", f"{TRUNCATED}|{NOT_READABLE}"),
    Case("html page.dcm", NOT_READABLE),  # a failed download saved under the expected name
    Case("html page.png", NOT_READABLE),
    Case("html page.nii.gz", f"{NOT_READABLE}|gzip"),
    Case("random bytes.dcm", NOT_READABLE),
    Case("NIfTI header 2000^3.nii", f"{TOO_BIG}|{NOT_READABLE}"),
    Case("NIfTI header 2000^3.nii.gz", f"{TOO_BIG}|{NOT_READABLE}"),
    Case("NIfTI vox_offset 1e15.nii", f"{TRUNCATED}|{NOT_READABLE}|offset"),
    Case("NIfTI gzip bomb.nii.gz", f"constant|{NOT_READABLE}"),
    Case("NIfTI 1000 mm voxels.nii", f"{TOO_BIG}|{NOT_READABLE}"),
    Case("NIfTI zero pixdim.nii", f"singular|{NOT_READABLE}"),
    Case("4-D NIfTI.nii", f"4-D|volumes|{NOT_READABLE}"),
    Case("NaN NIfTI.nii", f"{NOT_FINITE}|{NOT_READABLE}"),
    Case("inf NIfTI.nii.gz", f"{NOT_FINITE}|{NOT_READABLE}"),
    Case("DICOM header 65535^2.dcm", f"{TOO_BIG}|not a NIfTI"),
    Case("DICOM without pixels.dcm", r"no PixelData|no pixel data|not a NIfTI"),
    Case("DICOM bad JPEG pixels.dcm", r"could not be decoded|not a NIfTI"),
    Case("DICOM NaN slope.dcm", rf"{NOT_FINITE}|RescaleSlope|Modality|not a NIfTI"),
    Case("MR DICOM into the model", r"Modality 'MR'|not a NIfTI"),
    Case("PNG bomb 5000^2.png", rf"{TOO_BIG}|not a NIfTI"),  # 25 MB of zeros in 25 KB: real data
    Case("PNG header 20000^2.png", rf"{TOO_BIG}|decompression bomb|not a NIfTI"),  # past PIL's own limit
    Case("PNG header 100000^2.png", rf"{TOO_BIG}|decompression bomb|not a NIfTI"),
    Case("NaN float TIFF.tif", rf"{NOT_FINITE}|mode|not a NIfTI"),
    Case("NaN 2-D array", rf"{NOT_FINITE}|3-D|shape"),
    Case("inf 3-D array", rf"{NOT_FINITE}|2-D|shape"),
    Case("NaN 2-D tensor", rf"{NOT_FINITE}|3-D|shape"),
]
CASE_NAMES = [case.name for case in CASES]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_png(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey PNG of zeros, compressed row by row (never width * height bytes in memory): a bomb. With
    `rows`, only that many rows of data follow the header (a header that promises more than it holds)."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte, then the row
    body = bytearray()
    for _ in range(height if rows is None else rows):
        body += compressor.compress(row)
    body += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", bytes(body)) + _chunk(b"IEND", b"")


def _nifti(volume: np.ndarray, zooms=(2.0, 2.0, 2.0)) -> bytes:
    import nibabel as nib

    image = nib.Nifti1Image(volume, np.diag([*zooms, 1.0]))
    image.header.set_zooms(tuple(zooms) + tuple(1.0 for _ in range(volume.ndim - 3)))
    return image.to_bytes()


def _nifti_header(shape, dtype=np.int16, vox_offset: float | None = None) -> bytes:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_zooms((1.0,) * len(shape))
    header.set_sform(np.eye(4), code=1)
    raw = bytearray(header.binaryblock + b"\0" * 4)
    if vox_offset is not None:
        raw[108:112] = struct.pack("<f", vox_offset)
    return bytes(raw)


def _zero_y_axis(nifti: bytes) -> bytes:
    """The file with voxel size 0 along y in pixdim and sform: a singular affine."""
    raw = bytearray(nifti)
    raw[84:88] = struct.pack("<f", 0.0)  # pixdim[2]
    raw[296:312] = struct.pack("<4f", 0.0, 0.0, 0.0, 0.0)  # srow_y
    return bytes(raw)


def _dicom_bytes(dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_cases(folder: Path, modality: str | None = None) -> dict:
    """Writes the hostile files into `folder`; returns case name -> the input to give the processor.

    The DICOM cases derive from pydicom's CT_small.dcm with its Modality set to `modality` (one the processor
    accepts), so that they reach the check they are meant for instead of stopping at the Modality check.
    """
    import nibabel as nib
    import pydicom
    import torch
    from PIL import Image
    from pydicom.data import get_testdata_file
    from pydicom.uid import JPEGBaseline8Bit

    folder.mkdir(parents=True, exist_ok=True)
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    if modality is not None:
        source = pydicom.dcmread(io.BytesIO(ct))
        source.Modality = modality
        ct = _dicom_bytes(source)
    anatomical = (Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii").read_bytes()
    rng = np.random.default_rng(0)
    png, jpeg = io.BytesIO(), io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(png, format="PNG")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, format="JPEG")
    html = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>\n"

    volume = rng.normal(100, 20, (16, 20, 16)).astype(np.float32)
    nan_volume, inf_volume = volume.copy(), volume.copy()
    nan_volume[3, 4, 5] = np.nan
    inf_volume[5, 4, 3] = np.inf
    bomb = gzip.compress(_nifti(np.zeros((32, 32, 32), np.float32)), mtime=0)
    bomb += gzip.compress(b"\0" * (32 << 20), compresslevel=1, mtime=0)  # 32 MB more after the volume

    def dicom_variant(**changes) -> bytes:
        dataset = pydicom.dcmread(io.BytesIO(ct))
        for keyword, value in changes.items():
            if value is None:
                delattr(dataset, keyword)
            else:
                setattr(dataset, keyword, value)
        return _dicom_bytes(dataset)

    jpeg_claim = pydicom.dcmread(io.BytesIO(ct))
    jpeg_claim.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    jpeg_claim.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff" + bytes(200)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that 'NaN' is not a valid DS: that is the point
        nan_slope = pydicom.dcmread(io.BytesIO(ct))
        nan_slope.add_new(0x00281053, "DS", "NaN")
        nan_slope_bytes = _dicom_bytes(nan_slope)
    nan_tiff = io.BytesIO()
    nan_image = rng.random((32, 32)).astype(np.float32)
    nan_image[1, 2] = np.nan
    Image.fromarray(nan_image, mode="F").save(nan_tiff, format="TIFF")
    nan_2d = rng.random((32, 32)).astype(np.float32)
    nan_2d[0, 0] = np.nan

    files = {
        "empty.dcm": b"",
        "empty.png": b"",
        "empty.nii.gz": b"",
        "truncated CT.dcm": ct[: len(ct) // 2],
        "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
        "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
        "truncated.nii": anatomical[: len(anatomical) // 2],
        "truncated.nii.gz": gzip.compress(anatomical, mtime=0)[:4000],
        "html page.dcm": html,
        "html page.png": html,
        "html page.nii.gz": html,
        "random bytes.dcm": rng.integers(0, 256, 65536, dtype=np.uint8).tobytes(),
        "NIfTI header 2000^3.nii": _nifti_header((2000, 2000, 2000)) + bytes(64),
        "NIfTI header 2000^3.nii.gz": gzip.compress(_nifti_header((2000, 2000, 2000)) + bytes(64), mtime=0),
        "NIfTI vox_offset 1e15.nii": _nifti_header((8, 8, 8), vox_offset=1e15) + bytes(1024),
        "NIfTI gzip bomb.nii.gz": bomb,
        "NIfTI 1000 mm voxels.nii": _nifti(volume, zooms=(1000.0, 1000.0, 1000.0)),
        "NIfTI zero pixdim.nii": _zero_y_axis(_nifti(volume)),
        "4-D NIfTI.nii": _nifti(np.stack([volume] * 3, axis=-1)),
        "NaN NIfTI.nii": _nifti(nan_volume),
        "inf NIfTI.nii.gz": gzip.compress(_nifti(inf_volume), mtime=0),
        "DICOM header 65535^2.dcm": dicom_variant(Rows=65535, Columns=65535),
        "DICOM without pixels.dcm": dicom_variant(PixelData=None),
        "DICOM bad JPEG pixels.dcm": _dicom_bytes(jpeg_claim),
        "DICOM NaN slope.dcm": nan_slope_bytes,
        "PNG bomb 5000^2.png": zero_png(5000, 5000),
        "PNG header 20000^2.png": zero_png(20000, 20000, rows=4),
        "PNG header 100000^2.png": zero_png(100000, 100000, rows=4),
        "NaN float TIFF.tif": nan_tiff.getvalue(),
    }
    inputs = {}
    for name, data in files.items():
        path = folder / name.replace(" ", "_").replace("^", "pow")
        path.write_bytes(data)
        inputs[name] = path
    inputs["empty bytes"] = b""
    inputs["truncated CT bytes"] = files["truncated CT.dcm"]
    inputs["MR DICOM into the model"] = Path(get_testdata_file("MR_small.dcm"))
    inputs["NaN 2-D array"] = nan_2d
    inputs["inf 3-D array"] = inf_volume
    inputs["NaN 2-D tensor"] = torch.from_numpy(nan_2d)
    assert sorted(inputs) == sorted(CASE_NAMES), set(inputs) ^ set(CASE_NAMES)
    return inputs


def tiny_processor(family):
    """The family's processor as its tiny preset configures it."""
    preset = next(name for name in family.presets if name.endswith("-tiny"))
    config = family.make_config(preset)
    return family.image_processor_class(**family.processor_kwargs_for(config))


def accepted_modality(processor) -> str | None:
    """A DICOM Modality the processor accepts (None: it names no list, so any, or it reads no DICOM)."""
    allowed = getattr(processor, "allowed_modalities", None)
    return allowed[0] if allowed else None


def _memory_mb() -> tuple[float, float]:
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def measure(processor, item) -> dict:
    """Runs the processor on one input: the exception (type, message), seconds, and peak RSS growth (MB)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS
    before, _ = _memory_mb()
    started = time.perf_counter()
    error = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            processor(item, return_tensors="pt")
    except BaseException as err:  # noqa: BLE001 - recorded, judged by the test
        error = err
    elapsed = time.perf_counter() - started
    _, peak = _memory_mb()
    return {
        "error_type": None if error is None else type(error).__name__,
        "is_value_error": isinstance(error, ValueError),
        "message": None if error is None else str(error),
        "seconds": elapsed,
        "peak_growth_mb": peak - before,
    }


def main(out: str) -> None:
    import tempfile

    # The processors import nibabel / pydicom lazily; imported here, that one-off cost is charged to no case.
    import nibabel  # noqa: F401
    import pydicom.pixels  # noqa: F401
    from PIL import Image

    import hfmed  # noqa: F401
    from hfmed.registry import FAMILIES

    Image.init()
    gc.collect()
    gc.freeze()  # what is alive now stays: the per-case collections only walk what the cases allocate
    with tempfile.TemporaryDirectory() as folder, open(out, "w") as results:
        for family_name, family in FAMILIES.items():
            processor = tiny_processor(family)
            inputs = write_cases(Path(folder) / family_name, accepted_modality(processor))
            for name in CASE_NAMES:
                results.write(json.dumps({"family": family_name, "case": name, **measure(processor, inputs[name])}))
                results.write("\n")
                results.flush()


if __name__ == "__main__":
    main(sys.argv[1])
