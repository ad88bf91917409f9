"""Hostile files for the Spaces, chosen by what each Space accepts (the file types of its bundled examples).

`hostile_inputs(family, folder)` writes them and returns `Hostile(name, path, expect)` entries, `expect` being a
regular expression the Space's one-line error must match (it names the problem). A Space whose examples are
DICOM gets the DICOM set, PNG the PNG set, NIfTI the NIfTI set, each with an empty and a truncated file and
files of another kind under that extension.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.space_harness import space_examples

# A header claiming 2000^3 voxels; a PNG claiming 20000^2 pixels (400 M: past PIL's own decompression-bomb
# limit) and one claiming 5000^2 (25 M: under PIL's limit, over the processors' default 4096^2).
HUGE_VOXELS = (2000, 2000, 2000)
GIANT_PNG = 20000
BIG_PNG = 5000
TRUNCATED = r"truncat|incomplete|end of (file|stream)|ended before|could not be (read|decoded|decompressed)"
NOT_AN_IMAGE = r"not a DICOM file.*(nor|not) an image|cannot identify|not (a |an )?(readable )?image"


@dataclass(frozen=True)
class Hostile:
    name: str
    path: Path
    expect: str


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    return {".dcm": "dicom", ".png": "png", ".jpg": "png", ".jpeg": "png"}.get(path.suffix.lower(), "other")


def _zero_png(path: Path, width: int, height: int) -> Path:
    """A valid grey PNG of zeros, written row by row (never `width * height` bytes in memory): a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte 0, then the row
    body = bytearray()
    for _ in range(height):
        body += compressor.compress(row)
    body += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(body))
                     + chunk(b"IEND", b""))
    return path


def _nifti_bytes(volume: np.ndarray, spacing: float = 12.0) -> bytes:
    import nibabel as nib

    affine = np.diag([spacing, spacing, spacing, 1.0])
    return nib.Nifti1Image(volume, affine).to_bytes()


