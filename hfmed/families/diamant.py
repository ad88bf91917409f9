"""DIAMANT (arXiv 2304.14571): image and frozen-DINO attention-map encoders with a U-Net decoder; semantic
segmentation. Everything about the family outside its model folder `hfmed/models/diamant/`, including the
training policy that caches the frozen ViT's attention maps (`AttentionMapCache`, `DIAMANTTrainingPolicy`)."""

import hashlib
import weakref
from collections import OrderedDict
from pathlib import Path

import torch

from ..family import REPO, Family, FamilyCard, Paper
from ..models.diamant import (
    PRESETS,
    DIAMANTConfig,
    DIAMANTForSemanticSegmentation,
    DIAMANTImageProcessor,
    DIAMANTModel,
    diamant_config,
)
from ..policy import TrainingPolicy, parameter_counts

PAPERS = [
    Paper(
        title="DIAMANT: Dual Image-Attention Map Encoders For Medical Image Segmentation",
        arxiv="2304.14571",
        bibtex=(
            "@article{yeganeh2023diamant,\n"
            "  title={DIAMANT: Dual Image-Attention Map Encoders For Medical Image Segmentation},\n"
            "  author={Yeganeh, Yousef and Farshad, Azade and Weinberger, Peter and Ahmadi, Seyed-Ahmad and\n"
            "          Adeli, Ehsan and Navab, Nassir},\n"
            "  journal={arXiv preprint arXiv:2304.14571},\n"
            "  year={2023}\n"
            "}"
        ),
        summary=(
            "A purely convolutional segmenter with two encoders: one reads the image, the other the "
            "self-attention maps of the same image from a frozen self-supervised DINO ViT (one channel per "
            "head); a U-Net decoder predicts the mask. It beats U-Net and transformer segmenters on two public "
            "medical datasets at lower compute."
        ),
    )
]

USAGE = '''\
The frozen ViT inside this checkpoint is the one `config.pretrained_dino` names (DINO ViT-S/8,
`vit_small_patch8_224.dino`, for the published-size recipes). `pretrained_dino: null` means a randomly initialised
ViT: the demo recipe (`configs/diamant-demo.yaml`) trains offline, where no DINO weights can be downloaded, so
its frozen ViT's attention maps are fixed functions of the image but not DINO's learned saliency.

### A pipeline

```python
from transformers import pipeline

pipe = pipeline("image-segmentation", model="{repo_id}", trust_remote_code=True)
pipe("{example}")  # one row per class present: label and a 0/255 mask at the image's size
```

### Without hfmed (transformers + timm)

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

model = AutoModelForSemanticSegmentation.from_pretrained("{repo_id}", trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
image = Image.open("{example}")
with torch.no_grad():
    outputs = model(**processor(image, return_tensors="pt"), output_attention_maps=True)
mask = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]  # class per pixel
maps = outputs.attention_maps  # (1, heads, H, W): the frozen ViT's CLS attention per head, in [0, 1]
```

### Fine-tuning with `Trainer`

```python
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, Trainer, TrainingArguments
from hfmed.data import build_dataset
from hfmed.data.transforms import collate, make_transform
from hfmed.metrics import make_compute_metrics

model = AutoModelForSemanticSegmentation.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True, mask_binarize_threshold=128)
data = build_dataset({dataset})  # rows: path, mask_path (0/255 masks: hence the threshold above)
trainer = Trainer(
    model=model,
    args=TrainingArguments("out", eval_strategy="epoch", remove_unused_columns=False, label_names=["labels"]),
    train_dataset=data["train"].with_transform(make_transform(processor, {{"hflip": 0.5}}, train=True)),
    eval_dataset=data["validation"].with_transform(make_transform(processor)),
    data_collator=collate,
    processing_class=processor,
    compute_metrics=make_compute_metrics(list(model.config.id2label.values()), task="semantic_segmentation"),
)
trainer.train()
```
'''


