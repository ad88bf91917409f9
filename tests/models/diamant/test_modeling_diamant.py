"""DIAMANT: the shared family checks where they apply (and their segmentation equivalents), attention maps
equal to an independent re-implementation of DINO's official `get_last_selfattention` (loaded through
`convert_dino_state_dict` from the official, timm and transformers layouts), parameter counts from closed
forms, the frozen ViT, precomputed maps, ablations, the CE + soft Dice loss with its ignore index, and the
Hub folder (remote code without hfmed, Auto classes, the `image-segmentation` pipeline).

References are written here, independently of the code under test.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForSemanticSegmentation,
    ViTConfig,
    ViTModel,
    pipeline,
)

from hfmed.models.diamant import (
    DIAMANTConfig,
    DIAMANTForSemanticSegmentation,
    DIAMANTImageProcessor,
    DIAMANTModel,
    convert_dino_state_dict,
    diamant_config,
)
from tests.model_tester import FamilyTester

IGNORE = 255


def tiny(**overrides) -> DIAMANTConfig:
    return diamant_config("diamant-tiny", **overrides)


def build(config=None, cls=DIAMANTForSemanticSegmentation, seed=0):
    torch.manual_seed(seed)
    return cls(config or tiny()).eval()


def images(batch=2, height=32, width=32, seed=0):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def segmentation_labels(batch=2, height=32, width=32, num_labels=2, seed=1, ignore_fraction=0.1):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_labels, (batch, height, width), generator=g)
    ignored = torch.rand(batch, height, width, generator=g) < ignore_fraction
    return torch.where(ignored, torch.full_like(labels, IGNORE), labels)


def reference_loss(logits, labels, config):
    """CE over the non-ignored pixels + (1 - mean over classes of the soft Dice over the whole batch), written
    out with log-sum-exp and per-class sums in float64."""
    logits, labels = logits.double(), labels
    valid = labels != config.semantic_loss_ignore_index
    pixels = logits.permute(0, 2, 3, 1)[valid]  # (P, C)
    targets = labels[valid]
    log_p = pixels - torch.logsumexp(pixels, dim=1, keepdim=True)
    ce = -log_p[torch.arange(len(targets)), targets].mean() if len(targets) else torch.zeros((), dtype=torch.double)
    p = log_p.exp()
    classes = range(config.num_labels) if config.dice_include_background else range(1, config.num_labels)
    s = config.dice_smooth
    dices = []
    for c in classes:
        pc, gc = p[:, c], (targets == c).double()
        dices.append((2 * (pc * gc).sum() + s) / (pc.sum() + gc.sum() + s))
    dice_loss = 1 - torch.stack(dices).mean()
    return (config.loss_ce_weight * ce + config.loss_dice_weight * dice_loss).to(logits.dtype)


class TestDIAMANT(FamilyTester):
    base_class = DIAMANTModel
    head_class = DIAMANTForSemanticSegmentation

    @staticmethod
    def config_factory():
        return tiny()

    @staticmethod
    def processor_factory(config):
        return DIAMANTImageProcessor(
            size={"height": config.image_size, "width": config.image_size},
            size_divisor=config.size_multiple,
            num_labels=config.num_labels,
        )

    def make_labels(self, config, batch_size=None, seed=1):
        size = config.image_size
        return segmentation_labels(batch_size or self.batch_size, size, size, config.num_labels, seed)

    def reference_loss(self, logits, labels, config):
        return reference_loss(logits, labels, config).float()

    def bad_pixel_values(self, config, pixels):
        return [
            (pixels[0], "must be 4-D"),
            (pixels[:, :1], "channels"),
            # 36 is not a multiple of 8 (patch size 8, two poolings): the message names the fix
            (torch.nn.functional.pad(pixels, (0, 4, 0, 4)), r"36x36 .* divisible by 8 .*patch_size 8.*pad"),
        ]

    # Image-classification checks that do not apply to a segmenter; each is replaced below.
    test_head_logits_shape = None  # logits are (batch, num_labels, H, W): test_logits_are_per_pixel_at_input_size
    test_base_model_outputs = None  # no pooler, no token width: test_base_model_outputs_and_hidden_states
    # The conv network has no attention layers and the DINO attention is not `attentions`:
    # test_*_attention_maps_equal_* below check it against DINO's official function.
    test_attentions_returned_and_sdpa_matches_eager = None
    test_label_count_mismatch_is_a_clear_error = None  # labels are per pixel: test_bad_labels_are_clear_errors
    test_auto_classes_resolve_the_family = None  # AutoModelForSemanticSegmentation: test_auto_classes_resolve_the_segmenter
    test_remote_code_loads_without_hfmed = None  # segmentation outputs: test_remote_code_segments_without_hfmed
    test_image_classification_pipeline_on_an_image_file = None  # test_image_segmentation_pipeline_...

    # --- segmentation equivalents ---------------------------------------------------------------------
    def test_logits_are_per_pixel_at_input_size(self):
        config = self.config_factory()
        model = self.build()
        with torch.no_grad():
            out = model(**self.make_inputs(config))
            other = model(pixel_values=images(1, 48, 16))  # another size divisible by 8
        assert out.logits.shape == (self.batch_size, config.num_labels, 32, 32)
        assert other.logits.shape == (1, config.num_labels, 48, 16)
        assert torch.isfinite(out.logits).all()
        assert out.attention_maps is None and out.attentions is None

    def test_base_model_outputs_and_hidden_states(self):
        config = self.config_factory()
        model = self.build(self.base_class)
        out = model(**self.make_inputs(config), output_hidden_states=True, output_attention_maps=True)
        assert out.last_hidden_state.shape == (2, config.decoder_widths[-1], 32, 32)
        assert out.attention_maps.shape == (2, config.num_attention_heads, 32, 32)
        # image encoder stages (8 @ 32, 16 @ 16), attention encoder stages, bottleneck (32 @ 8), decoder stages
        shapes = [tuple(h.shape[1:]) for h in out.hidden_states]
        assert shapes == [(8, 32, 32), (16, 16, 16)] * 2 + [(32, 8, 8), (16, 16, 16), (8, 32, 32)]
        as_tuple = model(**self.make_inputs(config), output_attention_maps=True, return_dict=False)
        torch.testing.assert_close(as_tuple[0], out.last_hidden_state)
        torch.testing.assert_close(as_tuple[1], out.attention_maps)

    def test_bad_labels_are_clear_errors(self):
        config = self.config_factory()
        model = self.build()
        inputs = self.make_inputs(config)
        labels = self.make_labels(config)
        cases = [
            (torch.zeros(2, config.num_labels + 1, dtype=torch.long), r"labels has shape \(2, 3\).*\(2, 32, 32\)"),
            (labels[:, None], r"channel axis.*squeeze\(1\)"),
            (labels.float(), r"dtype torch.float32.*labels.long\(\)"),
            (torch.where(labels == 1, 7, labels), r"values \[7\] outside the classes 0..1 .*ignore index 255"),
            (torch.full_like(labels, -1), r"values \[-1\]"),
        ]
        for bad, message in cases:
            with pytest.raises(ValueError, match=message) as info:
                model(**inputs, labels=bad)
            assert "\n" not in str(info.value)

    def test_auto_classes_resolve_the_segmenter(self, tmp_path):
        config = self.config_factory()
        assert isinstance(AutoConfig.for_model(config.model_type), DIAMANTConfig)
        assert type(AutoModel.from_config(config)) is DIAMANTModel
        assert type(AutoModelForSemanticSegmentation.from_config(config)) is DIAMANTForSemanticSegmentation
        model = self.build()
        model.save_pretrained(tmp_path)
        self.processor_factory(config).save_pretrained(tmp_path)
        assert type(AutoModel.from_pretrained(tmp_path)) is DIAMANTModel
        assert type(AutoModelForSemanticSegmentation.from_pretrained(tmp_path)) is DIAMANTForSemanticSegmentation
        assert type(AutoImageProcessor.from_pretrained(tmp_path)) is DIAMANTImageProcessor

    def test_remote_code_segments_without_hfmed(self, tmp_path):
        config = self.config_factory()
        model, processor, folder = self.hub_folder(tmp_path)
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert {"AutoConfig", "AutoModel", "AutoModelForSemanticSegmentation", "AutoImageProcessor"} <= set(auto_map)
        assert "AutoModelForImageClassification" not in auto_map
        inputs = self.make_inputs(config)
        save_file(inputs, str(tmp_path / "inputs.safetensors"))
        rng = np.random.default_rng(3)
        Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)).save(tmp_path / "image.png")
        Image.fromarray((rng.random((40, 24)) > 0.5).astype(np.uint8)).save(tmp_path / "mask.png")
        script = textwrap.dedent(
            """
            import sys
            sys.modules["hfmed"] = None  # `import hfmed` now fails: prove the folder stands alone
            import torch
            from safetensors.torch import load_file, save_file
            from transformers import AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation
            folder, inputs, out, image, mask = sys.argv[1:6]
            x = load_file(inputs)
            head = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
            base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
            for obj in (head, base, processor):
                assert not type(obj).__module__.startswith("hfmed"), type(obj).__module__
            for model in (head.diamant, base):
                assert not any(p.requires_grad for p in model.dino.parameters())
            batch = processor(image, segmentation_maps=mask, return_tensors="pt")
            with torch.no_grad():
                result = head(**x, output_attention_maps=True)
                save_file(
                    {
                        "logits": result.logits,
                        "maps": result.attention_maps.contiguous(),
                        "features": base(**x).last_hidden_state.contiguous(),
                        "pixel_values": batch["pixel_values"],
                        "labels": batch["labels"],
                    },
                    out,
                )
            """
        )
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
        args = [folder, tmp_path / "inputs.safetensors", tmp_path / "o", tmp_path / "image.png", tmp_path / "mask.png"]
        result = subprocess.run(
            [sys.executable, "-c", script, *map(str, args)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        remote = load_file(str(tmp_path / "o"))
        with torch.no_grad():
            expected = model(**inputs, output_attention_maps=True)
            base = self.build(self.base_class)
            base.load_state_dict(model.base_model.state_dict())
            features = base(**inputs).last_hidden_state
        torch.testing.assert_close(remote["logits"], expected.logits, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(remote["maps"], expected.attention_maps, atol=0, rtol=0)
        torch.testing.assert_close(remote["features"], features, atol=1e-6, rtol=1e-6)
        local = processor(str(tmp_path / "image.png"), segmentation_maps=str(tmp_path / "mask.png"), return_tensors="pt")
        torch.testing.assert_close(remote["pixel_values"], local["pixel_values"], atol=0, rtol=0)
        assert torch.equal(remote["labels"], local["labels"])

    def test_image_segmentation_pipeline_on_an_image_file(self, tmp_path):
        config = self.config_factory()
        model, processor, folder = self.hub_folder(tmp_path)
        rng = np.random.default_rng(0)
        path = tmp_path / "example.png"
        Image.fromarray(rng.integers(0, 256, (45, 60, 3), dtype=np.uint8)).save(path)
        pipe = pipeline("image-segmentation", model=str(folder), trust_remote_code=True)
        result = pipe(str(path))
        # The reference: processor -> model -> logits resized bilinearly to 45x60 -> argmax, done here by hand.
        with torch.no_grad():
            pixel_values = processor(Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]
            logits = model(pixel_values=pixel_values).logits
        resized = torch.nn.functional.interpolate(logits, size=(45, 60), mode="bilinear", align_corners=False)
        expected = resized[0].argmax(0).numpy()
        present = sorted(np.unique(expected).tolist())
        assert [r["label"] for r in result] == [config.id2label[i] for i in present]
        for r in result:
            assert r["score"] is None and r["mask"].size == (60, 45)
            label_id = config.label2id[r["label"]]
            np.testing.assert_array_equal(np.asarray(r["mask"]) == 255, expected == label_id)


# --- DINO's official ViT, re-implemented here in the official key layout ---------------------------------


class OfficialAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)), attn


class OfficialMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class OfficialBlock(nn.Module):
    def __init__(self, dim, heads, hidden, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = OfficialAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = OfficialMlp(dim, hidden)

    def forward(self, x, return_attention=False):
        y, attn = self.attn(self.norm1(x))
        if return_attention:
            return attn
        x = x + y
        return x + self.mlp(self.norm2(x))


class OfficialPatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.patch_size = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class OfficialViT(nn.Module):
    """DINO's `VisionTransformer` (github.com/facebookresearch/dino, vision_transformer.py), head-less."""

    def __init__(self, img_size=32, patch=8, dim=32, depth=2, heads=2, hidden=64, eps=1e-6):
        super().__init__()
        self.patch_embed = OfficialPatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img_size // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(OfficialBlock(dim, heads, hidden, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)

    def interpolate_pos_encoding(self, x, w, h):
        npatch, n = x.shape[1] - 1, self.pos_embed.shape[1] - 1
        if npatch == n and w == h:
            return self.pos_embed
        class_pos_embed, patch_pos_embed = self.pos_embed[:, 0], self.pos_embed[:, 1:]
        dim = x.shape[-1]
        w0 = w // self.patch_embed.patch_size + 0.1
        h0 = h // self.patch_embed.patch_size + 0.1
        patch_pos_embed = nn.functional.interpolate(
            patch_pos_embed.reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
            scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
            mode="bicubic",
        )
        assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)

    def get_last_selfattention(self, x):
        _, _, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        for i, blk in enumerate(self.blocks):
            if i < len(self.blocks) - 1:
                x = blk(x)
            else:
                return blk(x, return_attention=True)


