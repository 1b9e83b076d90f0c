"""The parity gate's arithmetic on hand-made outputs (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from partialnet.export.gate import parity as gate
from partialnet.export.gate.parity import GateImages, accuracy, compare, run_parity, seeded_batches
from partialnet.export.options import ARTIFACT_PRECISIONS, Precision


def _logits(n: int = 100, classes: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((n, classes)).astype(np.float64)
    out[np.arange(n), rng.integers(0, classes, n)] += 5.0  # clear winners
    return out


def _runner_up(ref: np.ndarray, i: int) -> int:
    return int(np.argsort(ref[i])[-2])


def _real_flip(ref: np.ndarray, out: np.ndarray, i: int) -> None:
    """Swap image i's top two classes by moving each by 0.6 x their margin: the flip is
    larger than any single logit's error on that image, so it is a real disagreement."""
    best, second = int(ref[i].argmax()), _runner_up(ref, i)
    margin = ref[i, best] - ref[i, second]
    out[i, best] = ref[i, best] - 0.6 * margin
    out[i, second] = ref[i, second] + 0.6 * margin


def test_fp32_bounds() -> None:
    ref = _logits()
    scale = np.abs(ref).max()
    just_inside = ref.copy()
    just_inside[0, 0] += 0.9 * gate.FP32_MAX_REL * scale
    assert compare(ref, just_inside, Precision.FP32).passed
    just_outside = ref.copy()
    just_outside[0, 0] += 1.1 * gate.FP32_MAX_REL * scale
    result = compare(ref, just_outside, Precision.FP32)
    assert not result.passed and result.failed_rules
    assert result.max_rel == pytest.approx(1.1 * gate.FP32_MAX_REL, rel=1e-3)


@pytest.mark.parametrize("precision", ARTIFACT_PRECISIONS)
def test_nan_never_passes(precision: Precision) -> None:
    ref = _logits()
    out = ref.copy()
    out[3, 3] = np.nan
    result = compare(ref, out, precision, labels=ref.argmax(1))
    assert not result.passed and "non-finite outputs" in result.failed_rules


def test_a_flip_within_the_images_own_error_is_agreement_and_beyond_it_is_not() -> None:
    ref = _logits(n=50)
    best, second = int(ref[0].argmax()), _runner_up(ref, 0)
    ref[0, second] = ref[0, best] - 0.01  # a near-tie in the reference
    out = ref.copy()
    out[0, second] = ref[0, best] + 0.005  # moved by 0.015 > the 0.01 margin: may flip
    within = compare(ref, out, Precision.FP16)
    assert within.top1_agreement == pytest.approx(49 / 50)  # the strict figure
    assert within.top1_agreement_lenient == 1.0 and within.passed
    # Image 1: a flip larger than any of that image's logit errors: a real disagreement.
    _real_flip(ref, out, 1)
    assert out[1].argmax() != ref[1].argmax()
    result = compare(ref, out, Precision.FP16)
    assert result.top1_agreement_lenient == pytest.approx(49 / 50)
    assert not result.passed  # 49 of 50 < ceil(0.99 x 50) = 50


@pytest.mark.parametrize(("images", "flips", "passes"), [(32, 1, False), (200, 2, True)])
def test_the_top1_threshold_is_a_whole_number_of_images(
    images: int, flips: int, passes: bool
) -> None:
    ref = _logits(n=images)
    out = ref.copy()
    for i in range(flips):
        _real_flip(ref, out, i)
    result = compare(ref, out, Precision.FP16)
    assert result.top1_required == math.ceil(gate.FP16_MIN_TOP1 * images)
    assert result.top1_agreement_lenient == pytest.approx((images - flips) / images)
    # A swap of two logits also turns those images' cosines: judge the count rule by its text.
    count_rule = [r for r in result.failed_rules if r.startswith("top-1 agreement")]
    assert (not count_rule) == passes


def test_one_bad_image_fails_fp16_even_when_the_pooled_cosine_holds() -> None:
    ref = _logits(n=2000)
    out = ref.copy()
    out[7, :5] += 1.0 * np.sign(ref[7, :5])  # one image's direction moves, its top-1 holds
    result = compare(ref, out, Precision.FP16)
    assert result.cosine >= gate.FP16_MIN_COSINE
    assert result.min_image_cosine < gate.FP16_MIN_COSINE
    assert not result.passed


def test_int8_with_labels_is_judged_by_the_accuracy_drop() -> None:
    ref = _logits(n=200)
    labels = ref.argmax(1)  # the reference is 100% right
    out = ref.copy()
    for i in range(2):  # 1.0 point lost: allowed
        out[i, _runner_up(ref, i)] = ref[i].max() + 1.0
    ok = compare(ref, out, Precision.INT8, labels=labels, dataset="digits")
    assert ok.accuracy["top1"] == pytest.approx(0.99) and ok.passed
    out[2, _runner_up(ref, 2)] = ref[2].max() + 1.0  # 1.5 points: refused
    bad = compare(ref, out, Precision.INT8, labels=labels)
    assert not bad.passed and "accuracy drop" in bad.failed_rules[0]


def test_int8_without_labels_needs_agreement_and_per_image_cosine() -> None:
    ref = _logits(n=100)
    out = ref * 1.01  # direction kept: every image's cosine is 1
    assert compare(ref, out, Precision.INT8).passed
    for i in range(4):  # 96 of 100 agree < 97
        out[i, _runner_up(ref, i)] = ref[i].max() + 0.5
    assert not compare(ref, out, Precision.INT8).passed


def test_accuracy_counts_top1_top5_and_agreement() -> None:
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    reference = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = np.array([1, 1, 0])
    got = accuracy(logits, labels, reference, "toy")
    assert got["top1"] == pytest.approx(1 / 3)  # only image 0
    assert got["top5"] == 1.0  # 3 classes: every label is within the top 3
    assert got["reference_top1"] == pytest.approx(2 / 3)
    assert got["top1_agreement"] == pytest.approx(2 / 3)  # images 0 and 2


def test_run_parity_pads_a_fixed_batch_and_keeps_the_labels() -> None:
    images = np.random.default_rng(0).standard_normal((10, 3, 4, 4)).astype(np.float32)
    labels = np.arange(10) % 2
    seen: list[int] = []

    def model(x: np.ndarray) -> np.ndarray:
        return np.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], axis=1)

    def fixed_batch(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        assert len(x) == 4
        return model(x)

    data = GateImages(images, labels, "eval images", "toy")
    result = run_parity(model, fixed_batch, data, 8, Precision.FP32, (4, 4))
    assert seen == [4, 4, 4] and result.images == 10 and result.passed
    assert result.inputs == "eval images" and result.accuracy["dataset"] == "toy"


def test_seeded_batches_are_deterministic_and_cover_the_count() -> None:
    a = list(seeded_batches((3, 8, 8), batch=5, images=12))
    b = list(seeded_batches((3, 8, 8), batch=5, images=12))
    assert len(a) == 3 and all(x.shape == (5, 3, 8, 8) for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
