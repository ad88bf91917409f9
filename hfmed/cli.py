"""`hfmed` command line.

    hfmed demo                    train the demo recipe, stage its Hub folder, serve its Space (make demo)
    hfmed train RECIPE [k=v ...]  train from a YAML recipe (also: accelerate launch -m hfmed.train ...)
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _demo(args) -> int:
    from .recipe import load_recipe
    from .registry import DEFAULT_FAMILY, FAMILIES

    recipe = load_recipe(args.recipe or FAMILIES[DEFAULT_FAMILY].demo_recipe_path, args.overrides)
    family = FAMILIES[recipe.model.family]
    run_dir = Path(recipe.training.output_dir)
    if not run_dir.is_absolute():
        run_dir = REPO / run_dir
        recipe.training.output_dir = str(run_dir)
    if args.retrain or not (run_dir / "metrics.json").is_file():
        from .train import train

        print(f"[1/4] training {recipe.name} on {recipe.data.builder} (progress bar below)")
        train(recipe)
    else:
        print(f"[1/4] reusing the finished run in {run_dir} (make demo RETRAIN=1 trains again)")

    from transformers import AutoConfig

    from .hub import trust_remote_code_for
    from .tasks import task_for

    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = metrics["best"]
    print(f"[2/4] best epoch {best['epoch']} of {len(metrics['history'])}, validation:")
    config = AutoConfig.from_pretrained(run_dir / "model", trust_remote_code=trust_remote_code_for(run_dir / "model"))
    for line in task_for(config).report_lines(metrics):
        print(f"        {line}")

    hub_dir = run_dir / "hub"
    print(f"[3/4] staging the Hub folders with upload.py --dry-run into {hub_dir}")
    staged = subprocess.run(
        [sys.executable, str(REPO / "upload.py"), str(run_dir), "--repo-id", recipe.hub.repo_id,
         "--space", str(family.space_dir), "--space-id", f"{recipe.hub.repo_id}-space", "--dry-run", "--out", str(hub_dir)],
        check=False,
    )
    if staged.returncode:
        return staged.returncode
    _print_example_prediction(run_dir / "model", family)
    print("\nwhere everything is:")
    for name, path in [("run folder", run_dir), ("model (HF format)", run_dir / "model"),
                       ("metrics", run_dir / "metrics.json"), ("plots", run_dir / "plots"),
                       ("staged model repo", hub_dir / "model"), ("staged Space", hub_dir / "space")]:
        print(f"  {name:<18} {path}")
    if args.no_serve:
        return 0
    port = os.environ.get("GRADIO_SERVER_PORT", "7860")
    print(f"[4/4] serving the Space at http://127.0.0.1:{port}/  (Ctrl-C stops it)")
    env = {**os.environ, "HFMED_MODEL": str(run_dir / "model"), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": port, "GRADIO_ANALYTICS_ENABLED": "False"}
    try:
        return subprocess.run([sys.executable, str(family.space_dir / "app.py")], env=env, check=False).returncode
    except KeyboardInterrupt:
        return 0


def _print_example_prediction(model_dir: Path, family=None) -> None:
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
    print(f"trained model on {Path(path).name}; research use only:")
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
    parser = argparse.ArgumentParser(prog="hfmed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the demo recipe, stage its Hub folder and serve its Space")
    demo.add_argument("recipe", nargs="?", default=None, help="default: the default family's demo recipe")
    demo.add_argument("overrides", nargs="*", help="dotted recipe overrides, e.g. training.epochs=2")
    demo.add_argument("--retrain", action="store_true", help="train again even if the run exists")
    demo.add_argument("--no-serve", action="store_true", help="stop after staging (no Space server)")
    demo.set_defaults(func=_demo)
    sub.add_parser("train", help="train from a YAML recipe (see `hfmed train --help`)")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
