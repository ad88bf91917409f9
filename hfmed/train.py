"""One Accelerate training loop for every hfmed family.

    hfmed train configs/scopeformer-efficient-demo.yaml training.epochs=2
    accelerate launch -m hfmed.train configs/scopeformer-efficient.yaml [--resume latest]

The loop touches only the family's config factory, the Auto head class and `outputs.loss` (as in
transformers' `run_image_classification_no_trainer.py`). A run writes into `training.output_dir`:

    model/          best epoch's weights + image processor (HF format, safetensors, with the family's source
                    files and auto_map so it loads without hfmed), thresholds in config
    checkpoints/    `Accelerator.save_state` folders (step_000050, ...) for --resume, written under a temporary
                    name and renamed into place (hfmed/checkpoint.py), so a kill never leaves a torn one
    metrics.json    per-epoch history, best metrics, thresholds with sensitivity / specificity
    recipe.yaml     the resolved recipe
    plots/          loss.png, metrics.png, roc.png
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .checkpoint import (
    atomic_path,
    check_free_space,
    check_output_dir,
    list_checkpoints,
    recover_folder,
    replace_folder,
    resolve_resume,
    staging_folder,
    write_checkpoint,
    write_text_atomic,
)
from .hub import add_remote_code, trust_remote_code_for
from .recipe import Recipe, RecipeError, dump_recipe, load_recipe
from .registry import FAMILIES

NO_DECAY_MARKERS = ("bias", "norm", "bn", "position_embeddings", "cls_token", "label_tokens")


def build_model(recipe: Recipe, processor_kwargs=None):
    """Config, model and image processor for a recipe (fresh, ImageNet CNNs, or a checkpoint)."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    family = FAMILIES[recipe.model.family]
    if recipe.model.init_from:
        trust = trust_remote_code_for(recipe.model.init_from)  # the installed classes; never a prompt
        model = AutoModelForImageClassification.from_pretrained(recipe.model.init_from, trust_remote_code=trust)
        processor = AutoImageProcessor.from_pretrained(recipe.model.init_from, trust_remote_code=trust)
        return model, processor
    config = family.make_config(recipe.model.preset, **recipe.model.config)
    if recipe.model.pretrained_backbones:
        model = family.head_class.from_pretrained_backbones(config)
    else:
        model = AutoModelForImageClassification.from_config(config)
    kwargs = family.processor_kwargs_for(config)
    kwargs.update(recipe.processor)
    kwargs.update(processor_kwargs or {})
    processor = family.image_processor_class(**kwargs)
    return model, processor


