"""One Accelerate training loop for every hfmed family.

    hfmed train configs/<family>-demo.yaml training.epochs=2
    accelerate launch -m hfmed.train configs/<recipe>.yaml [--resume latest]

The loop touches only the family's config factory, its head's Auto class, its training policy
(`hfmed.policy`) and `outputs.loss` (as in transformers' `run_image_classification_no_trainer.py`); what
differs between tasks (scores, metrics, thresholds, plots) is the task's (`hfmed.tasks`). It runs as named
steps over one `Run`:

    prepare          validate the whole recipe, build data (its class names), model, optimizer; resume
    train_one_epoch  the optimizer steps of one epoch (the training policy's epoch hook first)
    evaluate         validation metrics, best-epoch selection, export of the best model
    checkpoint       `Accelerator.save_state` + the loop state (`hfmed.checkpoint`)
    finish           the task's end-of-run work, the best model on every extra split, metrics.json, plots

A run writes into `training.output_dir`:

    model/          best epoch's weights + image processor (HF format, safetensors, with the family's source
                    files and auto_map so it loads without hfmed), thresholds in config (classification)
    checkpoints/    `Accelerator.save_state` folders (step_000050, ...) for --resume, written under a temporary
                    name and renamed into place (hfmed/checkpoint.py), so a kill never leaves a torn one
    metrics.json    per-epoch history, best metrics, the task's extras (thresholds with sensitivity /
                    specificity for classification), and `splits`: the best model's metrics on every split the
                    data has besides train and validation (`{"test": {...}, "test_ood": {...}}`; `{}` if none)
    recipe.yaml     the resolved recipe
    plots/          loss.png, metrics.png and the task's plots (roc.png, predictions.png)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .checkpoint import (
    atomic_path,
    check_free_space,
    check_output_dir,
    load_checkpoint,
    recover_folder,
    resolve_resume,
    save_checkpoint,
    save_model,
    write_text_atomic,
)
from .hub import trust_remote_code_for
from .policy import TrainingPolicy
from .policy import parameter_groups as policy_parameter_groups
from .recipe import DATA_SOURCE_WEIGHTS, Recipe, RecipeError, dump_recipe, load_recipe
from .registry import FAMILIES, family_for, load_model
from .tasks import Task, task_for


def build_model(recipe: Recipe, processor_kwargs=None):
    """Config, model and image processor for a recipe (fresh, pretrained backbones, or a checkpoint)."""
    from transformers import AutoImageProcessor

    family = FAMILIES[recipe.model.family]
    if recipe.model.init_from:
        trust = trust_remote_code_for(recipe.model.init_from)  # the installed classes; never a prompt
        model = family.head_auto_class.from_pretrained(recipe.model.init_from, trust_remote_code=trust)
        processor = AutoImageProcessor.from_pretrained(recipe.model.init_from, trust_remote_code=trust)
        return model, processor
    config = family.make_config(recipe.model.preset, **recipe.model.config)
    if recipe.model.pretrained_backbones:
        weights = backbone_weights(recipe, config)
        kwargs = {} if weights is None else {"backbone_weights": weights}
        model = family.head_class.from_pretrained_backbones(config, **kwargs)
    else:
        model = family.head_auto_class.from_config(config)
    kwargs = family.processor_kwargs_for(config)
    kwargs.update(recipe.processor)
    kwargs.update(processor_kwargs or {})
    processor = family.image_processor_class(**kwargs)
    return model, processor


def backbone_weights(recipe: Recipe, config):
    """The local backbone weights a recipe names (`model.backbone_weights`): a path, or the backbone the data
    builder pretrains on its source set (`data-source`: trained once, cached). `None`: the Hub's."""
    from .data import builder_spec

    weights = recipe.model.backbone_weights
    if weights != DATA_SOURCE_WEIGHTS:
        return weights
    return str(builder_spec(recipe.data.builder).source_backbone(config, **recipe.data.args))


