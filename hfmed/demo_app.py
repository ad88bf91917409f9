"""One Gradio app with a tab per family, built from the Spaces' own `build_demo()` (what `make demo` serves).

Each `spaces/<family>/app.py` is imported by path under its own module name (`hfmed_space_<family>`), with
`HFMED_MODEL` set to the served model while it imports (the import builds the Space's `demo`) and restored
after; the module's `resolve_model_source` is then pinned to that model, so a later `load_model()` of one tab
never reads another tab's source. Each module's Blocks is rendered inside a `gr.Tab`: the UI, the events and
the Space's `predict` are the Space's own, and each Space still deploys alone without hfmed.

What moves to the combined app, because gradio reads it from the root Blocks:
- the queue: `default_concurrency_limit=1, max_size=64` as in each Space; every Space's `serve_predict` is its
  own concurrency group, so each tab answers one request at a time, as each Space alone does;
- api names: each Space's `predict` endpoint is `predict_<family>` here (every api name of a Space gets the
  suffix `_<family>`; gradio would otherwise rename the second and third `predict` to `predict_1`,
  `predict_2`, by render order); alone, each stays `predict`;
- uploads: gradio's upload route counts into the root's `upload_file_set`, so the combined app re-hooks it
  (`count_uploads`) with ONE lease table shared by every Space module, whose `discard` keeps every Space's
  example copies: an answer in any tab deletes its upload once nobody else needs it, as alone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
SPACES_DIR = REPO / "spaces"
CONCURRENCY_LIMIT = 1
QUEUE_MAX_SIZE = 64
NOTICE = (
    "# hfmed: every family's demo model\n\n"
    "**Research use only. Not for diagnosis.** One tab per family; each tab is that family's Space."
)


def import_space(family: str, model_source: str | os.PathLike, spaces_dir: Path = SPACES_DIR) -> ModuleType:
    """`spaces/<family>/app.py` as module `hfmed_space_<family>`, serving `model_source` (pinned)."""
    path = Path(spaces_dir) / family / "app.py"
    if not path.is_file():
        raise FileNotFoundError(f"{family}: no Space at {path}; a family's Space is spaces/<family>/app.py")
    source = str(model_source)
    name = f"hfmed_space_{family}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    saved = os.environ.get("HFMED_MODEL")
    os.environ["HFMED_MODEL"] = source
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if saved is None:
            os.environ.pop("HFMED_MODEL", None)
        else:
            os.environ["HFMED_MODEL"] = saved
    module.resolve_model_source = lambda: source  # load_model() / load_config() read it at call time
    return module


def tab_title(module: ModuleType, family: str) -> str:
    """The Space's own name: its page title up to the colon ("Name: what it does" -> "Name")."""
    title = getattr(module.demo, "title", "") or family
    return title.split(":", 1)[0].strip() or family


def _shared_discard(modules: list[ModuleType]):
    first = modules[0]

    def discard(path) -> bool:
        try:
            resolved = Path(path).resolve()
        except (OSError, RuntimeError):
            return False
        if any(module._is_example_copy(resolved) for module in modules):
            return False
        return first.discard_upload(resolved)

    return discard


def build_app(sources: dict[str, str | os.PathLike], spaces_dir: Path = SPACES_DIR):
    """`(app, modules)`: the combined Blocks (queued) and the imported Space module of each family."""
    import gradio as gr

    if not sources:
        raise ValueError("build_app needs at least one family: {family: model folder or Hub id}")
    modules = {family: import_space(family, source, spaces_dir) for family, source in sources.items()}
    delete_cache = max(getattr(m, "DELETE_CACHE", (600, 600)) for m in modules.values())
    with gr.Blocks(title="hfmed demo (research use only)", analytics_enabled=False,
                   delete_cache=delete_cache) as app:
        gr.Markdown(NOTICE)
        for family, module in modules.items():
            for dependency in module.demo.fns.values():
                if isinstance(dependency.api_name, str):  # "predict" -> "predict_<family>", and so on
                    dependency.api_name = f"{dependency.api_name}_{family}"
            with gr.Tab(tab_title(module, family), id=family):
                module.demo.render()
    listed = list(modules.values())
    leases = listed[0].UploadLeases(discard=_shared_discard(listed))
    for module in listed:
        module.UPLOADS = leases  # predict's acquire / release and the counted upload set read the global
    listed[0].count_uploads(app)
    return app.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_MAX_SIZE), modules


def launch(app, modules: dict[str, ModuleType], port: int | None = None, block: bool = True):
    """Serves the combined app on 127.0.0.1 (`GRADIO_SERVER_PORT`, default 7860); the largest upload limit
    of the Spaces applies at the door, each Space's own in its `predict`."""
    for module in modules.values():
        module.load_model()  # fail at start, with the message, rather than on the first request
    max_mb = max(getattr(m, "MAX_UPLOAD_MB", 20) for m in modules.values())
    return app.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=f"{max_mb}mb",
        run_history=False,
        enable_monitoring=False,
        prevent_thread_lock=not block,
    )


def main(argv=None) -> int:
    """`python -m hfmed.demo_app family=model_dir [...]`: serve those models (make demo calls build_app)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    sources = {}
    for arg in argv:
        family, sep, source = arg.partition("=")
        if not sep or not source:
            raise SystemExit(f"expected family=model_folder, got {arg!r}; e.g. <family>=runs/<recipe>/model")
        sources[family] = source
    app, modules = build_app(sources)
    launch(app, modules)
    return 0


if __name__ == "__main__":
    sys.exit(main())
