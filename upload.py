"""Publish a training run (and its Gradio Space) to the Hugging Face Hub in one command.

    python upload.py runs/scopeformer-efficient --repo-id org/scopeformer-efficient
    python upload.py runs/scopeformer-efficient --repo-id org/scopeformer-efficient \\
        --space spaces/scopeformer --space-id org/scopeformer-demo
    python upload.py runs/scopeformer-efficient-demo --repo-id me/demo --dry-run --out staged/

Each repo is staged as a complete folder (config.json with auto_map, model.safetensors,
preprocessor_config.json, the family's source files, README.md model card), then pushed with ONE
`HfApi.create_commit`. The token comes from `huggingface-cli login` or `HF_TOKEN`; it is never
printed, logged or written anywhere.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

# make_examples.py imports hfmed to draw the bundled examples; the Space itself never runs it.
SPACE_SKIP = {"__pycache__", ".gradio", "flagged", "make_examples.py"}


class UploadError(RuntimeError):
    """A publish that cannot go ahead; the message names the problem and the fix."""


class PushError(RuntimeError):
    """A push the network or the Hub interrupted; the message says what was committed and what to do."""


# Where the Hub client's transport and HTTP errors come from (huggingface_hub 1.x / 2.x use httpx / httpx2).
_NETWORK_MODULES = {"httpx", "httpx2", "requests", "urllib3", "huggingface_hub"}


def _is_network_error(err: BaseException) -> bool:
    return isinstance(err, OSError) or type(err).__module__.split(".")[0] in _NETWORK_MODULES


def _redacted(text: str, token: str | None) -> str:
    text = " ".join(str(text).split())  # one line
    return text.replace(token, "hf_***") if token else text


def stage_model(run_dir: Path, repo_id: str, out: Path, license: str = "apache-2.0") -> Path:
    """Write the model repo folder for `run_dir` into `out` and return it."""
    from transformers import AutoImageProcessor

    import hfmed  # noqa: F401  (registers the families)
    from hfmed.cards import build_model_card_for_run
    from hfmed.hub import save_for_hub, trust_remote_code_for
    from hfmed.registry import load_model

    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise UploadError(f"{run_dir} is not a training run folder (no model/config.json); run `hfmed train` first")
    trust = trust_remote_code_for(model_dir)  # the installed classes; never a prompt
    model = load_model(model_dir, trust_remote_code=trust)
    processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=trust)
    save_for_hub(model, processor, out)
    build_model_card_for_run(run_dir, repo_id, license=license).save(out / "README.md")
    for extra in ("metrics.json", "recipe.yaml"):
        if (run_dir / extra).is_file():
            shutil.copy2(run_dir / extra, out / extra)
    return out


def stage_space(space_dir: Path, model_repo_id: str | None, out: Path) -> Path:
    """Copy a Space folder, pointing it at the published model (`model_id.txt`, front matter `models:`)."""
    if not (space_dir / "app.py").is_file():
        raise UploadError(f"{space_dir} is not a Space folder (no app.py)")
    shutil.copytree(space_dir, out, ignore=shutil.ignore_patterns(*SPACE_SKIP), dirs_exist_ok=True)
    if model_repo_id:
        (out / "model_id.txt").write_text(model_repo_id + "\n")
        readme = out / "README.md"
        text = readme.read_text()
        if text.startswith("---"):
            head, _, body = text[3:].partition("\n---")
            import yaml

            meta = yaml.safe_load(head) or {}
            meta["models"] = [model_repo_id]
            readme.write_text("---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---" + body)
    return out


def resolve_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise UploadError(
            "no Hugging Face token: run `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN, "
            "then try again (or use --dry-run to only stage the folder)"
        )
    return token


def folder_operations(folder: Path) -> list:
    """One `CommitOperationAdd` per file of a staged folder (paths relative to it, POSIX separators)."""
    from huggingface_hub import CommitOperationAdd

    return [
        CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not SPACE_SKIP.intersection(path.relative_to(folder).parts)
    ]


def push(folder: Path, repo_id: str, token: str, repo_type: str = "model", private: bool = False,
         revision: str | None = None, create_pr: bool = False, commit_message: str | None = None,
         space_sdk: str | None = None):
    """Create the repo if missing, then push the whole folder as exactly one commit.

    `create_commit` with every file, rather than `upload_folder`, whose streamed pipeline may split a
    large folder into several commits: a published model must never exist half-uploaded.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk)
    if revision and not create_pr:
        api.create_branch(repo_id, repo_type=repo_type, branch=revision, exist_ok=True)
    return api.create_commit(
        repo_id=repo_id,
        repo_type=repo_type,
        operations=folder_operations(folder),
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message or f"Upload {repo_type} with hfmed",
    )


def push_or_explain(folder: Path, repo_id: str, token: str, pushed: list[str], **kwargs):
    """`push`, with a network or Hub failure turned into one line that never holds the token.

    `pushed` names the repos this run already committed to, so the line says what the retry will redo.
    """
    try:
        return push(folder, repo_id, token, **kwargs)
    except Exception as err:
        if not _is_network_error(err):
            raise
        done = f"; {' and '.join(pushed)} already pushed" if pushed else ""
        raise PushError(
            f"pushing {repo_id} failed ({type(err).__name__}: {_redacted(err, token)}): nothing was committed to "
            f"{repo_id}, since a push is one commit{done}; check the connection and the token's write access, then "
            "run the same command again"
        ) from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a training run folder (holds model/, metrics.json)")
    parser.add_argument("--repo-id", required=True, help="model repo, e.g. org/scopeformer-efficient")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--space", type=Path, default=None, help="a Space folder, e.g. spaces/scopeformer")
    parser.add_argument("--space-id", default=None, help="Space repo, e.g. org/scopeformer-demo")
    parser.add_argument("--dry-run", action="store_true", help="stage the folders only, no network")
    parser.add_argument("--out", type=Path, default=None, help="where --dry-run stages (default: a temp folder)")
    args = parser.parse_args(argv)

    try:
        if bool(args.space) != bool(args.space_id):
            raise UploadError("--space and --space-id go together: give both or neither")
        if args.out is None and args.dry_run:
            args.out = Path(tempfile.mkdtemp(prefix="hfmed-upload-"))
        # Check the token before any staging or network call, so a missing login fails fast.
        token = None if args.dry_run else resolve_token()
        staging = args.out or Path(tempfile.mkdtemp(prefix="hfmed-upload-"))
        model_folder = stage_model(args.run_dir, args.repo_id, staging / "model", license=args.license)
        space_folder = stage_space(args.space, args.repo_id, staging / "space") if args.space else None
        print(f"staged model repo: {model_folder}")
        if space_folder:
            print(f"staged Space repo: {space_folder}")
        if args.dry_run:
            return 0
        options = dict(private=args.private, revision=args.revision, create_pr=args.create_pr,
                       commit_message=args.commit_message)
        result = push_or_explain(model_folder, args.repo_id, token, [], **options)
        print(f"pushed {args.repo_id}: {getattr(result, 'commit_url', result)}")
        if space_folder:
            result = push_or_explain(space_folder, args.space_id, token, [args.repo_id], repo_type="space",
                                     space_sdk="gradio", **options)
            print(f"pushed Space {args.space_id}: {getattr(result, 'commit_url', result)}")
    except UploadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PushError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
