"""PyTorch MoVL: a visual prompt and a linear probe around a frozen pretrained backbone.

Paper: Tian et al., "MoVL: Exploring Fusion Strategies for the Domain-Adaptive Application of Pretrained Models
in Medical Imaging Tasks", arXiv 2405.07411 (2024). No official code; only the abstract is known.

What the paper states: the backbone (ResNet or CLIP) is frozen; a visual prompt (VP) on the input and a linear
probe (LP) on the output are trained, coupled by a strategy; the loss is the classification loss plus a
discrepancy loss between the prompted and the original image.

Our choices, not the paper's (fields of `MoVLConfig`):

- The prompt is Bahng et al. 2022's pixel-space prompt (`padding`: four border strips; also `fixed_patch` and
  `full`), added to the *normalised* image, so it sits on the input where the paper puts it.
- Backbones: a timm CNN by name (global-pooled features, `forward_features` + `forward_head(pre_logits=True)`)
  or transformers' `CLIPVisionModelWithProjection` (the projected image embedding). Built without weights; the
  ImageNet / CLIP weights come through `from_pretrained_backbones`.
- A frozen backbone has `requires_grad=False` and stays in eval mode while the model trains (BatchNorm
  statistics never move); the prompt still gets gradients through it.
- Loss: cross-entropy (BCE per label for multi-label sets) + `discrepancy_weight` x the distance between the
  features of the prompted and of the plain image (`mse` / `cosine`), or the KL divergence between their
  predictive distributions (`kl`); the plain branch runs without gradient.

Training policy (the training loop's extension point; plain methods of `MoVLPreTrainedModel`):

- `training_stage(epoch)` says what trains at a 0-based epoch (`MoVLTrainingStage`: parameter groups and whether
  the discrepancy term is on); `set_training_stage(epoch)` applies it (sets `requires_grad`, switches the
  discrepancy term). Call it at every epoch boundary. A new model, and one loaded with `from_pretrained`, is in
  the strategy's last stage, so a plain `Trainer` fine-tunes prompt + probe of a `movl` checkpoint.
- `optimizer_parameter_names()`: every parameter that trains in some stage; build the optimizer over these
  once. A parameter frozen in the current stage has no gradient, so (Adam)W skips it, weight decay included.
- `parameter_groups()`: names per group (`prompt`, `head`, `backbone`) for separate learning rates;
  `no_weight_decay()`: the prompt (Bahng trains it without weight decay).
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModelWithProjection, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_movl import MoVLConfig

PARAMETER_GROUPS = ("prompt", "head", "backbone")


@dataclass
class MoVLModelOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor`):
        The backbone's last features: a timm CNN's final feature map `(batch_size, channels, height, width)`
        (`forward_features`), or CLIP's final tokens `(batch_size, 1 + num_patches, clip hidden_size)`.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, config.hidden_size)`):
        The timm CNN's global-pooled feature, or CLIP's projected image embedding: what the probe reads.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        timm: each stage's feature map (`forward_intermediates`); CLIP: the embeddings and every layer's
        output, `num_hidden_layers + 1` tensors of `(batch_size, 1 + num_patches, clip hidden_size)`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MoVLImageClassifierOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
        `classification_loss + config.discrepancy_weight * discrepancy_loss` (the second term only in a stage
        with the discrepancy on, see `MoVLPreTrainedModel.training_stage`).
    classification_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
        Cross-entropy over classes, or the mean per-label BCE for `multi_label_classification`.
    discrepancy_loss (`torch.FloatTensor` of shape `()`, *optional*):
        Distance between the prompted and the plain image (`config.discrepancy`), unweighted; `None` when the
        current stage has the term off or no `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
        The linear probe's output on the prompted image.
    features (`torch.FloatTensor` of shape `(batch_size, config.hidden_size)`):
        The probe's input: the pooled / projected feature of the prompted image (L2-normalised when
        `config.normalize_features`).
    hidden_states (`tuple(torch.FloatTensor)`, *optional*): as in `MoVLModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    discrepancy_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass(frozen=True)
class MoVLTrainingStage:
    """One stage of a strategy: from `first_epoch` (0-based) on, the parameter groups in `trains` learn."""

    name: str
    first_epoch: int
    trains: tuple[str, ...]
    discrepancy: bool


def training_stages(config: MoVLConfig) -> list[MoVLTrainingStage]:
    """The strategy's stages, in order (`config.strategy`, `config.lp_warmup_epochs`)."""
    warmup = config.lp_warmup_epochs
    lp = [MoVLTrainingStage("lp", 0, ("head",), False)] if warmup else []
    if config.strategy == "lp":
        return [MoVLTrainingStage("lp", 0, ("head",), False)]
    if config.strategy == "vp":
        return [MoVLTrainingStage("vp", 0, ("prompt",), False)]
    if config.strategy == "lp_then_vp":
        return lp + [MoVLTrainingStage("vp", warmup, ("prompt",), False)]
    if config.strategy == "joint":
        return [MoVLTrainingStage("joint", 0, ("prompt", "head"), False)]
    if config.strategy == "movl":
        return lp + [MoVLTrainingStage("joint", warmup, ("prompt", "head"), config.discrepancy_weight > 0)]
    return [MoVLTrainingStage("full_finetune", 0, ("backbone", "head"), False)]


