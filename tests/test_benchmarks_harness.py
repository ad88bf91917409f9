"""The benchmark harness: interleaved rounds, medians, ratios, the report, and a benchmark for every family."""

import json

import torch

from benchmarks.families import BENCHES
from benchmarks.harness import Row, Settings, count_flops, interleaved, write_report
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


def test_report_has_one_row_per_comparison_with_the_ratio(tmp_path):
    rows = [Row("lt_vit", "eval forward", 0.2, 0.1, "timm ViT"), Row("data", "index", 3.0, None)]
    markdown, data = write_report(rows, {"cpu": "test"}, Settings(), tmp_path)
    text = markdown.read_text()
    assert "| lt_vit | eval forward | 200.0 ms | 100.0 ms | timm ViT | 2.000x |" in text
    saved = json.loads(data.read_text())
    assert [r["ratio"] for r in saved["rows"]] == [2.0, None]
    assert "## Notes" not in text
    markdown, data = write_report(rows, {"cpu": "test"}, Settings(), tmp_path, {"lt_vit": "Why it is slow."})
    assert markdown.read_text().endswith("## Notes\n\n### lt_vit\n\nWhy it is slow.\n")
    assert json.loads(data.read_text())["notes"] == {"lt_vit": "Why it is slow."}


def test_count_flops_counts_attention_on_cpu():
    # (batch 2, 3 heads, 10 queries, 7 keys, 4 dims): QK^T and AV, 2 FLOPs per multiply-add each
    q, k, v = torch.randn(2, 3, 10, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4)
    flops = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert flops == 2 * (2 * 3 * 10 * 7 * 4) * 2
    assert count_flops(lambda: q @ k.transpose(-1, -2)) == 2 * 2 * 3 * 10 * 7 * 4