def official_maps(attention, height, width, patch):
    """DINO's visualize_attention.py steps (CLS row over the patches, reshape, nearest x patch), batched, then
    min-max per head and image (our documented normalisation)."""
    batch, heads = attention.shape[:2]
    maps = attention[:, :, 0, 1:].reshape(batch, heads, height // patch, width // patch)
    maps = nn.functional.interpolate(maps, scale_factor=patch, mode="nearest")
    out = torch.zeros_like(maps)
    for b in range(batch):
        for h in range(heads):
            m = maps[b, h]
            if m.max() > m.min():
                out[b, h] = (m - m.min()) / (m.max() - m.min())
    return out


def randomise(module, seed):
    # Random values in every parameter, LayerNorms near 1, so that a swapped key cannot go unnoticed.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_norm_weight = name.endswith("weight") and p.ndim == 1
            p.copy_(1.0 + 0.2 * noise if is_norm_weight else 0.3 * noise)
    return module.eval()


@pytest.mark.parametrize("size", [(32, 32), (48, 32), (16, 64), (64, 64)])
def test_attention_maps_equal_dino_official_get_last_selfattention(size):
    official = randomise(OfficialViT(), seed=0)
    config = tiny()
    model = DIAMANTForSemanticSegmentation(config).eval()
    model.diamant.dino.load_state_dict(convert_dino_state_dict(official.state_dict(), config), strict=True)
    x = images(2, *size, seed=4)
    with torch.no_grad():
        expected = official.get_last_selfattention(x)
        ours = model.diamant.dino.get_last_selfattention(x)
        maps = model(pixel_values=x, output_attention_maps=True).attention_maps
    n = 1 + (size[0] // 8) * (size[1] // 8)
    assert ours.shape == expected.shape == (2, 2, n, n)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)
    reference = official_maps(expected, *size, patch=8)
    assert maps.shape == (2, config.num_attention_heads, *size)
    torch.testing.assert_close(maps, reference, atol=1e-5, rtol=1e-5)
    flat = maps.flatten(2)
    assert torch.equal(flat.amin(-1), torch.zeros(2, 2)) and torch.equal(flat.amax(-1), torch.ones(2, 2))


def test_dino_training_checkpoint_loads_its_teacher():
    official = randomise(OfficialViT(), seed=1)
    state = {f"module.backbone.{k}": v for k, v in official.state_dict().items()}
    state["module.head.mlp.0.weight"] = torch.zeros(4, 32)  # the DINO head, dropped
    checkpoint = {"teacher": state, "student": {"junk": torch.zeros(1)}, "epoch": 100}
    converted = convert_dino_state_dict(checkpoint, tiny())
    assert set(converted) == set(official.state_dict())
    for key, value in official.state_dict().items():
        assert torch.equal(converted[key], value), key


def tiny_timm_dino(seed=2):
    model = timm.create_model(
        "vit_small_patch8_224.dino",
        pretrained=False,
        img_size=32,
        embed_dim=32,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
        num_classes=0,
    )
    return randomise(model, seed)


def test_timm_dino_layout_is_the_official_one_and_gives_the_same_maps():
    source = tiny_timm_dino()
    official = OfficialViT()
    official.load_state_dict(source.state_dict(), strict=True)  # same names and shapes
    official.eval()
    config = tiny()
    model = DIAMANTModel.from_dino(source, config).eval()
    x = images(3, seed=5)
    with torch.no_grad():
        expected = official_maps(official.get_last_selfattention(x), 32, 32, 8)
        maps = model(pixel_values=x, output_attention_maps=True).attention_maps
        torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-5)
    head = DIAMANTForSemanticSegmentation.from_dino(source.state_dict(), config)
    for key, value in source.state_dict().items():
        assert torch.equal(head.diamant.dino.state_dict()[key], value), key


