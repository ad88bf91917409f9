"""What a model family is: the `Family` record each `hfmed/families/<name>.py` module defines as `FAMILY`.

A family is its model folder (`hfmed/models/<name>/`: config, base model, heads, image processor) plus the
facts that live outside it and are listed here: its Auto classes *by name*, presets, card facts (papers, tags,
usage template, pipeline tag), demo recipe, the hfmed pipeline that reads its inputs and its training policy.
Everything generic (Auto registration, the Hub folder, the training loop, cards, CLI, pipelines) reads these
records; none of it names a family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import transformers

from .policy import TrainingPolicy

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv: str
    bibtex: str
    summary: str


@dataclass(frozen=True)
class FamilyCard:
    """The family's facts on its model card."""

    papers: list
    tags: list
    """Hub tags beyond hfmed / family / medical (modality, anatomy, task)."""
    example_input: str
    """A file name the usage snippets classify."""
    example_dataset: str
    """`build_dataset` call arguments shown in the Trainer snippet."""
    usage: str = ""
    """The usage section (a template with {repo_id}, {example}, {dataset}); empty: the image one."""
    pipeline_tag: str | None = "image-classification"
    """The Hub pipeline tag; `None` where no Hub task fits (3-D volume regression)."""
    input_kind: str = "image"
    """What one input is, for the intended-use sentence ("image", "volume")."""


@dataclass(frozen=True)
class Family:
    """A model family: config, base model, task heads (keyed by Auto class name), image processor, and the
    facts about it that live outside its model folder."""

    name: str
    config_class: type
    base_model_class: type
    heads: dict = field(default_factory=dict)
    """Auto class name (any `transformers.AutoModelFor...`) -> head class. Registration, the Hub `auto_map`
    and everything that loads a model read the Auto class from here, by name."""
    image_processor_class: type | None = None
    config_factory: Callable | None = None
    """`(preset, **overrides) -> config`."""
    presets: dict = field(default_factory=dict)
    """Named presets of the config (architecture sizes); one of them ends in "-tiny" (tests)."""
    default_preset: str = ""
    """The preset of a recipe that names none."""
    head: str = "AutoModelForImageClassification"
    """The Auto class of the head that training and the Hub use."""
    processor_kwargs: Callable | None = None
    """`(config) -> dict`: the image processor arguments a config implies (input size). Default: a square
    `size` of `config.image_size`, what the 2-D families need."""
    card: FamilyCard | None = None
    """The model card's facts about the family."""
    demo_recipe: str = ""
    """The demo recipe, relative to the repository (`configs/<name>-demo.yaml`): minutes on 2 CPU cores."""
    pipeline_task: str = "medical-image-classification"
    """The hfmed pipeline task that reads this family's raw inputs (`hfmed.pipelines`)."""
    demo_input: Callable[[], str | None] | None = None
    """`() -> path`: a real file the `hfmed demo` command predicts on (None: no example prediction)."""
    training_policy: TrainingPolicy = field(default_factory=TrainingPolicy)
    """What trains, how and when (no-decay, learning-rate groups, frozen parameters, epoch hook, loss);
    see `hfmed.policy.TrainingPolicy`."""
    card_model_facts: Callable | None = None
    """`(model) -> list[str]`: facts about one trained model for its card, one line each (what its parts are,
    which of them train and how many parameters that is: `hfmed.policy.parameter_counts`). The card calls it on
    a model built from the checkpoint's config on the meta device (shapes, no weights). `None`: no such section."""
    experiments: dict = field(default_factory=dict)
    """Variant name -> recipe overrides (`"section.key=value"` strings, as on the command line): the variants
    `hfmed experiment RECIPE` trains on the same data and compares in one table (e.g. a method's strategies
    and full fine-tuning as the reference); empty: the family has none."""
    pending: tuple = ()
    """Parts of a complete family not written yet, named as `tests/test_families.py` names them ("demo
    recipe", "Space", "card facts"), while the issue that adds them is open: the completeness test accepts
    exactly these gaps and fails once one of them is filled, so the entry cannot go stale."""

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    def make_config(self, preset: str, **overrides):
        return self.config_factory(preset, **overrides)

    def processor_kwargs_for(self, config) -> dict:
        if self.processor_kwargs is not None:
            return dict(self.processor_kwargs(config))
        return {"size": {"height": config.image_size, "width": config.image_size}}

    @property
    def head_class(self) -> type:
        return self.heads[self.head]

    @property
    def head_auto_class(self) -> type:
        """The transformers Auto class (e.g. `AutoModelForImageClassification`) that loads the head."""
        return auto_class(self.head)

    def auto_map_classes(self) -> dict:
        """Auto class name -> class, for every Auto class this family answers."""
        return {"AutoModel": self.base_model_class, **self.heads}

    @property
    def demo_recipe_path(self) -> Path:
        return REPO / self.demo_recipe

    @property
    def space_dir(self) -> Path:
        """The family's Gradio Space folder (`spaces/<name>/`)."""
        return REPO / "spaces" / self.name


def auto_class(name: str) -> type:
    """A transformers Auto class by name (`"AutoModelForSemanticSegmentation"` ...), with a clear error."""
    cls = getattr(transformers, name, None)
    if cls is None or not name.startswith("Auto"):
        raise ValueError(f"{name!r} is not a transformers Auto class (e.g. 'AutoModelForImageClassification')")
    return cls


__all__ = ["Family", "FamilyCard", "Paper", "auto_class"]
