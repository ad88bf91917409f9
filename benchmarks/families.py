"""Per-family benchmarks: each family against its anchor doing the same work.

`BENCHES` maps every registered family (`hfmed.registry.FAMILIES`) to a `FamilyBench`: how to build our model
and inputs, the anchor that does the same work, and a few preprocessing inputs. `benchmarks.run` refuses to
run when a registered family has no entry, so a new family joins the table or the run says what to add.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .harness import Row, Settings, count_flops, flop_counter, gemm_call, interleaved

BATCH = 8


@dataclass
class FamilyBench:
    """What to build for one family. Every callable takes the `Settings`."""

    config: Callable  # () -> our config at the published size
    inputs: Callable  # (config, batch) -> (pixel_values, labels)
    anchor: Callable  # (config) -> (anchor_name, eval_fn(pixel_values), train_module, train_fn(pixel_values, labels))
    preprocess: Callable  # (tmp_dir) -> (description, processor, list of raw inputs)
    batch: int = BATCH
    gemm_note: str = ""
    prepare: Callable | None = None  # (model, config) -> None: put a model in its training stage
    extra_rows: Callable | None = None  # (settings) -> list[Row]: comparisons beyond the anchor
    notes: str = ""  # a paragraph for the report: why a row misses its target, what a paper's claim means


def _bce_head(features: torch.Tensor, head: nn.Module, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(head(features), labels.float())


# ----------------------------------------------------------------------------------------------- LT-ViT


def _lt_vit_config():
    from hfmed import lt_vit_config

    return lt_vit_config("lt-vit-small")


def _image_inputs(config, batch):
    pixel_values = torch.randn(batch, config.num_channels, config.image_size, config.image_size)
    labels = (torch.rand(batch, config.num_labels) < 0.3).float()
    return pixel_values, labels


def _lt_vit_anchor(config):
    import timm

    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    head = nn.Linear(vit.num_features, config.num_labels)
    module = nn.ModuleDict({"vit": vit, "head": head})

    def train(pixel_values, labels):
        return _bce_head(vit.forward_head(vit.forward_features(pixel_values)), head, labels)

    return "timm vit_small_patch16_224.forward_features", vit.forward_features, module, train


def _png_inputs(tmp: Path, count: int = 16, size: int = 1024):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = tmp / f"cxr_{index}.png"
        Image.fromarray(rng.integers(0, 65535, (size, size), dtype=np.uint16)).save(path)  # 16-bit grey
        paths.append(str(path))
    return paths


def _lt_vit_preprocess(tmp: Path):
    from hfmed import LTViTImageProcessor

    return "16-bit grey PNG 1024^2 -> 224", LTViTImageProcessor(), _png_inputs(tmp)


# ------------------------------------------------------------------------------------------ Scopeformer


def _scopeformer_config():
    from hfmed import scopeformer_config

    return scopeformer_config("scopeformer-efficient")


def _scopeformer_anchor(config):
    import timm
    from timm.models.vision_transformer import VisionTransformer

    cnns = nn.ModuleList(
        timm.create_model(name, pretrained=False, features_only=True, out_indices=[index], feature_cls="getter")
        for name, index in zip(config.backbones, config.backbone_out_indices, strict=True)
    ).eval()
    grid = config.feature_grid_size
    vit = VisionTransformer(
        # the 1x1 patch embedding over the stacked CNN maps plays the feature projection's part
        img_size=grid, patch_size=1, in_chans=sum(c.feature_info.channels()[-1] for c in cnns), num_classes=0,
        embed_dim=config.hidden_size,
        depth=config.num_hidden_layers, num_heads=config.num_attention_heads,
        mlp_ratio=config.intermediate_size / config.hidden_size,
    )
    head = nn.Linear(config.hidden_size, config.num_labels)
    module = nn.ModuleDict({"vit": vit, "head": head})

    def features(pixel_values):
        with torch.no_grad():  # frozen CNNs, as ours
            maps = [nn.functional.adaptive_avg_pool2d(cnn(pixel_values)[-1], grid) for cnn in cnns]
        return vit.forward_features(torch.cat(maps, dim=1))

    def train(pixel_values, labels):
        return _bce_head(vit.forward_head(features(pixel_values)), head, labels)

    return "four timm CNNs (frozen) + timm ViT of the same width / depth", features, module, train


def _dicom_inputs(tmp: Path, count: int = 16, size: int = 512):
    import pydicom
    from pydicom.data import get_testdata_file

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        ds = template.copy()
        ds.Rows, ds.Columns = size, size
        ds.PixelData = rng.integers(-1000, 2000, (size, size)).astype(np.int16).tobytes()
        path = tmp / f"ct_{index}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    return paths


def _scopeformer_preprocess(tmp: Path):
    from hfmed import ScopeformerImageProcessor

    return "CT DICOM 512^2, three HU windows -> 224", ScopeformerImageProcessor(), _dicom_inputs(tmp)


# -------------------------------------------------------------------------------------------- Slice-CNN


def _slice_cnn_config():
    from hfmed import slice_cnn_config

    return slice_cnn_config("slice-cnn-resnet18", task="regression")


def _volume_inputs(config, batch):
    pixel_values = torch.randn(batch, *config.volume_shape)
    return pixel_values, torch.randn(batch, 1) * 10 + 60


def _slice_cnn_anchor(config):
    import timm

    resnet = timm.create_model(config.encoder, pretrained=False, num_classes=0)
    head = nn.Linear(resnet.num_features, 1)
    module = nn.ModuleDict({"resnet": resnet, "head": head})

    def features(pixel_values):
        stack = pixel_values.movedim(config.slice_axis, 1)  # (batch, n, h, w): the same slices as ours
        slices = stack.reshape(-1, 1, *stack.shape[2:]).expand(-1, 3, -1, -1)
        return resnet(slices).view(stack.shape[0], stack.shape[1], -1).mean(dim=1)

    def train(pixel_values, labels):
        return nn.functional.mse_loss(head(features(pixel_values)), labels)

    return f"timm {config.encoder} over the same slices + mean", features, module, train


def _slice_cnn_preprocess(tmp: Path):
    """Four 1 mm T1w-sized volumes as a Slice-CNN user would pass them, to be reoriented, resampled to 2 mm,
    cropped / padded and z-scored.

    What a real one looks like, and so what this builds: a T1 registered to the 1 mm MNI152 grid (182x218x182,
    the papers' FSL registrations before their 2 mm copy) is float32 (FSL's default output type), stored LAS
    (x flipped, as FSL stores MNI-space volumes; so the reorientation flips it to RAS), and holds a head in an
    exactly zero background, which gzip compresses to almost nothing. The head here is an ellipsoid of
    140x180x160 mm (2.1 L, 29 % of the field of view; a skull-stripped brain is about 1.3 L) filled with
    float32 noise, whose random mantissas gzip compresses no better than real tissue's: 7.6 MB per .nii.gz.
    The first version of this row filled every voxel with noise (25 MB per file): no MRI volume looks like
    that, and it timed mostly gzip on incompressible bytes (2.6x this file's inflate time).
    """
    import nibabel as nib

    from hfmed import SliceCNNImageProcessor

    rng = np.random.default_rng(0)
    shape = (182, 218, 182)
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = [(n - 1) / 2 for n in shape]
    head = ((x - centre[0]) / 70) ** 2 + ((y - centre[1]) / 90) ** 2 + ((z - centre[2]) / 80) ** 2 <= 1
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS, 1 mm, as FSL stores MNI-space volumes
    affine[:3, 3] = [90.0, -126.0, -72.0]
    paths = []
    for index in range(4):
        volume = np.zeros(shape, dtype=np.float32)
        volume[head] = rng.normal(100, 20, int(head.sum())).astype(np.float32)
        path = tmp / f"t1w_{index}.nii.gz"
        nib.save(nib.Nifti1Image(volume, affine), path)
        paths.append(str(path))
    description = "NIfTI float32 1 mm LAS 182x218x182, noisy head in zero background -> RAS 91x109x91 2 mm"
    return description, SliceCNNImageProcessor(), paths


# ---------------------------------------------------------------------------------------------------- MoVL


def _movl_config():
    from hfmed import movl_config

    return movl_config("movl-resnet50", num_labels=9)


def _movl_inputs(config, batch):
    pixel_values = torch.randn(batch, config.num_channels, config.image_size, config.image_size)
    return pixel_values, torch.randint(0, config.num_labels, (batch,))


def _movl_prepare(model, config):
    model.set_training_stage(config.lp_warmup_epochs)  # the joint stage: prompt + probe, discrepancy on


def _movl_anchor(config):
    import timm

    backbone = timm.create_model(config.backbone.split(".")[0], pretrained=False, num_classes=0).eval()
    backbone.requires_grad_(False)
    head = nn.Linear(backbone.num_features, config.num_labels)
    module = nn.ModuleDict({"backbone": backbone, "head": head})

    def features(pixel_values):
        return backbone(pixel_values)

    def train(pixel_values, labels):  # a linear probe on the frozen backbone
        with torch.no_grad():
            pooled = backbone(pixel_values)
        return nn.functional.cross_entropy(head(pooled), labels)

    return f"the frozen timm {config.backbone.split('.')[0]} alone (+ linear probe when training)", features, \
        module, train


def _rgb_inputs(tmp: Path, count: int = 16, size: int = 512, suffix: str = "png"):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = tmp / f"rgb_{index}.{suffix}"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _movl_preprocess(tmp: Path):
    from hfmed import MoVLImageProcessor

    return "RGB PNG 512^2 -> 224", MoVLImageProcessor(), _rgb_inputs(tmp)


# ------------------------------------------------------------------------------------------------- DIAMANT


def _diamant_config():
    from hfmed import diamant_config

    return diamant_config("diamant-vits8")


def _mask_inputs(config, batch):
    pixel_values = torch.randn(batch, config.num_channels, config.image_size, config.image_size)
    return pixel_values, torch.randint(0, config.num_labels, (batch, config.image_size, config.image_size))


def _diamant_anchor(config):
    import timm

    from hfmed import DIAMANTForSemanticSegmentation, diamant_config

    # The same U-Net without the attention-map encoder (the paper's ablation) plus the DINO ViT-S forward it
    # no longer runs: the work DIAMANT adds is the second encoder and the attention maps' extraction.
    unet = DIAMANTForSemanticSegmentation(diamant_config("diamant-vits8", use_attention_encoder=False))
    dino = timm.create_model("vit_small_patch8_224", pretrained=False, num_classes=0).eval()
    dino.requires_grad_(False)
    module = nn.ModuleDict({"unet": unet, "dino": dino})

    def forward(pixel_values):
        dino.forward_features(pixel_values)
        return unet(pixel_values=pixel_values).logits

    def train(pixel_values, labels):
        with torch.no_grad():
            dino.forward_features(pixel_values)
        return unet(pixel_values=pixel_values, labels=labels).loss

    return "plain U-Net, same widths + timm DINO ViT-S/8 forward", forward, module, train


def _diamant_preprocess(tmp: Path):
    from hfmed import DIAMANTImageProcessor

    return "RGB JPEG 512^2 -> 224", DIAMANTImageProcessor(), _rgb_inputs(tmp, suffix="jpg")


def lt_vit_rows(settings: Settings) -> list[Row]:
    """Two LT-ViT forwards beside the head's: with the label attention maps (the Space's explanation), and the
    base model over every token in every block (the head's last block computes only the label tokens, which
    nothing else reads; the base model does the work timm's forward_features does, plus the label tokens)."""
    from hfmed import LTViTForImageClassification, LTViTModel

    config = _lt_vit_config()
    name, anchor, module, _ = _lt_vit_anchor(config)
    module.to(settings.device).eval()
    pixel_values = _image_inputs(config, BATCH)[0].to(settings.device)
    rows = []
    for model_class, kwargs, what in (
        (LTViTForImageClassification, {"output_label_attentions": True}, "eval forward with label attention maps"),
        (LTViTModel, {}, "eval forward of the base model (every token in every block)"),
    ):
        torch.manual_seed(0)
        ours = model_class(config).to(settings.device).eval()

        def run(model, kwargs):
            with torch.inference_mode(), settings.autocast():
                model(pixel_values, **kwargs)

        timing = interleaved(lambda ours=ours, kwargs=kwargs: run(ours, kwargs), lambda: run(anchor, {}), settings)
        work = count_flops(lambda ours=ours, kwargs=kwargs: ours(pixel_values, **kwargs)) / count_flops(
            lambda: anchor(pixel_values))
        rows.append(Row("lt_vit", f"{what}, batch {BATCH}", *timing, name, spread=timing.spread,
                        note=f"FLOPs ours / anchor {work:.3f}x", extra={"flop_ratio": work}))
    return rows


def segformer_row(settings: Settings) -> list[Row]:
    """The paper's cost claim: DIAMANT against a published transformer segmenter of similar size."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from hfmed import DIAMANTForSemanticSegmentation

    config = _diamant_config()
    ours = DIAMANTForSemanticSegmentation(config).eval()
    # SegFormer-B1 widths (13.7 M parameters), 2 labels
    segformer = SegformerForSemanticSegmentation(SegformerConfig(
        hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=256, depths=[2, 2, 2, 2], num_labels=config.num_labels,
    )).eval()
    pixel_values = torch.randn(BATCH, 3, config.image_size, config.image_size)

    def run(model):
        with torch.inference_mode(), settings.autocast():
            model(pixel_values=pixel_values)

    ours_s, anchor_s = interleaved(lambda: run(ours), lambda: run(segformer), settings)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    one = pixel_values[:1]
    with flop_counter(depth=3) as counter, torch.inference_mode():
        ours(pixel_values=one)
    by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    ours_gflops = counter.get_total_flops() / 1e9
    # the DINO ViT's modules are called one by one (not `dino` itself): add its outermost counted modules
    prefix = f"{type(ours).__name__}.diamant.dino."
    inside = [name for name in by_module if name.startswith(prefix)]
    outermost = [n for n in inside if not any(n.startswith(other + ".") for other in inside if other != n)]
    dino_gflops = sum(by_module[name] for name in outermost) / 1e9
    segformer_gflops = count_flops(lambda: segformer(pixel_values=one)) / 1e9
    trainable = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    return [Row("diamant", f"eval forward, batch {BATCH}, vs a transformer segmenter", ours_s, anchor_s,
                f"transformers SegFormer-B1 layout ({count(segformer) / 1e6:.1f} M params, random init)",
                note=f"DIAMANT {count(ours) / 1e6:.1f} M params ({trainable / 1e6:.1f} M trainable); GFLOP per "
                     f"224^2 image: DIAMANT {ours_gflops:.1f} (frozen DINO ViT-S/8 {dino_gflops:.1f}, convolutions "
                     f"{ours_gflops - dino_gflops:.1f}), SegFormer-B1 {segformer_gflops:.1f}",
                extra={"gflops_per_image": ours_gflops, "dino_gflops_per_image": dino_gflops,
                       "segformer_gflops_per_image": segformer_gflops})]


DIAMANT_NOTES = (
    "**DIAMANT against the GEMM peak.** The 57 % of an earlier report left out the ViT's attention products: "
    "torch's FLOP table lists the CUDA attention kernels but not the CPU one (now counted by `count_flops`). "
    "Counted, a 224^2 image costs ~64 GFLOP: ~42 in the frozen DINO ViT-S/8 (785 tokens, a third of it attention "
    "in the fused kernel) and ~21 in convolutions. DIAMANT is only partly GEMM-bound: its first and last "
    "convolutions have 32-64 channels at 224^2 and 112^2 (few FLOPs per byte moved), with batch norm, ReLU, "
    "max-pool, concatenation and layout copies between them (about a third of the forward's time in a profile on "
    "this CPU), so it stays below the ViT families' share of the peak. The anchor doing the same work (the plain "
    "U-Net of the same widths plus the DINO forward) runs at the same speed: the gap is the architecture's.\n\n"
    "**The paper's cost claim.** The paper says DIAMANT beats transformer segmenters at lower compute. Measured here "
    "(the row against SegFormer-B1), one DIAMANT inference forward with ViT-S/8 maps costs about 12x the FLOPs of a "
    "SegFormer-B1 layout and several times its time, while it trains fewer parameters (7.5 M vs 13.7 M). The claim "
    "holds for trainable parameters and for training with the attention-map cache (the maps are computed once per "
    "image and reused every epoch, so a training step costs the two convolutional encoders and the decoder); it "
    "does not hold for one inference forward, which the frozen ViT-S/8 dominates (a ViT-S/16 source, 197 tokens, "
    "would cost about 4.6x fewer FLOPs for coarser maps)."
)

MOVL_NOTES = (
    "**MoVL training step.** The eval forward costs what the frozen backbone alone costs (the prompt is an addition "
    "to the pixels, the probe one linear layer). The training step of the joint stage costs more than the anchor's "
    "linear probe because the visual prompt is an input: its gradient needs the full backward through the frozen "
    "backbone's activations (no weight gradients), where a linear probe on a frozen backbone needs none. That is "
    "the method's price for a visual prompt, not overhead.\n\n"
    "**MoVL in the training loop.** Its demo has the smallest step of the five (~7 ms), so fixed per-step costs "
    "show most here. hfmed's own loop unwraps the model and lists its parameters once per run "
    "(`accelerator.unwrap_model` walks every module and looks up installed packages: ~0.5 ms a step). Accelerate's "
    "wrappers then cost ~0.4 ms a step: `AcceleratedOptimizer.step` looks up the optional `lomo_optim` package "
    "twice per call (an uncached `importlib` search of `sys.path`), its `zero_grad` inspects the optimizer's "
    "signature, `clip_grad_norm_` scans every gradient for DTensors. Those wrappers serve fp16 loss scaling, "
    "DeepSpeed, FSDP, XLA and LOMO; when a run uses none of them (one process or DDP, no scaler, Adam / AdamW) "
    "`hfmed.train.StepCalls` makes the torch calls they reduce to, with bit-identical weights (a test compares "
    "both paths); any other run goes through Accelerate."
)

LT_VIT_NOTES = (
    "**LT-ViT against timm.** The 14 label tokens join the last 4 of 12 blocks: 211 tokens there instead of 197, "
    "and the label queries attend to every key: 2.4 % more FLOPs than timm's forward_features when every token is "
    "computed (the base-model row). The label blocks run the image queries unmasked through the fused attention "
    "kernel on image keys only and the 14 label queries in a second, small call, writing both straight into the "
    "projection's input. The classifier reads only the label tokens, so its last block computes only theirs "
    "(keys and values still come from every token): the forward row's FLOP ratio drops below 1. timm's "
    "forward_features returns every token, so its anchor still computes the last block's image tokens; the "
    "base-model row is the same-work comparison. The label attention maps need only the label queries' weights: "
    "those run the explicit softmax while the image queries stay on the fused kernel."
)

SCOPEFORMER_NOTES = (
    "**Scopeformer's from_pretrained.** Per key it is slower than ViTModel and as fast as transformers' own "
    "ResNetModel with as many keys. transformers' loader compiles one regular expression per checkpoint key from "
    "the key's name (the rows' notes time that step alone on both key lists), walks `get_submodule` along each "
    "name, and does work per module and per buffer: Scopeformer's four timm CNNs give 73-character names on "
    "average against ViTModel's 30, and 798 BatchNorm buffers against none. Building the model itself (meta "
    "device, no weight init) costs less than ViTModel's. What remains is the loader's work on long names: the "
    "timm CNNs' own module names (`blocks.4.0.conv_dw`) carry most of the length, so shortening our prefix "
    "would not reach ViTModel's names and would break existing checkpoints; against a native CNN with names as "
    "long (ResNetModel) the loader costs the same."
)

BENCHES: dict[str, FamilyBench] = {
    "scopeformer": FamilyBench(_scopeformer_config, _image_inputs, _scopeformer_anchor, _scopeformer_preprocess,
                               notes=SCOPEFORMER_NOTES),
    "lt_vit": FamilyBench(_lt_vit_config, _image_inputs, _lt_vit_anchor, _lt_vit_preprocess,
                          extra_rows=lt_vit_rows, notes=LT_VIT_NOTES),
    "slice_cnn": FamilyBench(
        _slice_cnn_config, _volume_inputs, _slice_cnn_anchor, _slice_cnn_preprocess, batch=2,
        gemm_note="2 volumes = 182 ResNet-18 slices of 109x91: convolutions on small maps, not large GEMMs",
    ),
    "movl": FamilyBench(_movl_config, _movl_inputs, _movl_anchor, _movl_preprocess, prepare=_movl_prepare,
                        notes=MOVL_NOTES),
    "diamant": FamilyBench(
        _diamant_config, _mask_inputs, _diamant_anchor, _diamant_preprocess, extra_rows=segformer_row,
        gemm_note="partly GEMM-bound: thin full-resolution convolutions, norms, pooling (see the notes below)",
        notes=DIAMANT_NOTES,
    ),
}


# --------------------------------------------------------------------------------------------- the rows


def _train_step(module: nn.Module, loss_fn, settings: Settings):
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    def step(pixel_values, labels):
        with settings.autocast():
            loss = loss_fn(pixel_values, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def build(name: str, settings: Settings) -> tuple:
    """A family's head model at its published size (seed 0, eval mode, in its training stage) and its anchor:
    `(config, model, anchor_name, anchor_eval, anchor_module, anchor_train)`."""
    from hfmed.registry import FAMILIES

    spec = BENCHES[name]
    config = spec.config()
    torch.manual_seed(0)
    model = FAMILIES[name].head_class(config).to(settings.device).eval()
    if spec.prepare is not None:
        spec.prepare(model, config)
    anchor_name, anchor_eval, anchor_module, anchor_train = spec.anchor(config)
    anchor_module.to(settings.device).eval()
    return config, model, anchor_name, anchor_eval, anchor_module, anchor_train


def bench_family(name: str, settings: Settings, gemm_gflops: float) -> list[Row]:
    from hfmed.registry import FAMILIES

    family, spec = FAMILIES[name], BENCHES[name]
    device = settings.device
    config, model, anchor_name, anchor_eval, anchor_module, anchor_train = build(name, settings)
    pixel_values, labels = (t.to(device) for t in spec.inputs(config, spec.batch))
    ours_eval, anchor_plain = model, anchor_eval
    if settings.compile:
        ours_eval, anchor_eval = torch.compile(model), torch.compile(anchor_eval)
    rows = []
    flops = None  # our forward's FLOPs, counted once for the forward and GEMM rows
    if settings.wants("forward") or settings.wants("gemm"):
        with torch.inference_mode():
            flops = count_flops(lambda: model(pixel_values=pixel_values))

    def ours_forward():
        with torch.inference_mode(), settings.autocast():
            ours_eval(pixel_values=pixel_values)

    def anchor_forward():
        with torch.inference_mode(), settings.autocast():
            anchor_eval(pixel_values)

    if settings.wants("forward"):
        timing = interleaved(ours_forward, anchor_forward, settings)
        with torch.inference_mode():  # the work each side does: the ratio a perfect implementation would reach
            work = flops / count_flops(lambda: anchor_plain(pixel_values))
        rows.append(Row(name, f"eval forward, batch {spec.batch}", *timing, anchor_name, spread=timing.spread,
                        note=f"FLOPs ours / anchor {work:.3f}x", extra={"flop_ratio": work}))

    if settings.wants("noise"):
        # the same work twice: a second instance of our model (same weights, its own memory) against the first.
        # Its ratio should be 1.0; how far it lands from 1.0, and its spread, is what this machine can resolve.
        twin = copy.deepcopy(model)
        twin_eval = torch.compile(twin) if settings.compile else twin

        def twin_forward():
            with torch.inference_mode(), settings.autocast():
                twin_eval(pixel_values=pixel_values)

        timing = interleaved(ours_forward, twin_forward, settings)
        rows.append(Row(name, f"noise: eval forward, batch {spec.batch}, against itself", *timing,
                        "a second instance of the same model", target="1.0 (a tie)", spread=timing.spread))
        del twin, twin_eval

    if settings.wants("gemm"):
        # the peak is re-measured interleaved with the forward (a peak from the start of the run would be
        # compared with a forward taken under another machine load)
        gemm, gemm_flops = gemm_call(settings)
        forward_s, gemm_s = interleaved(ours_forward, gemm, settings)
        peak = gemm_flops / gemm_s / 1e9
        rows.append(Row(name, "achieved GFLOP/s (eval forward) vs GEMM peak", flops / forward_s / 1e9, peak,
                        "square 2048 GEMM, interleaved", unit="GFLOP/s", target=">= 0.60x where GEMM-bound",
                        note=spec.gemm_note, extra={"gflops_per_forward": flops / 1e9,
                                                    "gemm_peak_at_start": gemm_gflops}))

    if settings.wants("train"):
        model.train()
        anchor_module.train()
        ours_step = _train_step(model, lambda x, y: model(pixel_values=x, labels=y).loss, settings)
        anchor_step = _train_step(anchor_module, anchor_train, settings)
        timing = interleaved(lambda: ours_step(pixel_values, labels), lambda: anchor_step(pixel_values, labels),
                             settings)
        rows.append(Row(name, f"train step (fwd + bwd + AdamW), batch {spec.batch}", *timing, anchor_name,
                        spread=timing.spread))
        model.eval()

    with tempfile.TemporaryDirectory() as tmp:
        if settings.wants("preprocess"):
            description, processor, raw = spec.preprocess(Path(tmp))
            # interleaved with the model's forward, so both see the same machine load
            timing = interleaved(lambda: processor(raw, return_tensors="pt"), ours_forward, settings)
            per_item, model_s = timing
            spread = timing.spread and tuple(r * spec.batch / len(raw) for r in timing.spread)
            rows.append(Row(name, f"preprocessing per item ({description})", per_item / len(raw),
                            model_s / spec.batch, "model eval forward per item",
                            target="<= 0.2x (>= 5x the model's rate)", spread=spread))
        if settings.wants("from_pretrained"):
            rows.extend(_from_pretrained_rows(name, family, model, Path(tmp), settings))
    if spec.extra_rows is not None and settings.wants("extra"):
        rows.extend(spec.extra_rows(settings))
    return rows


def _rename_seconds(keys: list[str]) -> float | None:
    """What transformers' loader spends on `keys` before any tensor moves: it compiles one regular expression
    per checkpoint key from the key's name (`core_model_loading.WeightRenaming`), and Python's regex cache
    holds 512, so a model with more keys compiles every one on every load. Best of 3, cache cleared; None
    when that internal class is not there (another transformers version)."""
    import re
    import time

    try:
        from transformers.core_model_loading import WeightRenaming
    except ImportError:
        return None
    best = float("inf")
    for _ in range(3):
        re.purge()
        start = time.perf_counter()
        for key in keys:
            WeightRenaming(key, key)
        best = min(best, time.perf_counter() - start)
    re.purge()
    return best


def _from_pretrained_rows(name, family, model, tmp: Path, settings: Settings) -> list[Row]:
    """`from_pretrained` per key vs transformers-native models with about the same number of keys: ViTModel (short,
    shallow key names), and ResNetModel, a CNN whose keys are as long and as deep as a timm CNN's.

    transformers' own per-key work grows with a key's length and depth (one regular expression compiled per key
    from its name, one `get_submodule` walk per key) and its per-module work with the module count, so a family of
    CNNs pays more per key than ViTModel for the same loader: the ResNet row measures that loader on such keys.
    Like every row, both are timed with the process's earlier objects frozen out of the garbage collector
    (`harness.interleaved`): a full collection here lands every second or third load.
    """
    from safetensors.torch import load_file
    from transformers import ResNetConfig, ResNetModel, ViTConfig, ViTModel

    def shape(module):  # what transformers' per-key work grows with: key count, name length, buffers
        keys = list(module.state_dict())
        return len(keys), sum(map(len, keys)) / len(keys), sum(1 for _ in module.buffers()), _rename_seconds(keys)

    ours_dir = tmp / "ours"
    model.save_pretrained(ours_dir)
    ours_keys, ours_len, ours_buffers, ours_rename = shape(model)
    # ViTModel has 16 keys per layer plus 9: pick the depth that matches our key count
    vit_config = ViTConfig(hidden_size=384, num_attention_heads=6, intermediate_size=1536, image_size=224,
                           num_hidden_layers=max(1, round((ours_keys - 9) / 16)))
    # ResNetModel (ResNet-50 widths) has 18 keys per bottleneck layer plus 30: deepen its third stage, as
    # ResNet-101 / -152 do
    layers = max(4, round((ours_keys - 30) / 18))
    resnet_config = ResNetConfig(layer_type="bottleneck",
                                 depths=[3, 4, layers - 10, 3] if layers >= 16 else [1, 1, layers - 3, 1])
    natives = []
    for label, cls, config in (("ViTModel", ViTModel, vit_config), ("ResNetModel (bottleneck)", ResNetModel,
                                                                    resnet_config)):
        native = cls(config)
        native_dir = tmp / f"native_{cls.__name__}"
        native.save_pretrained(native_dir)
        natives.append((label, cls, native_dir, *shape(native)))
        del native
    head = family.head_class

    def raw():
        with torch.device("meta"):
            fresh = head(model.config)
        fresh.load_state_dict(load_file(ours_dir / "model.safetensors"), assign=True, strict=False)

    rows = []
    raw_s, _ = interleaved(raw, None, settings)
    for label, cls, native_dir, native_keys, native_len, native_buffers, native_rename in natives:
        timing = interleaved(lambda: head.from_pretrained(ours_dir),
                             lambda cls=cls, native_dir=native_dir: cls.from_pretrained(native_dir), settings)
        ours_s, native_s = timing
        per_key = native_keys / ours_keys
        spread = timing.spread and tuple(r * per_key for r in timing.spread)
        rows.append(Row(
            name, f"from_pretrained per key ({ours_keys} keys) vs {label.split()[0]}", ours_s / ours_keys,
            native_s / native_keys, f"transformers {label}, {native_keys} keys", target="<= 1.0x",
            note=f"raw meta init + safetensors load: {raw_s * 1e3:.0f} ms; from_pretrained {ours_s * 1e3:.0f} ms "
                 f"= {ours_s / raw_s:.1f}x raw; key names {ours_len:.0f} chars on average, {ours_buffers} "
                 f"buffers (anchor: {native_len:.0f} chars, {native_buffers} buffers)"
                 + (f"; transformers' per-key rename regex {ours_rename / ours_keys * 1e6:.0f} us a key (anchor "
                    f"{native_rename / native_keys * 1e6:.0f} us)" if ours_rename and native_rename else ""),
            extra={"from_pretrained_s": ours_s, "raw_s": raw_s, "native_s": native_s}, spread=spread))
    return rows


__all__ = ["BENCHES", "FamilyBench", "bench_family"]