def tiny_hf_vit(seed=3, eps=1e-12):
    vit_config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        layer_norm_eps=eps,
        hidden_act="gelu",
    )
    vit_config._attn_implementation = "eager"  # attention weights out of the softmax
    return randomise(ViTModel(vit_config, add_pooling_layer=False), seed)


def v4_names(state_dict):
    """transformers v5 ViT keys -> the v4 names stored in Hub files (facebook/dino-vits8)."""
    parts = {
        "attention.q_proj": "attention.attention.query",
        "attention.k_proj": "attention.attention.key",
        "attention.v_proj": "attention.attention.value",
        "attention.o_proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
        "layernorm_before": "layernorm_before",
        "layernorm_after": "layernorm_after",
    }
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("layers."):
            _, index, rest = key.split(".", 2)
            inner, leaf = rest.rsplit(".", 1)
            key = f"encoder.layer.{index}.{parts[inner]}.{leaf}"
        renamed[key] = value
    assert any(k.startswith("encoder.layer.1.attention.attention.query") for k in renamed)
    return renamed


def test_transformers_dino_layout_gives_transformers_own_attention():
    source = tiny_hf_vit()
    config = tiny(layer_norm_eps=1e-12)  # the Hub config's eps: reproduce that module exactly
    x = images(2, seed=6)
    with torch.no_grad():
        attentions = source(pixel_values=x, output_attentions=True).attentions
        expected = official_maps(attentions[-1], 32, 32, 8)
        for state in (source.state_dict(), v4_names(source.state_dict())):
            prefixed = {f"vit.{k}": v for k, v in state.items()} | {"pooler.dense.weight": torch.zeros(32, 32)}
            for variant in (state, prefixed):
                model = DIAMANTModel.from_dino(variant, config).eval()
                torch.testing.assert_close(model.get_attention_maps(x), expected, atol=1e-5, rtol=1e-5)
        module = DIAMANTModel.from_dino(source, config).eval()
        torch.testing.assert_close(module.dino.get_last_selfattention(x), attentions[-1], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"LayerNorm eps 1e-12 but config.layer_norm_eps is 1e-06.*layer_norm_eps=1e-12"):
        DIAMANTModel.from_dino(source, tiny())
    # The state dict carries no eps: the config's DINO eps (1e-6) runs the same weights.
    assert DIAMANTModel.from_dino(source.state_dict(), tiny()).config.layer_norm_eps == 1e-6