# Copied from hfmed.models.scopeformer.modeling_scopeformer._skip_init_on_meta
def _skip_init_on_meta():
    """No weight init while the model is built on the meta device, as `from_pretrained` builds it.

    Meta tensors hold no values, so the init functions that timm and torch run in their constructors only cost
    time (timm's `normal_` on a meta tensor goes through torch's Python reference). Weights a checkpoint lacks
    are initialised after loading by `_init_weights`, as before. Built on a real device (a new model), every
    init runs unchanged.
    """
    return init.no_init_weights() if torch.get_default_device().type == "meta" else contextlib.nullcontext()


class MoVLPrompter(nn.Module):
    """A learnable additive prompt of the input's size (Bahng et al. 2022), zero where it has no parameters.

    `padding`: strips `pad_up` / `pad_down` `(1, C, p, S)` and `pad_left` / `pad_right` `(1, C, S - 2p, p)`
    around a zero centre; `fixed_patch`: `patch` `(1, C, p, p)` in the top-left corner; `full`: `full`
    `(1, C, S, S)`.
    """

    def __init__(self, config: MoVLConfig):
        super().__init__()
        self.prompt_type = config.prompt_type
        self.image_size = size = config.image_size
        self.pad = pad = config.prompt_size
        channels = config.num_channels
        if self.prompt_type == "padding":
            self.pad_up = nn.Parameter(torch.zeros(1, channels, pad, size))
            self.pad_down = nn.Parameter(torch.zeros(1, channels, pad, size))
            self.pad_left = nn.Parameter(torch.zeros(1, channels, size - 2 * pad, pad))
            self.pad_right = nn.Parameter(torch.zeros(1, channels, size - 2 * pad, pad))
        elif self.prompt_type == "fixed_patch":
            self.patch = nn.Parameter(torch.zeros(1, channels, pad, pad))
        else:
            self.full = nn.Parameter(torch.zeros(1, channels, size, size))

    def prompt(self) -> torch.Tensor:
        """The prompt as one `(1, num_channels, image_size, image_size)` tensor in normalised pixel space."""
        size, pad = self.image_size, self.pad
        if self.prompt_type == "padding":
            centre = self.pad_up.new_zeros(1, self.pad_up.shape[1], size - 2 * pad, size - 2 * pad)
            middle = torch.cat([self.pad_left, centre, self.pad_right], dim=3)
            return torch.cat([self.pad_up, middle, self.pad_down], dim=2)
        if self.prompt_type == "fixed_patch":
            return F.pad(self.patch, (0, size - pad, 0, size - pad))
        return self.full

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values + self.prompt()