def _huge_nifti_header(shape=HUGE_VOXELS) -> bytes:
    """A NIfTI-1 header claiming `shape` int16 voxels, followed by a few bytes of data only."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(shape)
    header.set_zooms((1.0, 1.0, 1.0))
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    raw = header.binaryblock + b"\0" * 4  # vox_offset 352: the 4 extension bytes, then "data"
    return raw + b"\0" * 64


def _dicom_source(family: str) -> Path:
    return next(p for p in space_examples(family) if _kind(p) == "dicom")


def _dicom_variant(source: Path, target: Path, **changes) -> Path:
    import pydicom

    dataset = pydicom.dcmread(source)
    for keyword, value in changes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    dataset.save_as(target)
    return target


def _wrong_modality(processor_modalities) -> str:
    from pydicom.data import get_testdata_file

    for modality, name in (("MR", "MR_small.dcm"), ("CT", "CT_small.dcm")):
        if modality not in processor_modalities:
            return get_testdata_file(name)
    raise AssertionError(f"no test DICOM outside allowed_modalities={processor_modalities}")


def hostile_inputs(family: str, folder: Path, allowed_modalities=("CT",)) -> list[Hostile]:
    """Writes the hostile files for `family`'s Space into `folder`; `allowed_modalities` None: the Space reads
    every DICOM Modality (no wrong-modality file)."""
    folder.mkdir(parents=True, exist_ok=True)
    examples = space_examples(family)
    kinds = {_kind(p) for p in examples}
    found: list[Hostile] = []

    def add(name: str, data: bytes | None, expect: str, path: Path | None = None) -> None:
        path = path or folder / name
        if data is not None:
            path.write_bytes(data)
        found.append(Hostile(name, path, expect))

    for kind in sorted(kinds):
        source = next(p for p in examples if _kind(p) == kind)
        suffix = ".nii.gz" if source.name.lower().endswith(".nii.gz") else source.suffix
        raw = source.read_bytes()
        add(f"empty{suffix}", b"", r"empty \(0 bytes\)")
        add(f"truncated{suffix}", raw[: len(raw) // 2], TRUNCATED)

    if "dicom" in kinds:
        source = _dicom_source(family)
        # another kind under the Space's extension: a NIfTI volume named .dcm, and plain text named .dcm
        add("volume.dcm", _nifti_bytes(np.zeros((8, 8, 8), np.int16)), r"not a DICOM file")
        add("notes.dcm", b"hello, not dicom\n", r"not a DICOM file")
        add("no_pixels.dcm", None, r"no PixelData|no pixel data",
            _dicom_variant(source, folder / "no_pixels.dcm", PixelData=None))
        if allowed_modalities is not None:  # None: the processor reads every Modality
            wrong = _wrong_modality(allowed_modalities)
            add("wrong_modality.dcm", Path(wrong).read_bytes(), r"Modality '(MR|CT)' is not in allowed_modalities")
        # a header claiming 65535 x 65535 pixels over a 64 x 64 pixel payload
        add("huge_header.dcm", None, r"65535x65535|max_image_pixels|does not match",
            _dicom_variant(source, folder / "huge_header.dcm", Rows=65535, Columns=65535))
        grey = _grey_dicom(source, allowed_modalities)
        if grey is not None:
            add("nan_slope.dcm", None, r"NaN", _nan_slope(grey, folder / "nan_slope.dcm"))
    if "png" in kinds:
        add("notes.png", b"hello, not an image\n", NOT_AN_IMAGE)
        add("bomb.png", None, rf"{BIG_PNG}x{BIG_PNG}|max_image_pixels",
            _zero_png(folder / "bomb.png", BIG_PNG, BIG_PNG))
        add("giant_bomb.png", None, rf"{GIANT_PNG}x{GIANT_PNG}|max_image_pixels|decompression bomb",
            _zero_png(folder / "giant_bomb.png", GIANT_PNG, GIANT_PNG))
        add("volume.png", _nifti_bytes(np.zeros((8, 8, 8), np.int16)), NOT_AN_IMAGE)
    if "nifti" in kinds:
        from pydicom.data import get_testdata_file

        add("slice.nii.gz", Path(get_testdata_file("CT_small.dcm")).read_bytes(), r"not a NIfTI|not a gzip")
        add("notes.nii", b"hello, not a volume\n", r"not a NIfTI")
        add("four_d.nii.gz", gzip.compress(_nifti_bytes(np.zeros((8, 8, 8, 2), np.int16)), mtime=0),
            r"4-D|3-D|dimensions|shape \(8, 8, 8, 2\)")
        add("two_d.nii.gz", gzip.compress(_nifti_bytes(np.zeros((8, 8), np.int16)), mtime=0),
            r"2-D|3-D|dimensions|shape \(8, 8\)")
        nan = np.ones((8, 8, 8), np.float32)
        nan[0, 0, 0], nan[1, 1, 1] = np.nan, np.inf
        add("nan.nii.gz", gzip.compress(_nifti_bytes(nan), mtime=0), r"NaN|inf|finite")
        add("huge_header.nii", _huge_nifti_header(), r"voxels|max_voxels")
        add("huge_header.nii.gz", gzip.compress(_huge_nifti_header(), mtime=0), r"voxels|max_voxels")
    return found


def _grey_dicom(source: Path, allowed_modalities) -> Path | None:
    """A grey DICOM the Space reads, to poison its rescale: the Space's own example when grey, else pydicom's
    CT slice where CT is allowed (a colour DICOM has no Modality LUT, so a NaN slope changes nothing: MoVL's
    stained-cell example); None where neither is."""
    import pydicom
    from pydicom.data import get_testdata_file

    if int(pydicom.dcmread(source, stop_before_pixels=True).get("SamplesPerPixel", 1)) == 1:
        return source
    if allowed_modalities is None or "CT" in allowed_modalities:
        return Path(get_testdata_file("CT_small.dcm"))
    return None


def _nan_slope(source: Path, target: Path) -> Path:
    """The slice with RescaleSlope 'NaN' (and intercept 0): every rescaled pixel value comes out NaN."""
    import warnings

    import pydicom

    dataset = pydicom.dcmread(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that 'NaN' is not a valid DS: that is the point
        dataset.add_new(0x00281053, "DS", "NaN")  # RescaleSlope
        dataset.add_new(0x00281052, "DS", "0")  # RescaleIntercept
        dataset.save_as(target)
    return target
