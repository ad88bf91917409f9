"""`hfmed` command line.

    hfmed demo [--family NAME]    train every family's demo recipe, stage its Hub repo + Space, serve one app
    hfmed demo RECIPE [k=v ...]   the same for one recipe
    hfmed train RECIPE [k=v ...]  train from a YAML recipe (also: accelerate launch -m hfmed.train ...)
    hfmed experiment RECIPE [k=v ...] [--variants a,b]  train every variant the family declares, one table
"""

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _demo_recipes(args) -> list:
    """The recipes `hfmed demo` runs: the one named, else `--family`'s demo recipe, else every registered
    family's (a pending family, without a demo recipe or Space yet, is skipped with one printed line)."""
    from .recipe import load_recipe
    from .registry import FAMILIES

    if args.recipe:
        return [load_recipe(args.recipe, args.overrides)]
    if args.family:
        if args.family not in FAMILIES:
            raise SystemExit(f"hfmed demo: no family {args.family!r}; choose one of {sorted(FAMILIES)}")
        if FAMILIES[args.family].pending:
            raise SystemExit(f"hfmed demo: {args.family} has no demo yet (pending: "
                             f"{', '.join(FAMILIES[args.family].pending)}); choose another family")
        names = [args.family]
    else:
        names = []
        for name, family in FAMILIES.items():
            if family.pending:
                print(f"skipping {name}: no demo yet (pending: {', '.join(family.pending)})")
            else:
                names.append(name)
    return [load_recipe(FAMILIES[name].demo_recipe_path, args.overrides) for name in names]


# How `hfmed demo`'s table names the held-out splits a run's metrics.json may hold under `splits`.
SPLIT_MEANINGS = {"test": "in-distribution test set", "test_ood": "out-of-distribution test set"}


def _split_value(values: dict, split: str, key: str):
    """The metric `key` in one split's metrics (as the task names it, or with the split's prefix)."""
    for name in (key, f"{split}_{key}"):
        if isinstance(values.get(name), (int, float)):
            return float(values[name])
    return None


def demo_row(run_dir: Path, family, staged: Path) -> dict:
    """One row of `hfmed demo`'s table, read from the run's metrics.json through the task layer: the headline
    validation metric of the best epoch and, for every held-out split the run evaluated (metrics.json's
    `"splits": {"<split>": {<task metrics>}}`, e.g. an in-distribution `test` and an out-of-distribution
    `test_ood`), the same metric on it."""
    from transformers import AutoConfig

    from .hub import trust_remote_code_for
    from .tasks import task_for

    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = AutoConfig.from_pretrained(run_dir / "model", trust_remote_code=trust_remote_code_for(run_dir / "model"))
    task = task_for(config)
    metric, value = task.headline(metrics)
    key = next(k for k, _, name in task.card_metrics if name == metric)
    splits = {}
    for split, values in (metrics.get("splits") or {}).items():
        found = _split_value(values, split, key) if isinstance(values, dict) else None
        if found is not None:
            splits[split] = found
    return {"family": family.name, "task": metrics.get("task", ""), "metric": metric, "value": value,
            "splits": splits, "run": str(run_dir), "staged": str(staged)}


def format_table(rows: list[dict]) -> list[str]:
    """`hfmed demo`'s table: family, task, headline validation metric and value, the same metric on each
    held-out split (`-` without one), run folder, staged repo."""
    header = {"family": "family", "task": "task", "metric": "validation metric", "value": "value",
              "splits": "held-out splits", "run": "run folder", "staged": "staged model repo"}
    cells = [header, *({**row, "value": f"{row['value']:.4f}",
                        "splits": "  ".join(f"{s} {v:.4f}" for s, v in row.get("splits", {}).items()) or "-"}
                       for row in rows)]
    widths = {key: max(len(str(cell[key])) for cell in cells) for key in header}
    return ["  ".join(str(cell[key]).ljust(widths[key]) for key in header).rstrip() for cell in cells]


def splits_legend(rows: list[dict]) -> str | None:
    """The line under the table that says what each held-out split shown is (None when none is)."""
    shown = list(dict.fromkeys(split for row in rows for split in row.get("splits", {})))
    if not shown:
        return None
    meanings = [f"{split} = {SPLIT_MEANINGS.get(split, 'the split ' + repr(split) + ' of the run')}" for split in shown]
    return f"held-out splits (same metric as the validation column): {'; '.join(meanings)}"