def model_config(recipe: Recipe):
    """The model config a recipe gives, without building the model (no weights, no randomness)."""
    if recipe.model.init_from:
        from transformers import AutoConfig

        trust = trust_remote_code_for(recipe.model.init_from)
        return AutoConfig.from_pretrained(recipe.model.init_from, trust_remote_code=trust)
    return FAMILIES[recipe.model.family].make_config(recipe.model.preset, **recipe.model.config)


def parameter_groups(model, recipe: Recipe, policy: TrainingPolicy | None = None) -> list[dict]:
    """The optimizer groups of `model` under its family's training policy (see `hfmed.policy`)."""
    policy = policy or family_for(model).training_policy
    return policy_parameter_groups(model, recipe.training, policy)


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int, decay: bool = True):
    """Linear warmup, then cosine decay to 0 (or a constant learning rate with `decay=False`)."""

    def factor(step):
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        if not decay:
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class TrainState:
    """Where a run is; saved with every checkpoint (`trainer_state.json`) and restored on resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    running_loss: float = 0.0
    seen: int = 0
    history: list = field(default_factory=list)
    step_losses: list = field(default_factory=list)
    best: dict | None = None


@dataclass
class Run:
    """Everything the steps of one run share."""

    recipe: Recipe
    accelerator: Any
    model: Any
    processor: Any
    task: Task
    policy: TrainingPolicy
    label_names: list
    train_transform: Any
    train_loader: Any
    eval_loader: Any
    optimizer: Any
    scheduler: Any
    total_steps: int
    epochs: int
    state: TrainState
    callbacks: tuple = ()
    data: Any = None
    """The run's `DatasetDict` (its extra splits are evaluated at the end)."""
    progress: Any = None
    started: float = 0.0
    _unwrapped: tuple | None = field(default=None, repr=False)
    _step_calls: Any = field(default=None, repr=False)
    best_eval: tuple | None = None
    """(scores, labels, kept inputs) of the best epoch on validation, when this process evaluated it; the kept
    inputs are the first `task.keep_inputs` validation `pixel_values`."""

    @property
    def output_dir(self) -> Path:
        return Path(self.recipe.training.output_dir)

    @property
    def unwrapped(self):
        """The model without Accelerate's wrappers. `accelerator.unwrap_model` walks every module and checks
        installed packages (~0.5 ms, 5 % of a small model's step), so it runs once per wrapped model."""
        return self._model_facts()[1]

    @property
    def parameters(self) -> list:
        """The wrapped model's parameters, listed once per model (clipping walked every module each step)."""
        return self._model_facts()[2]

    @property
    def step_calls(self) -> StepCalls:
        """The step's backward / clip / optimizer calls (`StepCalls`), chosen once per optimizer."""
        if self._step_calls is None or self._step_calls.optimizer is not self.optimizer:
            self._step_calls = StepCalls(self.accelerator, self.optimizer)
        return self._step_calls

    def _model_facts(self) -> tuple:
        if self._unwrapped is None or self._unwrapped[0] is not self.model:
            self._unwrapped = (self.model, self.accelerator.unwrap_model(self.model), list(self.model.parameters()))
        return self._unwrapped

    def call(self, event: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, event, lambda *a: None)(self.state, *args)


