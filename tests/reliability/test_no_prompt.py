"""Loading a model folder never asks a question (issue 10, point 1).

Run folders and Hub folders carry an `auto_map` (their own source files) so they load without hfmed. With
hfmed installed, its entry points load the installed classes for an hfmed family and never reach
transformers' "Do you wish to run the custom code? [y/N]" prompt; a folder whose code the caller does not
have gets one line saying how to opt in. Each entry point runs in a subprocess whose stdin is closed, the
way a terminal-less job runs it: a prompt would print its question there and read an end of file.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

from hfmed import (
    ScopeformerForImageClassification,
    ScopeformerImageProcessor,
    SliceCNNForVolumePrediction,
    SliceCNNImageProcessor,
    scopeformer_config,
    slice_cnn_config,
)
from hfmed.hub import save_for_hub
from hfmed.pipelines import classify, predict_volume
from hfmed.recipe import load_recipe
from hfmed.train import train

ROOT = Path(__file__).resolve().parents[2]
CT = get_testdata_file("CT_small.dcm")
PROMPT_MARKERS = ("[y/N]", "custom code", "https://hf.co//")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from transformers import pipeline
    from hfmed.cli import _print_example_prediction
    from hfmed.pipelines import TASK, VOLUME_TASK, classify, predict_volume

    folders = json.loads(sys.argv[1])
    ct, nifti = sys.argv[2], sys.argv[3]
    answers = {}
    for kind in ("run", "hub"):
        print(f"=== demo prediction step, scopeformer {kind} folder", flush=True)
        _print_example_prediction(Path(folders["scopeformer"][kind]))
        answers[f"classify/{kind}"] = classify(ct, folders["scopeformer"][kind])
        answers[f"pipeline/{kind}"] = pipeline(TASK, model=folders["scopeformer"][kind])(ct)
        answers[f"predict_volume/{kind}"] = predict_volume(nifti, folders["slice_cnn"][kind])
        answers[f"volume_pipeline/{kind}"] = pipeline(VOLUME_TASK, model=folders["slice_cnn"][kind])(nifti)
    print("ANSWERS " + json.dumps(answers), flush=True)
    """
)


def _tiny_scopeformer_run(tmp_path) -> Path:
    overrides = {
        "training.output_dir": tmp_path / "run", "training.epochs": 1, "training.batch_size": 4,
        "model.config.image_size": 32, "model.config.feature_grid_size": 4, "model.config.hidden_size": 32,
        "model.config.intermediate_size": 64, "model.config.num_attention_heads": 2,
        "model.config.projection_dim": 16, "data.args.root": tmp_path / "twin", "data.args.num_patients": 8,
        "data.args.slices_per_patient": 2, "data.args.image_size": 32, "data.args.val_fraction": 0.5,
    }
    recipe = load_recipe(ROOT / "configs" / "scopeformer-efficient-demo.yaml", [f"{k}={v}" for k, v in overrides.items()])
    return train(recipe) / "model"