def stage_with_upload(argv: list[str]) -> int:
    """`python upload.py ARGV` run in this process (upload.py is a script, not a module of hfmed): its exit
    code. In-process, not a subprocess per family, so a warm `make demo` does not import torch five more times."""
    import importlib.util

    module = sys.modules.get("hfmed_upload_script")
    if module is None:
        spec = importlib.util.spec_from_file_location("hfmed_upload_script", REPO / "upload.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["hfmed_upload_script"] = module
    return module.main(argv)


def _demo(args) -> int:
    from .registry import FAMILIES

    recipes = _demo_recipes(args)
    total = len(recipes)
    done = []
    for index, recipe in enumerate(recipes, 1):
        family = FAMILIES[recipe.model.family]
        run_dir = Path(recipe.training.output_dir)
        if not run_dir.is_absolute():
            run_dir = REPO / run_dir
            recipe.training.output_dir = str(run_dir)
        if args.retrain or not (run_dir / "metrics.json").is_file():
            from .train import train

            print(f"[{index}/{total}] {family.name}: training {recipe.name} on {recipe.data.builder} "
                  "(progress bar below)", flush=True)
            train(recipe)
        else:
            print(f"[{index}/{total}] {family.name}: reusing the finished run in {run_dir} "
                  "(make demo RETRAIN=1 trains again)", flush=True)
        done.append((recipe, family, run_dir))

    rows = []
    for recipe, family, run_dir in done:
        hub_dir = run_dir / "hub"
        print(f"{family.name}: staging the Hub folders with upload.py --dry-run into {hub_dir}", flush=True)
        staged = stage_with_upload(
            [str(run_dir), "--repo-id", recipe.hub.repo_id, "--space", str(family.space_dir),
             "--space-id", f"{recipe.hub.repo_id}-space", "--dry-run", "--out", str(hub_dir)]
        )
        if staged:
            return staged
        rows.append(demo_row(run_dir, family, hub_dir / "model"))

    print("\nvalidation (best epoch of each run; research use only):")
    for line in format_table(rows):
        print(f"  {line}")
    legend = splits_legend(rows)
    if legend:
        print(legend)
    for _, family, run_dir in done:
        _print_example_prediction(run_dir / "model", family, prefix=f"\n{family.name}: ")
    if args.no_serve:
        return 0

    from .demo_app import build_app, launch

    port = os.environ.get("GRADIO_SERVER_PORT", "7860")
    app, modules = build_app({family.name: run_dir / "model" for _, family, run_dir in done})
    print(f"\nserving {len(modules)} tab(s) at http://127.0.0.1:{port}/  (Ctrl-C stops it)", flush=True)
    try:
        launch(app, modules, port=int(port))
    except KeyboardInterrupt:
        pass
    return 0


def _print_example_prediction(model_dir: Path, family=None, prefix: str = "") -> None:
    """The trained model on its family's example file (`Family.demo_input`), through the family's hfmed
    pipeline; the family is the model folder's unless given."""
    from transformers import AutoConfig, pipeline

    from .hub import trust_remote_code_for
    from .registry import family_for
    from .tasks import task_for

    if family is None:
        family = family_for(AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code_for(model_dir)))
    path = family.demo_input() if family.demo_input else None
    if path is None:
        return
    print(f"{prefix}trained model on {Path(path).name}; research use only:")
    pipe = pipeline(family.pipeline_task, model=str(model_dir), trust_remote_code=trust_remote_code_for(model_dir))
    output = pipe(path)
    # The image pipeline answers a list of rows, the volume pipeline a dict that holds them.
    rows = output["predictions"] if isinstance(output, dict) else output
    for line in task_for(pipe.model.config).prediction_lines(rows):
        print(f"  {line}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from .train import main as train_main

        return train_main(argv[1:])
    if argv[:1] == ["experiment"]:
        from .experiment import main as experiment_main

        return experiment_main(argv[1:])
    parser = argparse.ArgumentParser(prog="hfmed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train every family's demo recipe, stage their Hub folders, serve one app")
    demo.add_argument("recipe", nargs="?", default=None, help="one recipe (default: every family's demo recipe)")
    demo.add_argument("--family", default=None, help="only this family's demo recipe (make demo FAMILY=name)")
    demo.add_argument("overrides", nargs="*", help="dotted recipe overrides, e.g. training.epochs=2")
    demo.add_argument("--retrain", action="store_true", help="train again even if the run exists")
    demo.add_argument("--no-serve", action="store_true", help="stop after the table and predictions (no server)")
    demo.set_defaults(func=_demo)
    sub.add_parser("train", help="train from a YAML recipe (see `hfmed train --help`)")
    sub.add_parser("experiment", help="train every variant a family declares, one table (`hfmed experiment --help`)")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
