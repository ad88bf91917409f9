"""upload.py under network faults (issue 10, fault suite): one commit or none per repo, never the token.

The Hub is simulated by `CommitRecorder` on `HfApi.create_repo` / `create_commit`: like the Hub, it records
a commit only when `create_commit` returns (the Hub commits a push in one server call, so a connection cut
before the answer commits nothing), and it can fail the N-th call with the exception the real client raises
(`httpx2.ConnectError` from huggingface_hub 2.x). One test lets the real client fail on a refused
connection. Each failure must end in one line on stderr that says what was committed and to run again,
without the token in any output or staged file.
"""

import json
from pathlib import Path

import httpx2
import pytest
import requests
import torch
import yaml
from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

import upload
from hfmed import ScopeformerForImageClassification, ScopeformerImageProcessor, scopeformer_config

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_testTOKEN0123456789abcdefghijklmnopqrs"
LABELS = ["any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]
SPACE = ["--space", str(ROOT / "spaces" / "scopeformer"), "--space-id", "org/space"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as `hfmed train` leaves it, with a tiny random model and made-up metrics."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    config = scopeformer_config("scopeformer-tiny", label_thresholds=[0.4, 0.3, 0.5, 0.5, 0.6, 0.2])
    ScopeformerForImageClassification(config).save_pretrained(run / "model")
    ScopeformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(run / "model")
    points = {name: {"threshold": 0.5, "sensitivity": 0.9, "specificity": 0.8} for name in LABELS}
    (run / "metrics.json").write_text(json.dumps({
        "best": {"score": 0.91, "epoch": 3, "step": 60, "metrics": {"mean_auroc": 0.91, "mean_accuracy": 0.88}},
        "history": [], "thresholds": {"method": "youden", "operating_points": points},
    }))
    (run / "recipe.yaml").write_text(yaml.safe_dump({
        "model": {"family": "scopeformer", "preset": "scopeformer-tiny"},
        "data": {"builder": "synthetic_ct"}, "training": {"epochs": 3, "learning_rate": 0.001},
    }))
    return run


class CommitRecorder:
    def __init__(self):
        self.commits, self.repos = [], []
        self.failures = {}  # (method, call number) -> exception raised instead of answering
        self.calls = {"create_repo": 0, "create_commit": 0}

    def _call(self, method):
        self.calls[method] += 1
        failure = self.failures.get((method, self.calls[method]))
        if failure is not None:
            raise failure

    def create_repo(self, api, repo_id, **kwargs):
        self._call("create_repo")
        self.repos.append((repo_id, kwargs.get("repo_type"), kwargs.get("private")))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, api, repo_id, operations, **kwargs):
        ops = list(operations)
        contents = {}
        for op in ops:  # reading every file stands for uploading the blobs, before the commit call
            assert isinstance(op, CommitOperationAdd)
            src = op.path_or_fileobj
            contents[op.path_in_repo] = Path(src).read_bytes() if isinstance(src, (str, Path)) else bytes(src)
        self._call("create_commit")
        self.commits.append({"repo_id": repo_id, "files": contents, **kwargs})
        return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/0"})()

    def commits_to(self, repo_id):
        return [c for c in self.commits if c["repo_id"] == repo_id]


@pytest.fixture
def recorder(monkeypatch):
    rec = CommitRecorder()
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: rec.create_repo(api, repo_id, **kw))
    monkeypatch.setattr(HfApi, "create_commit",
                        lambda api, repo_id, operations, **kw: rec.create_commit(api, repo_id, operations, **kw))
    monkeypatch.setattr(HfApi, "create_branch", lambda *a, **k: pytest.fail("no branch was asked for"))
    return rec


def error_line(printed) -> str:
    """The one `error:` line on stderr (staging also writes progress bars there), and no traceback."""
    lines = [line for line in printed.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in printed.err, printed.err
    return lines[0]


def assert_token_nowhere(printed, *folders):
    assert TOKEN not in printed.out + printed.err
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path


def test_push_makes_one_commit_per_repo_with_the_expected_files_and_no_token(
    run_dir, recorder, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code = upload.main([str(run_dir), "--repo-id", "org/scopeformer-demo", "--private", "--out", str(tmp_path),
                        *SPACE, "--commit-message", "first release"])
    assert code == 0
    assert recorder.repos == [("org/scopeformer-demo", "model", True), ("org/space", "space", True)]
    assert [c["repo_id"] for c in recorder.commits] == ["org/scopeformer-demo", "org/space"]
    model_commit = recorder.commits[0]
    assert model_commit["commit_message"] == "first release"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "modeling_scopeformer.py",
            "configuration_scopeformer.py", "image_processing_scopeformer.py"} <= set(model_commit["files"])
    assert {"app.py", "requirements.txt", "README.md", "model_id.txt"} <= set(recorder.commits[1]["files"])
    for commit in recorder.commits:
        for name, data in commit["files"].items():
            assert TOKEN.encode() not in data, name
    assert_token_nowhere(capsys.readouterr(), tmp_path)


def test_push_without_a_token_stops_before_any_network_call(run_dir, recorder, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))  # no stored login either
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert upload.main([str(run_dir), "--repo-id", "org/x"]) == 2
    assert recorder.repos == [] and recorder.commits == []
    assert "no Hugging Face token" in capsys.readouterr().err


