"""Every registered family is complete: a half-registered family fails here.

A family is complete when it has a tiny preset that builds, its model and processor test modules under
`tests/models/<name>/`, a demo recipe of its own, a Space folder, card facts, and Auto classes that exist.
"""

import dataclasses
from pathlib import Path

import pytest
import transformers

from hfmed.family import FamilyCard
from hfmed.recipe import load_recipe
from hfmed.registry import FAMILIES, family_for

REPO = Path(__file__).resolve().parents[1]


def family_problems(family) -> list[str]:
    """What a family lacks (empty when complete). The parts a family may declare `pending` are named
    "demo recipe", "Space" and "card facts" at the start of their problem."""
    problems = []
    tiny = [name for name in family.presets if name.endswith("-tiny")]
    if not tiny:
        problems.append("no tiny preset (a '<family>-tiny' entry in PRESETS, for tests)")
    else:
        config = family.make_config(tiny[0])
        if config.model_type != family.model_type:
            problems.append(f"the tiny preset builds a {config.model_type!r} config")
    if family.default_preset not in family.presets:
        problems.append(f"default_preset {family.default_preset!r} is not a preset")
    tests = REPO / "tests" / "models" / family.name
    for module in (f"test_modeling_{family.name}.py", f"test_image_processing_{family.name}.py"):
        if not (tests / module).is_file():
            problems.append(f"no family test module tests/models/{family.name}/{module}")
    if not family.demo_recipe or not family.demo_recipe_path.is_file():
        problems.append(f"demo recipe missing (Family.demo_recipe = {family.demo_recipe!r})")
    elif load_recipe(family.demo_recipe_path, check_paths=False).model.family != family.name:
        problems.append(f"the demo recipe {family.demo_recipe} trains another family")
    for name in ("app.py", "README.md", "requirements.txt"):
        if not (family.space_dir / name).is_file():
            problems.append(f"Space file spaces/{family.name}/{name} missing")
    card = family.card
    if not isinstance(card, FamilyCard) or not card.papers or not card.tags or not card.example_input:
        problems.append("card facts missing (Family.card with papers, tags and an example input)")
    for auto_name in family.auto_map_classes():
        if not auto_name.startswith("Auto") or not hasattr(transformers, auto_name):
            problems.append(f"{auto_name!r} is not a transformers Auto class")
    if family.head not in family.heads:
        problems.append(f"the training head {family.head!r} is not one of heads {sorted(family.heads)}")
    return problems


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_registered_family_is_complete(name):
    # A family whose open issue still adds some parts declares them `pending`; those, and only those, may be
    # missing, and a pending part that exists fails too (the declaration must not go stale).
    family = FAMILIES[name]
    problems = family_problems(family)
    assert [p for p in problems if not p.startswith(family.pending)] == []
    for part in family.pending:
        assert any(p.startswith(part) for p in problems), f"{name}: {part!r} exists now: drop it from pending"


def test_a_half_registered_family_is_reported():
    family = FAMILIES["scopeformer"]
    half = dataclasses.replace(
        family,
        name="foo",
        presets={k: v for k, v in family.presets.items() if not k.endswith("-tiny")},
        card=None,
        demo_recipe="configs/foo-demo.yaml",
        heads={"AutoModelForFooPrediction": family.head_class},
        head="AutoModelForFooPrediction",
    )
    problems = "\n".join(family_problems(half))
    for missing in ("tiny preset", "tests/models/foo/test_modeling_foo.py", "demo recipe missing", "spaces/foo/app.py",
                    "card facts", "'AutoModelForFooPrediction' is not a transformers Auto class"):
        assert missing in problems


def test_the_table_is_assembled_from_the_family_modules():
    modules = sorted(p.stem for p in (REPO / "hfmed" / "families").glob("*.py") if p.stem != "__init__")
    assert sorted(FAMILIES) == modules
    for family in FAMILIES.values():
        assert family_for(family.make_config(family.default_preset)) is family


def test_every_head_is_registered_with_its_auto_class_by_name():
    import hfmed  # noqa: F401  (registers the families)

    for family in FAMILIES.values():
        config = family.make_config(next(p for p in family.presets if p.endswith("-tiny")))
        for auto_name, head_class in family.auto_map_classes().items():
            auto = getattr(transformers, auto_name)
            assert auto._model_mapping[type(config)] is head_class
