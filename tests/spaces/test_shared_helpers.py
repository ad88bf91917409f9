"""The Spaces' shared helpers: one source (spaces/_shared/space_helpers.py), a checked copy in each Space, and
every staged Space still self-contained."""

import ast
import shutil
import sys
from pathlib import Path

from tests import check_copies

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / "spaces" / "_shared" / "space_helpers.py"
APPS = sorted((REPO / "spaces").glob("*/app.py"))
HOOKS = {"resolve_model_source", "example_files"}  # each Space defines its own



def shared_names() -> set[str]:
    tree = ast.parse(SHARED.read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} - HOOKS


def test_every_shared_helper_is_a_marked_copy_in_the_spaces_that_use_it():
    assert len(APPS) >= 3
    users = {name: 0 for name in shared_names()}
    for app in APPS:
        copies = {c.source.rsplit(".", 1)[-1] for c in check_copies.find_copies(app)
                  if c.source.startswith("spaces._shared.space_helpers.")}
        tree = ast.parse(app.read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert (defined & set(users)) <= copies, app  # a shared helper defined without its mark
        for name in copies:
            users[name] = users.get(name, 0) + 1
    assert all(count >= 2 for count in users.values()), users  # a helper one Space uses belongs in that Space


def test_no_space_imports_the_shared_module_and_a_staged_space_stands_alone(tmp_path):
    sys.path.insert(0, str(REPO))
    try:
        from upload import stage_space
    finally:
        sys.path.remove(str(REPO))
    for app in APPS:
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(app.read_text()))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
        }
        assert not imported & {"_shared", "spaces", "space_helpers", "hfmed"}, app
        staged = stage_space(app.parent, "org/model", tmp_path / app.parent.name)
        assert (staged / "app.py").read_bytes() == app.read_bytes()
        assert not any("_shared" in p.parts for p in staged.rglob("*"))


def test_a_change_to_a_shared_helper_is_caught_in_every_space_and_fixed_everywhere(tmp_path):
    for path in [SHARED, *APPS]:
        target = tmp_path / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    shared = tmp_path / SHARED.relative_to(REPO)
    shared.write_text(shared.read_text().replace('return " ".join(str(text).split())',
                                                 'return " ".join(str(text).split())[:500]'))
    globs = ("spaces/*/*.py",)
    problems = check_copies.check(tmp_path, globs=globs)
    assert len(problems) == len(APPS) and all("space_helpers._one_line differs" in p for p in problems)
    check_copies.check(tmp_path, fix=True, globs=globs)
    assert check_copies.check(tmp_path, globs=globs) == []
    for app in APPS:
        assert '.split())[:500]' in (tmp_path / app.relative_to(REPO)).read_text()
