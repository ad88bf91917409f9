"""`Builder`: what each builder module declares about itself, for `hfmed.data.BUILDERS` and recipe checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Builder:
    """A dataset builder, declared by its module (`hfmed/data/<name>.py` defines `BUILDER`)."""

    name: str
    """The builder key of a recipe's `data.builder` (and the module's name)."""
    load: Callable
    """`(**args) -> DatasetDict`: the recipe's `data.args` are its keyword arguments."""
    path_args: tuple[str, ...] = ()
    """The arguments that are paths to data that must exist before a run starts (checked by the recipe)."""
    label_regions: dict | None = None
    """Where each finding is drawn, `{label: (y0, x0, y1, x1)}` in image fractions (synthetic twins with
    findings in fixed boxes), for `hfmed.interpret`; `None` where unknown."""
    source_backbone: Callable | None = None
    """`(config, **args) -> path`: weights of the config's backbone pretrained on the builder's source set
    (trained once, cached), for a recipe's `model.backbone_weights: data-source` (twins with a source domain);
    `None` where the builder has no source set."""


__all__ = ["Builder"]
