"""`make demo`: every family's run in one table read from its metrics.json, and one combined Gradio app with a
tab per Space (the Spaces' own Blocks), answering gradio_client on every tab and rendering in Chromium."""

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import hfmed.cli as cli
import hfmed.recipe
from hfmed.registry import FAMILIES
from hfmed.tasks import TASKS
from tests.space_harness import (
    NO_PROXY,
    distinct_colours,
    free_port,
    render_page,
    save_tiny_space_model,
    space_examples,
    space_families,
    unique_copy,
    wait_until_up,
)

REPO = Path(__file__).resolve().parents[1]


# --- the table ----------------------------------------------------------------------------------------------


def _fake_metrics(model_dir: Path, seed: int, splits: tuple = ()) -> dict:
    """A metrics.json of the model's task with values no code computes: the table must copy them. `splits`
    adds held-out splits in the shape train.py writes (`"splits": {"<split>": {<task metrics>}}`)."""
    from transformers import AutoConfig

    from hfmed.tasks import task_for

    task = task_for(AutoConfig.from_pretrained(model_dir, trust_remote_code=False))
    best = {key: 0.5 + seed / 97 + i / 10 for i, (key, *_) in enumerate(task.card_metrics)}
    metrics = {"recipe": "demo", "task": task.report_name, "best": {"epoch": 2, "metrics": best},
               "history": [{}, {}], "wall_time_s": 1.0}
    if splits:
        metrics["splits"] = {split: {key: value - (j + 1) / 53 for key, value in best.items()}
                             for j, split in enumerate(splits)}
    return metrics


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {family: save_tiny_space_model(family, root / family) for family in space_families()}


@pytest.fixture()
def fake_runs(tiny_models, tmp_path, monkeypatch):
    """Every non-pending family's demo recipe pointed at a tmp run (the tiny model + a fake metrics.json)."""
    runs = {}
    for index, family in enumerate(sorted(f for f in tiny_models if not FAMILIES[f].pending)):
        run = tmp_path / "runs" / family
        (run / "model").mkdir(parents=True)
        for file in tiny_models[family].iterdir():
            if file.is_file():
                (run / "model" / file.name).write_bytes(file.read_bytes())
        # MoVL evaluates its in-distribution test set and its OOD set (scanner B) after training.
        metrics = _fake_metrics(run / "model", index + 1, ("test", "test_ood") if family == "movl" else ())
        (run / "metrics.json").write_text(json.dumps(metrics))
        runs[family] = (run, metrics)
    real_load = hfmed.recipe.load_recipe

    def load_recipe(path, overrides=None):
        recipe = real_load(path, overrides)
        recipe.training.output_dir = str(runs[recipe.model.family][0])
        return recipe

    staged = []

    def fake_upload(argv):
        staged.append(argv)
        return 0

    monkeypatch.setattr(hfmed.recipe, "load_recipe", load_recipe)
    monkeypatch.setattr(cli, "stage_with_upload", fake_upload)
    monkeypatch.setattr(cli, "_print_example_prediction", lambda *a, **k: print("EXAMPLE", a[1].name))
    return runs, staged


def _table(out: str) -> list[list[str]]:
    lines = out.split("validation (best epoch of each run; research use only):\n", 1)[1].splitlines()
    rows = []
    for line in lines[1:]:  # after the header
        if not line.startswith("  "):
            break
        rows.append(line.split())
    return rows


def test_make_demo_table_rows_are_the_runs_metrics(fake_runs, capsys):
    runs, staged = fake_runs
    assert cli.main(["demo", "--no-serve"]) == 0
    out = capsys.readouterr().out
    demo_families = [name for name, family in FAMILIES.items() if not family.pending]
    assert sorted(demo_families) == sorted(runs)
    for name, family in FAMILIES.items():
        if family.pending:
            assert sum(line.startswith(f"skipping {name}: no demo yet") for line in out.splitlines()) == 1
    progress = [line for line in out.splitlines() if re.match(r"\[\d+/\d+\] ", line)]
    assert progress == [f"[{i}/{len(demo_families)}] {name}: reusing the finished run in {runs[name][0]} "
                        "(make demo RETRAIN=1 trains again)" for i, name in enumerate(demo_families, 1)]
    assert [c[c.index("--out") + 1] for c in staged] == [str(runs[name][0] / "hub") for name in demo_families]

    rows = _table(out)
    assert [row[0] for row in rows] == demo_families
    for row in rows:
        run, metrics = runs[row[0]]
        key, value = next(iter(metrics["best"]["metrics"].items()))
        # The headline's name as its task's card metrics spell it (e.g. "foreground mean Dice").
        name = next(label for task in TASKS.values() if task.report_name == metrics["task"]
                    for k, _, label in task.card_metrics if k == key).split()
        held_out = [token for split, values in metrics.get("splits", {}).items()
                    for token in (split, f"{values[key]:.4f}")] or ["-"]
        assert row == [row[0], metrics["task"], *name, f"{value:.4f}", *held_out, str(run),
                       str(run / "hub" / "model")]
    movl = next(row for row in rows if row[0] == "movl")
    splits = runs["movl"][1]["splits"]
    assert movl[2:8] == ["accuracy", f"{runs['movl'][1]['best']['metrics']['accuracy']:.4f}",
                         "test", f"{splits['test']['accuracy']:.4f}", "test_ood", f"{splits['test_ood']['accuracy']:.4f}"]
    assert ("held-out splits (same metric as the validation column): test = in-distribution test set; "
            "test_ood = out-of-distribution test set") in out
    assert out.count("EXAMPLE ") == len(demo_families)


