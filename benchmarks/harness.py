"""A small benchmark harness: interleaved rounds, medians, ratios measured in one run.

Why not pytest-benchmark: it times one callable at a time, so a ratio would come from two runs separated by
minutes of other work (thermal state, other processes, allocator state all drift). Every comparison here runs
`ours` and `anchor` alternately, round after round, in the same process, and reports the ratio of medians.
Absolute times are reported, never asserted.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


@dataclass
class Row:
    """One comparison: `ours` and `anchor` (seconds per call, medians), their ratio, and what it means."""

    family: str
    what: str
    ours: float
    anchor: float | None
    anchor_name: str = ""
    unit: str = "s"
    target: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)
    spread: tuple[float, float] | None = None
    """Quartiles of the per-round ratios ours / anchor (each round times both back to back): how far a ratio
    moves with the machine's noise. A ratio whose spread straddles a target is not resolved by this run."""

    @property
    def ratio(self) -> float | None:
        if self.anchor in (None, 0):
            return None
        return self.ours / self.anchor

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Figure:
    """A picture where one reads better than rows: named series of (x, y) points, drawn by `write_report` into
    `<folder>/benchmarks/<name>.png` and stored in the JSON."""

    name: str
    title: str
    xlabel: str
    ylabel: str
    series: dict[str, list[tuple[float, float]]]
    logx: bool = False
    note: str = ""


@dataclass
class Settings:
    device: str = "cpu"
    amp: str | None = None  # "bf16" on CUDA
    compile: bool = False
    rounds: int = 7
    warmup: int = 2
    min_seconds: float = 0.0
    """Keep adding rounds (up to `max_rounds`) until each side has run this long in total: a 7 ms step gets
    enough rounds for a stable median where a 4 s forward stops at `rounds`."""
    max_rounds: int = 61
    quick: bool = False
    only: tuple[str, ...] = ()  # row keys to run (`benchmarks.run.ROW_KEYS`); empty: every row
    families: tuple[str, ...] = ()  # families to run; empty: every registered family

    def wants(self, key: str) -> bool:
        return not self.only or key in self.only

    def autocast(self):
        if self.amp is None:
            return torch.autocast(self.device, enabled=False)
        return torch.autocast(self.device, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[self.amp])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Timing(tuple):
    """`(ours, anchor)` median seconds per call (unpacks as a pair), with `spread`: the quartiles of the
    per-round ratios ours / anchor (None without an anchor) and `rounds`, how many rounds ran."""

    def __new__(cls, ours: float, anchor: float | None, spread: tuple[float, float] | None, rounds: int):
        timing = super().__new__(cls, (ours, anchor))
        timing.spread, timing.rounds = spread, rounds
        return timing


def interleaved(ours: Callable, anchor: Callable | None, settings: Settings) -> Timing:
    """Median seconds per call of `ours` and `anchor`, run alternately (the order flips every round); at least
    `settings.rounds` rounds, more (up to `max_rounds`) until each side has run `min_seconds` in total."""
    calls = [("ours", ours)] + ([("anchor", anchor)] if anchor is not None else [])
    # The process's objects so far are frozen out of the garbage collector while timing: a full collection walks
    # every object of a benchmark process (~0.3 s with five families' models loaded) and which side's call it
    # lands on is chance, not either side's work. Collections of what the calls themselves allocate still count.
    gc.collect()
    gc.freeze()
    try:
        return _interleaved(calls, settings)
    finally:
        gc.unfreeze()


def _interleaved(calls: list, settings: Settings) -> Timing:
    anchor = len(calls) > 1
    for _ in range(settings.warmup):
        for _, fn in calls:
            fn()
    sync(settings.device)
    times = {name: [] for name, _ in calls}
    index = 0
    while index < settings.rounds or (
        index < settings.max_rounds and min(sum(t) for t in times.values()) < settings.min_seconds
    ):
        for name, fn in calls if index % 2 == 0 else calls[::-1]:
            sync(settings.device)
            start = time.perf_counter()
            fn()
            sync(settings.device)
            times[name].append(time.perf_counter() - start)
        index += 1
    spread = None
    if anchor:
        ratios = [o / a for o, a in zip(times["ours"], times["anchor"], strict=True) if a > 0]
        if len(ratios) >= 2:
            quartiles = statistics.quantiles(ratios, n=4, method="inclusive")
            spread = (quartiles[0], quartiles[2])
    return Timing(statistics.median(times["ours"]), statistics.median(times["anchor"]) if anchor else None,
                  spread, index)


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn: Callable) -> int:
    """FLOPs of one call, counted by `torch.utils.flop_counter` (matmuls, convolutions, attention).

    torch's table knows the CUDA attention kernels but not the CPU one that `scaled_dot_product_attention`
    runs here (`_scaled_dot_product_flash_attention_for_cpu`): without this entry a ViT's attention
    products would count as zero FLOPs on CPU (a third of ViT-S/8's work at 785 tokens)."""
    with flop_counter() as counter:
        fn()
    return counter.get_total_flops()