def test_dino_conversion_errors_name_the_fix():
    state = OfficialViT().state_dict()
    with pytest.raises(ValueError, match=r"4x4 patch grid.*set image_size=32; other input sizes still work"):
        convert_dino_state_dict(state, tiny(image_size=64))
    with pytest.raises(ValueError, match=r"has 2 blocks but config.num_hidden_layers is 3"):
        convert_dino_state_dict(state, tiny(num_hidden_layers=3))
    with pytest.raises(ValueError, match=r"patch embedding has shape \(32, 3, 8, 8\).*diamant-vits16"):
        convert_dino_state_dict(state, tiny(patch_size=16, image_size=64, hidden_size=32))
    with pytest.raises(ValueError, match=r"cannot map: \['reg_token'\]"):
        convert_dino_state_dict({**state, "reg_token": torch.zeros(1, 4, 32)}, tiny())
    with pytest.raises(ValueError, match=r"cannot tell the ViT layout"):
        convert_dino_state_dict({"weight": torch.zeros(1)}, tiny())
    with pytest.raises(ValueError, match=r"does not fit this DIAMANTConfig.*intermediate_size"):
        DIAMANTModel.from_dino(state, tiny(intermediate_size=48))
    with pytest.raises(ValueError, match=r"no DINO ViT"):
        DIAMANTModel.from_dino(state, tiny(use_attention_encoder=False))


