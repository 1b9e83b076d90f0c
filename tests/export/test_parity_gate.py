"""The parity gate's arithmetic on hand-made outputs (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from partialnet.export.options import Precision
from partialnet.export.parity import (
    FP16_MIN_TOP1,
    FP16_TIE_REL,
    FP32_MAX_REL,
    compare,
    seeded_batches,
)


def _logits(n: int = 100, classes: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((n, classes)).astype(np.float32)
    out[np.arange(n), rng.integers(0, classes, n)] += 5.0  # clear winners
    return out


def test_fp32_bounds() -> None:
    ref = _logits()
    scale = np.abs(ref).max()
    just_inside = ref.copy()
    just_inside[0, 0] += 0.9 * FP32_MAX_REL * scale
    assert compare(ref, just_inside, Precision.FP32).passed
    just_outside = ref.copy()
    just_outside[0, 0] += 1.1 * FP32_MAX_REL * scale
    result = compare(ref, just_outside, Precision.FP32)
    assert not result.passed
    assert result.max_rel == pytest.approx(1.1 * FP32_MAX_REL, rel=1e-3)


def test_nan_never_passes() -> None:
    ref = _logits()
    out = ref.copy()
    out[3, 3] = np.nan
    assert not compare(ref, out, Precision.FP16).passed


def test_fp16_flip_on_a_tie_is_agreement_but_a_real_flip_is_not() -> None:
    ref = _logits(n=50)
    rows = np.arange(50)
    best = ref.argmax(1)
    second = np.where(best == 0, 1, 0)
    # Image 0: runner-up within fp16 resolution of the best -> a tie.
    ref[0, second[0]] = ref[0, best[0]] - 0.5 * FP16_TIE_REL * np.abs(ref[0]).max()
    flipped = ref.copy()
    flipped[0, second[0]] = ref[0, best[0]] + 1e-3
    tied = compare(ref, flipped, Precision.FP16)
    assert tied.top1_agreement == pytest.approx(49 / 50)
    assert tied.top1_agreement_within_ties == 1.0 and tied.passed
    # Image 1: the candidate prefers a class the reference ranks far lower -> a real flip.
    real = flipped.copy()
    real[1, second[1]] = ref[1, best[1]] + 1.0
    result = compare(ref, real, Precision.FP16)
    assert result.top1_agreement_within_ties == pytest.approx(49 / 50)
    assert result.top1_agreement_within_ties < FP16_MIN_TOP1 and not result.passed
    assert (ref[rows, best] > ref[rows, second]).all()


def test_seeded_batches_are_deterministic_and_cover_the_count() -> None:
    a = list(seeded_batches((3, 8, 8), batch=5, images=12))
    b = list(seeded_batches((3, 8, 8), batch=5, images=12))
    assert len(a) == 3 and all(x.shape == (5, 3, 8, 8) for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
