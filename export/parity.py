"""The parity gate: an artifact's outputs against the eager model's, with stated tolerances.

fp32: max |diff| <= 1e-4 x max |reference| and cosine >= 0.99999. Float32 re-association
(folded BNs, fused convs, other kernels) moves logits by ~1e-6 relative; 1e-4 leaves two
orders of margin while still catching any real folding bug (those give >= 1e-2).
fp16: cosine >= 0.999 and top-1 agreement >= 99%. Half precision carries ~3 significant
digits, so elementwise bounds are meaningless; direction and decisions are what must hold.
Top-1 is counted as agreeing where the candidate's class is tied with the reference's best
at half precision (reference logits within 2^-10 x the image's max |logit|, fp16's relative
resolution): such classes cannot be told apart in fp16. Random-weight models have many
near-ties (seen: a 9e-5 margin on logits of 0.64); trained ones have few. The strict
top-1 agreement is reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from partialnet.export.options import Precision

PARITY_IMAGES = 64
PARITY_SEED = 0

FP32_MAX_REL = 1e-4
FP32_MIN_COSINE = 0.99999
FP16_MIN_COSINE = 0.999
FP16_MIN_TOP1 = 0.99
FP16_TIE_REL = 2.0**-10


@dataclass(frozen=True)
class ParityResult:
    max_abs: float
    max_rel: float
    cosine: float
    top1_agreement: float
    images: int
    precision: str
    passed: bool
    status: str = "verified"
    top1_agreement_within_ties: float = 1.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{verdict} (max|diff| {self.max_abs:.3g} = {self.max_rel:.3g} x max|ref|, "
            f"cosine {self.cosine:.7f}, top-1 {self.top1_agreement:.1%} "
            f"({self.top1_agreement_within_ties:.1%} within fp16 ties), "
            f"{self.images} images)"
        )


def unverified(reason: str) -> dict[str, str]:
    """The manifest's parity entry for an artifact that cannot run here."""
    return {"status": "unverified", "reason": reason}


def seeded_batches(
    shape: tuple[int, int, int], batch: int, images: int = PARITY_IMAGES, seed: int = PARITY_SEED
) -> Iterator[np.ndarray]:
    """Deterministic standard-normal batches (normalized-image statistics) of ``batch``."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < images:
        yield rng.standard_normal((batch, *shape), dtype=np.float32)
        done += batch


def compare(reference: np.ndarray, candidate: np.ndarray, precision: Precision) -> ParityResult:
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    out = candidate.astype(np.float64).reshape(len(candidate), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shape {candidate.shape} differs from reference {reference.shape}")
    diff = np.abs(ref - out)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = max_abs / max(float(np.abs(ref).max()), 1e-30)
    finite = bool(np.isfinite(out).all())
    cos = float((ref * out).sum() / max(np.linalg.norm(ref) * np.linalg.norm(out), 1e-30))
    ref_best, out_best = ref.argmax(1), out.argmax(1)
    strict = ref_best == out_best
    tie_tolerance = FP16_TIE_REL * np.abs(ref).max(1)
    tied = ref[np.arange(len(ref)), out_best] >= ref.max(1) - tie_tolerance
    top1 = float(strict.mean())
    top1_ties = float((strict | tied).mean())
    if precision is Precision.FP32:
        passed = finite and max_rel <= FP32_MAX_REL and cos >= FP32_MIN_COSINE
    else:
        passed = finite and cos >= FP16_MIN_COSINE and top1_ties >= FP16_MIN_TOP1
    return ParityResult(
        max_abs,
        max_rel,
        cos,
        top1,
        len(ref),
        precision.value,
        passed,
        top1_agreement_within_ties=top1_ties,
    )


def run_parity(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    shape: tuple[int, int, int],
    batch: int,
    precision: Precision,
    images: int = PARITY_IMAGES,
) -> ParityResult:
    """Run both on the same seeded batches and compare all outputs at once.

    All reference batches run before any candidate batch: alternating torch's OpenMP pool
    with another runtime's threads batch by batch makes both wait on each other's threads.
    """
    batches = list(seeded_batches(shape, batch, images))
    refs = np.concatenate([reference(x) for x in batches])
    outs = np.concatenate([candidate(x) for x in batches])
    return compare(refs, outs, precision)