def test_from_pretrained_backbones_offline_is_a_one_line_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    for name in ("vit_small_patch8_224.dino", "facebook/dino-vits8"):
        with pytest.raises(OSError, match=rf"{name}.*HF_HUB_OFFLINE.*from_dino") as info:
            DIAMANTForSemanticSegmentation.from_pretrained_backbones(tiny(pretrained_dino=name))
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="pretrained_dino names no DINO weights"):
        DIAMANTForSemanticSegmentation.from_pretrained_backbones(tiny())
    # The plain U-Net ablation has no ViT, so nothing to fetch.
    assert DIAMANTModel.from_pretrained_backbones(tiny(use_attention_encoder=False)).dino is None


# --- parameter counts (meta device) against closed forms ---------------------------------------------------


def count(config, trainable=None):
    with torch.device("meta"):
        model = DIAMANTForSemanticSegmentation(config)
    return sum(p.numel() for p in model.parameters() if trainable is None or p.requires_grad == trainable)


def conv_network_parameters(image_in, maps_in, widths, bottleneck, decoder, classes, skip_factor):
    """conv3x3 (no bias) + BatchNorm (2 per channel) blocks, 2x2 ConvTranspose with bias, 1x1 conv with bias."""

    def block(cin, cout):
        return 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout

    def encoder(cin):
        total = 0
        for w in widths:
            total, cin = total + block(cin, w), w
        return total

    encoders = [c for c in (image_in, maps_in) if c]
    total = sum(encoder(c) for c in encoders) + block(widths[-1] * len(encoders), bottleneck)
    previous = bottleneck
    for w, skip in zip(decoder, widths[::-1], strict=True):
        total += 4 * previous * w + w + block(w + skip_factor * skip, w)
        previous = w
    return total + previous * classes + classes


