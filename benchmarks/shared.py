"""Benchmarks of the shared paths: the data path at scale, the memory of a volume model's training step, the
training loop's overhead, throughput against batch size, and the papers' parameter claims. Each returns rows
(`Row`) and pictures (`Figure`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .harness import Figure, Row, Settings, interleaved

REPO = Path(__file__).resolve().parents[1]


def data_path_at_scale(settings: Settings) -> list[Row]:
    """Examples/s that the RSNA builder + lazy DICOM decode + train transform deliver from a 750k-image index,
    against the rate at which the scopeformer-efficient training step consumes them."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from torch.utils.data import DataLoader

    from hfmed import ScopeformerForImageClassification, ScopeformerImageProcessor, scopeformer_config
    from hfmed.data.rsna_ich import load_rsna_ich
    from hfmed.data.transforms import collate, make_transform

    from .rsna_index import NUM_IMAGES, check_index, write_inputs

    count = 64 if settings.quick else 256
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        index_labels = write_inputs(root)
        start = time.perf_counter()
        data = load_rsna_ich(root, patient_map=root / "patient_ids.csv", check_files=False, val_fraction=0.1)
        index_s = time.perf_counter() - start
        check_index(data, index_labels)
        train = data["train"].select(range(count))
        template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        rng = np.random.default_rng(0)
        for path in train["path"]:  # real 512^2 DICOMs where the index points
            ds = template.copy()
            ds.Rows = ds.Columns = 512
            ds.PixelData = rng.integers(-1000, 2000, (512, 512)).astype(np.int16).tobytes()
            ds.save_as(path, enforce_file_format=True)
        processor = ScopeformerImageProcessor()
        loader = DataLoader(train.with_transform(make_transform(processor, {"hflip": 0.5, "rotate_degrees": 10},
                                                                train=True, seed=0)),
                            batch_size=8, collate_fn=collate, num_workers=0)
        model = ScopeformerForImageClassification(scopeformer_config("scopeformer-efficient")).to(settings.device)
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        pixel_values = torch.randn(8, 3, 224, 224, device=settings.device)
        labels = (torch.rand(8, 6, device=settings.device) < 0.2).float()
        batches = iter(loader)

        def step():
            model(pixel_values=pixel_values, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        # one batch of 8 decoded + augmented examples against one training step on 8, alternately
        # (a fixed number of rounds: the loader holds count // 8 batches)
        rounds = min(settings.rounds, count // 8 - settings.warmup)
        data_s, step_s = interleaved(lambda: next(batches), step,
                                     Settings(**{**settings.__dict__, "rounds": rounds, "min_seconds": 0.0}))
        data_rate, model_rate = 8 / data_s, 8 / step_s
    return [
        Row("data", f"RSNA index, {NUM_IMAGES:,} images (4.5M CSV rows)", index_s, None, unit="s",
            note="parse, pivot, checks, patient split, Arrow tables"),
        Row("data", "train examples/s: lazy DICOM decode + windows + augmentation (1 process)", data_rate,
            model_rate, "scopeformer-efficient train step, examples/s", unit="ex/s", target=">= 1x",
            note="num_workers=0; DataLoader workers multiply the data rate"),
    ]


_MEMORY_CHILD = r"""
import json, sys, torch
from hfmed import SliceCNNForVolumePrediction, slice_cnn_config
chunk, checkpointing, batch = int(sys.argv[1]) or None, sys.argv[2] == "1", int(sys.argv[3])
shape = tuple(int(n) for n in sys.argv[4].split("x"))
torch.manual_seed(0)
model = SliceCNNForVolumePrediction(slice_cnn_config("slice-cnn-resnet18", task="regression", slice_chunk_size=chunk,
                                                    volume_shape=shape))
if checkpointing:
    model.gradient_checkpointing_enable()
model.train()
x, y = torch.randn(batch, *shape), torch.randn(batch, 1)

def rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

# importing torch / timm / transformers leaves a higher peak than the step itself: reset the peak first
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")
before = rss_kb("VmRSS:")
model(pixel_values=x, labels=y).loss.backward()
peak = rss_kb("VmHWM:")
print(json.dumps({"peak_mb": peak / 1024, "step_mb": (peak - before) / 1024}))
"""


def _step_memory(chunk: int, checkpointing: bool, batch: int, shape: tuple[int, int, int]) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(chunk), "1" if checkpointing else "0", str(batch),
                           "x".join(map(str, shape))], capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"Slice-CNN memory step (chunk {chunk}, checkpointing {checkpointing}, batch {batch}, "
                           f"{shape}) failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def slice_cnn_training_memory(settings: Settings) -> list:
    """Peak memory of one Slice-CNN ResNet-18 training step at 91x109x91, batch 8 (a fresh process each), and a
    plot of the step's memory against the volume size, plain and with chunking + checkpointing."""
    batch = 2 if settings.quick else 8
    variants = [("plain", 0, False), ("slice_chunk_size=64", 64, False), ("gradient checkpointing", 0, True),
                ("slice_chunk_size=64 + checkpointing", 64, True)]
    results = {name: _step_memory(chunk, checkpointing, batch, (91, 109, 91)) for name, chunk, checkpointing in variants}
    plain = results["plain"]["step_mb"]
    rows = [
        Row("slice_cnn", f"training step peak memory, batch {batch}, 91x109x91: {name}", r["step_mb"], plain,
            "plain step", unit="MB", note=f"process peak {r['peak_mb']:.0f} MB")
        for name, r in results.items()
    ]
    # the curve: 2 mm, 1.5 mm and 1 mm MNI grids (the last is what a model at native resolution trains on)
    shapes = [(91, 109, 91), (121, 145, 121)] + ([] if settings.quick else [(182, 218, 182)])
    series = {}
    for name, chunk, checkpointing in (variants[0], variants[3]):
        series[name] = [(math.prod(shape) / 1e6, _step_memory(chunk, checkpointing, 1, shape)["step_mb"])
                        for shape in shapes]
    figure = Figure("slice-cnn-memory", "Slice-CNN ResNet-18 training step memory, batch 1",
                    "volume size (million voxels)", "step peak memory (MB)", series,
                    note="Grids: " + ", ".join("x".join(map(str, shape)) for shape in shapes) + " (sagittal slices).")
    return rows + [figure]


def throughput_vs_batch(settings: Settings) -> list:
    """Eval images (volumes) per second against the batch size, ours and the anchor: one plot per family."""
    from hfmed.registry import FAMILIES

    from .families import BENCHES, build

    figures = []
    for name, family in FAMILIES.items():
        if family.pending or (settings.families and name not in settings.families):
            continue
        spec = BENCHES[name]
        config, model, anchor_name, anchor_eval, _, _ = build(name, settings)
        series = {"ours": [], f"anchor: {anchor_name}": []}
        batches = [b for b in (1, 2, 4, 8) if b <= spec.batch * (1 if settings.quick else 2)]
        for batch in batches:
            pixel_values, _ = (t.to(settings.device) for t in spec.inputs(config, batch))

            def ours(pixel_values=pixel_values, model=model):
                with torch.inference_mode(), settings.autocast():
                    model(pixel_values=pixel_values)

            def anchor(pixel_values=pixel_values, anchor_eval=anchor_eval):
                with torch.inference_mode(), settings.autocast():
                    anchor_eval(pixel_values)

            ours_s, anchor_s = interleaved(ours, anchor, Settings(**{**settings.__dict__, "rounds": 3, "warmup": 1,
                                                                     "min_seconds": 0.0}))
            series["ours"].append((batch, batch / ours_s))
            series[f"anchor: {anchor_name}"].append((batch, batch / anchor_s))
        unit = "volumes" if name == "slice_cnn" else "images"
        figures.append(Figure(f"throughput-{name.replace('_', '-')}", f"{name}: eval throughput",
                              "batch size", f"{unit} / s", series, logx=True))
    return figures


def training_loop_overhead(settings: Settings) -> list[Row]:
    """hfmed's Accelerate loop (`hfmed.train.train_one_epoch`: policy hook, per-step reseeding, accumulate,
    clipping, scheduler, bookkeeping) against a bare PyTorch loop over the same model, optimizer groups and
    batches. The batches are drawn once beforehand, so data loading is in neither."""
    import copy
    import inspect
    import tempfile

    from hfmed.recipe import load_recipe
    from hfmed.registry import FAMILIES
    from hfmed.train import parameter_groups, prepare, train_one_epoch

    rows = []
    steps = 4 if settings.quick else 8
    for name, family in FAMILIES.items():
        if family.pending or (settings.families and name not in settings.families):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            recipe = load_recipe(family.demo_recipe_path, [f"training.output_dir={tmp}"])
            run = prepare(recipe)
            run.progress.disable = True
            batches = [batch for batch, _ in zip(run.train_loader, range(steps), strict=False)]
            run.train_loader, run.total_steps = batches, 10**9
            ours_model = run.accelerator.unwrap_model(run.model)
            bare = copy.deepcopy(ours_model).train()
            run.policy.on_epoch_start(bare, 0)  # the same training stage as ours (MoVL freezes per stage)
            groups = parameter_groups(bare, recipe, run.policy)
            inner = run.optimizer.optimizer  # the same optimizer class, hyperparameters and groups as the run's
            accepted = inspect.signature(type(inner)).parameters
            optimizer = type(inner)([{k: v for k, v in g.items() if k != "names"} for g in groups],
                                    **{k: v for k, v in inner.defaults.items() if k in accepted})
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
            clip = recipe.training.max_grad_norm

            def bare_epoch(bare=bare, optimizer=optimizer, scheduler=scheduler, batches=batches, clip=clip, run=run):
                run.policy.on_epoch_start(bare, 0)  # a hand-written staged loop applies its stage every epoch too
                for batch in batches:
                    batch = run.policy.prepare_batch(bare, batch)  # the same inputs (DIAMANT's cached maps)
                    bare(**batch).loss.backward()
                    if clip:
                        torch.nn.utils.clip_grad_norm_(bare.parameters(), clip)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()

            def ours_epoch(run=run):
                run.state.batch_in_epoch = 0
                train_one_epoch(run, 0)

            timing = interleaved(ours_epoch, bare_epoch, Settings(**{**settings.__dict__, "rounds": 5, "warmup": 1}))
            ours_s, bare_s = timing
            run.accelerator.end_training()
        rows.append(Row(name, f"training step in hfmed's Accelerate loop ({recipe.name}, {steps} steps)",
                        ours_s / steps, bare_s / steps, "bare PyTorch loop, same model and batches",
                        target="<= 1.05x", spread=timing.spread))
    return rows


def trainable_parameters(settings: Settings) -> list[Row]:
    """The papers' parameter claims, counted on the meta device (module trees, no weights): trainable are the
    parameters the optimizer holds under the family's training policy (`hfmed.policy.parameter_counts`)."""
    import timm

    from hfmed.policy import parameter_counts
    from hfmed.registry import FAMILIES

    def counts(family: str, preset: str) -> tuple[int, int]:
        config = FAMILIES[family].make_config(preset)
        with torch.device("meta"):
            model = FAMILIES[family].head_class(config)
        return parameter_counts(model, FAMILIES[family].training_policy)

    def wanted(family: str) -> bool:
        return not FAMILIES[family].pending and (not settings.families or family in settings.families)

    rows = []
    if wanted("scopeformer"):
        base, _ = counts("scopeformer", "scopeformer-base")
        for preset, fewer in (("scopeformer-efficient", 8), ("scopeformer-efficient-small", 17)):
            trainable, total = counts("scopeformer", preset)
            rows.append(Row("scopeformer", f"trainable parameters, {preset} vs scopeformer-base", trainable, base,
                            "scopeformer-base (n Xceptions, ViT-B)", unit="params",
                            target=f"<= {1 / fewer:.3f}x (paper: {fewer}x fewer)",
                            note=f"{preset}: {trainable / 1e6:.2f} M of {total / 1e6:.1f} M train (frozen CNNs)"))
    if wanted("movl"):
        for preset in ("movl-resnet50", "movl-clip-b32"):
            trainable, total = counts("movl", preset)
            rows.append(Row("movl", f"trainable parameters, {preset}: prompt + linear probe", trainable, total,
                            "every parameter (frozen backbone included)", unit="params",
                            target="prompt + probe only", note=f"{trainable:,} of {total:,}"))
    if wanted("lt_vit"):
        trainable, total = counts("lt_vit", "lt-vit-small")
        with torch.device("meta"):
            vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
        plain = sum(p.numel() for p in vit.parameters())
        rows.append(Row("lt_vit", "parameters, lt-vit-small vs its ViT-S/16", total, plain,
                        "timm vit_small_patch16_224 without a head", unit="params",
                        target="label tokens nearly free", note=f"{total - plain:,} more parameters"))
    if wanted("diamant"):
        trainable, total = counts("diamant", "diamant-vits8")
        rows.append(Row("diamant", "trainable parameters, diamant-vits8: two encoders + decoder", trainable, total,
                        "every parameter (frozen DINO ViT-S/8 included)", unit="params",
                        note=f"{trainable / 1e6:.2f} M of {total / 1e6:.1f} M"))
    return rows


SHARED = {  # keys double as `--only` names
    "data": data_path_at_scale,
    "memory": slice_cnn_training_memory,
    "throughput": throughput_vs_batch,
    "loop": training_loop_overhead,
    "params": trainable_parameters,
}

__all__ = ["SHARED"]