# --- the attention-map cache ---------------------------------------------------------------------------
#
# A cache of a frozen ViT's attention maps, keyed so that a stale entry can never be returned.
#
# DIAMANT (arXiv 2304.14571) feeds the attention maps of a frozen DINO ViT to its second encoder. The ViT never
# trains, so the maps of an image are the same in every epoch; recomputing them is most of the forward's cost at
# ViT-S/8 on a CPU. `AttentionMapCache.maps(model, pixel_values)` returns exactly what
# `model.get_attention_maps(pixel_values)` returns, computing only the images it has not seen:
#
# - key of one image: SHA-256 of the model's `dino_fingerprint()` (the DINO weights and the config fields the maps
#   depend on) and of the processed image itself (`pixel_values[i]`: dtype, shape, bytes, after resizing,
#   normalisation and any augmentation). Other weights, another preset, another processor setting or another
#   augmentation draw give another key, so a hit is always the same computation.
# - the fingerprint hashes every DINO tensor; it is memoised per model and recomputed whenever any DINO tensor may
#   have changed: before every use each tensor is compared by identity (a weak reference: a new tensor at a
#   reused address is not taken for the old one), storage address and in-place version counter, so editing,
#   loading or replacing weights between two batches is seen at once.
# - maps are stored at the patch grid (one value per patch: DINO's maps are upsampled by nearest neighbours, so
#   each patch is a constant block) when that gives the full map back exactly, else whole; on the CPU, least
#   recently used entries evicted beyond `max_bytes`.
#
# In memory only, per process: a new process recomputes the maps once (our choice; maps of 1000 images at
# 224 px take ~19 MB at the patch grid).


def _state(module: torch.nn.Module) -> list:
    """(name, weak reference, storage address, in-place version, shape, dtype) of every tensor of `module`."""
    return [
        (name, weakref.ref(tensor), tensor.data_ptr(), tensor._version, tuple(tensor.shape), tensor.dtype)
        for name, tensor in module.state_dict(keep_vars=True).items()
    ]


def _unchanged(recorded: list, module: torch.nn.Module) -> bool:
    """Whether every tensor of `module` is the very object recorded (not a new one at a reused address), at the
    same storage and in-place version: otherwise a weight may have changed."""
    current = module.state_dict(keep_vars=True)
    if list(current) != [entry[0] for entry in recorded]:
        return False
    for (name, ref, pointer, version, shape, dtype) in recorded:
        tensor = current[name]
        if ref() is not tensor or tensor.data_ptr() != pointer or tensor._version != version:
            return False
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            return False
    return True