class MoVLBackbone(nn.Module):
    """The pretrained backbone: a timm model (`config.backbone`, no classifier) or CLIP's vision tower with its
    projection, as `model`. Returns (last features, pooled / projected feature, hidden states or None)."""

    def __init__(self, config: MoVLConfig):
        super().__init__()
        self.backbone_type = config.backbone_type
        if config.backbone_type == "timm":
            # pretrained=False always: models are built on the meta device; weights come through
            # `from_pretrained_backbones` or a saved checkpoint.
            self.model = timm.create_model(
                config.backbone, pretrained=False, num_classes=0, in_chans=config.num_channels
            )
        else:
            self.model = CLIPVisionModelWithProjection(config.clip_vision_config)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False):
        if self.backbone_type == "clip":
            out = self.model(pixel_values=pixel_values, output_hidden_states=output_hidden_states)
            return out.last_hidden_state, out.image_embeds, out.hidden_states
        hidden_states = None
        if output_hidden_states:
            if not hasattr(self.model, "forward_intermediates"):
                raise ValueError(
                    f"timm model {type(self.model).__name__} cannot return its stage feature maps: call without "
                    "output_hidden_states"
                )
            features, intermediates = self.model.forward_intermediates(pixel_values)
            hidden_states = tuple(intermediates)
        else:
            features = self.model.forward_features(pixel_values)
        return features, self.model.forward_head(features, pre_logits=True), hidden_states


