"""The int8 agreement check: an int8 artifact's logits against the fp32 model's, no labels.

Int8 moves every logit by roughly a percent of its range, so elementwise bounds say
nothing; what a user sees is the decision and the direction of the logit vector:

* top-1 agreement >= 97%: on a trained model, images whose two best classes are closer than
  int8's resolution are rare; more than 3 in 100 flipping means lost accuracy.
* per-image cosine >= 0.98 (the *worst* image, not the mean): one badly calibrated layer
  shows up on the images that drive it out of range, and a mean hides them.

With labels, the gate is the top-1 accuracy drop instead (``max_top1_drop``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

INT8_MIN_TOP1 = 0.97
INT8_MIN_COSINE = 0.98
INT8_MAX_TOP1_DROP = 0.01  # 1.0 point of top-1 accuracy vs the eager fp32 model


@dataclass(frozen=True)
class Int8Agreement:
    top1_agreement: float
    min_cosine: float
    mean_cosine: float
    images: int
    passed: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{verdict} (top-1 agreement {self.top1_agreement:.1%} >= {INT8_MIN_TOP1:.0%}, "
            f"per-image cosine min {self.min_cosine:.4f} >= {INT8_MIN_COSINE} "
            f"(mean {self.mean_cosine:.4f}), {self.images} images)"
        )


def int8_agreement(reference: np.ndarray, candidate: np.ndarray) -> Int8Agreement:
    """Compare (N, classes) logits of the fp32 reference and the int8 candidate."""
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    out = candidate.astype(np.float64).reshape(len(candidate), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shape {candidate.shape} differs from reference {reference.shape}")
    norms = np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-30)
    cosine = (ref * out).sum(1) / norms
    finite = bool(np.isfinite(out).all())
    top1 = float((ref.argmax(1) == out.argmax(1)).mean())
    worst = float(cosine.min()) if finite else float("nan")
    passed = finite and top1 >= INT8_MIN_TOP1 and worst >= INT8_MIN_COSINE
    return Int8Agreement(top1, worst, float(cosine.mean()), len(ref), passed)


def top1_drop(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray
) -> tuple[float, float, bool]:
    """(fp32 top-1, int8 top-1, passed) with labels: passed when the drop <= 1.0 point."""
    ref_acc = float((reference.argmax(1) == labels).mean())
    out_acc = float((candidate.argmax(1) == labels).mean())
    return ref_acc, out_acc, ref_acc - out_acc <= INT8_MAX_TOP1_DROP + 1e-12
