"""Error messages and metric names that name the real problem (issue 10, point 4)."""

import pytest
import torch
from pydicom.data import get_testdata_file

from hfmed import LTViTImageProcessor, ScopeformerImageProcessor
from hfmed.models.diamant import DIAMANTImageProcessor

CT = get_testdata_file("CT_small.dcm")
PREAMBLE = 128 + len(b"DICM")

# Every processor that reads DICOM files, set to accept pydicom's CT slice (LT-ViT wants radiographs).
DICOM_PROCESSORS = {
    "scopeformer": lambda: ScopeformerImageProcessor(size={"height": 32, "width": 32}),
    "lt_vit": lambda: LTViTImageProcessor(size={"height": 32, "width": 32}, allowed_modalities=["CT"]),
    "diamant": lambda: DIAMANTImageProcessor(size={"height": 32, "width": 32}),
}


@pytest.mark.parametrize("family", sorted(DICOM_PROCESSORS))
@pytest.mark.parametrize("content", [b"hello, not dicom", bytes(300), b"PK\x03\x04" + bytes(range(256))])
def test_a_file_named_dcm_that_is_not_dicom_is_called_not_a_dicom(family, content, tmp_path):
    path = tmp_path / "x.dcm"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        DICOM_PROCESSORS[family]()(str(path))
    message = str(error.value)
    assert message.startswith(f"{str(path)!r} is not a DICOM file (no 'DICM' preamble")
    assert "PixelData" not in message and "\n" not in message


@pytest.mark.parametrize("family", sorted(DICOM_PROCESSORS))
def test_a_dicom_without_its_preamble_still_reads(family, tmp_path):
    # Older exports write the dataset alone (no 128-byte preamble, no 'DICM'): pydicom's force=True reads them.
    raw = tmp_path / "raw.dcm"
    with open(CT, "rb") as f:
        raw.write_bytes(f.read()[PREAMBLE:])
    processor = DICOM_PROCESSORS[family]()
    expected = processor(CT, return_tensors="pt")["pixel_values"]
    assert torch.equal(processor(str(raw), return_tensors="pt")["pixel_values"], expected)