def evaluate_model(model, loader, accelerator, task: Task | None = None, policy: TrainingPolicy | None = None,
                   kept_inputs: list | None = None):
    """Mean loss, scores and labels over a loader, gathered across processes.

    Scores are what the task makes of the logits (sigmoid probabilities for a classifier, the raw outputs for
    a regression model). `policy.prepare_batch` (default: none) sees every batch before the forward. A
    `kept_inputs` list receives the gathered `pixel_values` of the first batches, at least `task.keep_inputs`
    of them (for the task's end-of-run plots).
    """
    unwrapped = accelerator.unwrap_model(model)  # walks every module: once, not once a batch
    task = task or task_for(unwrapped.config)
    policy = policy or TrainingPolicy()
    model.eval()
    losses, scores, labels = [], [], []
    with torch.no_grad():
        for batch in loader:
            batch = policy.prepare_batch(unwrapped, batch)
            outputs = model(**batch)
            count = batch["labels"].shape[0]
            loss = outputs.loss.detach().float().repeat(count)
            losses.append(accelerator.gather_for_metrics(loss).cpu())
            scores.append(accelerator.gather_for_metrics(task.scores(outputs.logits)).cpu())
            labels.append(accelerator.gather_for_metrics(batch["labels"]).cpu())
            if kept_inputs is not None and sum(len(x) for x in kept_inputs) < task.keep_inputs:
                kept_inputs.append(accelerator.gather_for_metrics(batch["pixel_values"]).cpu())
    model.train()
    return torch.cat(losses).mean().item(), torch.cat(scores).numpy(), torch.cat(labels).numpy()


def train(recipe: Recipe, resume=None, stop_after_steps: int | None = None, callbacks=()) -> Path:
    """Run a recipe; returns the output folder.

    `stop_after_steps` simulates an interruption (tests, preemption drills). `callbacks` are objects with
    any of `on_before_optimizer_step(state, model, batch, accelerator)` (gradients are synchronised
    there) and `on_train_end(state, model, accelerator)`, called on every process with the `TrainState`.
    """
    run = prepare(recipe, resume=resume, callbacks=callbacks)
    for epoch in range(run.state.epoch, run.epochs):
        outcome = train_one_epoch(run, epoch, stop_after_steps)
        if outcome == "stopped":
            run.progress.close()
            return _end(run)
        evaluate(run, epoch)
        run.state.epoch, run.state.batch_in_epoch = epoch + 1, 0
        if not run.recipe.training.save_every_steps or outcome == "finished":
            checkpoint(run)
        if outcome == "finished":
            break
    return finish(run)


# ---------------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------------


def prepare(recipe: Recipe, resume=None, callbacks=()) -> Run:
    """Everything before the first step: the whole recipe is checked here (builder arguments, task options,
    the selection metric, its classes against the data's: `recipe_with_data_classes`), so a bad recipe fails
    before any training."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from .data import build_dataset

    training = recipe.training
    accelerator = _make_accelerator(recipe)
    set_seed(training.seed)
    accelerator.print(
        f"{accelerator.distributed_type.value} on {accelerator.num_processes} process(es), "
        f"device {accelerator.device}, mixed precision {accelerator.mixed_precision}"
    )
    output_dir = Path(training.output_dir)
    check_output_dir(output_dir)  # a read-only or misnamed folder stops here, not after an epoch
    resume_dir = resolve_resume(resume, output_dir, log=accelerator.print)
    check_recipe(recipe)
    data = build_dataset(recipe.data.builder, **recipe.data.args)
    given = recipe  # recipe.yaml keeps the recipe as given; the run builds with the data's class names
    recipe = recipe_with_data_classes(recipe, data)
    model, processor = build_model(recipe)
    check_free_space(output_dir, model, training.checkpoints_total_limit)
    policy = family_for(model).training_policy
    policy.apply(model)
    task = task_for(model.config)
    label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    _apply_model_options(recipe, model, data)
    train_transform, train_loader, eval_loader = _make_loaders(recipe, processor, data, label_names)
    optimizer, scheduler, total_steps, epochs = _make_optimizer(recipe, model, policy, train_loader, accelerator)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    state = TrainState()
    if resume_dir is not None:
        state = TrainState(**load_checkpoint(accelerator, resume_dir))
        accelerator.print(f"resumed from {resume_dir} at step {state.step}")
    if training.report_to:
        accelerator.init_trackers(recipe.name or "hfmed", config=_flat_for_trackers(recipe))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        recover_folder(output_dir / "model")  # a kill may have cut the last best-model swap short
        with atomic_path(output_dir / "recipe.yaml") as temporary:
            dump_recipe(given, temporary)
    run = Run(
        recipe=recipe, accelerator=accelerator, model=model, processor=processor, task=task, policy=policy,
        label_names=label_names, train_transform=train_transform, train_loader=train_loader,
        eval_loader=eval_loader, optimizer=optimizer, scheduler=scheduler, total_steps=total_steps,
        epochs=epochs, state=state, callbacks=tuple(callbacks), data=data,
    )
    run.progress = tqdm(
        total=total_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="train"
    )
    run.started = time.time()
    model.train()
    return run


def check_recipe(recipe: Recipe) -> None:
    """What `load_recipe` cannot check alone, before any data is read or weight built: the builder's
    arguments, and the options that depend on the model's task (the task's own checks, the selection metric).
    """
    from .data import check_builder_args

    check_builder_args(recipe.data.builder, recipe.data.args)
    config = model_config(recipe)
    task_for(config).check_recipe(recipe)
    # A metric named after a class waits for the data's class names when the recipe leaves them to the data.
    _check_metric(recipe, config, wait_for_data=not isinstance(_given_classes(recipe), list))


def _check_metric(recipe: Recipe, config, wait_for_data: bool = False) -> None:
    """`evaluation.metric` must be one the task computes. With `wait_for_data`, a per-class metric of a class the
    config does not name (`recall_<class>`) is left for the check that follows with the data's class names."""
    labels = [config.id2label[i] for i in range(config.num_labels)]
    choices = task_for(config).metric_names(config, labels)
    metric = recipe.evaluation.metric
    if metric in choices:
        return
    per_class = {name[: -len(label)] for name in choices for label in labels if name.endswith(f"_{label}")}
    if not (wait_for_data and any(metric.startswith(prefix) for prefix in per_class)):
        raise RecipeError(f"evaluation.metric {metric!r} is not computed; choose one of {sorted(choices)}")