def test_make_demo_family_runs_one_and_names_the_choices_otherwise(fake_runs, capsys):
    runs, staged = fake_runs
    one = sorted(runs)[-1]
    assert cli.main(["demo", "--family", one, "--no-serve"]) == 0
    out = capsys.readouterr().out
    assert f"[1/1] {one}: reusing" in out and "skipping" not in out
    assert [row[0] for row in _table(out)] == [one]
    with pytest.raises(SystemExit, match=r"no family 'nope'; choose one of \["):
        cli.main(["demo", "--family", "nope", "--no-serve"])
    for name, family in FAMILIES.items():
        if family.pending:
            with pytest.raises(SystemExit, match=rf"{name} has no demo yet"):
                cli.main(["demo", "--family", name, "--no-serve"])


def test_a_metrics_json_without_the_headline_says_how_to_fix_it():
    from hfmed.tasks import get_task

    with pytest.raises(ValueError, match=r"none of the regression headline metrics \['mae'.*RETRAIN=1"):
        get_task("regression").headline({"best": {"metrics": {"loss": 1.0}}})
    assert get_task("binary").headline({"best": {"metrics": {"auroc": 0.7, "mean_auroc": 0.61}}}) == (
        "mean AUROC", 0.61)


# --- the combined app ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def combined_app_process(sources: dict, root: Path):
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": str(root / "gradio"),
           "HF_MODULES_CACHE": str(root / "modules"), "PYTHONUNBUFFERED": "1"}
    env.pop("HFMED_MODEL", None)
    log = open(root / "server.log", "w+")
    command = [sys.executable, "-m", "hfmed.demo_app", *(f"{f}={p}" for f, p in sources.items())]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "uploads": root / "gradio", "root": root,
               "process": process, "log": log, "started": __import__("time").monotonic()}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def combined(tiny_models, tmp_path_factory):
    with combined_app_process(tiny_models, tmp_path_factory.mktemp("combined")) as info:
        yield wait_until_up(info, timeout=180)


@pytest.fixture(scope="module")
def client(combined):
    from gradio_client import Client

    return Client(combined["url"], verbose=False, analytics_enabled=False,
                  download_files=str(combined["root"] / "downloads"))


def test_every_tab_has_its_own_public_predict(client, tiny_models):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(endpoints) == sorted(f"/predict_{family}" for family in tiny_models)
    for family in tiny_models:
        names = [p["parameter_name"] for p in endpoints[f"/predict_{family}"]["parameters"]]
        assert names == ["file_path", "threshold"]


def test_every_tab_answers_and_deletes_the_upload(client, combined, tiny_models, tmp_path):
    from gradio_client import handle_file

    for family in tiny_models:
        example = space_examples(family)[0]
        fresh = unique_copy(example, tmp_path / family, f"combined-{family}")
        answer = client.predict(handle_file(str(fresh)), 0.5, api_name=f"/predict_{family}")
        assert "Research use only" in json.dumps(answer) or "research use only" in json.dumps(answer).lower()
        left = [p for p in combined["uploads"].rglob("*") if p.name == fresh.name]
        assert left == [], f"{family}: the upload was not deleted after the answer"
        # A bundled example is never deleted (gradio serves clicks on it from its cached copy).
        client.predict(handle_file(str(example)), 0.5, api_name=f"/predict_{family}")
        assert [p for p in combined["uploads"].rglob("*") if p.name == example.name] != []


