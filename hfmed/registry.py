"""The family table and its registration with the transformers Auto classes.

The table is assembled from the per-family modules in `hfmed/families/` (one `FAMILY = Family(...)` each);
everything generic (Auto registration, `hfmed.hub.save_for_hub`, the pipelines, the training loop, cards)
reads it and names no family.
"""

from transformers import AutoConfig, AutoImageProcessor

from .families import DEFAULT_FAMILY, FAMILIES
from .family import Family, auto_class


def family_for(config_or_model) -> Family:
    """The family of a config or model (by `model_type`), with a clear error for a foreign one."""
    config = getattr(config_or_model, "config", config_or_model)
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    raise ValueError(f"model_type {model_type!r} is not an hfmed family; known: {sorted(FAMILIES)}")


def load_model(folder, trust_remote_code=None, **kwargs):
    """The trained head in a model folder (or Hub id), loaded with its family's head Auto class, through the
    installed classes (never a remote-code prompt, see `hfmed.hub.trust_remote_code_for`)."""
    from transformers import AutoConfig

    from .hub import trust_remote_code_for

    trust = trust_remote_code_for(folder, trust_remote_code)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
    return family_for(config).head_auto_class.from_pretrained(folder, trust_remote_code=trust, **kwargs)


def register_all() -> None:
    """Register every family with AutoConfig, AutoModel, its heads' Auto classes and AutoImageProcessor."""
    for family in FAMILIES.values():
        AutoConfig.register(family.model_type, family.config_class, exist_ok=True)
        for auto_name, model_class in family.auto_map_classes().items():
            auto_class(auto_name).register(family.config_class, model_class, exist_ok=True)
        if family.image_processor_class is not None:
            AutoImageProcessor.register(
                family.config_class,
                image_processor_classes={"torchvision": family.image_processor_class},
                exist_ok=True,
            )


__all__ = ["DEFAULT_FAMILY", "FAMILIES", "Family", "family_for", "load_model", "register_all"]