def _given_classes(recipe: Recipe) -> list[str] | int | None:
    """The classes a recipe fixes: the names of `model.config.id2label` or of the `model.init_from` checkpoint,
    the count of `model.config.num_labels` alone, or `None` (the data's classes)."""
    if recipe.model.init_from or "id2label" in recipe.model.config:
        config = model_config(recipe)
        return [config.id2label[i] for i in range(config.num_labels)]
    return recipe.model.config.get("num_labels")


def recipe_with_data_classes(recipe: Recipe, data) -> Recipe:
    """The recipe a run builds its model from. Single-label data carries its class names (a ClassLabel `labels`,
    `hfmed.data.class_names`): a recipe that names no classes gets them as `model.config.id2label`; one whose
    classes disagree with the data's (count or names, in order) stops here with a `RecipeError` naming the fix.
    Other data leaves the recipe as it is."""
    from .data import class_names

    names = class_names(data)
    if names is None:
        _check_metric(recipe, model_config(recipe))  # a per-class metric left to the data's names
        return recipe
    given = _given_classes(recipe)
    source = "the checkpoint model.init_from" if recipe.model.init_from else "model.config.id2label"
    if isinstance(given, list) and given != names:
        fix = ("fine-tune it on data with these classes" if recipe.model.init_from
               else "remove model.config.id2label to take the data's names, or list exactly those, in that order")
        raise RecipeError(
            f"{source} has {len(given)} classes {given} but the data ({recipe.data.builder!r}) has {len(names)} "
            f"{names}: {fix}"
        )  # fmt: skip
    if isinstance(given, int) and given != len(names):
        raise RecipeError(
            f"model.config.num_labels is {given} but the data ({recipe.data.builder!r}) has {len(names)} classes "
            f"{names}: remove model.config.num_labels (the data's classes are taken)"
        )
    if isinstance(given, list):
        return recipe  # its classes, and so the metric, were checked with the recipe
    resolved = dict(recipe.model.config, id2label=dict(enumerate(names)))
    resolved.pop("num_labels", None)
    recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, config=resolved))
    _check_metric(recipe, model_config(recipe))
    return recipe