def dino_parameters(dim, depth, hidden, patch, grid):
    per_block = 4 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (dim * hidden + hidden) + (hidden * dim + dim)
    return 3 * patch * patch * dim + dim + dim + (grid * grid + 1) * dim + depth * per_block + 2 * dim


def test_parameter_counts_of_the_default_model_and_the_plain_unet():
    config = DIAMANTConfig()  # diamant-vits8, 2 classes, 224
    widths, decoder = [32, 64, 128, 128], [256, 128, 64, 32]
    dual = conv_network_parameters(3, 6, widths, 512, decoder, 2, 1)
    vit = dino_parameters(384, 12, 1536, 8, 28)
    assert count(config, trainable=True) == dual == 7_461_570  # METHODS.md: about 7.46 M
    assert count(config, trainable=False) == vit == 21_670_272  # DINO ViT-S/8, frozen
    assert count(config) == dual + vit
    unet = conv_network_parameters(3, 0, widths, 512, decoder, 2, 1)
    plain = DIAMANTConfig(use_attention_encoder=False)
    assert count(plain) == count(plain, trainable=True) == unet == 6_288_002
    # The other variants follow the same closed form.
    assert count(DIAMANTConfig(skip_connections="both"), True) == conv_network_parameters(3, 6, widths, 512, decoder, 2, 2)
    maps_only = DIAMANTConfig(use_image_encoder=False, skip_connections="attention")
    assert count(maps_only, True) == conv_network_parameters(0, 6, widths, 512, decoder, 2, 1)
    vits16 = diamant_config("diamant-vits16")
    assert count(vits16, False) == dino_parameters(384, 12, 1536, 16, 14)
    assert count(vits16, True) == dual


# --- frozen DINO, precomputed maps, ablations ---------------------------------------------------------------