class MoVLPreTrainedModel(PreTrainedModel):
    config_class = MoVLConfig
    config: MoVLConfig
    base_model_prefix = "movl"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["MoVLBackbone"]
    _supports_sdpa = True  # honoured by the CLIP tower
    # The loss is a per-batch mean; Trainer must not rescale it by `num_items_in_batch`.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        # The CLIP tower is a PreTrainedModel and initialises itself; this covers the prompt, the probe and the
        # timm CNN (used untrained only in tests: real runs load its weights).
        config = self.config
        if isinstance(module, MoVLPrompter):
            for param in module.parameters(recurse=False):
                if config.prompt_init == "normal":
                    init.normal_(param, mean=0.0, std=1.0)
                else:
                    init.zeros_(param)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)):
            super()._init_weights(module)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        # transformers puts every loaded tensor into a new Parameter with requires_grad=True: re-freeze what the
        # strategy's last stage does not train (a loaded model is in that stage, like a new one).
        (loaded[0] if isinstance(loaded, tuple) else loaded).set_training_stage(None)
        return loaded

    # --- training policy: what trains when (see the module docstring) -------------------------------------
    def training_stages(self) -> list[MoVLTrainingStage]:
        """The strategy's stages in order."""
        return training_stages(self.config)

    def training_stage(self, epoch: int | None = None) -> MoVLTrainingStage:
        """The stage at a 0-based `epoch`; `None`: the strategy's last stage."""
        stages = self.training_stages()
        if epoch is None:
            return stages[-1]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(
                f"epoch must be an integer >= 0 (0-based) or None for the last stage, got {epoch!r}"
            )
        return [stage for stage in stages if stage.first_epoch <= epoch][-1]

    def parameter_groups(self) -> dict[str, list[str]]:
        """Parameter names per group: `prompt` (the prompter), `backbone` (the pretrained model), `head` (the
        rest: the linear probe)."""
        return {group: [name for name, _ in named] for group, named in self._grouped_parameters().items()}

    def _grouped_parameters(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        # One walk of the module tree (set_training_stage runs at every load and every epoch): a prompter's or
        # backbone's whole subtree goes to its group, every other module's own parameters to `head`.
        groups = {name: [] for name in PARAMETER_GROUPS}

        def walk(module: nn.Module, prefix: str):
            if isinstance(module, (MoVLPrompter, MoVLBackbone)):
                group = "prompt" if isinstance(module, MoVLPrompter) else "backbone"
                groups[group].extend(module.named_parameters(prefix=prefix))
                return
            groups["head"].extend(module.named_parameters(prefix=prefix, recurse=False))
            for name, child in module.named_children():
                walk(child, f"{prefix}.{name}" if prefix else name)

        walk(self, "")
        return groups

    def trainable_parameter_names(self, epoch: int | None = None) -> list[str]:
        """Names of the parameters that train at `epoch` (`None`: the last stage)."""
        groups = self.parameter_groups()
        return [name for group in self.training_stage(epoch).trains for name in groups[group]]

    def optimizer_parameter_names(self) -> list[str]:
        """Every parameter that trains in some stage: build the optimizer over these once."""
        groups = self.parameter_groups()
        trains = {group for stage in self.training_stages() for group in stage.trains}
        return [name for group in PARAMETER_GROUPS if group in trains for name in groups[group]]

    def no_weight_decay(self) -> set[str]:
        """Parameters to train without weight decay: the prompt (as Bahng et al.)."""
        return set(self.parameter_groups()["prompt"])

    def set_training_stage(self, epoch: int | None = None) -> MoVLTrainingStage:
        """Apply the stage at `epoch` (`None`: the last): `requires_grad` per parameter group, and the discrepancy
        term on or off. Returns the stage."""
        stage = self.training_stage(epoch)
        for group, named in self._grouped_parameters().items():
            for _, param in named:
                param.requires_grad_(group in stage.trains)
        for module in {self, self.base_model}:  # the head and the MoVLModel it holds
            module._discrepancy_on = stage.discrepancy
        return stage

    @property
    def discrepancy_active(self) -> bool:
        """Whether the forward pass adds the discrepancy term (the current stage's, with a prompt)."""
        return bool(getattr(self, "_discrepancy_on", False)) and self.config.uses_prompt

    # --- prompt visualisation -----------------------------------------------------------------------------
    def prompt_pixels(self) -> torch.Tensor:
        """The learned prompt `(num_channels, image_size, image_size)` in normalised pixel space (zeros when the
        strategy uses no prompt)."""
        prompter = self.base_model.prompter
        config = self.config
        with torch.no_grad():
            if prompter is None:
                return torch.zeros(config.num_channels, config.image_size, config.image_size)
            return prompter.prompt()[0].detach().float().cpu()

    def prompt_image(self) -> np.ndarray:
        """The learned prompt as an image: added to the mean image (normalised value 0) and de-normalised with
        `config.image_mean` / `image_std`, as uint8 `(image_size, image_size, num_channels)`."""
        return self._denormalise(self.prompt_pixels()[None])[0]

    def prompted_images(self, pixel_values: torch.Tensor) -> np.ndarray:
        """What the backbone sees: `pixel_values` (normalised, e.g. from the image processor) plus the prompt,
        de-normalised to uint8 `(batch, image_size, image_size, num_channels)`."""
        self.base_model._check_pixel_values(pixel_values)
        prompted = pixel_values.detach().float().cpu() + self.prompt_pixels()[None]
        return self._denormalise(prompted)

    def _denormalise(self, normalised: torch.Tensor) -> np.ndarray:
        mean = torch.tensor(self.config.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.config.image_std, dtype=torch.float32).view(1, -1, 1, 1)
        unit = (normalised * std + mean).clamp(0.0, 1.0)
        return (unit * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    # --- input checks ---------------------------------------------------------------------------------------
    def _check_pixel_values(self, pixel_values: torch.Tensor):
        config = self.config
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be 4-D (batch, channels, height, width), got shape {tuple(pixel_values.shape)}; "
                "add a batch dimension or use MoVLImageProcessor"
            )
        if pixel_values.shape[1] != config.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the backbone takes {config.num_channels} "
                "(config.num_channels): replicate grey images to 3 channels, e.g. with MoVLImageProcessor"
            )
        if tuple(pixel_values.shape[-2:]) != (config.image_size, config.image_size):
            raise ValueError(
                f"pixel_values is {pixel_values.shape[-2]}x{pixel_values.shape[-1]} but the prompt and the backbone "
                f"expect {config.image_size}x{config.image_size} (config.image_size); resize with "
                "MoVLImageProcessor"
            )

    # --- pretrained backbones -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained_backbones(cls, config: MoVLConfig, backbone_weights: str | Path | None = None):
        """A new model (prompt and probe at their init) whose backbone carries pretrained weights: the start of
        training.

        `backbone_weights`: `None` fetches `config.backbone`'s weights from the Hugging Face Hub (online, or its
        cache): timm's ImageNet weights for a timm CNN (e.g. `resnet50.tv_in1k`), or the vision tower of the CLIP
        checkpoint (e.g. `openai/clip-vit-base-patch32`). Offline, pass a local source instead: a `.safetensors`
        file of the timm model's state dict, or a folder holding a CLIP checkpoint (`save_pretrained` of
        `CLIPModel` or `CLIPVisionModelWithProjection`).
        """
        model = cls(config)
        backbone = model.base_model.backbone
        if config.backbone_type == "timm":
            _load_timm_weights(backbone, config, backbone_weights)
        else:
            _load_clip_weights(backbone, config, backbone_weights)
        return model