def _make_accelerator(recipe: Recipe):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    training = recipe.training
    output_dir = Path(training.output_dir)
    return Accelerator(
        mixed_precision=training.mixed_precision,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        log_with=training.report_to or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # Seeded per-epoch shuffling: a resumed run sees the same order as an uninterrupted one.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=training.seed),
        cpu=not torch.cuda.is_available(),
    )


def _apply_model_options(recipe: Recipe, model, data) -> None:
    from .data.transforms import pos_weight_from_data

    training = recipe.training
    if training.pos_weight is not None:
        pos_weight = pos_weight_from_data(data["train"]) if training.pos_weight == "auto" else training.pos_weight
        model.config.loss_pos_weight = [float(w) for w in pos_weight]
    if training.gradient_checkpointing:
        model.activation_checkpointing_enable()


def _make_loaders(recipe: Recipe, processor, data, label_names):
    from .data.transforms import balanced_sampler, collate, make_transform

    training = recipe.training
    train_transform = make_transform(processor, recipe.data.augment, train=True, seed=training.seed)
    train_set = data["train"].with_transform(train_transform)
    eval_set = data["validation"].with_transform(make_transform(processor, train=False))
    sampler = balanced_sampler(data["train"], label_names, seed=training.seed) if recipe.data.balanced_sampler else None
    train_loader = DataLoader(
        train_set,
        batch_size=training.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=collate,
        num_workers=recipe.data.num_workers,
        drop_last=len(train_set) > training.batch_size,
    )
    eval_loader = DataLoader(
        eval_set, batch_size=training.eval_batch_size, collate_fn=collate, num_workers=recipe.data.num_workers
    )
    return train_transform, train_loader, eval_loader


def _make_optimizer(recipe: Recipe, model, policy, train_loader, accelerator):
    training = recipe.training
    groups = policy_parameter_groups(model, training, policy)
    optimizer_class = torch.optim.AdamW if training.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(
        [{k: v for k, v in g.items() if k != "names"} for g in groups], betas=tuple(training.adam_betas)
    )
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / training.gradient_accumulation_steps)
    total_steps = training.max_steps or steps_per_epoch * training.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    # The scheduler is stepped once per process by Accelerate; scale so the shape spans the whole run.
    scheduler = cosine_with_warmup(
        optimizer,
        int(training.warmup_ratio * total_steps) * accelerator.num_processes,
        total_steps * accelerator.num_processes,
        decay=training.lr_scheduler == "cosine",
    )
    return optimizer, scheduler, total_steps, epochs


# ---------------------------------------------------------------------------------------------------
# train one epoch
# ---------------------------------------------------------------------------------------------------


def train_one_epoch(run: Run, epoch: int, stop_after_steps: int | None = None) -> str:
    """The optimizer steps of one epoch (from where a resumed run left it). Returns "done" at the end of the
    epoch, "finished" when the run's last step was taken, "stopped" at `stop_after_steps`."""
    state, accelerator, training = run.state, run.accelerator, run.recipe.training
    run.train_transform.set_epoch(epoch)
    if hasattr(run.train_loader, "set_epoch"):
        run.train_loader.set_epoch(epoch)
    run.policy.on_epoch_start(run.unwrapped, epoch)
    loader = run.train_loader
    if state.batch_in_epoch:
        loader = accelerator.skip_first_batches(run.train_loader, state.batch_in_epoch)
    else:
        state.running_loss, state.seen = 0.0, 0
    for batch in loader:
        loss = _train_step(run, epoch, batch)
        state.batch_in_epoch += 1
        state.running_loss += loss.detach().float().item()
        state.seen += 1
        if not accelerator.sync_gradients:
            continue
        state.step += 1
        run.progress.update(1)
        if state.step % training.log_every_steps == 0:
            _log_train_loss(run)
        if training.save_every_steps and state.step % training.save_every_steps == 0:
            checkpoint(run)
        if state.step >= run.total_steps:
            return "finished"
        if stop_after_steps and state.step >= stop_after_steps:
            return "stopped"
    return "stopped" if stop_after_steps and state.step >= stop_after_steps else "done"


