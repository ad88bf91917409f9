"""The package's structure rules, checked on the source.

- Outside `hfmed/models/`, `hfmed/families/`, `hfmed/data/` and `hfmed/__init__.py` no module names a family:
  what is family-specific lives in the family's module or its model folder.
- The training loop, cards, CLI, pipelines and interpret code do not branch on the task: that is `hfmed.tasks`.
- No function of the training modules is longer than 80 lines.
"""

import ast
import re
from pathlib import Path

import pytest

from hfmed.registry import FAMILIES

HFMED = Path(__file__).resolve().parents[1] / "hfmed"
MAY_NAME_FAMILIES = ("models", "families", "data")
TASK_FREE = ["train.py", "checkpoint.py", "policy.py", "cards.py", "cli.py", "pipelines.py", "interpret.py"]
TRAINING_MODULES = ["train.py", "checkpoint.py", "policy.py"]
TASK_WORDS = {"regression", "classification", "multi_label_classification", "single_label_classification", "binary"}


def family_words() -> set[str]:
    """Names a module would use to name a family: its name in every spelling, its class prefix, and the
    parameter groups its model declares."""
    words = set()
    for family in FAMILIES.values():
        words |= {family.name, family.name.replace("_", "-"), family.name.replace("_", ""), family.model_type}
        words.add(family.config_class.__name__.removesuffix("Config").lower())
        config = family.make_config(next(p for p in family.presets if p.endswith("-tiny")))
        import torch

        with torch.device("meta"):
            model = family.head_class(config)
        words |= set(family.training_policy.learning_rate_groups(model))
    return {w.lower() for w in words}


def generic_modules() -> list[Path]:
    return [
        path for path in sorted(HFMED.rglob("*.py"))
        if path.relative_to(HFMED).parts[0] not in MAY_NAME_FAMILIES and path != HFMED / "__init__.py"
    ]


def test_generic_modules_name_no_family():
    words = family_words()
    assert {"scopeformer", "lt_vit", "slice_cnn", "label_tokens"} <= words
    pattern = re.compile("|".join(sorted(map(re.escape, words), key=len, reverse=True)), re.IGNORECASE)
    found = [
        f"{path.relative_to(HFMED.parent)}:{number}: {line.strip()}"
        for path in generic_modules()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert found == []


def task_branches(source: str) -> list[int]:
    """Lines that compare with a task name or read `problem_type` (a branch on the task)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "problem_type":
            lines.append(node.lineno)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and any(
            isinstance(a, ast.Constant) and a.value == "problem_type" for a in node.args
        ):
            lines.append(node.lineno)
        if isinstance(node, ast.Compare):
            constants = [c for c in (node.left, *node.comparators) if isinstance(c, ast.Constant)]
            if any(c.value in TASK_WORDS for c in constants if isinstance(c.value, str)):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_task_branch_detector_sees_branches():
    assert task_branches('if config.problem_type == "regression":\n    pass\n') == [1]
    assert task_branches('x = "binary" if n == 1 else "multi"\nif task == "binary": pass\n') == [2]
    assert task_branches('task = task_for(config)\nscores = task.scores(logits)\n') == []


@pytest.mark.parametrize("module", TASK_FREE)
def test_generic_code_does_not_branch_on_the_task(module):
    source = (HFMED / module).read_text()
    # Usage templates are text for people, not code that runs here.
    assert task_branches(source) == []


def long_functions(source: str, limit: int = 80) -> list[str]:
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit
    ]


def test_long_function_detector_counts_lines():
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    assert long_functions(f"def f():\n{body}\n") == ["f (82 lines)"]


@pytest.mark.parametrize("module", TRAINING_MODULES)
def test_training_functions_are_at_most_80_lines(module):
    assert long_functions((HFMED / module).read_text()) == []