class MoVLModel(MoVLPreTrainedModel):
    """Prompter + backbone -> pooled (timm) or projected (CLIP) features. No probe."""

    def __init__(self, config: MoVLConfig):
        super().__init__(config)
        self.config = config
        with _skip_init_on_meta():
            self.prompter = MoVLPrompter(config) if config.uses_prompt else None
            self.backbone = MoVLBackbone(config)
        self.gradient_checkpointing = False
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
        self.post_init()
        self.set_training_stage(None)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.config.freeze_backbone:
            # A frozen backbone keeps its pretrained BatchNorm statistics (and no dropout). The head's `train`
            # reaches here through its children; `eval()` needs nothing more.
            self.backbone.eval()
        return self

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        apply_prompt: bool = True,
    ) -> MoVLModelOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
            Images normalised with `config.image_mean` / `image_std` (`MoVLImageProcessor`).
        apply_prompt (`bool`, defaults to `True`): add the prompt; `False` gives the plain image's features.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_pixel_values(pixel_values)
        if pixel_values.dtype != self.dtype:
            pixel_values = pixel_values.to(self.dtype)
        if apply_prompt and self.prompter is not None:
            pixel_values = self.prompter(pixel_values)

        needs_graph = torch.is_grad_enabled() and (
            pixel_values.requires_grad or any(p.requires_grad for p in self.backbone.parameters())
        )
        if not needs_graph:
            # Nothing upstream learns (a probe-only stage, or inference): no activations to keep.
            with torch.no_grad():
                last, pooled, hidden_states = self.backbone(pixel_values, output_hidden_states)
        elif self.gradient_checkpointing and self.training:
            # The whole backbone is one checkpoint: a frozen backbone stays in eval mode, where the layers'
            # own checkpointing is off, yet the prompt's gradient still needs its activations.
            last, pooled, hidden_states = self._gradient_checkpointing_func(
                self.backbone.__call__, pixel_values, output_hidden_states
            )
        else:
            last, pooled, hidden_states = self.backbone(pixel_values, output_hidden_states)

        if not return_dict:
            return tuple(v for v in (last, pooled, hidden_states) if v is not None)
        return MoVLModelOutput(last_hidden_state=last, pooler_output=pooled, hidden_states=hidden_states)


