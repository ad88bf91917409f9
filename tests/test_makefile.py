"""`make test` provides Chromium for the Space tests, or stops at once naming the command that installs it."""

import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bin_without_chromium(tmp_path, uid: int) -> Path:
    # A PATH holding only what the `browser` recipe may call: no chromium, no sudo, no apt-get; `id` answers uid.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_dir / "id").chmod(0o755)
    return bin_dir


def test_browser_target_stops_at_once_with_the_install_command_when_it_cannot_install(tmp_path):
    bin_dir = _bin_without_chromium(tmp_path, uid=1000)
    start = time.monotonic()
    done = subprocess.run([shutil.which("make"), "-s", "-C", str(REPO), "browser"], env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("make test:")]
    assert lines == ["make test: chromium is missing (the Space tests render pages in it); "
                     "install it with: sudo apt-get install -y chromium"], done.stderr
    assert time.monotonic() - start < 30  # it stops before building anything (a venv build takes minutes)


def test_browser_target_as_root_without_apt_names_what_to_do(tmp_path):
    bin_dir = _bin_without_chromium(tmp_path, uid=0)
    done = subprocess.run([shutil.which("make"), "-s", "-C", str(REPO), "browser"], env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode != 0
    assert "chromium is missing and this machine has no apt-get" in done.stderr


def test_make_test_checks_the_browser_before_the_suite():
    # `make -n` prints the recipe lines in the order make would run them: the browser check first.
    plan = subprocess.run([shutil.which("make"), "-n", "-C", str(REPO), "test"], capture_output=True, text=True,
                          timeout=60).stdout
    assert plan.index("command -v chromium") < plan.index("-m pytest")


def test_ci_runs_make_test():
    assert "\nmake test\n" in (REPO / ".ci" / "run").read_text()
