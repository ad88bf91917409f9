"""Keep copied code in step with its source, the way transformers' `utils/check_copies.py` does.

Model folders and Spaces are uploaded to the Hub alone, so a helper they share is copied, never imported.
A copy carries a mark on the line above it:

    # Copied from hfmed.models.scopeformer.image_processing_scopeformer._check_size with a slice->an image

and its body must equal the source's body after the replacements (`old->new`, comma-separated, applied in
order as plain text) and re-indentation. The source is a function, class, method (`Class.method`) or
module-level assignment, named by module path (`hfmed.models.x.module` or `spaces._shared.module`) and
qualified name. The check also reports a helper defined identically in two model folders (or two Spaces)
without a mark. The Spaces' shared helpers have their one source in `spaces/_shared/space_helpers.py`.

    python -m tests.check_copies          # report; exit status 1 when a copy is out of step
    python -m tests.check_copies --fix    # rewrite every marked copy from its source
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Where copies live: the model folders and the Spaces (with their shared helpers).
COPY_GLOBS = ("hfmed/models/*/*.py", "spaces/*/*.py")
MARK = re.compile(r"^(?P<indent>\s*)# Copied from (?P<source>[\w.]+)(?: with (?P<replacements>.+))?$")


@dataclass
class Definition:
    """One top-level or class-level definition: its lines (1-based, inclusive) and dedented text."""

    path: Path
    start: int
    end: int
    indent: str
    text: str


def _statements(tree: ast.Module):
    """(qualified name, node) of every function, class, method and top-level assignment."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, node
            if isinstance(node, ast.ClassDef):
                for child in node.body:
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        yield f"{node.name}.{child.name}", child
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    yield target.id, node


def _definition(path: Path, lines: list[str], node) -> Definition:
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno, *(d.lineno for d in decorators)])
    block = lines[start - 1 : node.end_lineno]
    indent = re.match(r"\s*", block[0]).group(0)
    return Definition(path, start, node.end_lineno, indent, textwrap.dedent("\n".join(block)))


def _parse(path: Path):
    text = path.read_text()
    return text.splitlines(), ast.parse(text, filename=str(path))


def find_source(dotted: str, root: Path = REPO) -> Definition:
    """The definition a mark names: the longest module prefix that is a file, then a qualified name in it."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        path = root.joinpath(*parts[:cut]).with_suffix(".py")
        if path.is_file():
            qualname = ".".join(parts[cut:])
            lines, tree = _parse(path)
            for name, node in _statements(tree):
                if name == qualname:
                    return _definition(path, lines, node)
            raise LookupError(f"{dotted}: {path.relative_to(root)} defines no {qualname!r}")
    raise LookupError(f"{dotted}: no such module file under {root}")


def apply_replacements(text: str, replacements: str | None) -> str:
    """`text` with each `old->new` of a mark's comma-separated list replaced, in order."""
    for pattern in (replacements or "").split(","):
        if not pattern.strip():
            continue
        if "->" not in pattern:
            raise ValueError(f"replacement {pattern.strip()!r} must look like old->new")
        old, new = (p.strip() for p in pattern.split("->", 1))
        text = text.replace(old, new)
    return text


@dataclass
class Copy:
    path: Path
    mark_line: int
    source: str
    replacements: str | None
    definition: Definition


def find_copies(path: Path) -> list[Copy]:
    """Every marked copy in a file; a mark must sit right above a definition (comment lines may follow it)."""
    lines, tree = _parse(path)
    starts = {}
    for _, node in _statements(tree):
        definition = _definition(path, lines, node)
        starts.setdefault(definition.start, definition)
    copies = []
    for number, line in enumerate(lines, start=1):
        match = MARK.match(line)
        if not match:
            continue
        following = number + 1
        while following <= len(lines) and lines[following - 1].strip().startswith("#"):
            following += 1
        if following not in starts:
            raise ValueError(f"{path}:{number}: '# Copied from' must sit right above the definition it marks")
        copies.append(Copy(path, number, match["source"], match["replacements"], starts[following]))
    return copies


def expected_text(copy: Copy, root: Path = REPO) -> str:
    return apply_replacements(find_source(copy.source, root).text, copy.replacements)


def check(root: Path = REPO, fix: bool = False, globs=COPY_GLOBS) -> list[str]:
    """Problems with the copies under `root` (empty when all are in step); with `fix`, rewrite them."""
    problems = []
    files = sorted({p for pattern in globs for p in root.glob(pattern)})
    for path in files:
        rewrites = []
        for copy in find_copies(path):
            try:
                expected = expected_text(copy, root)
            except (LookupError, ValueError) as err:
                problems.append(f"{path.relative_to(root)}:{copy.mark_line}: {err}")
                continue
            if expected != copy.definition.text:
                problems.append(
                    f"{path.relative_to(root)}:{copy.mark_line}: the copy of {copy.source} differs from its source; "
                    "run `python -m tests.check_copies --fix` (or fix the source and the mark's replacements)"
                )
                rewrites.append((copy.definition, expected))
        if fix and rewrites:
            _rewrite(path, rewrites)
    problems += unmarked_duplicates(root)
    return problems


def _rewrite(path: Path, rewrites) -> None:
    lines = path.read_text().splitlines()
    for definition, expected in sorted(rewrites, key=lambda r: r[0].start, reverse=True):
        body = textwrap.indent(expected, definition.indent, lambda line: bool(line.strip())).splitlines()
        lines[definition.start - 1 : definition.end] = body
    path.write_text("\n".join(lines) + "\n")


def unmarked_duplicates(root: Path = REPO) -> list[str]:
    """Helpers defined with the same name and text in several model folders (functions, classes, constants)
    or several Spaces (functions and classes; a Space's constants are its settings), of which more than one
    lacks a `# Copied from` mark: every repeated helper must be a checked copy of one source."""
    seen = defaultdict(list)
    patterns = (("hfmed/models/*/*.py", True), ("spaces/*/app.py", False), ("spaces/_shared/*.py", False))
    for pattern, constants in patterns:
        for path in sorted(root.glob(pattern)):
            _collect(path, constants, seen)
    problems = []
    for (name, _), places in sorted(seen.items()):
        folders = {path.parent for path, _ in places}
        unmarked = [path for path, is_copy in places if not is_copy]
        if len(folders) > 1 and len(unmarked) > 1:
            where = ", ".join(str(p.relative_to(root)) for p in unmarked)
            problems.append(f"{name} is repeated without a '# Copied from' mark in {where}: mark the copies")
    return problems


def _collect(path: Path, constants: bool, seen) -> None:
    lines, tree = _parse(path)
    marked = {copy.definition.start for copy in find_copies(path)}
    for name, node in _statements(tree):
        if name in ("__all__", "logger") or "." in name:
            continue
        if not constants and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        definition = _definition(path, lines, node)
        seen[(name, definition.text)].append((path, definition.start in marked))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fix", action="store_true", help="rewrite every marked copy from its source")
    args = parser.parse_args(argv)
    problems = check(fix=args.fix)
    for problem in problems:
        print(problem)
    if problems and args.fix:
        remaining = check()
        return 1 if remaining else 0
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
