"""Slice-CNN configuration: position-encoded 2-D slice models for 3-D brain MRI.

Papers: Gupta et al., "Transferring Models Trained on Natural Images to 3D MRI via Position Encoded Slice
Models", arXiv 2303.01491 (ISBI 2023); the slice-set architecture comes from Gupta et al., "Improved Brain Age
Estimation with Slice-based Set Networks", arXiv 2102.04438 (ISBI 2021). Official code:
github.com/umgupta/2d-slice-set-networks (`src/arch/slice_cnn_utils.py`,
`src/arch/ukbb/brain_age_slice_set.py`).

What the official code fixes, and this config reproduces by default: a z-scored 91x109x91 volume (2 mm MNI) is
cut into 2-D slices along one axis; every slice goes through the same 2-D encoder (a small 5-block CNN,
"encoder1", or a torchvision ResNet with the grey slice repeated to 3 channels and no ImageNet mean/std); a
learned position tensor with one vector per slice index is added to the slice embeddings, followed by one
LayerNorm over the whole (features x slices) block; the slice embeddings are aggregated by mean, max or a
single-query attention; the head is Linear(32 -> 64), ReLU, Linear(64 -> 1) with the output bias set to the
mean training age (62.68 years, UK Biobank).

Everything the official code leaves open (or hard-codes to 91x109x91) is a field below, and each field says
whether its default is the official value or our choice.
"""

import math

from transformers import PreTrainedConfig

