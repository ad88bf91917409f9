"""One module per model family: `hfmed/families/<name>.py` defines `FAMILY`, a `hfmed.family.Family`.

The family table is assembled from the modules of this package, so adding a family adds a module here (and
its model folder); no table elsewhere is edited. `DEFAULT_FAMILY` is the one a recipe without `model.family`
and `hfmed demo` without a recipe use.
"""

import importlib
import pkgutil

from ..family import Family

DEFAULT_FAMILY = "scopeformer"


def _discover() -> dict[str, Family]:
    families = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if not isinstance(family, Family):
            raise TypeError(f"{module.__name__} must define FAMILY = Family(...)")
        if family.name != info.name:
            raise ValueError(f"{module.__name__}: FAMILY.name is {family.name!r}; name the module after the family")
        families[family.name] = family
    return families


FAMILIES: dict[str, Family] = _discover()

__all__ = ["DEFAULT_FAMILY", "FAMILIES"]