class StepCalls:
    """The backward, clipping, optimizer-step and zero-grad calls of one training step.

    Accelerate's wrappers (`Accelerator.backward` / `clip_grad_norm_`, `AcceleratedOptimizer`) serve DeepSpeed,
    FSDP, XLA, Megatron, LOMO and fp16 loss scaling. Without those they reduce to the torch calls, plus checks
    repeated every step (two installed-package lookups in `AcceleratedOptimizer.step`, a signature inspection in
    `zero_grad`, a DTensor scan of every gradient in clipping): ~0.4 ms, 6 % of a 7 ms demo step. So a
    run whose wrappers are pass-through (`plain`) makes the torch calls; any other run goes through Accelerate.
    Both give bit-identical weights (tests/test_train.py)."""

    def __init__(self, accelerator, optimizer):
        from accelerate.optimizer import AcceleratedOptimizer
        from accelerate.utils import DistributedType

        self.accelerator, self.optimizer = accelerator, optimizer
        self.plain = (
            accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
            and accelerator.scaler is None
            and type(optimizer) is AcceleratedOptimizer
            and type(optimizer.optimizer) in (torch.optim.Adam, torch.optim.AdamW)
        )

    def backward(self, loss: torch.Tensor) -> None:
        if not self.plain:
            self.accelerator.backward(loss)
            return
        steps = self.accelerator.gradient_accumulation_steps
        (loss / steps if steps != 1 else loss).backward()

    def clip_grad_norm_(self, parameters: list, max_norm: float) -> None:
        if self.plain:
            torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        else:
            self.accelerator.clip_grad_norm_(parameters, max_norm)

    def step_and_zero_grad(self) -> None:
        """The optimizer's step and zero_grad; both are no-ops between accumulation boundaries."""
        if not self.plain:
            self.optimizer.step()
            self.optimizer.zero_grad()
        elif self.accelerator.sync_gradients:
            self.optimizer.optimizer.step()
            self.optimizer.optimizer.zero_grad(set_to_none=True)


def _train_step(run: Run, epoch: int, batch) -> torch.Tensor:
    accelerator, model, training = run.accelerator, run.model, run.recipe.training
    # Reseed per micro-batch from (seed, rank, epoch, position): dropout and any other torch randomness then
    # depend on where the run is, not on how it got there, so a resumed run matches an uninterrupted one bit
    # for bit (iterator creation draws from the global RNG).
    _reseed(_step_seed(training.seed, accelerator.process_index, epoch, run.state.batch_in_epoch), accelerator.device)
    unwrapped = run.unwrapped
    with accelerator.accumulate(model):
        batch = run.policy.prepare_batch(unwrapped, batch)
        outputs = model(**batch)
        loss = run.policy.loss(unwrapped, batch, outputs)
        calls = run.step_calls
        calls.backward(loss)
        if accelerator.sync_gradients:
            run.call("on_before_optimizer_step", model, batch, accelerator)
            if training.max_grad_norm:
                calls.clip_grad_norm_(run.parameters, training.max_grad_norm)
        calls.step_and_zero_grad()
        run.scheduler.step()
    return loss


def _log_train_loss(run: Run) -> None:
    state = run.state
    loss = state.running_loss / state.seen
    state.step_losses.append([state.step, loss])
    run.progress.set_postfix(loss=f"{loss:.4f}")
    run.accelerator.log({"train_loss": loss, "lr": run.scheduler.get_last_lr()[0]}, step=state.step)


def _reseed(seed: int, device: torch.device) -> None:
    """`torch.manual_seed(seed)` for the generators a run on `device` draws from: the CPU's and the device's.
    `torch.manual_seed` also queues a lazy seed, with a formatted stack trace, for every backend not yet
    initialised (CUDA on a CPU run): ~0.2 ms a step, 1 % of a demo model's step."""
    torch.random.default_generator.manual_seed(seed)
    if device.type != "cpu":
        backend = getattr(torch, device.type)
        getattr(backend, "manual_seed_all", backend.manual_seed)(seed)