def parameter_groups(model, recipe: Recipe) -> list[dict]:
    """AdamW groups: per-module learning rates (longest prefix wins), no decay on biases and norms.

    Frozen parameters are left out, so the optimizer holds no state for them.
    """
    training = recipe.training
    prefixes = sorted(training.module_learning_rates, key=len, reverse=True)
    groups: dict[tuple, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = next((training.module_learning_rates[p] for p in prefixes if name.startswith(p)), training.learning_rate)
        decay = 0.0 if param.ndim <= 1 or any(m in name.lower() for m in NO_DECAY_MARKERS) else training.weight_decay
        group = groups.setdefault((lr, decay), {"params": [], "lr": lr, "weight_decay": decay, "names": []})
        group["params"].append(param)
        group["names"].append(name)
    unused = [p for p in training.module_learning_rates if not any(n.startswith(p) for n, _ in model.named_parameters())]
    if unused:
        raise RecipeError(f"training.module_learning_rates: no parameter name starts with {unused[0]!r}")
    return list(groups.values())


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


def _checkpoint_dirs(output_dir: Path) -> list[Path]:
    return list_checkpoints(output_dir)


def _resolve_resume(resume, output_dir: Path, log=print) -> Path | None:
    return resolve_resume(resume, output_dir, log=log)


def is_regression(config) -> bool:
    """Whether a model predicts values (MSE, raw outputs) rather than label probabilities."""
    return getattr(config, "problem_type", None) == "regression"


def evaluate_model(model, loader, accelerator):
    """Mean loss, scores and labels over a loader, gathered across processes.

    Scores are sigmoid probabilities for a classifier and the raw outputs for a regression model.
    """
    regression = is_regression(accelerator.unwrap_model(model).config)
    model.eval()
    losses, probabilities, labels = [], [], []
    with torch.no_grad():
        for batch in loader:
            outputs = model(**batch)
            count = batch["labels"].shape[0]
            loss = outputs.loss.detach().float().repeat(count)
            losses.append(accelerator.gather_for_metrics(loss).cpu())
            scores = outputs.logits.float() if regression else outputs.logits.float().sigmoid()
            probabilities.append(accelerator.gather_for_metrics(scores).cpu())
            labels.append(accelerator.gather_for_metrics(batch["labels"]).cpu())
    model.train()
    return (
        torch.cat(losses).mean().item(),
        torch.cat(probabilities).numpy(),
        torch.cat(labels).numpy(),
    )


def evaluation_metrics(config, scores, labels, label_names) -> dict[str, float]:
    """The validation metrics of a model's task: MAE / RMSE / Pearson r for a regression model; log loss,
    AUROC and accuracy per label for a classifier (plus balanced accuracy when there is a single label)."""
    from .metrics import binary_metrics, classification_metrics, regression_metrics

    if is_regression(config):
        if len(label_names) != 1:
            raise ValueError(f"regression evaluation expects one target, the model has {len(label_names)}")
        return regression_metrics(scores[:, 0], labels[:, 0])
    metrics = classification_metrics(
        scores,
        labels,
        label_names,
        # A family without loss weights gets plain averaging, not the metric's RSNA default ("any" x2).
        label_weights=getattr(config, "loss_label_weights", None) or [1.0] * len(label_names),
    )
    if len(label_names) == 1:
        metrics.update(binary_metrics(scores[:, 0], labels[:, 0]))
    return metrics


def train(recipe: Recipe, resume=None, stop_after_steps: int | None = None, callbacks=()) -> Path:
    """Run a recipe; returns the output folder.

    `stop_after_steps` simulates an interruption (tests, preemption drills). `callbacks` are objects with
    any of `on_before_optimizer_step(state, model, batch, accelerator)` (gradients are synchronised
    there) and `on_train_end(state, model, accelerator)`, called on every process.
    """

    def call(event, *args):
        for callback in callbacks:
            getattr(callback, event, lambda *a: None)(state, *args)

    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    from .data import build_dataset
    from .data.transforms import balanced_sampler, collate, make_transform, pos_weight_from_data
    from .plots import plot_history, plot_regression, plot_roc
    from .thresholds import choose_thresholds, operating_points

    training = recipe.training
    output_dir = Path(training.output_dir)
    accelerator = Accelerator(
        mixed_precision=training.mixed_precision,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        log_with=training.report_to or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # Seeded per-epoch shuffling: a resumed run sees the same order as an uninterrupted one.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=training.seed),
        cpu=not torch.cuda.is_available(),
    )
    set_seed(training.seed)
    accelerator.print(
        f"{accelerator.distributed_type.value} on {accelerator.num_processes} process(es), "
        f"device {accelerator.device}, mixed precision {accelerator.mixed_precision}"
    )
    check_output_dir(output_dir)  # a read-only or misnamed folder stops here, not after an epoch
    resume_dir = _resolve_resume(resume, output_dir, log=accelerator.print)

    data = build_dataset(recipe.data.builder, **recipe.data.args)
    model, processor = build_model(recipe)
    check_free_space(output_dir, model, training.checkpoints_total_limit)
    label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    regression = is_regression(model.config)
    if training.pos_weight is not None and regression:
        raise RecipeError("training.pos_weight applies to classification; remove it for a regression model")
    if recipe.data.balanced_sampler and regression:
        raise RecipeError("data.balanced_sampler evens out labels of a classifier; set it to false for regression")
    if training.pos_weight is not None:
        pos_weight = pos_weight_from_data(data["train"]) if training.pos_weight == "auto" else training.pos_weight
        model.config.loss_pos_weight = [float(w) for w in pos_weight]
    if training.gradient_checkpointing:
        model.activation_checkpointing_enable()

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

    groups = parameter_groups(model, recipe)
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
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )

    state = {
        "step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "running_loss": 0.0,
        "seen": 0,
        "history": [],
        "step_losses": [],
        "best": None,
    }
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        state = json.loads((resume_dir / "trainer_state.json").read_text())
        accelerator.print(f"resumed from {resume_dir} at step {state['step']}")

    if training.report_to:
        accelerator.init_trackers(recipe.name or "hfmed", config=_flat_for_trackers(recipe))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        recover_folder(output_dir / "model")  # a kill may have cut the last best-model swap short
        with atomic_path(output_dir / "recipe.yaml") as temporary:
            dump_recipe(recipe, temporary)

    def save_checkpoint():
        write_checkpoint(
            output_dir,
            state["step"],
            accelerator.save_state,
            lambda folder: (folder / "trainer_state.json").write_text(json.dumps(state)),
            is_main_process=accelerator.is_main_process,
            wait_for_everyone=accelerator.wait_for_everyone,
            keep=training.checkpoints_total_limit,
        )

    best_eval = None
    progress = tqdm(
        total=total_steps, initial=state["step"], disable=not accelerator.is_local_main_process, desc="train"
    )
    started = time.time()
    model.train()
    finished = False
    for epoch in range(state["epoch"], epochs):
        train_transform.set_epoch(epoch)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        loader = train_loader
        if state["batch_in_epoch"]:
            loader = accelerator.skip_first_batches(train_loader, state["batch_in_epoch"])
        if not state["batch_in_epoch"]:
            state["running_loss"], state["seen"] = 0.0, 0
        for batch in loader:
            # Reseed per micro-batch from (seed, rank, epoch, position): dropout and any other torch
            # randomness then depend on where the run is, not on how it got there, so a resumed run
            # matches an uninterrupted one bit for bit (iterator creation draws from the global RNG).
            torch.manual_seed(_step_seed(training.seed, accelerator.process_index, epoch, state["batch_in_epoch"]))
            with accelerator.accumulate(model):
                outputs = model(**batch)
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients:
                    call("on_before_optimizer_step", model, batch, accelerator)
                    if training.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), training.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batch_in_epoch"] += 1
            state["running_loss"] += outputs.loss.detach().float().item()
            state["seen"] += 1
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            progress.update(1)
            if state["step"] % training.log_every_steps == 0:
                loss = state["running_loss"] / state["seen"]
                state["step_losses"].append([state["step"], loss])
                progress.set_postfix(loss=f"{loss:.4f}")
                accelerator.log({"train_loss": loss, "lr": scheduler.get_last_lr()[0]}, step=state["step"])
            if training.save_every_steps and state["step"] % training.save_every_steps == 0:
                save_checkpoint()
            if state["step"] >= total_steps:
                finished = True
                break
            if stop_after_steps and state["step"] >= stop_after_steps:
                break
        if stop_after_steps and state["step"] >= stop_after_steps and not finished:
            progress.close()
            call("on_train_end", model, accelerator)
            accelerator.end_training()
            return output_dir

        eval_loss, probabilities, labels = evaluate_model(model, eval_loader, accelerator)
        metrics = evaluation_metrics(accelerator.unwrap_model(model).config, probabilities, labels, label_names)
        record = {"epoch": epoch + 1, "step": state["step"], "train_loss": state["running_loss"] / max(state["seen"], 1)}
        record.update({"eval_loss": eval_loss}, **{f"eval_{k}": v for k, v in metrics.items()})
        state["history"].append(record)
        accelerator.log(record, step=state["step"])
        accelerator.print(_format_record(record, recipe.evaluation.metric))
        score = metrics.get(recipe.evaluation.metric)
        if score is None:
            raise RecipeError(
                f"evaluation.metric {recipe.evaluation.metric!r} is not computed; choose one of {sorted(metrics)}"
            )
        better = _is_better(score, state["best"], recipe.evaluation.greater_is_better)
        if better:
            state["best"] = {"score": score, "epoch": epoch + 1, "step": state["step"], "metrics": metrics}
            best_eval = (probabilities, labels)
            _save_model(accelerator, model, processor, output_dir / "model")
        state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
        if not training.save_every_steps or finished:
            save_checkpoint()
        if finished:
            break
    progress.close()

    if best_eval is None:  # resumed after the best epoch: re-evaluate the saved best model
        best_eval = _evaluate_saved(output_dir / "model", eval_loader, accelerator)
    if accelerator.is_main_process:
        probabilities, labels = best_eval
        report = {
            "recipe": recipe.name,
            "task": "regression" if regression else "classification",
            "best": state["best"],
            "history": state["history"],
        }
        plots = output_dir / "plots"
        if regression:
            plot_regression(probabilities[:, 0], labels[:, 0], plots / "predictions.png", label_names[0])
        else:
            thresholds = choose_thresholds(
                probabilities,
                labels,
                method=recipe.evaluation.threshold_method,
                target_sensitivity=recipe.evaluation.target_sensitivity,
            )
            _write_thresholds(output_dir / "model", thresholds)
            report["thresholds"] = {
                "method": recipe.evaluation.threshold_method,
                "operating_points": operating_points(probabilities, labels, thresholds, label_names),
            }
            plot_roc(probabilities, labels, label_names, plots / "roc.png", thresholds=thresholds)
        report.update(
            steps=state["step"],
            wall_time_s=round(time.time() - started, 1),
            num_processes=accelerator.num_processes,
            distributed_type=accelerator.distributed_type.value,
        )
        write_text_atomic(output_dir / "metrics.json", json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n")
        plot_history(state["history"], plots, step_losses=state["step_losses"])
    accelerator.wait_for_everyone()
    call("on_train_end", model, accelerator)
    accelerator.end_training()
    return output_dir


def _is_better(score: float, best: dict | None, greater_is_better: bool) -> bool:
    # A NaN score (e.g. AUROC on a validation split with one class) never beats a real one.
    if best is None:
        return True
    if math.isnan(score):
        return False
    if math.isnan(best["score"]):
        return True
    return score > best["score"] if greater_is_better else score < best["score"]


def _step_seed(seed: int, rank: int, epoch: int, position: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + epoch * 104_729 + position) % (2**63 - 1)


def _save_model(accelerator, model, processor, folder: Path):
    # get_state_dict gathers full weights under FSDP / DeepSpeed, so the export is a plain HF checkpoint.
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    # Written beside the old best model and swapped in whole: a kill mid-write never tears model/.
    staged = staging_folder(folder, clear=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    unwrapped.save_pretrained(
        staged, state_dict=state_dict, is_main_process=accelerator.is_main_process, save_function=accelerator.save
    )
    accelerator.wait_for_everyone()  # every rank is done with the staging folder before it is renamed
    if accelerator.is_main_process:
        processor.save_pretrained(staged)
        # The exported folder loads anywhere, hfmed installed or not (trust_remote_code).
        add_remote_code(staged, unwrapped.config, processor)
        replace_folder(staged, folder)
    accelerator.wait_for_everyone()


def _evaluate_saved(folder: Path, eval_loader, accelerator):
    from transformers import AutoModelForImageClassification

    model = accelerator.prepare(AutoModelForImageClassification.from_pretrained(folder))
    _, probabilities, labels = evaluate_model(model, eval_loader, accelerator)
    return probabilities, labels


def _json_safe(value):
    """NaN / inf become null so metrics.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write_thresholds(folder: Path, thresholds):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["label_thresholds"] = [float(t) for t in thresholds]
    write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _format_record(record: dict, metric: str) -> str:
    keys = ["eval_loss", f"eval_{metric}", "eval_weighted_log_loss", "eval_mean_log_loss", "eval_mean_accuracy",
            "eval_mae", "eval_pearson_r"]
    shown = " ".join(f"{k}={record[k]:.4f}" for k in dict.fromkeys(keys) if k in record)
    return f"epoch {record['epoch']} step {record['step']} train_loss={record['train_loss']:.4f} {shown}"


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
    parser.add_argument("recipe", help="a YAML recipe, e.g. configs/scopeformer-efficient-demo.yaml")
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
