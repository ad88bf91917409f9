"""Hub folders that load with `trust_remote_code=True` on machines without hfmed."""

import json
from pathlib import Path

from .registry import family_for


def save_for_hub(model, image_processor, save_directory) -> Path:
    """Write `model` and `image_processor` as a self-contained Hub folder.

    The folder holds `config.json`, `model.safetensors`, `preprocessor_config.json` and the family's
    configuration / modeling / image-processing files, with an `auto_map` for AutoConfig, AutoModel, every
    head's Auto class and AutoImageProcessor, so `AutoModel.from_pretrained(folder, trust_remote_code=True)`
    works where hfmed is not installed.
    """
    family = family_for(model)
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    classes = [type(model.config), type(model), type(image_processor)]
    saved_auto = {cls: cls.__dict__.get("_auto_class") for cls in classes}
    try:
        # `register_for_auto_class` is what makes save_pretrained copy the source files; it is class state,
        # so it is restored afterwards to keep ordinary save_pretrained calls free of remote code.
        type(model.config).register_for_auto_class("AutoConfig")
        head_auto = next(name for name, cls in family.auto_map_classes().items() if cls is type(model))
        type(model).register_for_auto_class(head_auto)
        type(image_processor).register_for_auto_class("AutoImageProcessor")
        model.save_pretrained(save_directory, safe_serialization=True)
        image_processor.save_pretrained(save_directory)
    finally:
        for cls, value in saved_auto.items():
            if value is None:
                cls._auto_class = None
            else:
                cls._auto_class = value

    module = type(model).__module__.rsplit(".", 1)[-1]
    processor_module = type(image_processor).__module__.rsplit(".", 1)[-1]
    config_path = save_directory / "config.json"
    config = json.loads(config_path.read_text())
    auto_map = config.setdefault("auto_map", {})
    for auto_name, cls in family.auto_map_classes().items():
        auto_map[auto_name] = f"{module}.{cls.__name__}"
    auto_map["AutoImageProcessor"] = f"{processor_module}.{type(image_processor).__name__}"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return save_directory


__all__ = ["save_for_hub"]