def test_the_combined_app_renders_a_tab_per_space_in_chromium(combined, tiny_models, tmp_path):
    html, text, shot = render_page(combined["url"], tmp_path, window=(1280, 1100))
    assert "Research use only" in text
    for family in tiny_models:
        title = re.search(r'title="([^:"]+):', (REPO / "spaces" / family / "app.py").read_text()).group(1)
        assert title in text, title
    assert re.search(r'<input[^>]+type="file"', html)
    with Image.open(shot) as image:
        assert image.size == (1280, 1100)
    assert distinct_colours(shot) > 16
    assert NO_PROXY.open(combined["url"], timeout=5).status == 200
    if os.environ.get("HFMED_UPDATE_SCREENSHOTS"):
        (REPO / "docs" / "demo-app.png").write_bytes(shot.read_bytes())


def test_one_lease_table_counts_the_combined_apps_uploads_for_every_tab(tiny_models, tmp_path, monkeypatch):
    """Gradio's upload route counts into the ROOT Blocks' upload set: the combined app re-hooks it, so a path
    uploaded twice survives the first answer in any tab, and each Space's examples are kept by every tab."""
    from hfmed.demo_app import build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("HFMED_MODEL", "kept/as-it-was")
    app, modules = build_app(tiny_models)
    assert os.environ["HFMED_MODEL"] == "kept/as-it-was"
    assert {f: m.resolve_model_source() for f, m in modules.items()} == {f: str(p) for f, p in tiny_models.items()}
    leases = {id(m.UPLOADS) for m in modules.values()}
    assert len(leases) == 1
    assert any(s is app.upload_file_set for s in app.temp_file_sets)
    assert type(app.upload_file_set).__name__ == "CountedUploadSet"
    public = sorted(d.api_name for d in app.fns.values() if d.api_name and d.api_visibility == "public")
    assert public == sorted(f"predict_{family}" for family in tiny_models)

    for family, module in modules.items():
        example = space_examples(family)[0]
        upload = tmp_path / "gradio" / f"hash-{family}" / f"twice-{example.name}"
        upload.parent.mkdir(parents=True)
        upload.write_bytes(unique_copy(example, tmp_path / "src" / family, family).read_bytes())
        app.upload_file_set.update([str(upload)])  # what the upload route does, for two users
        app.upload_file_set.update([str(upload)])
        module.predict(str(upload), 0.5)
        assert upload.is_file(), f"{family}: deleted while a second upload of it waits"
        module.predict(str(upload), 0.5)
        assert not upload.exists(), f"{family}: not deleted after the last answer"
        copy = tmp_path / "gradio" / f"example-{family}" / example.name  # gradio's cached example copy
        copy.parent.mkdir(parents=True)
        copy.write_bytes(example.read_bytes())
        module.predict(str(copy), 0.5)
        assert copy.is_file(), f"{family}: a bundled example's copy was deleted"


def test_diamant_demo_input_is_scikit_images_photograph_when_installed(tmp_path, monkeypatch):
    """DIAMANT's example prediction reads scikit-image's retina.jpg (else cell.png) where scikit-image ships
    it, found without importing scikit-image; without it, the Space's synthetic polyp example."""
    package = tmp_path / "skimage"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('demo_input must not import scikit-image')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "skimage", raising=False)
    demo_input = FAMILIES["diamant"].demo_input
    assert Path(demo_input()).parent == REPO / "spaces" / "diamant" / "examples"
    (package / "data" / "cell.png").write_bytes(b"png")
    assert demo_input() == str(package / "data" / "cell.png")
    (package / "data" / "retina.jpg").write_bytes(b"jpg")
    assert demo_input() == str(package / "data" / "retina.jpg")


@pytest.mark.parametrize("family", space_families())
def test_every_family_prints_an_example_prediction_on_its_demo_file(family, tiny_models, capsys):
    """`make demo`'s example prediction: the family's demo file through its pipeline, labelled research use
    only, one line per class in the task's format (segmentation: the share of the image per class)."""
    from transformers import AutoConfig

    cli._print_example_prediction(tiny_models[family], FAMILIES[family], prefix=f"{family}: ")
    header, *lines = capsys.readouterr().out.splitlines()
    assert header == f"{family}: trained model on {Path(FAMILIES[family].demo_input()).name}; research use only:"
    labels = set(AutoConfig.from_pretrained(tiny_models[family], trust_remote_code=False).id2label.values())
    parsed = [re.fullmatch(r"  (\S+) +(\d+\.\d+)(% of the image)?", line) for line in lines]
    assert lines and all(parsed), lines
    assert {m.group(1) for m in parsed} <= labels
    values = [float(m.group(2)) for m in parsed]
    if FAMILIES[family].pipeline_task == "image-segmentation":  # every pixel belongs to one class
        assert sum(values) == pytest.approx(100, abs=0.1 * len(values)) and all(m.group(3) for m in parsed)
    elif family == "movl":  # single-label softmax over all four classes
        assert len(values) == len(labels) and sum(values) == pytest.approx(1, abs=0.002 * len(values))
