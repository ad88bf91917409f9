"""The README's MoVL table of trainable parameters per strategy equals the counts of the real module trees
(meta device: no memory, no download), as `hfmed experiment` counts them (the parameters the optimizer holds)."""

import re
from pathlib import Path

import torch

from hfmed import MoVLForImageClassification, movl_config
from hfmed.experiment import parameter_counts
from hfmed.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
CELL = re.compile(r"^([\d,]+) \(([\d.]+) %\)$")


def readme_table() -> dict[str, list[str]]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## MoVL"):]
    rows = {}
    for line in section[section.index("| strategy | trains |"):].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[2:]
    return rows


def test_readme_parameter_table_matches_the_models():
    recipe = load_recipe(REPO / "configs" / "movl-demo.yaml", check_paths=False)
    table = readme_table()
    assert list(table) == ["lp", "vp", "lp_then_vp", "joint", "movl", "full_finetune"]
    for column, preset in enumerate(("movl-resnet50", "movl-clip-b32")):
        for strategy, cells in table.items():
            with torch.device("meta"):
                model = MoVLForImageClassification(movl_config(preset, strategy=strategy, num_labels=9))
            assert model.config.image_size == 224
            trainable, total = parameter_counts(model, recipe)
            count, percent = CELL.match(cells[column]).groups()
            assert int(count.replace(",", "")) == trainable, (preset, strategy)
            decimals = len(percent.partition(".")[2])
            assert float(percent) == round(100 * trainable / total, decimals), (preset, strategy)
