import torch
from transformers.utils import ModelOutput

from hfmed.interpret import attention_peak_hits, peak_in_box


def test_peak_in_box_uses_the_hottest_cell_centre():
    attention = torch.zeros(4, 4)
    attention[3, 0] = 1.0  # centre at (y, x) = (0.875, 0.125)
    assert peak_in_box(attention, (0.75, 0.0, 1.0, 0.25))
    assert not peak_in_box(attention, (0.0, 0.0, 0.5, 0.5))


class TwoLabelStub(torch.nn.Module):
    """Label 0 always looks at the top-left cell, label 1 at the bottom-right cell."""

    config = type("Config", (), {"id2label": {0: "top", 1: "bottom"}, "num_labels": 2})()

    def forward(self, pixel_values, output_label_attentions=False):
        maps = torch.zeros(pixel_values.shape[0], 2, 2, 2)
        maps[:, 0, 0, 0] = 1.0
        maps[:, 1, 1, 1] = 1.0
        return ModelOutput(label_attentions=maps)


def test_attention_peak_hits_counts_positive_images_per_label():
    dataset = [
        {"pixel_values": torch.zeros(3, 8, 8), "labels": torch.tensor([1.0, 1.0])},
        {"pixel_values": torch.zeros(3, 8, 8), "labels": torch.tensor([1.0, 0.0])},
        {"pixel_values": torch.zeros(3, 8, 8), "labels": torch.tensor([0.0, 1.0])},
    ]
    regions = {"top": (0.0, 0.0, 0.5, 0.5), "bottom": (0.0, 0.5, 0.5, 1.0)}  # "bottom" box is wrong on purpose
    counts = attention_peak_hits(TwoLabelStub(), dataset, regions, batch_size=2)
    assert counts["top"] == {"hits": 2, "positives": 2, "fraction": 1.0}
    assert counts["bottom"] == {"hits": 0, "positives": 2, "fraction": 0.0}