def _tiny_slice_cnn_run(tmp_path) -> Path:
    overrides = {
        "training.output_dir": tmp_path / "run", "training.epochs": 1, "training.batch_size": 4,
        "model.config.volume_shape": "[24,28,24]", "model.config.encoder_channels": "[4,8,8]",
        "model.config.encoder1_feature_size": 16, "processor.target_spacing": "[8.0,8.0,8.0]",
        "processor.target_shape": "[24,28,24]", "data.args.root": tmp_path / "twin", "data.args.num_subjects": 8,
        "data.args.shape": "[24,28,24]", "data.args.spacing": 8.0, "data.args.val_fraction": 0.5,
    }
    recipe = load_recipe(ROOT / "configs" / "slice-cnn-demo.yaml", [f"{k}={v}" for k, v in overrides.items()])
    return train(recipe) / "model"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A trained run folder and a `save_for_hub` folder per entry point kind (DICOM image, NIfTI volume)."""
    tmp = tmp_path_factory.mktemp("no_prompt")
    torch.manual_seed(0)
    scope = scopeformer_config("scopeformer-tiny")
    scope_hub = save_for_hub(
        ScopeformerForImageClassification(scope).eval(),
        ScopeformerImageProcessor(size={"height": scope.image_size, "width": scope.image_size}),
        tmp / "scopeformer-hub",
    )
    volume = slice_cnn_config("slice-cnn-tiny", task="regression", aggregation="attention")
    volume_hub = save_for_hub(
        SliceCNNForVolumePrediction(volume).eval(),
        SliceCNNImageProcessor(target_shape=list(volume.volume_shape)),
        tmp / "slice-cnn-hub",
    )
    nifti = tmp / "brain.nii.gz"
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=(16, 20, 16)).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), nifti)
    return {
        "scopeformer": {"run": _tiny_scopeformer_run(tmp / "scope"), "hub": scope_hub},
        "slice_cnn": {"run": _tiny_slice_cnn_run(tmp / "volume"), "hub": volume_hub},
        "nifti": nifti,
    }


def _run_with_closed_stdin(args, how, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(cwd / "modules")}
    if how == "devnull":
        done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=600)
        return done.returncode, done.stdout + done.stderr
    read_end, write_end = os.pipe()
    os.close(write_end)  # a pipe whose writer is gone: a read sees end of file at once
    try:
        done = subprocess.run(args, stdin=read_end, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    finally:
        os.close(read_end)
    return done.returncode, done.stdout + done.stderr


def _reference(folder, inputs):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        return model(**processor(inputs, return_tensors="pt")), model.config


@pytest.mark.parametrize("how", ["devnull", "closed_pipe"])
def test_hfmed_entry_points_load_run_and_hub_folders_without_a_prompt(folders, tmp_path, how):
    paths = {family: {kind: str(folders[family][kind]) for kind in ("run", "hub")}
             for family in ("scopeformer", "slice_cnn")}
    args = [sys.executable, "-c", SCRIPT, json.dumps(paths), CT, str(folders["nifti"])]
    returncode, output = _run_with_closed_stdin(args, how, tmp_path)
    assert returncode == 0, output[-3000:]
    for marker in PROMPT_MARKERS:
        assert marker not in output, f"{marker!r} printed:\n{output[-3000:]}"
    answers = json.loads(output.split("ANSWERS ", 1)[1].splitlines()[0])
    for kind in ("run", "hub"):
        outputs, config = _reference(folders["scopeformer"][kind], CT)
        expected = dict(zip(config.id2label.values(), torch.sigmoid(outputs.logits[0]).tolist(), strict=True))
        for entry in ("classify", "pipeline"):
            got = {row["label"]: row["score"] for row in answers[f"{entry}/{kind}"]}
            assert got == pytest.approx(expected, abs=1e-5), (entry, kind)
        printed = output.split(f"scopeformer {kind} folder", 1)[1]
        assert all(f"  {label:<18} {score:.3f}" in printed for label, score in expected.items()), printed[:2000]
        outputs, config = _reference(folders["slice_cnn"][kind], str(folders["nifti"]))
        for entry in ("predict_volume", "volume_pipeline"):
            answer = answers[f"{entry}/{kind}"]
            assert answer["task"] == config.problem_type
            assert answer["predictions"][0]["value"] == pytest.approx(outputs.logits.item(), abs=1e-5)


@pytest.fixture(scope="module")
def foreign_folder(folders, tmp_path_factory):
    """A Hub folder of a family the installed hfmed does not know: its code is the folder's own."""
    folder = tmp_path_factory.mktemp("foreign") / "model"
    shutil.copytree(folders["scopeformer"]["hub"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "scopeformer_fork"
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("entry", [classify, predict_volume])
def test_a_folder_with_code_hfmed_lacks_gets_one_line_naming_the_opt_in(foreign_folder, capsys, entry):
    with pytest.raises(ValueError) as error:
        entry(CT, str(foreign_folder))
    message = str(error.value)
    assert "\n" not in message
    assert "trust_remote_code=True" in message and str(foreign_folder) in message and "scopeformer_fork" in message
    printed = capsys.readouterr()
    assert "[y/N]" not in printed.out + printed.err


def test_without_hfmed_an_unopted_folder_fails_at_once_naming_the_opt_in(folders, tmp_path):
    script = textwrap.dedent(
        """
        import sys
        sys.modules["hfmed"] = None  # the caller does not have the family's code
        from transformers import AutoModelForImageClassification
        try:
            AutoModelForImageClassification.from_pretrained(sys.argv[1])
        except ValueError as error:
            print("ERROR", str(error).replace(chr(10), " | "))
        else:
            print("LOADED")
        """
    )
    returncode, output = _run_with_closed_stdin(
        [sys.executable, "-c", script, str(folders["scopeformer"]["hub"])], "devnull", tmp_path
    )
    assert returncode == 0, output[-3000:]
    assert "LOADED" not in output
    error = output.split("ERROR ", 1)[1]
    assert "trust_remote_code=True" in error