ENCODERS = ("encoder1", "resnet18", "resnet34", "resnet50")
AGGREGATIONS = ("mean", "max", "attention")
TASKS = ("regression", "classification")
SLICE_AXES = (1, 2, 3)
SLICE_AXIS_NAMES = {1: "sagittal", 2: "coronal", 3: "axial"}
_PROBLEM_TYPES = {"regression": "regression", "classification": "multi_label_classification"}
_DEFAULT_LABELS = {"regression": "age", "classification": "AD"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class SliceCNNConfig(PreTrainedConfig):
    r"""
    Configuration of a Slice-CNN: 2-D encoder on every slice of a volume -> optional position encoding ->
    mean / max / attention over slices -> Linear-ReLU-Linear head with one output (brain age, or the logit of
    Alzheimer's disease vs control).

    Args:
        encoder (`str`, defaults to `"resnet18"`):
            The 2-D slice encoder: `"encoder1"` (the official small CNN: blocks of 3x3 conv -> InstanceNorm ->
            MaxPool 2 -> ReLU, then a 1x1 conv to `encoder1_feature_size` + InstanceNorm + ReLU + average
            pool, trained from scratch) or a ResNet (`"resnet18"`, `"resnet34"`, `"resnet50"`; built with
            timm, whose parameter names equal torchvision's, global average pool -> Linear -> `hidden_size`).
            The paper's runs use ResNet-18 with ImageNet weights (see `pretrained_backbone`).
        volume_shape (`list[int]`, defaults to `[91, 109, 91]`):
            Shape (x, y, z) of the input volume after preprocessing (official: 2 mm MNI space, 91x109x91; the
            official code hard-codes it, here it is a field).
        slice_axis (`int`, defaults to 1):
            Axis of (x, y, z) the volume is cut along, numbered as in the official code: 1 sagittal (x,
            official default), 2 coronal (y), 3 axial (z). Each 2-D slice keeps the two other axes in their
            order: sagittal slices are (y, z), coronal (x, z), axial (x, y).
        in_channels (`int`, defaults to 1):
            Adjacent slices stacked as the channels of one 2-D input (official option `in_channel`): slice
            positions `i .. i + in_channels - 1`, for `i = 0 .. n - in_channels`, so there are
            `n - in_channels + 1` slice inputs (`num_slices`). ResNets: 1 channel is repeated to 3 (official);
            3 channels go in as they are (official); other counts change the first conv's input channels (our
            extension; the official ResNet path only works with 1 or 3).
        use_position_encoding (`bool`, defaults to `True`):
            Add a learned tensor with one vector per slice index to the slice embeddings, then apply one
            LayerNorm over the whole (slices x features) block of each volume (official
            `PositionEncodingUKBB`). It is added at `encoder1_feature_size` channels for encoder1 and at
            `hidden_size` for ResNets (official placement).
        aggregation (`str`, defaults to `"mean"`):
            How slice embeddings become one vector: `"mean"` (the paper's runs), `"max"` or `"attention"` (one
            learned query, key and value projections, softmax over slices, LayerNorm, output Linear; official
            `PooledAttention`). Only `"attention"` returns slice weights.
        hidden_size (`int`, defaults to 32):
            Slice-embedding width, equal to the attention width (official `attn_dim * attn_num_heads`, 32 in
            the paper's runs).
        num_attention_heads (`int`, defaults to 1):
            Heads of the attention aggregation (official `attn_num_heads`, 1 in the paper's runs); must divide
            `hidden_size`.
        encoder_channels (`list[int]`, defaults to `[32, 64, 128, 256, 256]`):
            Output channels of the encoder1 blocks (official: five blocks 32/64/128/256/256). Fewer blocks are
            our extension, for volumes smaller than 32 voxels per side (each block halves the slice).
        encoder1_feature_size (`int`, defaults to 64):
            Channels of encoder1's 1x1 post-processing conv (official 64); the position encoding is added at
            this width, then (dropout and) a per-slice Linear maps it to `hidden_size` (official 1x1 conv).
        encoder_dropout_prob (`float`, defaults to 0.5):
            Dropout before encoder1's last 1x1 projection (official `attn_drop=True` gives p=0.5, and the
            paper's scripts set it). The official ResNet path has no dropout, and neither has ours. 0
            disables.
        head_hidden_size (`int`, defaults to 64):
            Width of the head's hidden layer (official 64).
        task (`str`, defaults to `"regression"`):
            `"regression"` (brain age; MSE loss; `problem_type="regression"`) or `"classification"`
            (Alzheimer's disease vs control; binary cross-entropy on one logit;
            `problem_type="multi_label_classification"`, transformers' convention for independent sigmoid
            outputs). Default label names: `{0: "age"}` / `{0: "AD"}`.
        regression_target_mean (`float`, defaults to 62.68):
            Initial bias of the head's output layer for regression (official: the mean UK Biobank training
            age, 62.68 years). Set it to your training set's mean target. Classification starts from bias 0
            (official).
        slice_chunk_size (`int`, *optional*):
            Upper bound on how many 2-D slices go through the encoder at once. All `batch * num_slices` slices
            of a batch form one 2-D batch; with this set, it is encoded in chunks of this many slices, which
            bounds peak activation memory on large volumes (our addition). Must not exceed `num_slices`. In
            training mode a ResNet's BatchNorm then sees per-chunk statistics.
        imagenet_normalize (`bool`, defaults to `False`):
            Normalise the 3-channel ResNet input with the ImageNet mean / std. The official code does not
            (inputs are z-scored volumes); our option. ResNets with 1 or 3 input channels only.
        pretrained_backbone (`str`, *optional*):
            timm name of the ImageNet weights `from_pretrained_backbones` loads into the ResNet. `None` means
            torchvision's original ImageNet weights, which the official code loads (`"<encoder>.tv_in1k"`).
            Ignored by `from_pretrained`, which loads our own checkpoint.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of the position-encoding and attention LayerNorms
            (PyTorch's default, as in the official code).
        initializer_range (`float`, defaults to 0.01):
            std of the normal init of encoder1 models' linear layers (official custom init); ResNet models use
            PyTorch's default linear init (official).
        id2label / label2id: one label; default `{0: "age"}` (regression) or `{0: "AD"}` (classification).
        problem_type (`str`): set from `task`; passing a value that contradicts `task` is an error.
    """

    model_type = "slice_cnn"

    encoder: str = "resnet18"
    volume_shape: list[int] | None = None
    slice_axis: int = 1
    in_channels: int = 1
    use_position_encoding: bool = True
    aggregation: str = "mean"
    hidden_size: int = 32
    num_attention_heads: int = 1
    encoder_channels: list[int] | None = None
    encoder1_feature_size: int = 64
    encoder_dropout_prob: float = 0.5
    head_hidden_size: int = 64
    task: str = "regression"
    regression_target_mean: float = 62.68
    slice_chunk_size: int | None = None
    imagenet_normalize: bool = False
    pretrained_backbone: str | None = None
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.01

    def __post_init__(self, **kwargs):
        if self.volume_shape is None:
            self.volume_shape = [91, 109, 91]
        if self.encoder_channels is None:
            self.encoder_channels = [32, 64, 128, 256, 256]
        if isinstance(self.volume_shape, tuple):
            self.volume_shape = list(self.volume_shape)
        if isinstance(self.encoder_channels, tuple):
            self.encoder_channels = list(self.encoder_channels)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = {0: _DEFAULT_LABELS[self.task]}
        if self.problem_type is None:
            self.problem_type = _PROBLEM_TYPES[self.task]
        super().__post_init__(**kwargs)
        if self.label2id is None or len(self.label2id) != len(self.id2label):
            self.label2id = {label: i for i, label in self.id2label.items()}
        self._validate()

    def _validate(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {list(ENCODERS)}, got {self.encoder!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {list(AGGREGATIONS)}, got {self.aggregation!r}")
        if self.problem_type != _PROBLEM_TYPES[self.task]:
            raise ValueError(
                f"problem_type must be {_PROBLEM_TYPES[self.task]!r} for task={self.task!r}, got "
                f"{self.problem_type!r}; set task instead of problem_type"
            )
        if self.num_labels != 1:
            raise ValueError(
                f"num_labels must be 1 (one age, or one disease logit), got {self.num_labels}; pass "
                "id2label with a single entry, e.g. {0: 'age'}"
            )
        if (
            not isinstance(self.volume_shape, list)
            or len(self.volume_shape) != 3
            or not all(_is_int(v) and v > 0 for v in self.volume_shape)
        ):
            raise ValueError(
                "volume_shape must be three positive integers (x, y, z), e.g. [91, 109, 91], got "
                f"{self.volume_shape!r}"
            )
        if self.slice_axis not in SLICE_AXES or not _is_int(self.slice_axis):
            raise ValueError(
                f"slice_axis must be one of 1 (sagittal), 2 (coronal), 3 (axial), got {self.slice_axis!r}"
            )
        for name in (
            "in_channels",
            "hidden_size",
            "num_attention_heads",
            "encoder1_feature_size",
            "head_hidden_size",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        depth = self.volume_shape[self.slice_axis - 1]
        if self.in_channels > depth:
            raise ValueError(
                f"in_channels ({self.in_channels}) must be at most the {SLICE_AXIS_NAMES[self.slice_axis]} "
                f"slice count ({depth}, volume_shape[{self.slice_axis - 1}])"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        for name in ("use_position_encoding", "imagenet_normalize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if (
            not isinstance(self.encoder_channels, list)
            or not self.encoder_channels
            or not all(_is_int(c) and c > 0 for c in self.encoder_channels)
        ):
            raise ValueError(
                "encoder_channels must be a non-empty list of positive integers (official "
                f"[32, 64, 128, 256, 256]), got {self.encoder_channels!r}"
            )
        value = self.encoder_dropout_prob
        if not _is_number(value) or not 0.0 <= value < 1.0:
            raise ValueError(f"encoder_dropout_prob must be in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        value = self.regression_target_mean
        if not _is_number(value) or not math.isfinite(value):
            raise ValueError(f"regression_target_mean must be a finite number, got {value!r}")
        if self.slice_chunk_size is not None:
            if not _is_int(self.slice_chunk_size) or self.slice_chunk_size < 1:
                raise ValueError(
                    "slice_chunk_size must be None (no chunking) or a positive integer, got "
                    f"{self.slice_chunk_size!r}"
                )
            if self.slice_chunk_size > self.num_slices:
                raise ValueError(
                    f"slice_chunk_size ({self.slice_chunk_size}) is larger than the volume's "
                    f"{self.num_slices} {SLICE_AXIS_NAMES[self.slice_axis]} slices: the volume is smaller "
                    f"than one slice chunk; set slice_chunk_size to at most {self.num_slices}, or None to "
                    "encode all slices at once"
                )
        is_resnet = self.encoder != "encoder1"
        if self.imagenet_normalize and not (is_resnet and self.in_channels in (1, 3)):
            raise ValueError(
                "imagenet_normalize applies to ResNet encoders with in_channels 1 or 3 only, got "
                f"encoder={self.encoder!r}, in_channels={self.in_channels}; set imagenet_normalize=False"
            )
        if self.pretrained_backbone is not None and not (
            isinstance(self.pretrained_backbone, str) and is_resnet
        ):
            raise ValueError(
                f"pretrained_backbone must be None or a timm weight name for a ResNet encoder (e.g. "
                f"'resnet18.tv_in1k'), got {self.pretrained_backbone!r} with encoder={self.encoder!r}"
            )
        if not is_resnet:
            height, width = self.encoder1_output_size
            if height < 1 or width < 1 or height * width < 2:
                slice_h, slice_w = self.slice_size
                raise ValueError(
                    f"volume_shape {self.volume_shape} gives {slice_h}x{slice_w} slices, which "
                    f"{len(self.encoder_channels)} encoder1 blocks (each halves the slice) reduce to "
                    f"{height}x{width}; encoder1 needs at least 2 positions left for its InstanceNorm: use "
                    "fewer encoder_channels (blocks) or a larger volume"
                )

    @property
    def num_slices(self) -> int:
        """Number of 2-D inputs per volume: slices along `slice_axis`, less `in_channels - 1`."""
        return self.volume_shape[self.slice_axis - 1] - self.in_channels + 1

    @property
    def slice_size(self) -> tuple[int, int]:
        """(height, width) of one 2-D slice: the two other axes of (x, y, z), in order."""
        other = [size for axis, size in enumerate(self.volume_shape, start=1) if axis != self.slice_axis]
        return other[0], other[1]

    @property
    def encoder1_output_size(self) -> tuple[int, int]:
        """Spatial size of the encoder1 feature map (each block floors half the size); e.g. 3x2 for sagittal
        91x109x91 slices, the official AvgPool kernel."""
        height, width = self.slice_size
        for _ in self.encoder_channels:
            height, width = height // 2, width // 2
        return height, width

    @property
    def position_encoding_size(self) -> int:
        """Feature width at which the position encoding is added."""
        return self.encoder1_feature_size if self.encoder == "encoder1" else self.hidden_size


# Named presets: the paper's ResNet-18 brain-age model, the from-scratch encoder1 model, and a tiny one for
# tests.
PRESETS = {
    "slice-cnn-resnet18": {  # ISBI 2023: ResNet-18 (ImageNet), sagittal, position encoding, mean
        "encoder": "resnet18",
        "pretrained_backbone": "resnet18.tv_in1k",
        "use_position_encoding": True,
        "aggregation": "mean",
    },
    "slice-cnn-encoder1": {  # ISBI 2021 / 2023: small CNN from scratch, sagittal, position encoding, mean
        "encoder": "encoder1",
        "use_position_encoding": True,
        "aggregation": "mean",
    },
    "slice-cnn-tiny": {  # tests and CPU demos: a 16x20x16 volume, three small encoder1 blocks
        "encoder": "encoder1",
        "volume_shape": [16, 20, 16],
        "encoder_channels": [4, 8, 8],
        "encoder1_feature_size": 16,
        "hidden_size": 32,
        "head_hidden_size": 16,
    },
}


def slice_cnn_config(preset: str, **overrides) -> SliceCNNConfig:
    """Build a `SliceCNNConfig` from a named preset (see `PRESETS`), with field overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown Slice-CNN preset '{preset}'; choose one of {sorted(PRESETS)}")
    return SliceCNNConfig(**{**PRESETS[preset], **overrides})


__all__ = ["SliceCNNConfig", "slice_cnn_config", "PRESETS", "ENCODERS", "AGGREGATIONS", "TASKS"]
