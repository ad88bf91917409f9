"""Training recipes: one YAML per published variant, validated on load.

A recipe has five sections (`model`, `processor`, `data`, `training`, `evaluation`) plus `hub`.
Unknown keys, wrong types and missing data paths are errors that name the key and the file.
Overrides use dotted keys: `training.epochs=3 data.args.seed=1`.
"""

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file, the key and the fix."""


@dataclass
class ModelSection:
    family: str = ""
    """hfmed family name (a key of `hfmed.registry.FAMILIES`); default `hfmed.families.DEFAULT_FAMILY`."""
    preset: str = ""
    """Named architecture preset of that family; default the family's `default_preset`."""
    config: dict = field(default_factory=dict)
    """Config field overrides on top of the preset."""
    pretrained_backbones: bool = False
    """Start from ImageNet CNN weights (`from_pretrained_backbones`; needs the Hub)."""
    backbone_weights: str | None = None
    """With `pretrained_backbones`: local weights for `from_pretrained_backbones` (a file or folder) instead of
    the Hub, or `data-source` for the backbone the data builder pretrains on its source set (trained once,
    cached; builders with a source domain such as `synthetic_shift`)."""
    init_from: str | None = None
    """A local folder or Hub id of a checkpoint to fine-tune instead of a fresh model."""


@dataclass
class DataSection:
    builder: str = "synthetic_ct"
    """Dataset builder (a key of `hfmed.data.BUILDERS`)."""
    args: dict = field(default_factory=dict)
    """Keyword arguments of the builder (paths, split fractions, seed)."""
    augment: dict = field(default_factory=dict)
    """Train-time augmentations (see `hfmed.data.transforms.make_transform`)."""
    balanced_sampler: bool = False
    """Sample training examples by inverse label frequency (rare labels such as epidural)."""
    num_workers: int = 0
    """DataLoader worker processes: decoding happens there, lazily."""


@dataclass
class TrainingSection:
    output_dir: str = ""
    """The run folder; default `runs/<family>`."""
    seed: int = 0
    epochs: int = 1
    max_steps: int | None = None
    """Stop after this many optimizer steps (the schedule then spans them); None: `epochs` decide."""
    batch_size: int = 16
    eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    """"no", "fp16" or "bf16"."""
    learning_rate: float = 3e-4
    optimizer: str = "adamw"
    """"adamw" (decoupled weight decay; our default) or "adam" (weight decay as an L2 term in the
    gradient, what torch.optim.Adam does and some official code uses)."""
    lr_scheduler: str = "cosine"
    """"cosine" (linear warmup then cosine decay to 0; our default) or "constant" (warmup, then the
    learning rate stays, for official code that uses no schedule)."""
    module_learning_rates: dict = field(default_factory=dict)
    """Learning rate per learning-rate group the model declares (`learning_rate_groups()`, see `hfmed.policy`)
    or per parameter-name prefix, e.g. {"head": 5e-3}; the longest match wins."""
    weight_decay: float = 0.05
    """AdamW weight decay; never applied to 0-/1-D parameters (biases, norm weights) nor to the names the model
    declares in `no_weight_decay()`."""
    adam_betas: list = field(default_factory=lambda: [0.9, 0.999])
    warmup_ratio: float = 0.05
    max_grad_norm: float | None = 1.0
    save_every_steps: int | None = None
    """Checkpoint (`save_state`) every N optimizer steps; None: at the end of each epoch only."""
    checkpoints_total_limit: int | None = 2
    report_to: list = field(default_factory=list)
    """Trackers, e.g. ["tensorboard"]."""
    gradient_checkpointing: bool = False
    pos_weight: Any = None
    """Per-label positive weights of the loss: null, "auto" (negatives / positives on train), or a list."""
    log_every_steps: int = 10


@dataclass
class EvaluationSection:
    metric: str = "mean_auroc"
    """Validation metric that selects the best checkpoint."""
    greater_is_better: bool = True
    threshold_method: str = "youden"
    """How per-label decision thresholds are chosen on validation: "youden" or "sensitivity"."""
    target_sensitivity: float = 0.9
    """Used when threshold_method is "sensitivity"."""


@dataclass
class HubSection:
    repo_id: str | None = None
    private: bool = False
    license: str = "apache-2.0"


@dataclass
class Recipe:
    model: ModelSection = field(default_factory=ModelSection)
    processor: dict = field(default_factory=dict)
    """Image-processor keyword arguments (size, windows, mean/std...)."""
    data: DataSection = field(default_factory=DataSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    hub: HubSection = field(default_factory=HubSection)
    name: str | None = None
    source: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


MIXED_PRECISION = ("no", "fp16", "bf16")
THRESHOLD_METHODS = ("youden", "sensitivity")
OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULERS = ("cosine", "constant")
DATA_SOURCE_WEIGHTS = "data-source"
"""`model.backbone_weights` value: the backbone pretrained on the data builder's source set."""


def _type_ok(value, annotation) -> bool:
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    check = origin or annotation
    return isinstance(value, check)


_FLOAT_LITERAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _yaml_float(value, annotation):
    # YAML 1.1 reads `1e-4` (no dot) as a string; accept that exact float spelling for float fields.
    wants_float = annotation is float or float in typing.get_args(annotation)
    if wants_float and isinstance(value, str) and _FLOAT_LITERAL.match(value):
        return float(value)
    return value


def _build(cls, raw, where: str, source: str):
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: '{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RecipeError(
            f"{source}: unknown key '{where + '.' if where else ''}{unknown[0]}'; allowed keys: {sorted(known)}"
        )
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        key = f"{where}.{name}" if where else name
        value = _yaml_float(value, hint)
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, key, source)
        elif not _type_ok(value, hint):
            shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
            if isinstance(value, bool) and _type_ok("text", hint):
                # YAML 1.1 reads a bare no / yes / off / on as a boolean: `mixed_precision: no` is False.
                raise RecipeError(
                    f"{source}: '{key}' must be {shown}, but YAML read the bare word as the boolean {value}: "
                    f"quote it (e.g. {name}: 'no', or {key}='no' on the command line)"
                )
            raise RecipeError(f"{source}: '{key}' must be {shown}, got {type(value).__name__} {value!r}")
        else:
            values[name] = float(value) if hint is float else value
    return cls(**values)