def test_a_training_step_leaves_dino_bit_identical():
    config = tiny()
    torch.manual_seed(0)
    model = DIAMANTForSemanticSegmentation(config).train()
    dino_before = {k: v.clone() for k, v in model.diamant.dino.state_dict().items()}
    conv_before = model.diamant.image_encoder.stages[0].conv1.weight.clone()
    assert not any(p.requires_grad for p in model.diamant.dino.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    out = model(pixel_values=images(), labels=segmentation_labels())
    out.loss.backward()
    assert all(p.grad is None for p in model.diamant.dino.parameters())
    optimizer.step()
    for key, value in model.diamant.dino.state_dict().items():
        assert torch.equal(value, dino_before[key]), key
    assert not torch.equal(model.diamant.image_encoder.stages[0].conv1.weight, conv_before)


def test_dino_stays_frozen_after_loading(tmp_path):
    build().save_pretrained(tmp_path)
    loaded = [
        DIAMANTForSemanticSegmentation.from_pretrained(tmp_path),
        AutoModelForSemanticSegmentation.from_pretrained(tmp_path),
        DIAMANTModel.from_pretrained(tmp_path),
        DIAMANTForSemanticSegmentation.from_pretrained(tmp_path, output_loading_info=True)[0],
    ]
    for model in loaded:
        base = getattr(model, "diamant", model)
        assert not any(p.requires_grad for p in base.dino.parameters())
        assert all(p.requires_grad for p in base.image_encoder.parameters())


def test_precomputed_attention_maps_give_the_same_output_and_are_checked():
    config = tiny()
    model = build(config)
    x = images(seed=7)
    with torch.no_grad():
        plain = model(pixel_values=x, output_attention_maps=True)
        maps = model.diamant.get_attention_maps(x)
        cached = model(pixel_values=x, attention_maps=maps, output_attention_maps=True)
    assert torch.equal(maps, plain.attention_maps)
    torch.testing.assert_close(cached.logits, plain.logits, atol=0, rtol=0)
    assert cached.attention_maps is maps
    cases = [
        (maps[:, :1], r"attention_maps has 1 maps per image but this DINO ViT has 2 heads.*get_attention_maps"),
        (maps[:1], r"shape \(1, 2, 32, 32\) but pixel_values needs \(2, 2, 32, 32\)"),
        (maps[:, :, :16], r"pixel_values needs \(2, 2, 32, 32\)"),
        (maps[0], r"must be a 4-D tensor .*\(2, 2, 32, 32\), got \(2, 32, 32\)"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            model(pixel_values=x, attention_maps=bad)
        assert "\n" not in str(info.value)


def test_plain_unet_ablation_has_no_vit_and_refuses_maps():
    config = tiny(use_attention_encoder=False)
    model = build(config)
    assert model.diamant.dino is None and model.diamant.attention_encoder is None
    x = images(1, 36, 20)  # no patch constraint without the ViT: multiples of 4 (two poolings)
    out = model(pixel_values=x, output_attention_maps=True)
    assert out.logits.shape == (1, 2, 36, 20) and out.attention_maps is None
    with pytest.raises(ValueError, match="no attention encoder.*drop attention_maps"):
        model(pixel_values=x, attention_maps=torch.zeros(1, 2, 36, 20))
    with pytest.raises(ValueError, match=r"divisible by 4 \(2 poolings of 2\)"):
        model(pixel_values=images(1, 34, 20))


def test_without_image_encoder_the_image_acts_only_through_the_maps():
    config = tiny(use_image_encoder=False, skip_connections="attention")
    model = build(config)
    assert model.diamant.image_encoder is None
    x = images(seed=8)
    with torch.no_grad():
        maps = model.diamant.get_attention_maps(x)
        a = model(pixel_values=x, attention_maps=maps).logits
        b = model(pixel_values=images(seed=9), attention_maps=maps).logits
    assert torch.equal(a, b)


def test_skips_from_both_encoders_change_the_output():
    x = images(seed=10)
    with torch.no_grad():
        both = build(tiny(skip_connections="both"))
        assert both.diamant.decoder[0].block.conv1.in_channels == 16 + 2 * 16
        out = both(pixel_values=x).logits
        # zeroing the attention half of the first decoder conv's skip input removes the attention skip
        both.diamant.decoder[-1].block.conv1.weight[:, 8 + 8 :] = 0
        assert (both(pixel_values=x).logits - out).abs().max() > 1e-4


def test_config_validation_names_the_field():
    cases = [
        (dict(skip_connections="none"), r"skip_connections must be one of \['image', 'attention', 'both'\]"),
        (dict(use_image_encoder=False), r"set skip_connections='attention'"),
        (dict(use_attention_encoder=False, skip_connections="both"), r"set skip_connections='image'"),
        (dict(use_image_encoder=False, use_attention_encoder=False), "keep at least one encoder"),
        (dict(decoder_widths=[8]), "decoder_widths has 1 stages but encoder_widths has 2"),
        (dict(image_size=36), r"image_size \(36\) must be divisible by 8"),
        (dict(id2label={0: "lesion"}), "num_labels must be at least 2"),
        (dict(semantic_loss_ignore_index=1), "semantic_loss_ignore_index must be an integer outside 0..1"),
        (dict(loss_ce_weight=0.0, loss_dice_weight=0.0), "both 0"),
        (dict(dice_smooth=-1.0), "dice_smooth must be a number >= 0"),
        (dict(hidden_size=31), "hidden_size .* divisible by num_attention_heads"),
        (dict(encoder_widths=[8, 0]), "encoder_widths must be a non-empty list of positive integers"),
    ]
    for fields, message in cases:
        with pytest.raises(ValueError, match=message):
            tiny(**fields)
    with pytest.raises(ValueError, match="unknown DIAMANT preset"):
        diamant_config("diamant-huge")
    vits8 = diamant_config("diamant-vits8")
    assert (vits8.patch_size, vits8.num_attention_heads, vits8.image_size, vits8.size_multiple) == (8, 6, 224, 16)
    assert vits8.id2label == {0: "background", 1: "foreground"}
    assert vits8.pretrained_dino == "vit_small_patch8_224.dino" and vits8.layer_norm_eps == 1e-6


# --- loss ------------------------------------------------------------------------------------------------


def test_ignored_pixels_count_in_neither_loss_term():
    config = tiny(id2label={0: "bg", 1: "a", 2: "b"}, dice_include_background=False, loss_ce_weight=0.5)
    model = build(config)
    labels = segmentation_labels(num_labels=3, ignore_fraction=0.3)
    logits = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(11), requires_grad=True)
    loss = model.loss_function(logits, labels)
    torch.testing.assert_close(loss, reference_loss(logits, labels, config).float(), atol=1e-6, rtol=1e-6)
    loss.backward()
    ignored = labels == IGNORE
    assert ignored.any() and torch.equal(logits.grad.permute(0, 2, 3, 1)[ignored], torch.zeros(int(ignored.sum()), 3))
    moved = logits.detach().clone()
    moved.permute(0, 2, 3, 1)[ignored] += 5.0
    torch.testing.assert_close(model.loss_function(moved, labels), loss.detach(), atol=1e-6, rtol=0)
    nothing = model.loss_function(logits, torch.full_like(labels, IGNORE))
    assert torch.isfinite(nothing) and nothing.requires_grad
    # With nothing left, CE is 0 and every Dice is s / s = 1.
    assert nothing.item() == 0.0


def test_dice_loss_of_a_perfect_prediction_is_zero():
    config = tiny(loss_ce_weight=0.0, dice_smooth=0.0)
    model = build(config)
    labels = segmentation_labels(ignore_fraction=0.0)
    logits = torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float() * 1e4
    assert model.loss_function(logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    flipped = model.loss_function(-logits, labels).item()
    assert flipped == pytest.approx(1.0, abs=1e-6)


# --- DINO fingerprint (part of the attention-map cache key) -------------------------------------------------


def test_dino_fingerprint_follows_the_weights(tmp_path):
    model = build(cls=DIAMANTModel)
    first = model.dino_fingerprint()
    model.save_pretrained(tmp_path)
    assert DIAMANTModel.from_pretrained(tmp_path).dino_fingerprint() == first
    with torch.no_grad():
        model.dino.blocks[0].attn.qkv.weight[0, 0] += 1e-3
    assert model.dino_fingerprint() != first
    with torch.no_grad():  # the conv network is not part of it
        model.dino.blocks[0].attn.qkv.weight[0, 0] -= 1e-3
        model.image_encoder.stages[0].conv1.weight.zero_()
    assert model.dino_fingerprint() == first