def flop_counter(depth: int = 2):
    """A `FlopCounterMode` that also counts the CPU attention kernel (see `count_flops`); per module to `depth`."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_flops
    return FlopCounterMode(display=False, depth=depth, custom_mapping=mapping)


def gemm_call(settings: Settings, size: int = 2048) -> tuple[Callable, int]:
    """Square fp32 (or AMP dtype) GEMMs and their FLOPs, to interleave with the work they are compared with
    (20 per call on CUDA, where one is too short to time)."""
    dtype = torch.float32 if settings.amp is None else {"bf16": torch.bfloat16, "fp16": torch.float16}[settings.amp]
    a = torch.randn(size, size, device=settings.device, dtype=dtype)
    b = torch.randn(size, size, device=settings.device, dtype=dtype)
    repeats = 20 if settings.device.startswith("cuda") else 1
    return (lambda: [a @ b for _ in range(repeats)]), 2 * size**3 * repeats


def gemm_peak(settings: Settings, size: int = 2048) -> float:
    """This machine's fp32 (or AMP dtype) GEMM rate in GFLOP/s: the median of square matmuls."""
    gemm, flops = gemm_call(settings, size)
    seconds, _ = interleaved(gemm, None, settings)
    return flops / seconds / 1e9


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cpu_threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        import timm
        import transformers

        info["transformers"], info["timm"] = transformers.__version__, timm.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt(value, unit: str) -> str:
    if value is None:
        return ""
    if unit == "s":
        return f"{value * 1e3:.1f} ms" if value < 10 else f"{value:.1f} s"
    return f"{value:,.3g} {unit}"


def draw(figure: Figure, path: Path) -> Path:
    """`figure` as a PNG at `path` (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, points in figure.series.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    if figure.logx:
        ax.set_xscale("log", base=2)
        ticks = sorted({x for points in figure.series.values() for x, _ in points})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
    ax.set(title=figure.title, xlabel=figure.xlabel, ylabel=figure.ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(rows: list[Row], info: dict, settings: Settings, folder: Path,
                 notes: dict[str, str] | None = None, figures: list[Figure] | None = None) -> tuple[Path, Path]:
    """`benchmarks.md` (one table: ours, anchor, ratio, target; then `figures`, drawn into `benchmarks/*.png`
    beside it; then `notes`, a paragraph per family) and `benchmarks.json` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    figures = figures or []
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run`). Every ratio is ours / anchor, both measured in the "
        "same run with interleaved rounds (medians); absolute times depend on the machine and are never asserted. "
        "In brackets: the quartiles of the per-round ratios, how far this machine's noise moves a ratio (the "
        "`noise` rows time the same model twice: any ratio within their spread of 1.0 is a tie).",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {key} | {value} |" for key, value in info.items()],
        f"| settings | device {settings.device}, amp {settings.amp or 'off (fp32)'}, compile {settings.compile}, "
        f"{settings.rounds} to {settings.max_rounds} rounds (until each side ran {settings.min_seconds:g} s) after "
        f"{settings.warmup} warm-up |",
        "",
        "| family | what | ours | anchor | anchor is | ours / anchor | target | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.3f}x"
        if row.ratio is not None and row.spread is not None:
            ratio += f" ({row.spread[0]:.2f}-{row.spread[1]:.2f})"
        lines.append(
            f"| {row.family} | {row.what} | {_fmt(row.ours, row.unit)} | {_fmt(row.anchor, row.unit)} | "
            f"{row.anchor_name} | {ratio} | {row.target} | {row.note} |"
        )
    if figures:
        lines += ["", "## Plots", ""]
        for figure in figures:
            path = draw(figure, folder / "benchmarks" / f"{figure.name}.png")
            lines += [f"![{figure.title}]({path.relative_to(folder).as_posix()})", ""]
            if figure.note:
                lines += [figure.note, ""]
        lines.pop()
    if notes:
        lines += ["", "## Notes", ""]
        for family, text in notes.items():
            lines += [f"### {family}", "", text, ""]
        lines.pop()
    markdown = folder / "benchmarks.md"
    markdown.write_text("\n".join(lines) + "\n")
    data = folder / "benchmarks.json"
    data.write_text(json.dumps({"machine": info, "settings": asdict(settings), "notes": notes or {},
                                "rows": [row.as_dict() for row in rows],
                                "figures": [asdict(figure) for figure in figures]}, indent=2) + "\n")
    return markdown, data