class MoVLForImageClassification(MoVLPreTrainedModel):
    """MoVL with its linear probe; the loss adds the discrepancy term in the stages that use it."""

    def __init__(self, config: MoVLConfig):
        super().__init__(config)
        self.movl = MoVLModel(config)
        with _skip_init_on_meta():
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()
        self.set_training_stage(None)

    def _probe_input(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(pooled, dim=-1) if self.config.normalize_features else pooled

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MoVLImageClassifierOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, or `(batch_size, num_labels)` 0/1 for
            `multi_label_classification`, *optional*):
            Targets. The loss is cross-entropy (or the mean BCE per label, with `config.loss_pos_weight`), plus
            `config.discrepancy_weight` x `discrepancy_loss` in a stage with the discrepancy on.

        With `return_dict=False`: `(loss, logits, features[, hidden_states])`, without `loss` when no labels.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_pixel_values(pixel_values)
        if labels is not None:
            self._check_labels(labels, pixel_values.shape[0])
        outputs = self.movl(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        features = self._probe_input(outputs.pooler_output)
        logits = self.classifier(features)

        loss = classification_loss = discrepancy_loss = None
        if labels is not None:
            classification_loss = self.classification_loss(logits, labels)
            loss = classification_loss
            if self.discrepancy_active:
                with torch.no_grad():  # the plain image is the target, not a second path for gradients
                    plain = self._probe_input(
                        self.movl(pixel_values, apply_prompt=False, return_dict=True).pooler_output
                    )
                    plain_logits = self.classifier(plain)
                discrepancy_loss = self.discrepancy_loss(features, plain, logits, plain_logits)
                loss = classification_loss + self.config.discrepancy_weight * discrepancy_loss

        if not return_dict:
            head = (logits, features) if loss is None else (loss, logits, features)
            return head + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
        return MoVLImageClassifierOutput(
            loss=loss,
            classification_loss=classification_loss,
            discrepancy_loss=discrepancy_loss,
            logits=logits,
            features=features,
            hidden_states=outputs.hidden_states,
        )

    def _check_labels(self, labels: torch.Tensor, batch: int):
        config = self.config
        if config.problem_type == "multi_label_classification":
            if tuple(labels.shape) != (batch, config.num_labels):
                raise ValueError(
                    f"labels has shape {tuple(labels.shape)} but multi-label classification takes one 0/1 column "
                    f"per label, shape ({batch}, {config.num_labels}) ({config.num_labels} labels: "
                    f"{list(config.label2id)})"
                )
            return
        if tuple(labels.shape) != (batch,):
            raise ValueError(
                f"labels has shape {tuple(labels.shape)} but single-label classification takes one class index per "
                f"image, shape ({batch},): pass indices in [0, {config.num_labels}), or one 0/1 column per label "
                "with problem_type='multi_label_classification'"
            )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(
                f"labels has dtype {labels.dtype} but single-label classification takes integer class indices: "
                "pass labels.long()"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= config.num_labels):
            raise ValueError(
                f"labels hold class indices {int(labels.min())}..{int(labels.max())} outside "
                f"[0, {config.num_labels}) ({config.num_labels} classes: {list(config.label2id)}); "
                "fix the labels or config.id2label"
            )

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (single-label), or BCE with logits averaged over batch and labels (multi-label)."""
        if self.config.problem_type == "multi_label_classification":
            pos_weight = None
            if self.config.loss_pos_weight is not None:
                pos_weight = torch.tensor(
                    self.config.loss_pos_weight, dtype=logits.dtype, device=logits.device
                )
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=pos_weight)
        return F.cross_entropy(logits, labels.long())

    def discrepancy_loss(
        self,
        features: torch.Tensor,
        plain_features: torch.Tensor,
        logits: torch.Tensor,
        plain_logits: torch.Tensor,
    ) -> torch.Tensor:
        """`config.discrepancy` between the prompted and the plain image, a batch mean:

        - `mse`: mean squared difference of the probe's input features (over batch and features);
        - `cosine`: mean of `1 - cos(features, plain_features)`;
        - `kl`: KL(plain || prompted) of the predictive distributions: softmax over classes (per image, then
          the batch mean), or per-label Bernoulli for multi-label sets (mean over batch and labels).
        """
        kind = self.config.discrepancy
        if kind == "mse":
            return F.mse_loss(features, plain_features)
        if kind == "cosine":
            return (1.0 - F.cosine_similarity(features, plain_features, dim=-1)).mean()
        if self.config.problem_type == "multi_label_classification":
            log_p, log_not_p = F.logsigmoid(plain_logits), F.logsigmoid(-plain_logits)
            log_q, log_not_q = F.logsigmoid(logits), F.logsigmoid(-logits)
            kl = log_p.exp() * (log_p - log_q) + log_not_p.exp() * (log_not_p - log_not_q)
            return kl.mean()
        return F.kl_div(
            F.log_softmax(logits, dim=-1),
            F.log_softmax(plain_logits, dim=-1),
            log_target=True,
            reduction="batchmean",
        )


# --- loading pretrained backbone weights -------------------------------------------------------------------


def _one_line(err: Exception, limit: int = 240) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _checkpoint_kind(source) -> str | None:
    """'clip', 'timm' or None (unknown) for a local weights source, from its config.json or its tensor names."""
    path = Path(source)
    config_file = path / "config.json" if path.is_dir() else None
    if config_file is not None and config_file.is_file():
        import json

        model_type = str(json.loads(config_file.read_text()).get("model_type", ""))
        return "clip" if model_type.startswith("clip") else model_type or None
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files or not files[0].is_file() or files[0].suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(files[0]), framework="pt") as handle:
        keys = list(handle.keys())
    if any(k.startswith(("vision_model.", "visual_projection.")) or ".vision_model." in k for k in keys):
        return "clip"
    return "timm"


def _load_timm_weights(backbone: MoVLBackbone, config: MoVLConfig, source):
    if source is None:
        try:
            pretrained = timm.create_model(
                config.backbone, pretrained=True, num_classes=0, in_chans=config.num_channels
            )
        except Exception as err:  # timm raises several types (hub, HTTP, file)
            raise OSError(
                f"could not load the pretrained weights of backbone '{config.backbone}' from the Hugging Face Hub "
                f"({_one_line(err)}); go online once (unset HF_HUB_OFFLINE) to cache them, or pass "
                "backbone_weights=<a local .safetensors file of that timm model's state dict>"
            ) from None
        backbone.model.load_state_dict(pretrained.state_dict())
        return
    path = Path(source)
    if not path.exists():
        hint = " (a Hub id of a CLIP checkpoint?)" if "clip" in str(source).lower() else ""
        if hint:
            raise ValueError(
                f"backbone_weights {str(source)!r}{hint} given to a MoVL whose backbone is the timm CNN "
                f"'{config.backbone}': build a CLIP MoVL (movl_config('movl-clip-b32')) for CLIP weights, or pass "
                "a local .safetensors file of the CNN's state dict"
            )
        raise FileNotFoundError(
            f"backbone_weights {str(source)!r} does not exist: pass a local .safetensors file"
        )
    if _checkpoint_kind(path) == "clip":
        raise ValueError(
            f"backbone_weights {str(source)!r} is a CLIP checkpoint but this MoVL's backbone is the timm CNN "
            f"'{config.backbone}': build the config with movl_config('movl-clip-b32') (backbone_type='clip') for "
            "CLIP, or pass ResNet weights"
        )
    if path.is_dir() or path.suffix != ".safetensors":
        raise ValueError(
            f"backbone_weights {str(source)!r} is not a .safetensors file: for a timm CNN pass a .safetensors "
            "file of its state dict"
        )
    try:
        pretrained = timm.create_model(
            config.backbone,
            pretrained=True,
            num_classes=0,
            in_chans=config.num_channels,
            pretrained_cfg_overlay={"file": str(path)},
        )
    except Exception as err:
        raise ValueError(
            f"backbone_weights {str(source)!r} do not fit timm model '{config.backbone}' ({_one_line(err)}): pass "
            "that architecture's state dict"
        ) from None
    backbone.model.load_state_dict(pretrained.state_dict())


_CLIP_ARCH_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "patch_size",
    "projection_dim",
    "image_size",
    "num_channels",
)


def _load_clip_weights(backbone: MoVLBackbone, config: MoVLConfig, source):
    where = config.backbone if source is None else str(source)
    if source is not None:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(
                f"backbone_weights {where!r} does not exist: pass a local folder holding a CLIP checkpoint, or "
                f"None to fetch '{config.backbone}' from the Hub"
            )
        kind = _checkpoint_kind(path)
        if kind != "clip":
            raise ValueError(
                f"backbone_weights {where!r} is not a CLIP checkpoint ({kind or 'no config.json'}) but this MoVL's "
                "backbone is CLIP: pass a folder saved by CLIPModel / CLIPVisionModelWithProjection, or build a "
                "timm MoVL (movl_config('movl-resnet50')) for CNN weights"
            )
    try:
        pretrained = CLIPVisionModelWithProjection.from_pretrained(where)
    except Exception as err:  # hub, HTTP, file, config errors
        raise OSError(
            f"could not load the CLIP vision tower of '{where}' ({_one_line(err)}); go online once (unset "
            "HF_HUB_OFFLINE) to cache it, or pass backbone_weights=<a local folder holding a CLIP checkpoint>"
        ) from None
    ours, theirs = config.clip_vision_config, pretrained.config
    different = [
        f"{k} {getattr(theirs, k)} vs {getattr(ours, k)}"
        for k in _CLIP_ARCH_FIELDS
        if getattr(theirs, k) != getattr(ours, k)
    ]
    if different:
        raise ValueError(
            f"the CLIP checkpoint '{where}' does not match config.clip_vision_config ({', '.join(different)}): use "
            "the preset of that checkpoint (movl-clip-b32 / movl-clip-b16)"
        )
    backbone.model.load_state_dict(pretrained.state_dict())


__all__ = [
    "MoVLPreTrainedModel",
    "MoVLModel",
    "MoVLForImageClassification",
    "MoVLModelOutput",
    "MoVLImageClassifierOutput",
    "MoVLPrompter",
    "MoVLTrainingStage",
    "training_stages",
]
