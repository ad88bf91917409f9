import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from transformers import AutoImageProcessor, pipeline

from hfmed import ScopeformerForImageClassification, ScopeformerImageProcessor, scopeformer_config
from hfmed.hub import save_for_hub
from hfmed.pipelines import TASK, classify

CT = get_testdata_file("CT_small.dcm")


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    torch.manual_seed(0)
    config = scopeformer_config("scopeformer-tiny")
    model = ScopeformerForImageClassification(config).eval()
    processor = ScopeformerImageProcessor(size={"height": 32, "width": 32})
    folder = save_for_hub(model, processor, tmp_path_factory.mktemp("hub"))
    with torch.no_grad():
        probabilities = torch.sigmoid(model(**processor(CT, return_tensors="pt")).logits[0])
    return folder, dict(zip(config.id2label.values(), probabilities.tolist(), strict=True))


def test_medical_pipeline_classifies_a_dicom_path_bytes_and_dataset(hub_folder):
    folder, expected = hub_folder
    pipe = pipeline(TASK, model=str(folder))
    with open(CT, "rb") as f:
        raw = f.read()
    for source in (CT, raw, pydicom.dcmread(CT)):
        result = pipe(source)
        assert [r["score"] for r in result] == sorted((r["score"] for r in result), reverse=True)
        assert {r["label"]: pytest.approx(r["score"], abs=1e-6) for r in result} == expected


def test_classify_helper_answers_every_label(hub_folder):
    folder, expected = hub_folder
    result = classify(CT, str(folder))
    assert {r["label"] for r in result} == set(expected)


def test_pipeline_reports_a_bad_file_clearly(hub_folder, tmp_path):
    folder, _ = hub_folder
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="not a DICOM"):
        pipeline(TASK, model=str(folder))(str(bad))


def test_installed_hfmed_resolves_the_processor_without_remote_code(hub_folder):
    folder, _ = hub_folder
    processor = AutoImageProcessor.from_pretrained(folder)
    assert type(processor) is ScopeformerImageProcessor
