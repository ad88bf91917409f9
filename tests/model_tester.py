"""Shared checks for every hfmed family (the transformers `ModelTesterMixin` idea, kept small).

A family's test file subclasses `FamilyTester`, sets the class attributes and implements
`reference_loss` (an independent computation of the paper's loss); every test below then runs for it.
The `make_*` / `bad_pixel_values` / `expected_num_hidden_states` hooks adapt the checks to other inputs
(volumes instead of images). A family without a concept a test checks (no attention layers, no 2-D image
input for `pipeline("image-classification")`) sets that test to `None` in its subclass, with a comment
saying why, and tests the replacement in its own file.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, pipeline

import hfmed
from hfmed.hub import save_for_hub


class FamilyTester:
    config_factory = None  # () -> tiny config (2 layers, width 32, 32-64 px)
    base_class = None
    head_class = None
    processor_factory = None  # (config) -> image processor for that config
    batch_size = 2

    # --- hooks a family may override -------------------------------------------------------------------
    def make_inputs(self, config, batch_size=None, seed=0):
        batch_size = batch_size or self.batch_size
        g = torch.Generator().manual_seed(seed)
        size = config.image_size
        return {"pixel_values": torch.randn(batch_size, config.num_channels, size, size, generator=g)}

    def make_labels(self, config, batch_size=None, seed=1):
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 2, (batch_size or self.batch_size, config.num_labels), generator=g).float()

    def reference_loss(self, logits, labels, config):
        raise NotImplementedError

    def expected_num_hidden_states(self, config) -> int:
        """How many `hidden_states` the base model returns with `output_hidden_states=True`."""
        return config.num_hidden_layers + 1

    def bad_pixel_values(self, config, pixels):
        """(bad pixel_values, regex of the error) pairs: wrong rank, channel count and image size."""
        return [
            (pixels[0], "must be 4-D"),
            (pixels[:, :1], "channels"),
            (torch.nn.functional.pad(pixels, (0, 8, 0, 8)), "config.image_size"),
        ]

    def write_example_image(self, path: Path, config) -> Path:
        """An input file the standard `image-classification` pipeline can read (PNG by default)."""
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (config.image_size, config.image_size, 3), dtype=np.uint8)).save(path)
        return path

    # --- helpers ---------------------------------------------------------------------------------------
    def build(self, cls=None, config=None, seed=0):
        torch.manual_seed(seed)
        return (cls or self.head_class)(config or self.config_factory()).eval()

    # --- shapes and outputs ----------------------------------------------------------------------------
    def test_head_logits_shape(self):
        config = self.config_factory()
        out = self.build()(**self.make_inputs(config))
        assert out.logits.shape == (self.batch_size, config.num_labels)
        assert torch.isfinite(out.logits).all()

    def test_base_model_outputs(self):
        config = self.config_factory()
        out = self.build(self.base_class)(**self.make_inputs(config), output_hidden_states=True)
        assert out.last_hidden_state.shape[0] == self.batch_size
        assert out.last_hidden_state.shape[-1] == config.hidden_size
        assert out.pooler_output.shape == (self.batch_size, config.hidden_size)
        assert len(out.hidden_states) == self.expected_num_hidden_states(config)

    def test_attentions_returned_and_sdpa_matches_eager(self):
        config = self.config_factory()
        model = self.build()
        inputs = self.make_inputs(config)
        with torch.no_grad():
            fused = model(**inputs).logits
            eager = model(**inputs, output_attentions=True)
        assert len(eager.attentions) == config.num_hidden_layers
        rows = eager.attentions[0].sum(-1)
        torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-5, rtol=0)
        torch.testing.assert_close(eager.logits, fused, atol=1e-5, rtol=1e-5)

    def test_batch_independence_in_eval(self):
        config = self.config_factory()
        model = self.build()
        inputs = self.make_inputs(config, batch_size=3)
        with torch.no_grad():
            batched = model(**inputs).logits
            single = model(**{k: v[1:2] for k, v in inputs.items()}).logits
        torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=1e-5)

    # --- loss and gradients ----------------------------------------------------------------------------
    def test_loss_matches_reference(self):
        config = self.config_factory()
        model = self.build()
        labels = self.make_labels(config)
        out = model(**self.make_inputs(config), labels=labels)
        assert out.loss.ndim == 0
        torch.testing.assert_close(out.loss, self.reference_loss(out.logits, labels, config), atol=1e-6, rtol=1e-6)

    def test_gradients_reach_only_trainable_parameters(self):
        config = self.config_factory()
        model = self.build().train()
        out = model(**self.make_inputs(config), labels=self.make_labels(config))
        out.loss.backward()
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
        assert trainable, "no trainable parameters"
        assert all(p.grad is None for p in frozen.values()), [n for n, p in frozen.items() if p.grad is not None]
        missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, f"trainable parameters without gradient: {missing[:5]}"

    def test_gradient_checkpointing_gives_same_loss(self):
        config = self.config_factory()
        inputs, labels = self.make_inputs(config), self.make_labels(config)
        model = self.build().train()
        for module in model.modules():  # dropout off, to compare numbers in train mode
            if isinstance(module, torch.nn.Dropout):
                module.eval()
        plain = model(**inputs, labels=labels).loss
        model.activation_checkpointing_enable()
        assert model.is_activation_checkpointing
        checkpointed = model(**inputs, labels=labels).loss
        checkpointed.backward()
        torch.testing.assert_close(checkpointed, plain, atol=1e-5, rtol=1e-5)

    # --- bad input -------------------------------------------------------------------------------------
    def test_label_count_mismatch_is_a_clear_error(self):
        config = self.config_factory()
        labels = torch.zeros(self.batch_size, config.num_labels + 1)
        with pytest.raises(ValueError, match=r"labels has shape .* per label"):
            self.build()(**self.make_inputs(config), labels=labels)

    def test_wrong_rank_channels_and_size_are_clear_errors(self):
        config = self.config_factory()
        model = self.build()
        pixels = self.make_inputs(config)["pixel_values"]
        cases = self.bad_pixel_values(config, pixels)
        assert cases
        for bad, message in cases:
            with pytest.raises(ValueError, match=message):
                model(pixel_values=bad)

    # --- serialisation ---------------------------------------------------------------------------------
    def test_config_json_round_trip(self, tmp_path):
        config = self.config_factory()
        config.save_pretrained(tmp_path)
        again = type(config).from_pretrained(tmp_path)
        assert again.to_dict() == config.to_dict()
        assert json.loads((tmp_path / "config.json").read_text())["model_type"] == config.model_type

    def test_save_and_load_give_identical_logits_in_safetensors(self, tmp_path):
        config = self.config_factory()
        model = self.build()
        inputs = self.make_inputs(config)
        model.save_pretrained(tmp_path)
        files = sorted(p.name for p in tmp_path.iterdir())
        assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
        again = self.head_class.from_pretrained(tmp_path).eval()
        reloaded = again.state_dict()
        assert set(reloaded) == set(model.state_dict())
        for name, value in model.state_dict().items():
            assert torch.equal(reloaded[name], value), name
        with torch.no_grad():
            # Bit-identical weights; the logits may differ in the last bits only, because oneDNN picks its
            # convolution kernels by the memory alignment of the weights (mmap-loaded vs freshly allocated).
            torch.testing.assert_close(again(**inputs).logits, model(**inputs).logits, atol=1e-6, rtol=0)

    def test_auto_classes_resolve_the_family(self, tmp_path):
        config = self.config_factory()
        assert isinstance(AutoConfig.for_model(config.model_type), type(config))
        assert type(AutoModel.from_config(config)) is self.base_class
        assert type(AutoModelForImageClassification.from_config(config)) is self.head_class
        self.build().save_pretrained(tmp_path)
        assert type(AutoModel.from_pretrained(tmp_path)) is self.base_class

    # --- Hub: remote code without hfmed, and pipelines --------------------------------------------------
    def hub_folder(self, tmp_path):
        config = self.config_factory()
        model = self.build()
        processor = self.processor_factory(config)
        folder = save_for_hub(model, processor, tmp_path / "hub")
        return model, processor, folder

    def test_remote_code_loads_without_hfmed(self, tmp_path):
        config = self.config_factory()
        model, _, folder = self.hub_folder(tmp_path)
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        assert {"AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoImageProcessor"} <= set(auto_map)
        inputs = self.make_inputs(config)
        save_file(inputs, str(tmp_path / "inputs.safetensors"))
        with torch.no_grad():
            expected = model(**inputs)
        script = textwrap.dedent(
            """
            import sys
            sys.modules["hfmed"] = None  # `import hfmed` now fails: prove the folder stands alone
            import torch
            from safetensors.torch import load_file, save_file
            from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification
            folder, inputs, out = sys.argv[1:4]
            x = load_file(inputs)
            head = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
            base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
            for obj in (head, base, processor):
                assert not type(obj).__module__.startswith("hfmed"), type(obj).__module__
            with torch.no_grad():
                save_file({"logits": head(**x).logits, "pooled": base(**x).pooler_output.contiguous()}, out)
            """
        )
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
        result = subprocess.run(
            [sys.executable, "-c", script, str(folder), str(tmp_path / "inputs.safetensors"), str(tmp_path / "o")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        remote = load_file(str(tmp_path / "o"))
        torch.testing.assert_close(remote["logits"], expected.logits, atol=1e-6, rtol=1e-6)
        with torch.no_grad():
            base_pooled = self.build(self.base_class)
            base_pooled.load_state_dict(model.base_model.state_dict())
            torch.testing.assert_close(remote["pooled"], base_pooled(**inputs).pooler_output, atol=1e-6, rtol=1e-6)

    def test_image_classification_pipeline_on_an_image_file(self, tmp_path):
        config = self.config_factory()
        model, processor, folder = self.hub_folder(tmp_path)
        image = self.write_example_image(tmp_path / "example.png", config)
        pipe = pipeline("image-classification", model=str(folder), trust_remote_code=True)
        result = pipe(str(image), top_k=config.num_labels)
        assert sorted(r["label"] for r in result) == sorted(config.id2label.values())
        with torch.no_grad():
            logits = model(**processor(Image.open(image).convert("RGB"), return_tensors="pt")).logits[0]
        # The pipeline's own rule: softmax for single-label classification, sigmoid for multi-label.
        single = config.problem_type == "single_label_classification"
        scores = torch.softmax(logits, dim=-1) if single else torch.sigmoid(logits)
        expected = dict(zip(config.id2label.values(), scores.tolist(), strict=True))
        for r in result:
            assert r["score"] == pytest.approx(expected[r["label"]], abs=1e-5)

    def test_family_is_registered_in_hfmed(self):
        config = self.config_factory()
        family = hfmed.family_for(config)
        assert family.base_model_class is self.base_class
        assert self.head_class in family.heads.values()
