"""Hub folders that load with `trust_remote_code=True` on machines without hfmed."""

import inspect
import json
import os
import shutil
from pathlib import Path

from .registry import FAMILIES, family_for


def add_remote_code(folder, config, image_processor) -> Path:
    """Make a saved model folder self-contained: copy the family's source files beside the weights and
    write the `auto_map` entries (AutoConfig, AutoModel, every head's Auto class, AutoImageProcessor).

    The model-folder files import only each other (`from .configuration_x import ...`), so copying the
    modules of the registered classes is all transformers' dynamic loader needs.
    """
    folder = Path(folder)
    family = family_for(config)
    processor_class = type(image_processor)
    named = {"AutoConfig": family.config_class, **family.auto_map_classes(), "AutoImageProcessor": processor_class}
    for cls in set(named.values()):
        source = Path(inspect.getsourcefile(cls))
        shutil.copy2(source, folder / source.name)
    auto_map = {name: f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}" for name, cls in named.items()}
    for file_name, entries in (
        ("config.json", auto_map),
        ("preprocessor_config.json", {"AutoImageProcessor": auto_map["AutoImageProcessor"]}),
    ):
        path = folder / file_name
        data = json.loads(path.read_text())
        data["auto_map"] = {**data.get("auto_map", {}), **entries}
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return folder


def save_for_hub(model, image_processor, save_directory) -> Path:
    """Write `model` and `image_processor` as a self-contained Hub folder.

    The folder holds `config.json`, `model.safetensors`, `preprocessor_config.json` and the family's
    configuration / modeling / image-processing files, with an `auto_map`, so
    `AutoModel.from_pretrained(folder, trust_remote_code=True)` works where hfmed is not installed.
    """
    save_directory = Path(save_directory)
    model.save_pretrained(save_directory, safe_serialization=True)
    image_processor.save_pretrained(save_directory)
    return add_remote_code(save_directory, model.config, image_processor)


def trust_remote_code_for(source, trust_remote_code=None, **hub_kwargs):
    """The `trust_remote_code` value that loads `source` (a folder or Hub id) without a question.

    Run and Hub folders carry an `auto_map`; left at `None`, transformers then *asks* on the terminal
    ("Do you wish to run the custom code? [y/N]") wherever it finds no registered class, e.g. for the video
    processor a pipeline looks for. Library code must never ask, so hfmed's entry points decide first:
    the caller's explicit `True` / `False` stands; an hfmed family gets `False`, i.e. the installed,
    registered classes and none of the folder's copies; a folder with code of a model type hfmed does not
    provide gets a one-line error naming the opt-in; anything else (no custom code, a model instance) is
    returned unchanged. `hub_kwargs` (`revision`, `token`, ...) go to the `config.json` lookup.
    """
    if trust_remote_code is not None or not isinstance(source, (str, os.PathLike)):
        return trust_remote_code
    from transformers import PreTrainedConfig

    try:
        config, _ = PreTrainedConfig.get_config_dict(str(source), **hub_kwargs)
    except (OSError, ValueError):
        return trust_remote_code  # no readable config.json: the loader reports that itself
    model_type = config.get("model_type")
    if model_type in {family.model_type for family in FAMILIES.values()}:
        return False
    if config.get("auto_map"):
        raise ValueError(
            f"{source} holds its own model code (model_type {model_type!r}), which the installed hfmed does not "
            "provide: read that code, then pass trust_remote_code=True to run it"
        )
    return trust_remote_code


__all__ = ["add_remote_code", "save_for_hub", "trust_remote_code_for"]