def test_revision_and_pull_request_are_forwarded(run_dir, recorder, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert upload.main([str(run_dir), "--repo-id", "org/x", "--create-pr", "--revision", "main"]) == 0
    assert recorder.commits[0]["create_pr"] is True and recorder.commits[0]["revision"] == "main"


NETWORK_ERRORS = {
    "connection refused (httpx2)": httpx2.ConnectError("[Errno 111] Connection refused"),
    "connection reset mid-upload (httpx2)": httpx2.WriteError("[Errno 104] Connection reset by peer"),
    "requests ConnectionError": requests.ConnectionError("Max retries exceeded with url: /api/models"),
    "Hub answers 503": HfHubHTTPError(
        "503 Server Error: Service Unavailable for url: https://huggingface.co/api/models/org/m/commit/main\n"
        "Request ID: Root=1-abc",
        response=httpx2.Response(503, request=httpx2.Request("POST", "https://huggingface.co/api/models/org/m/commit/main")),
    ),
    # a proxy that echoes the request headers in its error: the token must still never be printed
    "error text holding the token": httpx2.ProxyError(f"proxy said: Authorization: Bearer {TOKEN}"),
}


@pytest.mark.parametrize("error", NETWORK_ERRORS.values(), ids=NETWORK_ERRORS.keys())
def test_a_network_error_after_create_repo_commits_nothing_prints_one_line_and_no_token(
    error, run_dir, recorder, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    recorder.failures[("create_commit", 1)] = error
    capsys.readouterr()
    assert upload.main([str(run_dir), "--repo-id", "org/m", "--out", str(tmp_path), *SPACE]) == 1
    # the model repo was created but holds no commit of ours; the Space was not touched
    assert recorder.repos == [("org/m", "model", False)] and recorder.commits == []
    printed = capsys.readouterr()
    line = error_line(printed)
    assert line.startswith("error: pushing org/m failed") and "nothing was committed to org/m" in line
    assert "run the same command again" in line
    assert_token_nowhere(printed, tmp_path)

    # the same command again, with the network back: exactly one commit per repo
    recorder.repos.clear()
    assert upload.main([str(run_dir), "--repo-id", "org/m", "--out", str(tmp_path / "again"), *SPACE]) == 0
    assert len(recorder.commits_to("org/m")) == 1 and len(recorder.commits_to("org/space")) == 1


def test_a_network_error_on_the_space_leaves_the_model_pushed_once_and_says_so(
    run_dir, recorder, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    recorder.failures[("create_commit", 2)] = httpx2.ReadTimeout("The read operation timed out")
    capsys.readouterr()
    assert upload.main([str(run_dir), "--repo-id", "org/m", "--out", str(tmp_path), *SPACE]) == 1
    assert [c["repo_id"] for c in recorder.commits] == ["org/m"]
    assert "model.safetensors" in recorder.commits[0]["files"]  # the model repo is whole: one full commit
    printed = capsys.readouterr()
    line = error_line(printed)
    assert line.startswith("error: pushing org/space failed (ReadTimeout")
    assert "nothing was committed to org/space" in line and "org/m already pushed" in line
    assert_token_nowhere(printed, tmp_path)


def test_the_real_hub_client_refused_by_the_network_commits_nothing_and_prints_no_token(
    run_dir, monkeypatch, tmp_path, capsys
):
    # No stand-in at all: huggingface_hub's own client against a port where nothing listens.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    capsys.readouterr()
    assert upload.main([str(run_dir), "--repo-id", "org/m", "--out", str(tmp_path)]) == 1
    printed = capsys.readouterr()
    assert error_line(printed).startswith("error: pushing org/m failed (ConnectError")
    assert_token_nowhere(printed, tmp_path)