class AttentionMapCache:
    """Attention maps of a DIAMANT model's frozen ViT, per processed image (how, and why a hit is never stale:
    the notes above)."""

    def __init__(self, max_bytes: int = 1 << 30):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, tuple[torch.Tensor, int]] = OrderedDict()
        self._bytes = 0
        self._fingerprints: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self._fingerprints.clear()

    def fingerprint(self, model) -> str:
        """`model.dino_fingerprint()`, memoised per model until a DINO tensor may have changed (`_unchanged`)."""
        base = _base(model)
        known = self._fingerprints.get(id(base))
        if known is None or known[0]() is not base or not _unchanged(known[1], base.dino):
            known = (weakref.ref(base), _state(base.dino), base.dino_fingerprint())
            self._fingerprints = {k: v for k, v in self._fingerprints.items() if v[0]() is not None}
            self._fingerprints[id(base)] = known
        return known[2]

    def keys(self, model, pixel_values: torch.Tensor) -> list[str]:
        """One key per image of `pixel_values` (batch, channels, height, width)."""
        prefix = hashlib.sha256(self.fingerprint(model).encode())
        images = pixel_values.detach().to("cpu").contiguous()
        keys = []
        for image in images:
            digest = prefix.copy()
            digest.update(f"{image.dtype}:{tuple(image.shape)}".encode())
            digest.update(image.view(torch.uint8).numpy().tobytes() if image.numel() else b"")
            keys.append(digest.hexdigest())
        return keys

    def maps(self, model, pixel_values: torch.Tensor) -> torch.Tensor:
        """`model.get_attention_maps(pixel_values)`, from the cache where it has them; `(batch, heads, H, W)` on
        the device and in the dtype the model returns."""
        base = _base(model)
        keys = self.keys(model, pixel_values)
        found: dict[int, tuple[torch.Tensor, int]] = {}
        missing = []
        for index, key in enumerate(keys):
            entry = self._entries.get(key)
            if entry is None:
                missing.append(index)
                continue
            self._entries.move_to_end(key)
            found[index] = entry
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            computed = base.get_attention_maps(pixel_values[missing])
            for position, index in enumerate(missing):
                found[index] = (computed[position], 1)
                self._store(keys[index], computed[position], base.config.patch_size)
            device, dtype = computed.device, computed.dtype
        else:
            device, dtype = pixel_values.device, pixel_values.dtype
        # Patch-grid entries are expanded where they are used (on the accelerator, not before the copy).
        return torch.stack([_expand(found[i][0].to(device=device, dtype=dtype), found[i][1]) for i in range(len(keys))])

    def _store(self, key: str, maps: torch.Tensor, patch_size: int) -> None:
        maps = maps.detach().to("cpu")
        compact, factor = maps[..., ::patch_size, ::patch_size].clone(), patch_size
        if not torch.equal(_expand(compact, factor), maps):
            compact, factor = maps.clone(), 1
        size = compact.numel() * compact.element_size()
        if size > self.max_bytes:
            return
        if key in self._entries:
            return
        self._entries[key] = (compact, factor)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (old, _) = self._entries.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()


def _expand(compact: torch.Tensor, factor: int) -> torch.Tensor:
    if factor == 1:
        return compact
    return compact.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def _base(model):
    """The `DIAMANTModel` of a head (or the model itself)."""
    base = getattr(model, "diamant", model)
    if getattr(base, "dino", None) is None:
        raise ValueError("this model has no DINO ViT (use_attention_encoder=False), so there are no maps to cache")
    return base


class DIAMANTTrainingPolicy(TrainingPolicy):
    """DIAMANT's frozen ViT never trains: its parameters are out of the optimizer, and every batch gets its
    attention maps from an `AttentionMapCache` (keyed by the processed image and the ViT's `dino_fingerprint()`,
    so a stale map is impossible), which computes each image's maps once instead of in every epoch. A model
    without the ViT (`use_attention_encoder=False`) gets its batches unchanged.

    Args:
        cache_attention_maps: `False` passes no maps (the model computes them in every forward).
        max_cache_bytes: the cache's memory bound (least recently used maps dropped beyond it); our choice.
    """

    def __init__(self, cache_attention_maps: bool = True, max_cache_bytes: int = 1 << 30):
        self.cache = AttentionMapCache(max_cache_bytes) if cache_attention_maps else None

    def frozen(self, model) -> tuple[str, ...]:
        base = getattr(model, "diamant", model)
        dino = getattr(base, "dino", None)
        vit = tuple(name for name, module in model.named_modules() if dino is not None and module is dino)
        return (*super().frozen(model), *vit)

    def prepare_batch(self, model, batch: dict) -> dict:
        base = getattr(model, "diamant", model)
        if self.cache is None or getattr(base, "dino", None) is None or batch.get("attention_maps") is not None:
            return batch
        return {**batch, "attention_maps": self.cache.maps(model, batch["pixel_values"])}


# `hfmed experiment configs/diamant-demo.yaml`: the paper's main comparison, DIAMANT against the image-only U-Net
# of the same widths (`use_attention_encoder=False`), and the attention-only network (`use_image_encoder=False`).
EXPERIMENTS = {
    "diamant": (),
    "image_only_unet": ("model.config.use_attention_encoder=false",),
    "attention_only": ("model.config.use_image_encoder=false", "model.config.skip_connections=attention"),
}


