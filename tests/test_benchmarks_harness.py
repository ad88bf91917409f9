"""The benchmark harness: interleaved rounds, medians, ratios, the report, and a benchmark for every family."""

import json

import torch

from benchmarks.families import BENCHES
from benchmarks.harness import Figure, Row, Settings, count_flops, interleaved, write_report
from hfmed.registry import FAMILIES


def test_every_registered_family_has_a_benchmark():
    assert sorted(set(FAMILIES) - set(BENCHES)) == []


def test_interleaved_alternates_the_order_and_returns_medians(monkeypatch):
    calls = []
    clock = iter(range(1000))
    monkeypatch.setattr("benchmarks.harness.time.perf_counter", lambda: next(clock))

    # each call advances the fake clock by a fixed number of ticks: ours 1 tick, anchor 3 ticks
    def ours():
        calls.append("o")

    def anchor():
        calls.append("a")
        next(clock), next(clock)

    ours_s, anchor_s = interleaved(ours, anchor, Settings(rounds=4, warmup=1))
    assert calls == ["o", "a", "o", "a", "a", "o", "o", "a", "a", "o"]  # warm-up, then the order flips per round
    assert (ours_s, anchor_s) == (1, 3)


def test_interleaved_adds_rounds_until_each_side_ran_min_seconds(monkeypatch):
    clock = iter(range(10_000))
    monkeypatch.setattr("benchmarks.harness.time.perf_counter", lambda: next(clock))
    counts = {"ours": 0, "anchor": 0}

    def ours():  # 1 tick a call
        counts["ours"] += 1

    def anchor():  # 3 ticks a call
        counts["anchor"] += 1
        next(clock), next(clock)

    timing = interleaved(ours, anchor, Settings(rounds=2, warmup=0, min_seconds=10, max_rounds=50))
    # ours, the faster side, needs 10 rounds of 1 tick before both sides have run 10 ticks
    assert counts == {"ours": 10, "anchor": 10} and timing.rounds == 10
    assert tuple(timing) == (1, 3) and timing.spread == (1 / 3, 1 / 3)
    capped = interleaved(ours, anchor, Settings(rounds=2, warmup=0, min_seconds=10**6, max_rounds=4))
    assert capped.rounds == 4


def test_interleaved_spread_is_the_quartiles_of_the_per_round_ratios(monkeypatch):
    # ours takes 2, 4, 6, 8 ticks in rounds 0-3; anchor always 2: per-round ratios 1, 2, 3, 4
    durations = {"ours": iter([2, 4, 6, 8]), "anchor": iter([2, 2, 2, 2])}
    now = [0]
    monkeypatch.setattr("benchmarks.harness.time.perf_counter", lambda: now[0])

    def tick(name):
        now[0] += next(durations[name])

    timing = interleaved(lambda: tick("ours"), lambda: tick("anchor"), Settings(rounds=4, warmup=0))
    assert tuple(timing) == (5, 2)
    assert timing.spread == (1.75, 3.25)  # inclusive quartiles of 1, 2, 3, 4
    row = Row("x", "step", *timing, "anchor", spread=timing.spread)
    assert row.ratio == 2.5


def test_report_has_one_row_per_comparison_with_the_ratio(tmp_path):
    rows = [Row("lt_vit", "eval forward", 0.2, 0.1, "timm ViT"), Row("data", "index", 3.0, None)]
    markdown, data = write_report(rows, {"cpu": "test"}, Settings(), tmp_path)
    text = markdown.read_text()
    assert "| lt_vit | eval forward | 200.0 ms | 100.0 ms | timm ViT | 2.000x |" in text
    saved = json.loads(data.read_text())
    assert [r["ratio"] for r in saved["rows"]] == [2.0, None]
    assert "## Notes" not in text
    rows.append(Row("movl", "loop step", 0.011, 0.010, "bare loop", spread=(1.04, 1.16)))
    text = write_report(rows, {"cpu": "test"}, Settings(), tmp_path)[0].read_text()
    assert "| movl | loop step | 11.0 ms | 10.0 ms | bare loop | 1.100x (1.04-1.16) |" in text
    rows.pop()
    markdown, data = write_report(rows, {"cpu": "test"}, Settings(), tmp_path, {"lt_vit": "Why it is slow."})
    assert markdown.read_text().endswith("## Notes\n\n### lt_vit\n\nWhy it is slow.\n")
    assert json.loads(data.read_text())["notes"] == {"lt_vit": "Why it is slow."}


def test_report_draws_each_figure_beside_the_table_and_stores_its_points(tmp_path):
    figure = Figure("throughput-x", "x: eval throughput", "batch size", "images / s",
                    {"ours": [(1, 10.0), (2, 18.0)], "anchor": [(1, 11.0), (2, 19.0)]}, logx=True, note="Why.")
    markdown, data = write_report([Row("x", "forward", 0.1, 0.1)], {"cpu": "test"}, Settings(), tmp_path,
                                  figures=[figure])
    png = tmp_path / "benchmarks" / "throughput-x.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Plots\n\n![x: eval throughput](benchmarks/throughput-x.png)\n\nWhy.\n" in markdown.read_text()
    saved = json.loads(data.read_text())["figures"]
    assert saved[0]["series"]["anchor"] == [[1, 11.0], [2, 19.0]] and saved[0]["name"] == "throughput-x"


def test_count_flops_counts_attention_on_cpu():
    # (batch 2, 3 heads, 10 queries, 7 keys, 4 dims): QK^T and AV, 2 FLOPs per multiply-add each
    q, k, v = torch.randn(2, 3, 10, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4)
    flops = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert flops == 2 * (2 * 3 * 10 * 7 * 4) * 2
    assert count_flops(lambda: q @ k.transpose(-1, -2)) == 2 * 2 * 3 * 10 * 7 * 4
