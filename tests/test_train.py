"""The Accelerate loop on the synthetic CT twin: outputs, exact resume, 2-process DDP, Trainer."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hfmed.recipe import load_recipe
from hfmed.train import StepCalls, parameter_groups, prepare, train, train_one_epoch

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "scopeformer-efficient-demo.yaml"


def tiny_overrides(tmp_path, data_root, **extra):
    """The demo recipe shrunk to seconds: 32 px, 12 patients x 2 slices."""
    overrides = {
        "training.output_dir": str(tmp_path / "run"),
        "model.config.image_size": 32,
        "model.config.feature_grid_size": 4,
        "model.config.hidden_size": 32,
        "model.config.intermediate_size": 64,
        "model.config.num_attention_heads": 2,
        "model.config.projection_dim": 16,
        "data.args.root": str(data_root),
        "data.args.num_patients": 12,
        "data.args.slices_per_patient": 2,
        "data.args.image_size": 32,
        "data.args.val_fraction": 0.34,
        "training.batch_size": 4,
        "training.eval_batch_size": 8,
        "training.log_every_steps": 1,
        "training.epochs": 2,
        **extra,
    }
    return [f"{k}={v}" for k, v in overrides.items()]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic_ct")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("full")
    out = train(load_recipe(DEMO, tiny_overrides(tmp, data_root)))
    return out


def test_a_run_writes_model_metrics_recipe_and_plots(finished_run):
    out = finished_run
    files = {p.name for p in (out / "model").iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= files
    report = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    assert 0.0 <= report["best"]["metrics"]["mean_auroc"] <= 1.0
    points = report["thresholds"]["operating_points"]
    assert set(points) == {"any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"}
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["label_thresholds"] == [points[name]["threshold"] for name in config["id2label"].values()]
    assert (out / "recipe.yaml").is_file()
    for plot in ("loss.png", "metrics.png", "roc.png"):
        assert (out / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_saved_model_is_the_best_epoch_and_reloads(finished_run, data_root):
    from transformers import AutoModelForImageClassification

    import hfmed  # noqa: F401  (registers the family)

    report = json.loads((finished_run / "metrics.json").read_text())
    scores = [h["eval_mean_auroc"] for h in report["history"]]
    assert report["best"]["score"] == max(scores)
    assert report["best"]["epoch"] == 1 + int(np.argmax(scores))
    model = AutoModelForImageClassification.from_pretrained(finished_run / "model")
    assert model.config.label_thresholds is not None


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, data_root):
    # Mid-epoch stop: 12*0.66 ~ 8 train slices / batch 4 = 2 steps per epoch; stop after 3 of 4 steps.
    extra = {"training.save_every_steps": 1, "data.augment.hflip": 0.5, "model.config.hidden_dropout_prob": 0.1}
    full = train(load_recipe(DEMO, tiny_overrides(tmp_path / "a", data_root, **extra)))
    recipe = load_recipe(DEMO, tiny_overrides(tmp_path / "b", data_root, **extra))
    stopped = train(recipe, stop_after_steps=3)
    assert not (stopped / "metrics.json").exists()
    resumed = train(recipe, resume="latest")
    a, b = weights(full / "model"), weights(resumed / "model")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    history_a = json.loads((full / "metrics.json").read_text())["history"]
    history_b = json.loads((resumed / "metrics.json").read_text())["history"]
    assert history_a == history_b


def test_the_plain_step_calls_equal_accelerates_wrappers_bit_for_bit(tmp_path, data_root):
    # Accumulation 2 (a step without an optimizer step, then one with) and a clip norm small enough to clip.
    extra = {"training.gradient_accumulation_steps": 2, "training.max_grad_norm": 0.05, "training.epochs": 2}
    ends = {}
    for plain in (True, False):
        run = prepare(load_recipe(DEMO, tiny_overrides(tmp_path / str(plain), data_root, **extra)))
        assert run.step_calls.plain  # a one-process CPU run with Adam: the wrappers are pass-through
        run.step_calls.plain = plain
        before = {k: v.clone() for k, v in run.unwrapped.state_dict().items()}
        for epoch in range(2):
            train_one_epoch(run, epoch)
        run.accelerator.end_training()
        ends[plain] = run.unwrapped.state_dict()
        assert any(not torch.equal(before[k], ends[plain][k]) for k in before)  # it trained
    assert all(torch.equal(ends[True][k], ends[False][k]) for k in ends[True])


def test_step_calls_go_through_accelerate_for_an_optimizer_it_may_special_case():
    from accelerate import Accelerator

    model = torch.nn.Linear(2, 2)
    accelerator = Accelerator(cpu=True)
    for optimizer, plain in ((torch.optim.AdamW(model.parameters()), True), (torch.optim.SGD(model.parameters()), False)):
        assert StepCalls(accelerator, accelerator.prepare(optimizer)).plain is plain


def test_parameter_groups_skip_frozen_and_decay_only_weights():
    recipe = load_recipe(
        DEMO, ["model.config.freeze_backbones=true", "training.module_learning_rates={scopeformer.projection: 0.01}"]
    )
    from hfmed.train import build_model

    model, _ = build_model(recipe)
    groups = parameter_groups(model, recipe)
    names = [n for g in groups for n in g["names"]]
    assert not any(n.startswith("scopeformer.backbones") for n in names)
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    for group in groups:
        for name in group["names"]:
            expected_lr = 0.01 if name.startswith("scopeformer.projection") else recipe.training.learning_rate
            assert group["lr"] == expected_lr, name
            is_weight_matrix = name.endswith("weight") and dict(model.named_parameters())[name].ndim > 1
            assert (group["weight_decay"] > 0) == is_weight_matrix, name


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import save_file
    from hfmed.recipe import load_recipe
    from hfmed.train import train

    class Probe:
        def on_before_optimizer_step(self, state, model, batch, accelerator):
            if state.step == 0:  # first optimizer step: after backward, before the update
                grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
                self.grads = grads
                self.pixels = batch["pixel_values"].detach().clone()

        def on_train_end(self, state, model, accelerator):
            model = accelerator.unwrap_model(model)
            rank = accelerator.process_index
            tensors = {f"w.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
            tensors.update({f"g.{k}": v.contiguous() for k, v in self.grads.items()})
            tensors["pixels"] = self.pixels.contiguous()
            tensors["world"] = torch.tensor(accelerator.num_processes)
            save_file(tensors, f"{sys.argv[1]}/rank{rank}.safetensors")

    recipe = load_recipe(sys.argv[2], sys.argv[3:])
    train(recipe, callbacks=[Probe()])
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_synchronises_gradients_and_ends_with_identical_weights(tmp_path, data_root):
    script = tmp_path / "ddp_probe.py"
    script.write_text(DDP_SCRIPT)
    overrides = tiny_overrides(tmp_path, data_root, **{"training.epochs": 1})
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
        "--dynamo_backend", "no", str(script), str(tmp_path), str(DEMO), *overrides,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    r0, r1 = (load_file(str(tmp_path / f"rank{i}.safetensors")) for i in (0, 1))
    assert int(r0["world"]) == int(r1["world"]) == 2
    # The ranks trained on different slices...
    assert not torch.equal(r0["pixels"], r1["pixels"])
    # ...yet held the same (all-reduced) gradients and end with the same weights.
    grads = [k for k in r0 if k.startswith("g.")]
    assert grads and all(torch.equal(r0[k], r1[k]) for k in grads)
    assert all(torch.equal(r0[k], r1[k]) for k in r0 if k.startswith("w."))


def test_the_run_model_folder_loads_without_hfmed(finished_run, tmp_path):
    script = (
        "import sys; sys.modules['hfmed'] = None\n"
        "from transformers import AutoImageProcessor, AutoModelForImageClassification\n"
        "model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "AutoImageProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "print(type(model).__module__, model.config.label_thresholds is not None)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", script, str(finished_run / "model")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    module, has_thresholds = done.stdout.split()[-2:]
    assert not module.startswith("hfmed") and has_thresholds == "True"


def test_the_whole_recipe_is_checked_before_any_data_is_built(tmp_path):
    # A selection metric the task does not compute, or an argument the builder does not take, stops the run
    # before the synthetic twin is written (it would be, into data.args.root) and before any training step.
    from hfmed.recipe import RecipeError

    never = tmp_path / "never"
    for override, error, message in [
        ("evaluation.metric=mae", RecipeError, r"evaluation.metric 'mae' is not computed; choose one of \[.*'mean_auroc'"),
        ("data.args.num_patiens=3", TypeError, "dataset builder 'synthetic_ct': .*num_patiens"),
    ]:
        recipe = load_recipe(DEMO, [f"training.output_dir={tmp_path / 'run'}", f"data.args.root={never}", override])
        with pytest.raises(error, match=message):
            train(recipe)
        assert not never.exists() and not (tmp_path / "run" / "checkpoints").exists()