def card_model_facts(model) -> list[str]:
    """The card's facts about a DIAMANT model: its encoders, where its frozen ViT's weights come from, and
    trainable vs total parameters (what the optimizer holds: all but the frozen ViT)."""
    config, base = model.config, model.diamant
    trainable, total = parameter_counts(model, DIAMANTTrainingPolicy(cache_attention_maps=False))
    encoders = " + ".join(name for name, used in (("image encoder", config.use_image_encoder),
                                                  ("attention-map encoder", config.use_attention_encoder)) if used)
    facts = [f"Encoders: {encoders}; skip connections from `{config.skip_connections}`; a U-Net decoder"]
    if base.dino is None:
        facts.append("Frozen ViT: none (`use_attention_encoder=False`: the image-only U-Net)")
    else:
        vit = sum(param.numel() for param in base.dino.parameters())
        source = (
            f"the DINO weights `{config.pretrained_dino}` (loaded by `from_pretrained_backbones`)"
            if config.pretrained_dino else
            "random initialisation (`pretrained_dino: null`, as the offline demo: its attention maps are fixed "
            "functions of the image, not DINO's learned saliency)"
        )  # fmt: skip
        facts.append(f"Frozen ViT ({vit:,} parameters, patch {config.patch_size}): {source}")
    facts.append(f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f} %)"
                 + (": everything but the frozen ViT" if base.dino is not None else ""))
    return facts


def _demo_image() -> str | None:
    # No real polyp image ships in a package: scikit-image's real photograph retina.jpg (else cell.png) when
    # scikit-image is installed (found without importing it; the `dev` extra `make demo` installs has it, the
    # package itself does not depend on it), else the Space's synthetic polyp example.
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.origin:
        for name in ("retina.jpg", "cell.png"):
            path = Path(spec.origin).parent / "data" / name
            if path.is_file():
                return str(path)
    found = sorted((REPO / "spaces" / "diamant" / "examples").glob("*.jpg"))
    return str(found[0]) if found else None


# Segmentation: the processor also reads masks, so it needs the class count, the ignore index and the
# multiple the model's input sides must have (patch size and poolings).
FAMILY = Family(
    name="diamant",
    config_class=DIAMANTConfig,
    base_model_class=DIAMANTModel,
    heads={"AutoModelForSemanticSegmentation": DIAMANTForSemanticSegmentation},
    image_processor_class=DIAMANTImageProcessor,
    config_factory=diamant_config,
    presets=PRESETS,
    default_preset="diamant-vits8",
    head="AutoModelForSemanticSegmentation",
    processor_kwargs=lambda config: {
        "size": {"height": config.image_size, "width": config.image_size},
        "num_labels": config.num_labels,
        "ignore_index": config.semantic_loss_ignore_index,
        "size_divisor": config.size_multiple,
    },
    card=FamilyCard(
        papers=PAPERS,
        tags=["image-segmentation", "semantic-segmentation", "endoscopy", "polyp", "dermoscopy", "dino"],
        example_input="polyp.jpg",
        example_dataset='"seg_folder", root="data/Kvasir-SEG"',
        usage=USAGE,
        pipeline_tag="image-segmentation",
    ),
    demo_recipe="configs/diamant-demo.yaml",
    # hfmed's segmentation pipeline: DICOM and other raw inputs through the processor, and a sliding window over
    # images larger than the model's input (transformers' image-segmentation pipeline shrinks them).
    pipeline_task="medical-image-segmentation",
    demo_input=_demo_image,
    training_policy=DIAMANTTrainingPolicy(),
    experiments=EXPERIMENTS,
    card_model_facts=card_model_facts,
)

__all__ = [
    "EXPERIMENTS", "FAMILY", "PAPERS", "USAGE", "AttentionMapCache", "DIAMANTTrainingPolicy", "card_model_facts"
]
