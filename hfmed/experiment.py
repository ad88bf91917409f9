"""`hfmed experiment RECIPE`: one recipe trained once per variant its family declares, on the same data, and
one table comparing them.

    hfmed experiment configs/<recipe>.yaml [k=v ...] [--variants a,b] [--out DIR] [--retrain]

A family declares its variants as `Family.experiments` (name -> recipe overrides, e.g. the coupling
strategies of a frozen-backbone method and full fine-tuning as the reference). Each variant is the recipe
with its overrides (after the command line's), trained into `<out>/<variant>/` exactly as `hfmed train` would.
The training run evaluates its best model on every split the data builder returns besides `train` and
`validation` (e.g. an in-distribution `test` and an out-of-distribution `test_ood`: `splits` in its
metrics.json). The experiment folder (default `<training.output_dir>-experiment`) gets:

    <variant>/         each variant's run folder
    experiment.json    per variant: its overrides, trainable and total parameters, training time, the metrics of
                       the best epoch on validation and of each extra split
    experiment.md      the table: the recipe's selection metric (`evaluation.metric`) per split, trainable
                       parameters (those the optimizer holds: what training changes), training time

A finished variant whose resolved recipe is unchanged is reused (`--retrain` trains it again).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from .recipe import Recipe, RecipeError, load_recipe


def variant_recipes(recipe_path, overrides=(), variants=None, out=None) -> tuple[Path, dict[str, Recipe]]:
    """The experiment folder and `{variant: recipe}` for a recipe and its family's declared variants (all, or
    those named in `variants`, in the family's order)."""
    from .registry import FAMILIES

    base = load_recipe(recipe_path, overrides)
    family = FAMILIES[base.model.family]
    declared = dict(family.experiments)
    if not declared:
        raise RecipeError(
            f"family {family.name!r} declares no experiment variants (Family.experiments): train the recipe with "
            "`hfmed train` instead"
        )
    chosen = list(declared) if not variants else list(variants)
    unknown = [name for name in chosen if name not in declared]
    if unknown:
        raise RecipeError(f"unknown experiment variant(s) {unknown}; {family.name} declares {list(declared)}")
    folder = Path(out) if out else Path(f"{base.training.output_dir.rstrip('/')}-experiment")
    recipes = {}
    for name in (v for v in declared if v in chosen):
        recipe = load_recipe(recipe_path, [*overrides, *declared[name]])
        recipe.training.output_dir = str(folder / name)
        recipe.name = f"{base.name}-{name}"
        recipes[name] = recipe
    return folder, recipes


def _finished(recipe: Recipe) -> bool:
    run = Path(recipe.training.output_dir)
    if not (run / "metrics.json").is_file() or not (run / "recipe.yaml").is_file():
        return False
    return yaml.safe_load((run / "recipe.yaml").read_text()) == yaml.safe_load(yaml.safe_dump(recipe.to_dict()))


def parameter_counts(model, recipe: Recipe) -> tuple[int, int]:
    """(trainable, total) parameters of a model under its family's training policy: trainable are those the
    optimizer holds (every stage's), total every parameter (`hfmed.policy.parameter_counts`). Which parameters
    train does not depend on the recipe's learning rates, so `recipe` is not read."""
    from .policy import parameter_counts as counts
    from .registry import family_for

    return counts(model, family_for(model).training_policy)


def evaluate_splits(recipe: Recipe, model_dir: Path, data) -> dict[str, dict]:
    """The task's metrics of the model in `model_dir` on every split of `data` besides train and validation (what
    a run records as `splits` in its metrics.json: `hfmed.train.evaluate_splits`), outside a training run."""
    from accelerate import Accelerator

    from .train import evaluate_splits as evaluate

    return evaluate(model_dir, data, Accelerator(cpu=not _cuda()), recipe.training.eval_batch_size)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_experiment(recipe_path, overrides=(), variants=None, out=None, retrain: bool = False) -> Path:
    """Train (or reuse) every variant, evaluate each on the extra splits, write experiment.json / .md.
    Returns the experiment folder."""
    from .data import build_dataset
    from .registry import load_model
    from .train import train

    folder, recipes = variant_recipes(recipe_path, overrides, variants, out)
    first = next(iter(recipes.values()))
    rows = []
    for index, (name, recipe) in enumerate(recipes.items(), 1):
        run = Path(recipe.training.output_dir)
        if retrain or not _finished(recipe):
            print(f"[{index}/{len(recipes)}] {name}: training into {run}", flush=True)
            train(recipe)
        else:
            print(f"[{index}/{len(recipes)}] {name}: reusing the finished run in {run}", flush=True)
        report = json.loads((run / "metrics.json").read_text())
        splits = report.get("splits")
        if splits is None:  # a run written before runs evaluated their extra splits
            splits = evaluate_splits(recipe, run / "model", build_dataset(recipe.data.builder, **recipe.data.args))
        trainable, total = parameter_counts(load_model(run / "model"), recipe)
        rows.append({
            "variant": name,
            "overrides": list(recipe_overrides(recipe_path, name)),
            "trainable_parameters": trainable,
            "total_parameters": total,
            "train_time_s": report.get("wall_time_s"),
            "best_epoch": (report.get("best") or {}).get("epoch"),
            "metrics": {"validation": (report.get("best") or {}).get("metrics", {}),
                        **splits},
            "run": str(run),
        })  # fmt: skip
    title = first.name.removesuffix(f"-{next(iter(recipes))}")
    summary = {"recipe": first.source, "metric": first.evaluation.metric, "variants": rows}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiment.json").write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    table = format_table(rows, first.evaluation.metric)
    (folder / "experiment.md").write_text(
        f"# {title}: variants\n\nRecipe `{first.source}`; selection metric `{first.evaluation.metric}` on each "
        "split (validation: the best epoch's). Trainable: the parameters the optimizer holds.\n\n"
        + "\n".join(table) + "\n"
    )
    print("\n".join(table))
    print(f"experiment folder: {folder}")
    return folder


def recipe_overrides(recipe_path, variant: str) -> tuple[str, ...]:
    """The overrides the recipe's family declares for `variant`."""
    from .registry import FAMILIES

    family = load_recipe(recipe_path, check_paths=False).model.family
    return tuple(FAMILIES[family].experiments[variant])


def format_table(rows: list[dict], metric: str) -> list[str]:
    """The markdown table: one row per variant, `metric` per split, trainable parameters, training time."""
    splits = list(dict.fromkeys(split for row in rows for split in row["metrics"]))
    header = ["variant", *(f"{split} {metric}" for split in splits), "trainable", "of total", "train time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        values = [row["metrics"].get(split, {}).get(metric) for split in splits]
        cells = [
            f"`{row['variant']}`",
            *("-" if v is None else f"{v:.4f}" for v in values),
            f"{row['trainable_parameters']:,}",
            f"{100 * row['trainable_parameters'] / max(row['total_parameters'], 1):.2f} %",
            "-" if row["train_time_s"] is None else f"{row['train_time_s']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _json_safe(value):
    from .train import _json_safe as safe

    return safe(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="hfmed experiment",
        description="Train a recipe once per variant its family declares and write one comparison table.",
    )
    parser.add_argument("recipe", help="a YAML recipe, e.g. configs/<family>-demo.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for every variant, e.g. training.epochs=3")
    parser.add_argument("--variants", default=None, help="comma-separated variant names (default: all)")
    parser.add_argument("--out", default=None, help="experiment folder (default: <training.output_dir>-experiment)")
    parser.add_argument("--retrain", action="store_true", help="train finished variants again")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    try:
        run_experiment(args.recipe, args.overrides, variants, args.out, args.retrain)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