def _parse_override(text: str):
    if "=" not in text:
        raise RecipeError(f"override {text!r} must look like section.key=value (e.g. training.epochs=3)")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def apply_overrides(raw: dict, overrides) -> dict:
    for text in overrides or ():
        path, value = _parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {text!r}: '{part}' is not a section")
        node[path[-1]] = value
    return raw


def load_recipe(path, overrides=(), check_paths: bool = True) -> Recipe:
    """Read, override and validate a recipe YAML. `check_paths=False` skips data-path existence checks."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist; see configs/ for the shipped recipes")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    raw.setdefault("name", path.stem)
    raw["source"] = str(path)
    return validate(_build(Recipe, raw, "", str(path)), check_paths=check_paths)


def validate(recipe: Recipe, check_paths: bool = True) -> Recipe:
    source = recipe.source or "recipe"
    from .registry import DEFAULT_FAMILY, FAMILIES

    recipe.model.family = recipe.model.family or DEFAULT_FAMILY
    if recipe.model.family not in FAMILIES:
        raise RecipeError(f"{source}: model.family {recipe.model.family!r} is unknown; choose from {sorted(FAMILIES)}")
    family = FAMILIES[recipe.model.family]
    recipe.model.preset = recipe.model.preset or family.default_preset
    recipe.training.output_dir = recipe.training.output_dir or f"runs/{family.name}"
    presets = family.presets
    if recipe.model.preset not in presets:
        raise RecipeError(f"{source}: model.preset {recipe.model.preset!r} is unknown; choose from {sorted(presets)}")
    training = recipe.training
    if training.mixed_precision not in MIXED_PRECISION:
        raise RecipeError(f"{source}: training.mixed_precision must be one of {list(MIXED_PRECISION)}")
    if training.optimizer not in OPTIMIZERS:
        raise RecipeError(f"{source}: training.optimizer must be one of {list(OPTIMIZERS)}")
    if training.lr_scheduler not in LR_SCHEDULERS:
        raise RecipeError(f"{source}: training.lr_scheduler must be one of {list(LR_SCHEDULERS)}")
    for key in ("epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "log_every_steps"):
        if getattr(training, key) < 1:
            raise RecipeError(f"{source}: training.{key} must be >= 1, got {getattr(training, key)}")
    if training.learning_rate <= 0:
        raise RecipeError(f"{source}: training.learning_rate must be > 0")
    if not 0 <= training.warmup_ratio < 1:
        raise RecipeError(f"{source}: training.warmup_ratio must be in [0, 1)")
    if training.pos_weight not in (None, "auto") and not isinstance(training.pos_weight, list):
        raise RecipeError(f"{source}: training.pos_weight must be null, 'auto' or a list of floats")
    if recipe.model.backbone_weights is not None and not recipe.model.pretrained_backbones:
        raise RecipeError(
            f"{source}: model.backbone_weights is set but model.pretrained_backbones is false: set "
            "model.pretrained_backbones=true to load them, or drop model.backbone_weights"
        )
    if recipe.model.backbone_weights == DATA_SOURCE_WEIGHTS:
        from .data import BUILDER_SPECS

        spec = BUILDER_SPECS.get(recipe.data.builder)
        if spec is not None and spec.source_backbone is None:
            with_source = sorted(name for name, b in BUILDER_SPECS.items() if b.source_backbone is not None)
            raise RecipeError(
                f"{source}: model.backbone_weights={DATA_SOURCE_WEIGHTS} but the {recipe.data.builder} builder has "
                f"no source set to pretrain on: use a builder that has one ({with_source}) or real weights"
            )
    if recipe.evaluation.threshold_method not in THRESHOLD_METHODS:
        raise RecipeError(f"{source}: evaluation.threshold_method must be one of {list(THRESHOLD_METHODS)}")
    if check_paths:
        from .data import BUILDER_SPECS  # the builder declares its path arguments

        spec = BUILDER_SPECS.get(recipe.data.builder)
        for arg in spec.path_args if spec else ():
            value = recipe.data.args.get(arg)
            if value is None:
                raise RecipeError(f"{source}: data.args.{arg} is required by the {recipe.data.builder} builder")
            if not Path(value).expanduser().exists():
                raise RecipeError(
                    f"{source}: data.args.{arg} = {value} does not exist; download the dataset there or "
                    f"override it: data.args.{arg}=/path/to/data"
                )
    return recipe


def dump_recipe(recipe: Recipe, path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))


__all__ = ["Recipe", "RecipeError", "apply_overrides", "dump_recipe", "load_recipe", "validate"]
