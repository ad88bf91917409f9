"""DIAMANT's attention-map cache and training policy: the cache returns exactly the maps the model computes, each
image's once, never a stale one; training with it gives the same losses as training without."""

import dataclasses
import json

import pytest
import torch

from hfmed.families.diamant import AttentionMapCache, DIAMANTTrainingPolicy
from hfmed.models.diamant import DIAMANTForSemanticSegmentation, diamant_config
from hfmed.policy import covers
from hfmed.recipe import load_recipe
from hfmed.registry import FAMILIES
from hfmed.train import train
from tests.reliability.tiny_runs import write_tiny_recipe


def _model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return DIAMANTForSemanticSegmentation(diamant_config("diamant-tiny", **overrides)).eval()


def _images(count: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_cache_gives_the_models_own_maps_and_computes_each_image_once():
    model, images = _model(), _images(4)
    cache = AttentionMapCache()
    maps = cache.maps(model, images)
    assert torch.equal(maps, model.diamant.get_attention_maps(images))
    assert (cache.hits, cache.misses, len(cache)) == (0, 4, 4)
    mixed = torch.stack([images[2], images[0], _images(1, seed=9)[0]])
    assert torch.equal(cache.maps(model, mixed), model.diamant.get_attention_maps(mixed))
    assert (cache.hits, cache.misses, len(cache)) == (2, 5, 5)
    # Stored at the patch grid (the maps are nearest-upsampled patches): 2 heads x 4 x 4 floats per image.
    assert cache.nbytes == 5 * 2 * 4 * 4 * 4


def test_a_changed_vit_or_image_never_reads_a_stale_entry():
    model, images = _model(), _images(3)
    cache = AttentionMapCache()
    before = cache.maps(model, images)
    with torch.no_grad():  # an in-place edit of one weight between two batches
        model.diamant.dino.blocks[-1].attn.qkv.weight.mul_(3.0)
    after = cache.maps(model, images)
    assert cache.hits == 0 and cache.misses == 6
    assert torch.equal(after, model.diamant.get_attention_maps(images)) and not torch.equal(after, before)
    other = _model(seed=5)  # another ViT of the same shape: its own keys
    assert torch.equal(cache.maps(other, images), other.diamant.get_attention_maps(images)) and cache.hits == 0
    model.load_state_dict(other.state_dict())  # loaded weights: the other ViT's entries now apply
    assert torch.equal(cache.maps(model, images), other.diamant.get_attention_maps(images)) and cache.hits == 3
    nudged = images.clone()
    nudged[0, 0, 0, 0] += 1e-6  # one pixel of one processed image
    cache.maps(model, nudged)
    assert cache.hits == 5 and cache.misses == 10


def test_least_recently_used_maps_go_beyond_the_memory_bound():
    model, images = _model(), _images(3)
    cache = AttentionMapCache(max_bytes=2 * 2 * 4 * 4 * 4)  # room for two images
    cache.maps(model, images[:2])
    cache.maps(model, images[:1])  # image 0 is now the most recently used
    cache.maps(model, images[2:])
    assert len(cache) == 2 and cache.nbytes == 2 * 2 * 4 * 4 * 4
    cache.maps(model, images[:1])
    assert cache.hits == 2  # image 0 was kept (image 1 was dropped)
    with pytest.raises(ValueError, match="max_bytes must be an int >= 0"):
        AttentionMapCache(max_bytes=-1)


def test_policy_freezes_the_vit_and_passes_maps_that_change_nothing():
    policy = DIAMANTTrainingPolicy()
    model, images = _model(), _images(2)
    frozen = policy.frozen(model)
    for name, _ in model.named_parameters():
        assert covers(name, frozen) == name.startswith("diamant.dino.")
    labels = torch.randint(0, 2, (2, 32, 32))
    batch = policy.prepare_batch(model, {"pixel_values": images, "labels": labels})
    assert batch["attention_maps"].shape == (2, 2, 32, 32)
    assert torch.equal(model(**batch).logits, model(pixel_values=images, labels=labels).logits)
    plain = _model(use_attention_encoder=False)  # the ablation has no ViT: batches pass unchanged
    unchanged = {"pixel_values": images, "labels": labels}
    assert policy.prepare_batch(plain, unchanged) is unchanged and policy.frozen(plain) == ()


def _history(run_dir) -> list:
    return json.loads((run_dir / "metrics.json").read_text())["history"]


def test_training_with_and_without_the_cache_gives_the_same_losses(tmp_path, monkeypatch):
    monkeypatch.setenv("HFMED_CACHE", str(tmp_path / "cache"))
    histories = []
    for cached in (True, False):
        policy = DIAMANTTrainingPolicy(cache_attention_maps=cached)
        monkeypatch.setitem(FAMILIES, "diamant", dataclasses.replace(FAMILIES["diamant"], training_policy=policy))
        path = write_tiny_recipe("diamant", tmp_path / f"cached_{cached}", tmp_path / "data", epochs=2,
                                 save_every_steps=None)
        run_dir = train(load_recipe(path))
        if cached:  # every image's maps were computed once, then read in the second epoch and in evaluation
            assert policy.cache.hits > 0 and policy.cache.misses < policy.cache.hits + policy.cache.misses
        histories.append(_history(run_dir))
    cached_history, plain_history = histories
    assert len(cached_history) == 2
    for with_cache, without in zip(cached_history, plain_history, strict=True):
        for key in ("train_loss", "eval_loss", "eval_mean_dice"):
            assert with_cache[key] == without[key], key
