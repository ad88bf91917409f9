"""Transforms for single-label classification: an integer `labels` column (one class index per row) becomes
int64 (B,) labels, everything else float32; the balanced sampler evens out classes."""

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Sequence, Value
from PIL import Image

from hfmed.data.transforms import _labels_tensor, balanced_sampler, collate, labels_matrix, make_transform


@pytest.mark.parametrize(
    ("values", "dtype", "shape"),
    [
        ([2, 0, 1], torch.int64, (3,)),
        (np.array([2, 0, 1], dtype=np.uint8), torch.int64, (3,)),
        ([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], torch.float32, (3, 2)),  # multi-label 0/1 per label
        ([[1], [0], [1]], torch.float32, (3, 1)),  # one sigmoid output (binary) stays a float column
        ([61.5, 70.0, 55.25], torch.float32, (3,)),  # regression targets
    ],
)
def test_labels_tensor_keeps_class_indices_integer_and_makes_the_rest_float(values, dtype, shape):
    tensor = _labels_tensor(values)
    assert tensor.dtype == dtype and tuple(tensor.shape) == shape
    np.testing.assert_array_equal(tensor.numpy(), np.asarray(values, dtype=tensor.numpy().dtype))


@pytest.fixture
def pngs(tmp_path):
    paths = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 8), 30 * i, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize(
    "feature", [Value("int64"), ClassLabel(names=["a", "b", "c"])], ids=["int64", "ClassLabel"]
)
def test_a_dataset_of_class_indices_gives_int64_batches(pngs, feature):
    from hfmed import MoVLImageProcessor

    labels = [2, 0, 1, 1, 0, 2]
    data = Dataset.from_dict({"path": pngs, "labels": labels},
                             features=Features({"path": Value("string"), "labels": feature}))
    transform = make_transform(MoVLImageProcessor(size={"height": 16, "width": 16}))
    batch = transform(data[:4])
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == labels[:4]
    rows = collate([data.with_transform(transform)[i] for i in range(6)])
    assert rows["labels"].dtype == torch.int64 and rows["labels"].tolist() == labels


def test_a_multi_hot_dataset_still_gives_float_batches(pngs):
    from hfmed import MoVLImageProcessor

    data = Dataset.from_dict({"path": pngs[:2], "labels": [[1.0, 0.0], [0.0, 1.0]]},
                             features=Features({"path": Value("string"), "labels": Sequence(Value("float32"), length=2)}))
    batch = make_transform(MoVLImageProcessor(size={"height": 16, "width": 16}))(data[:2])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_the_balanced_sampler_weighs_each_class_by_its_inverse_frequency(pngs):
    labels = [0, 0, 0, 0, 1, 2]
    data = Dataset.from_dict({"path": pngs, "labels": labels},
                             features=Features({"path": Value("string"), "labels": ClassLabel(names=["a", "b", "c"])}))
    sampler = balanced_sampler(data, ["a", "b", "c"], seed=0)
    torch.testing.assert_close(sampler.weights, torch.tensor([1 / 4] * 4 + [1.0, 1.0], dtype=torch.double))
    drawn = np.bincount([labels[i] for _ in range(200) for i in balanced_sampler(data, ["a", "b", "c"], seed=_)],
                        minlength=3)
    assert np.all(np.abs(drawn / drawn.sum() - 1 / 3) < 0.05)  # each class about a third of the draws
    np.testing.assert_array_equal(labels_matrix(np.array(labels), num_classes=3), np.eye(3)[labels])
    with pytest.raises(ValueError, match=r"class indices 0\.\.2 outside \[0, 2\)"):
        balanced_sampler(data, ["a", "b"])