def _step_seed(seed: int, rank: int, epoch: int, position: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + epoch * 104_729 + position) % (2**63 - 1)


# ---------------------------------------------------------------------------------------------------
# evaluate, checkpoint
# ---------------------------------------------------------------------------------------------------


def evaluate(run: Run, epoch: int) -> dict:
    """Validation metrics after `epoch`; the best epoch so far is exported to `model/`. Returns the record."""
    accelerator, state, evaluation = run.accelerator, run.state, run.recipe.evaluation
    kept: list = []
    eval_loss, scores, labels = evaluate_model(run.model, run.eval_loader, accelerator, run.task, run.policy, kept)
    metrics = run.task.metrics(run.unwrapped.config, scores, labels, run.label_names)
    record = {"epoch": epoch + 1, "step": state.step, "train_loss": state.running_loss / max(state.seen, 1)}
    record.update({"eval_loss": eval_loss}, **{f"eval_{k}": v for k, v in metrics.items()})
    state.history.append(record)
    accelerator.log(record, step=state.step)
    accelerator.print(_format_record(record, evaluation.metric, run.task))
    score = metrics.get(evaluation.metric)
    if score is None:  # checked before training, unless a task's metric_names disagree with its metrics
        raise RecipeError(
            f"evaluation.metric {evaluation.metric!r} is not computed; choose one of {sorted(metrics)}"
        )
    if _is_better(score, state.best, evaluation.greater_is_better):
        state.best = {"score": score, "epoch": epoch + 1, "step": state.step, "metrics": metrics}
        run.best_eval = (scores, labels, _first_inputs(kept, run.task.keep_inputs))
        save_model(accelerator, run.model, run.processor, run.output_dir / "model")
    return record


def checkpoint(run: Run) -> Path:
    """Save a resumable checkpoint of the run as it is now."""
    limit = run.recipe.training.checkpoints_total_limit
    return save_checkpoint(run.accelerator, run.output_dir, asdict(run.state), limit)


def _is_better(score: float, best: dict | None, greater_is_better: bool) -> bool:
    # A NaN score (e.g. AUROC on a validation split with one class) never beats a real one.
    if best is None:
        return True
    if math.isnan(score):
        return False
    if math.isnan(best["score"]):
        return True
    return score > best["score"] if greater_is_better else score < best["score"]


def _format_record(record: dict, metric: str, task: Task) -> str:
    keys = ["eval_loss", f"eval_{metric}", *(f"eval_{key}" for key in task.progress_keys)]
    shown = " ".join(f"{k}={record[k]:.4f}" for k in dict.fromkeys(keys) if k in record)
    return f"epoch {record['epoch']} step {record['step']} train_loss={record['train_loss']:.4f} {shown}"


# ---------------------------------------------------------------------------------------------------
# finish
# ---------------------------------------------------------------------------------------------------


