"""hfmed.thresholds against brute-force searches written here (with scikit-learn's ROC curve) and hand counts."""

import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_curve

from hfmed.thresholds import choose_thresholds, operating_points, roc_points


def make_split(seed, n=80, num_labels=3):
    """float32 probabilities that track the labels; label 1 has heavily tied scores."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, num_labels))
    labels[:2, :] = [[0] * num_labels, [1] * num_labels]  # both classes in every label
    probabilities = np.clip(0.3 * labels + 0.7 * rng.random((n, num_labels)), 0.0, 1.0)
    probabilities[:, 1] = np.round(probabilities[:, 1] * 8) / 8
    return probabilities.astype(np.float32), labels


def sklearn_points(scores, labels):
    """(threshold, tpr, fpr) for each distinct score, under the rule `score >= threshold`.

    sklearn's roc_curve also labels each point with the threshold t such that `score >= t` is positive, so
    its thresholds map to ours as they are; its first point (t = inf, nothing positive) is not a score of
    the data and is dropped. drop_intermediate=False keeps every distinct score.
    """
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    keep = np.isfinite(thresholds)
    return thresholds[keep], tpr[keep], fpr[keep]


def hand_rates(scores, labels, threshold):
    predicted = scores >= threshold
    positives, negatives = labels == 1, labels == 0
    return predicted[positives].mean(), 1.0 - predicted[negatives].mean()  # sensitivity, specificity


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_youden_thresholds_equal_a_brute_force_search(seed):
    probabilities, labels = make_split(seed)
    chosen = choose_thresholds(probabilities, labels, method="youden")
    assert len(chosen) == labels.shape[1] and all(type(t) is float for t in chosen)
    for j, threshold in enumerate(chosen):
        thresholds, tpr, fpr = sklearn_points(probabilities[:, j], labels[:, j])
        j_values = tpr - fpr
        best = j_values.max()
        # Among equal J the highest threshold (sklearn lists thresholds in decreasing order).
        expected = thresholds[np.flatnonzero(np.isclose(j_values, best, rtol=0, atol=1e-12))[0]]
        assert threshold == float(expected)
        # The same optimum without sklearn: J at every distinct score by hand.
        hand = [sum(hand_rates(probabilities[:, j], labels[:, j], t)) - 1 for t in np.unique(probabilities[:, j])]
        sensitivity, specificity = hand_rates(probabilities[:, j], labels[:, j], np.float32(threshold))
        assert sensitivity + specificity - 1 == pytest.approx(max(hand), abs=1e-12)


def test_youden_ties_go_to_the_highest_threshold():
    # J: t=0.4 -> 1/2 - 0, t=0.3 -> 1/2 - 1/2, t=0.2 -> 1 - 1/2, t=0.1 -> 1 - 1: tie between 0.4 and 0.2.
    scores = np.array([[0.1], [0.2], [0.3], [0.4]])
    labels = np.array([[0], [1], [0], [1]])
    assert choose_thresholds(scores, labels) == [0.4]


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_target_sensitivity_picks_the_highest_threshold_that_reaches_it(target):
    probabilities, labels = make_split(7)
    chosen = choose_thresholds(probabilities, labels, method="sensitivity", target_sensitivity=target)
    for j, threshold in enumerate(chosen):
        thresholds, tpr, _ = sklearn_points(probabilities[:, j], labels[:, j])
        expected = thresholds[tpr >= target].max()
        assert threshold == float(expected)
        sensitivity, _ = hand_rates(probabilities[:, j], labels[:, j], np.float32(threshold))
        assert sensitivity >= target
        higher = np.unique(probabilities[:, j])
        higher = higher[higher > np.float32(threshold)]
        if higher.size:  # the next distinct score up falls short of the target
            assert hand_rates(probabilities[:, j], labels[:, j], higher.min())[0] < target


def test_target_sensitivity_by_hand():
    # Positives score 0.9 0.8 0.7 0.6 0.2; 4 of 5 (0.8) are kept down to 0.6, all 5 only at 0.2.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.65, 0.5, 0.3, 0.1])
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])
    assert choose_thresholds(scores, labels, method="sensitivity", target_sensitivity=0.8) == [0.6]
    assert choose_thresholds(scores, labels, method="sensitivity", target_sensitivity=0.81) == [0.2]
    assert choose_thresholds(scores, labels, method="sensitivity", target_sensitivity=0.6) == [0.7]


def test_operating_points_counts_by_hand():
    probabilities = np.array([[0.9, 0.2], [0.6, 0.4], [0.5, 0.8], [0.3, 0.4], [0.1, 0.1]])
    labels = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [0, 0]])
    points = operating_points(probabilities, labels, [0.5, 0.4], ["any", "epidural"])
    # any, >= 0.5: predicted 1 1 1 0 0 vs truth 1 0 1 1 0 -> tp 2, fp 1, tn 1, fn 1.
    assert points["any"] == {
        "threshold": 0.5,
        "sensitivity": 2 / 3,
        "specificity": 1 / 2,
        "youden_j": pytest.approx(2 / 3 + 1 / 2 - 1),
        "tp": 2,
        "fp": 1,
        "tn": 1,
        "fn": 1,
    }
    # epidural, >= 0.4 (0.4 itself is positive): predicted 0 1 1 1 0 vs truth 0 1 1 0 0 -> tp 2, fp 1, tn 2.
    epidural = points["epidural"]
    assert (epidural["tp"], epidural["fp"], epidural["tn"], epidural["fn"]) == (2, 1, 2, 0)
    assert epidural["sensitivity"] == 1.0 and epidural["specificity"] == pytest.approx(2 / 3)
    json.dumps(points, allow_nan=False)  # plain Python numbers only


def test_operating_points_match_sklearn_confusion_matrix_and_types():
    probabilities, labels = make_split(11)
    thresholds = choose_thresholds(probabilities, labels)
    points = operating_points(probabilities, labels, thresholds, ["a", "b", "c"])
    assert list(points) == ["a", "b", "c"]
    for j, name in enumerate(points):
        point = points[name]
        tn, fp, fn, tp = confusion_matrix(labels[:, j], probabilities[:, j] >= np.float32(thresholds[j])).ravel()
        assert (point["tp"], point["fp"], point["tn"], point["fn"]) == (tp, fp, tn, fn)
        assert all(type(point[k]) is int for k in ("tp", "fp", "tn", "fn"))
        assert all(type(point[k]) is float for k in ("threshold", "sensitivity", "specificity", "youden_j"))
        assert point["youden_j"] == pytest.approx(tp / (tp + fn) + tn / (tn + fp) - 1)
    json.dumps(points, allow_nan=False)


def test_a_typed_threshold_compares_at_the_precision_of_float32_probabilities():
    probabilities = np.array([[0.7], [0.2]], dtype=np.float32)  # float32(0.7) < 0.7 in float64
    points = operating_points(probabilities, np.array([[1], [0]]), 0.7)
    assert points["0"]["tp"] == 1


def test_a_single_class_label_gets_half_and_a_warning():
    probabilities, labels = make_split(5)
    labels[:, 2] = 0
    with pytest.warns(UserWarning, match="label 2 has a single class"):
        chosen = choose_thresholds(probabilities, labels)
    assert chosen[2] == 0.5
    assert chosen[:2] == choose_thresholds(probabilities[:, :2], labels[:, :2])
    with pytest.warns(UserWarning, match="single class"):
        assert choose_thresholds(probabilities, labels, method="sensitivity")[2] == 0.5
    point = operating_points(probabilities, labels, chosen)["2"]
    # No positives: sensitivity is undefined (None, not NaN, so the dict stays valid JSON).
    assert point["sensitivity"] is None and point["youden_j"] is None
    assert point["tp"] == point["fn"] == 0
    json.dumps(point, allow_nan=False)


def with_unknown(seed):
    """`make_split` with about a third of the labels unknown (-1); label 2 keeps no known positive."""
    probabilities, labels = make_split(seed)
    labels = labels.astype(np.float64)
    labels[np.random.default_rng(seed + 100).random(labels.shape) < 0.33] = -1
    labels[:2, :2] = [[0, 0], [1, 1]]
    labels[labels[:, 2] == 1, 2] = -1
    return probabilities, labels


@pytest.mark.parametrize("method", ["youden", "sensitivity"])
def test_unknown_labels_are_skipped_when_choosing_thresholds(method):
    probabilities, labels = with_unknown(7)
    with pytest.warns(UserWarning, match=r"label 2 has a single class .*known, \d+ unknown"):
        chosen = choose_thresholds(probabilities, labels, method=method)
    for j in (0, 1):
        known = labels[:, j] != -1
        assert chosen[j] == choose_thresholds(probabilities[known, j], labels[known, j], method=method)[0]
    assert chosen[2] == 0.5
    # The same thresholds as sklearn's ROC on the known entries (Youden: highest of the best J).
    if method == "youden":
        known = labels[:, 0] != -1
        thresholds, tpr, fpr = sklearn_points(probabilities[known, 0], labels[known, 0])
        assert chosen[0] == float(thresholds[np.flatnonzero(np.isclose(tpr - fpr, (tpr - fpr).max(), atol=1e-12))[0]])


def test_operating_points_count_known_labels_only():
    probabilities, labels = with_unknown(9)
    points = operating_points(probabilities, labels, [0.5, 0.5, 0.5], ["a", "b", "c"])
    for j, name in enumerate(points):
        known = labels[:, j] != -1
        tn, fp, fn, tp = confusion_matrix(
            labels[known, j], probabilities[known, j] >= np.float32(0.5), labels=[0, 1]
        ).ravel()
        assert (points[name]["tp"], points[name]["fp"], points[name]["tn"], points[name]["fn"]) == (tp, fp, tn, fn)
        assert tp + fp + tn + fn == known.sum() < len(labels)
    assert points["c"]["sensitivity"] is None  # no known positive


def test_roc_points_skip_unknown_labels():
    probabilities, labels = with_unknown(3)
    known = labels[:, 0] != -1
    ours = roc_points(probabilities[:, 0], labels[:, 0])
    for got, expected in zip(ours, sklearn_points(probabilities[known, 0], labels[known, 0]), strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-12)


def test_roc_points_equal_sklearn():
    probabilities, labels = make_split(3)
    for j in range(labels.shape[1]):
        thresholds, tpr, fpr = roc_points(probabilities[:, j], labels[:, j])
        expected = sklearn_points(probabilities[:, j], labels[:, j])
        np.testing.assert_array_equal(thresholds, expected[0])
        np.testing.assert_allclose(tpr, expected[1], atol=1e-12)
        np.testing.assert_allclose(fpr, expected[2], atol=1e-12)


def test_bad_inputs_raise():
    probabilities, labels = make_split(0)
    with pytest.raises(ValueError, match="method"):
        choose_thresholds(probabilities, labels, method="f1")
    with pytest.raises(ValueError, match="target_sensitivity"):
        choose_thresholds(probabilities, labels, method="sensitivity", target_sensitivity=0.0)
    with pytest.raises(ValueError, match="same shape"):
        choose_thresholds(probabilities, labels[:, :2])
    with pytest.raises(ValueError, match="0, 1, or -1 for an unknown label"):
        choose_thresholds(probabilities, labels * 2)
    bad = probabilities.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        choose_thresholds(bad, labels)
    with pytest.raises(ValueError, match="thresholds has 2 entries for 3 labels"):
        operating_points(probabilities, labels, [0.5, 0.5])
    with pytest.raises(ValueError, match="label_names has 2 entries for 3 labels"):
        operating_points(probabilities, labels, 0.5, ["a", "b"])