def finish(run: Run) -> Path:
    """The end of a run: the task's end-of-run work on the best epoch (thresholds, plots), metrics.json, the
    training curves. Returns the output folder."""
    from .plots import plot_history

    accelerator, state, output_dir = run.accelerator, run.state, run.output_dir
    run.progress.close()
    best_eval = run.best_eval
    if best_eval is None:  # resumed after the best epoch: re-evaluate the saved best model
        best_eval = _evaluate_saved(output_dir / "model", run.eval_loader, accelerator, run.task, run.policy)
    splits = evaluate_splits(
        output_dir / "model", run.data, accelerator, run.recipe.training.eval_batch_size, run.policy
    )  # every process: the loaders are sharded
    if accelerator.is_main_process:
        scores, labels, inputs = best_eval
        report = {
            "recipe": run.recipe.name, "task": run.task.report_name, "best": state.best, "history": state.history,
            "splits": splits,
        }
        report.update(
            run.task.finish(
                scores, labels, run.label_names, run.recipe.evaluation, output_dir / "model", output_dir / "plots"
            )
        )
        config = run.unwrapped.config
        count = len(inputs)
        report.update(
            run.task.finish_inputs(
                config, inputs, scores[:count], labels[:count], run.label_names, output_dir / "plots"
            )
        )
        report.update(
            steps=state.step,
            wall_time_s=round(time.time() - run.started, 1),
            num_processes=accelerator.num_processes,
            distributed_type=accelerator.distributed_type.value,
        )
        write_text_atomic(output_dir / "metrics.json", json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n")
        plot_history(state.history, output_dir / "plots", step_losses=state.step_losses)
    accelerator.wait_for_everyone()
    return _end(run)


def _end(run: Run) -> Path:
    run.call("on_train_end", run.model, run.accelerator)
    run.accelerator.end_training()
    return run.output_dir


def _evaluate_saved(folder: Path, eval_loader, accelerator, task: Task, policy: TrainingPolicy | None = None):
    model = accelerator.prepare(load_model(folder))
    kept: list = []
    # the run's policy: its batch preparation (a cache of a frozen part's outputs) serves this evaluation too
    _, scores, labels = evaluate_model(model, eval_loader, accelerator, task, policy, kept_inputs=kept)
    return scores, labels, _first_inputs(kept, task.keep_inputs)


FIT_SPLITS = ("train", "validation")


def extra_splits(data) -> list[str]:
    """The splits of `data` besides train and validation whose labels are the training split's (an in-distribution
    `test`, an out-of-distribution `test_ood`): what a run evaluates its best model on at the end. A split over
    other classes (a pretraining `source` set) is left out: the model cannot be scored on it."""
    if data is None:
        return []

    def labels(split):
        return (getattr(data[split], "features", None) or {}).get("labels")

    train_labels = labels("train") if "train" in data else None
    return [split for split in data if split not in FIT_SPLITS and labels(split) == train_labels]


def evaluate_splits(model_dir: Path, data, accelerator, batch_size: int,
                    policy: TrainingPolicy | None = None) -> dict[str, dict]:
    """`{split: the task's metrics}` of the model saved in `model_dir` on each of `extra_splits(data)`, through
    `accelerator` (loaders sharded across processes, gathered for the metrics); `{}` where there are none."""
    from transformers import AutoImageProcessor

    from .data.transforms import collate, make_transform

    splits = extra_splits(data)
    if not splits:
        return {}
    model = accelerator.prepare(load_model(model_dir))
    processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=trust_remote_code_for(model_dir))
    config = accelerator.unwrap_model(model).config
    task = task_for(config)
    label_names = [config.id2label[i] for i in range(config.num_labels)]
    results = {}
    for split in splits:
        loader = accelerator.prepare(DataLoader(
            data[split].with_transform(make_transform(processor, train=False)), batch_size=batch_size,
            collate_fn=collate,
        ))  # fmt: skip
        _, scores, labels = evaluate_model(model, loader, accelerator, task, policy)
        results[split] = task.metrics(config, scores, labels, label_names)
    return results


def _first_inputs(kept: list, count: int):
    """The first `count` kept validation inputs as one numpy array (none: an empty one)."""
    return torch.cat(kept)[:count].numpy() if kept else torch.zeros(0).numpy()


def _json_safe(value):
    """NaN / inf become null so metrics.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _flat_for_trackers(recipe: Recipe) -> dict:
    flat = {}

    def walk(prefix, node):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            elif isinstance(value, (int, float, str, bool)):
                flat[f"{prefix}{key}"] = value

    walk("", recipe.to_dict())
    return flat


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="hfmed train", description="Train an hfmed model from a YAML recipe.")
    parser.add_argument("recipe", help="a YAML recipe, e.g. one of configs/*-demo.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.epochs=3")
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        out = train(recipe, resume=args.resume)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
