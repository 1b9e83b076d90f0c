"""The parity gate: an artifact's outputs against the eager fp32 model's, with stated rules.

fp32: max |diff| <= 1e-4 x max |reference| and pooled cosine >= 0.99999. Float32
re-association (folded BNs, fused convs, other kernels) moves logits by ~1e-6 relative; 1e-4
leaves two orders of margin while still catching any real folding bug (those give >= 1e-2).

fp16 (and bf16 execution): cosine >= 0.999 pooled and per image, and top-1 agreement of at
least 99% of the images, counted as a whole number of images (``ceil(0.99 n)``: at 32 or 64
images that is every image). Half precision carries ~3 significant digits (bf16 ~2), so
elementwise bounds are meaningless; direction and decisions are what must hold. A top-1 flip
counts as agreement (the lenient figure) only where that image's reference margin between
the two classes is no larger than that image's measured max |candidate - reference|: the
runtime's own error on that image could have swapped them. The strict figure is reported
beside it. This rule measures the error instead of assuming fp16's resolution, so it holds
for bf16 (8 bits of mantissa) as for fp16 (11).

int8: with labels, top-1 accuracy at most 1.0 point below the eager fp32 model's on the same
images; without labels, strict top-1 agreement >= 97% and every image's cosine >= 0.98, on
images held out from calibration. Quantization error is not small noise around the
reference: it is judged by what a user loses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from partialnet.export.options import Precision

PARITY_IMAGES = 64
# A backbone judged on seeded noise runs 8 images: each yields 376k compared values in t1 at
# 224 px (feat0..feat3) against a classifier's 1,000 logits, and its eager maps, kept in
# float32 in the export's reference (the fp32 rule's 1e-4 is finer than float16; byte-shuffled
# zlib shrinks them only 1.18x), take 1.13 MB an image: 9 MB for 8, 72 MB for 64. Measured on
# t1 224 px fp32/fp16 backbones (both CPU runtimes): the gate's figures over the first
# 8 of 64 noise images equal those over 64 to within 20% of max|diff| (1e-6 against a 1e-4
# limit, fp32) and 1e-7 of the worst per-image cosine. Image folders are judged in full.
BACKBONE_PARITY_IMAGES = 8
PARITY_SEED = 0

FP32_MAX_REL = 1e-4
FP32_MIN_COSINE = 0.99999
FP16_MIN_COSINE = 0.999
FP16_MIN_TOP1 = 0.99
INT8_MAX_TOP1_DROP = 0.01
INT8_MIN_TOP1 = 0.97
INT8_MIN_IMAGE_COSINE = 0.98

NOISE = "seeded noise"

# Each precision's rule: its numbers and, in words, how they are applied (compare() applies
# them; reports print them). One entry per Precision.
GATE_RULES: dict[Precision, dict[str, object]] = {
    Precision.FP32: {
        "max_rel": FP32_MAX_REL,
        "min_cosine": FP32_MIN_COSINE,
        "rule": "max|diff| <= max_rel x max|ref| and cosine >= min_cosine",
    },
    Precision.FP16: {
        "min_cosine": FP16_MIN_COSINE,
        "min_top1_agreement": FP16_MIN_TOP1,
        "rule": "cosine >= min_cosine pooled and per image; top-1 agreement on at least "
        "ceil(min_top1_agreement x images) images, where a flip counts as agreement only "
        "if that image's reference margin between the two classes is <= its measured "
        "max |candidate - reference| (top1_agreement_lenient; strict: top1_agreement). "
        "Applies to bf16 execution too.",
    },
    Precision.INT8: {
        "max_top1_drop": INT8_MAX_TOP1_DROP,
        "min_top1_agreement": INT8_MIN_TOP1,
        "min_image_cosine": INT8_MIN_IMAGE_COSINE,
        "rule": "with labels: top-1 accuracy >= the eager fp32 model's - max_top1_drop; "
        "without: strict top-1 agreement >= min_top1_agreement and every image's cosine "
        ">= min_image_cosine",
    },
}


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
    min_image_cosine: float = 1.0
    top1_agreement_lenient: float = 1.0
    top1_required: int = 0  # images that must agree for the top-1 rule
    inputs: str = NOISE  # what the images were: seeded noise, eval or calibration images
    accuracy: dict[str, object] | None = None
    failed_rules: tuple[str, ...] = ()
    # A backbone: each output judged on its own (no top-1: the maps are not class scores).
    outputs: dict[str, dict[str, object]] | None = None

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["failed_rules"] = list(self.failed_rules)
        return out

    def summary(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        acc = ""
        if self.accuracy is not None:
            acc = (
                f", top-1 accuracy {self.accuracy['top1']:.1%} "
                f"(eager fp32 {self.accuracy['reference_top1']:.1%})"
            )
        why = f" [{'; '.join(self.failed_rules)}]" if self.failed_rules else ""
        if self.outputs is not None:
            return (
                f"{verdict} ({len(self.outputs)} outputs, worst: max|diff| {self.max_rel:.3g} x "
                f"max|ref|, cosine {self.cosine:.7f} (min per image "
                f"{self.min_image_cosine:.5f}), {self.images} images of {self.inputs}){why}"
            )
        return (
            f"{verdict} (max|diff| {self.max_abs:.3g} = {self.max_rel:.3g} x max|ref|, "
            f"cosine {self.cosine:.7f} (min per image {self.min_image_cosine:.5f}), top-1 "
            f"agreement {self.top1_agreement:.1%} ({self.top1_agreement_lenient:.1%} counting "
            f"flips within the measured error){acc}, {self.images} images of {self.inputs})"
            f"{why}"
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


def _cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    return (ref * out).sum(1) / np.maximum(norms, 1e-30)


def accuracy(
    logits: np.ndarray, labels: np.ndarray, reference: np.ndarray, dataset: str
) -> dict[str, object]:
    """Top-1/top-5 of ``logits`` on ``labels``, beside the reference's top-1 on them."""
    labels = np.asarray(labels)
    k = min(5, logits.shape[1])
    top5 = np.argsort(-logits, axis=1)[:, :k]
    return {
        "dataset": dataset,
        "images": len(labels),
        "top1": float((logits.argmax(1) == labels).mean()),
        "top5": float((top5 == labels[:, None]).any(1).mean()),
        "reference_top1": float((reference.argmax(1) == labels).mean()),
        "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
    }


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    precision: Precision,
    *,
    labels: np.ndarray | None = None,
    inputs: str = NOISE,
    dataset: str | None = None,
    classify: bool = True,
    max_drop: float = INT8_MAX_TOP1_DROP,
) -> ParityResult:
    """Judge ``candidate`` against ``reference`` (N x ... outputs) by ``precision``'s rule.

    ``classify=False`` (feature maps): only the elementwise and cosine rules apply.
    ``max_drop``: the int8 top-1 budget with labels, a fraction (``--max-drop`` / 100).
    """
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    out = candidate.astype(np.float64).reshape(len(candidate), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shape {candidate.shape} differs from reference {reference.shape}")
    n = len(ref)
    diff = np.abs(ref - out)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = max_abs / max(float(np.abs(ref).max()), 1e-30)
    finite = bool(np.isfinite(out).all())
    cos = float((ref * out).sum() / max(np.linalg.norm(ref) * np.linalg.norm(out), 1e-30))
    image_cos = _cosines(ref, out)
    min_cos = float(np.nan_to_num(image_cos, nan=-1.0).min()) if n else 1.0
    rows = np.arange(n)
    ref_best, out_best = ref.argmax(1), out.argmax(1)
    strict = ref_best == out_best
    margin = ref[rows, ref_best] - ref[rows, out_best]
    lenient = strict | (margin <= diff.max(1))
    top1, top1_lenient = float(strict.mean()), float(lenient.mean())
    acc = None
    if labels is not None and classify:
        acc = accuracy(candidate, labels, reference, dataset or inputs)

    failed: list[str] = [] if finite else ["non-finite outputs"]
    required = 0
    if precision is Precision.FP32:
        if not max_rel <= FP32_MAX_REL:
            failed.append(f"max_rel {max_rel:.3g} > {FP32_MAX_REL:g}")
        if not cos >= FP32_MIN_COSINE:
            failed.append(f"cosine {cos:.7f} < {FP32_MIN_COSINE}")
    elif not classify:
        floor = INT8_MIN_IMAGE_COSINE if precision is Precision.INT8 else FP16_MIN_COSINE
        if not min_cos >= floor:
            failed.append(f"image cosine {min_cos:.5f} < {floor}")
    elif precision is Precision.INT8:
        if acc is not None:
            drop = float(acc["reference_top1"]) - float(acc["top1"])
            if not drop <= max_drop + 1e-12:
                failed.append(f"top-1 accuracy drop {drop:.1%} > {max_drop:.1%}")
        else:
            required = math.ceil(INT8_MIN_TOP1 * n - 1e-9)
            if int(strict.sum()) < required:
                failed.append(f"top-1 agreement {int(strict.sum())}/{n} < {required}/{n}")
            if not min_cos >= INT8_MIN_IMAGE_COSINE:
                failed.append(f"image cosine {min_cos:.4f} < {INT8_MIN_IMAGE_COSINE}")
    else:
        required = math.ceil(FP16_MIN_TOP1 * n - 1e-9)
        if not cos >= FP16_MIN_COSINE:
            failed.append(f"cosine {cos:.5f} < {FP16_MIN_COSINE}")
        if not min_cos >= FP16_MIN_COSINE:
            failed.append(f"image cosine {min_cos:.5f} < {FP16_MIN_COSINE}")
        if int(lenient.sum()) < required:
            failed.append(f"top-1 agreement {int(lenient.sum())}/{n} < {required}/{n}")
    return ParityResult(
        max_abs=max_abs,
        max_rel=max_rel,
        cosine=cos,
        top1_agreement=top1,
        images=n,
        precision=precision.value,
        passed=not failed,
        min_image_cosine=min_cos,
        top1_agreement_lenient=top1_lenient,
        top1_required=required,
        inputs=inputs,
        accuracy=acc,
        failed_rules=tuple(failed),
    )


@dataclass(frozen=True)
class GateImages:
    """What the gate runs on: preprocessed images (N x C x H x W), their labels if any, and
    what they are (reported in the manifest)."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    dataset: str | None = None

    def batches(self, batch: int) -> Iterable[np.ndarray]:
        for i in range(0, len(self.images), batch):
            yield np.ascontiguousarray(self.images[i : i + batch])


def noise_images(shape: tuple[int, int, int], batch: int, count: int = PARITY_IMAGES) -> GateImages:
    images = np.concatenate(list(seeded_batches(shape, batch, count)))[:count]
    return GateImages(images, None, NOISE)


def infer_in_batches(
    infer: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    batch: int,
    batch_range: tuple[int, int],
) -> np.ndarray:
    """Every image through ``infer`` in batches the artifact accepts; a fixed-batch
    artifact's last batch is padded with zeros whose outputs are dropped."""
    lo, hi = batch_range
    step = max(lo, min(batch, hi))
    outs = []
    for i in range(0, len(images), step):
        x = images[i : i + step]
        n = len(x)
        if n < lo:
            x = np.concatenate([x, np.zeros((lo - n, *x.shape[1:]), np.float32)])
        y = infer(np.ascontiguousarray(x))
        outs.append({k: v[:n] for k, v in y.items()} if isinstance(y, dict) else y[:n])
    if outs and isinstance(outs[0], dict):
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return np.concatenate(outs)


def run_parity(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    data: GateImages,
    batch: int,
    precision: Precision,
    batch_range: tuple[int, int] | None = None,
    max_drop: float = INT8_MAX_TOP1_DROP,
) -> ParityResult:
    """Run both on the same images and compare all outputs at once.

    All reference batches run before any candidate batch: alternating torch's OpenMP pool
    with another runtime's threads batch by batch makes both wait on each other's threads.
    A fixed-batch candidate gets its last batch padded with zeros whose outputs are dropped.
    """
    lo, hi = batch_range or (batch, batch)
    refs = reference_outputs(reference, data, max(lo, min(batch, hi)))
    outs = infer_in_batches(candidate, data.images, batch, (lo, hi))
    return judge(refs, outs, precision, data, max_drop)


def reference_outputs(
    reference: Callable[[np.ndarray], np.ndarray | dict[str, np.ndarray]],
    data: GateImages,
    step: int,
) -> np.ndarray | dict[str, np.ndarray]:
    """The reference's outputs on every image, computed ``step`` images at a time."""
    refs_list = [reference(x) for x in data.batches(step)]
    if isinstance(refs_list[0], dict):
        return {k: np.concatenate([r[k] for r in refs_list]) for k in refs_list[0]}
    return np.concatenate(refs_list)


def judge(
    reference: np.ndarray | dict[str, np.ndarray],
    candidate: np.ndarray | dict[str, np.ndarray],
    precision: Precision,
    data: GateImages,
    max_drop: float = INT8_MAX_TOP1_DROP,
) -> ParityResult:
    """The gate's verdict on outputs already computed: the export gate and the device check
    (``partialnet-bench check``, from the export's reference file) both end here."""
    if isinstance(candidate, dict):
        if not isinstance(reference, dict):
            raise ValueError("a backbone's outputs need the reference's named outputs")
        return compare_outputs(reference, candidate, precision, inputs=data.source)
    if isinstance(reference, dict):
        raise ValueError("a classifier's logits need the reference's logits, not named maps")
    return compare(
        reference,
        candidate,
        precision,
        labels=data.labels,
        inputs=data.source,
        dataset=data.dataset,
        max_drop=max_drop,
    )


def rule_record(
    precision: Precision, features: bool, max_drop: float = INT8_MAX_TOP1_DROP
) -> dict[str, object]:
    """The rule ``compare`` applies to ``precision``, with its thresholds, for the record
    (``max_drop``: the export's int8 top-1 budget, a fraction)."""
    if precision is Precision.FP32:
        text = "max|diff| <= max_rel x max|ref| and pooled cosine >= min_cosine"
        limits: dict[str, float] = {"max_rel": FP32_MAX_REL, "min_cosine": FP32_MIN_COSINE}
    elif features:
        floor = INT8_MIN_IMAGE_COSINE if precision is Precision.INT8 else FP16_MIN_COSINE
        text = "every output's per-image cosine >= min_image_cosine"
        limits = {"min_image_cosine": floor}
    elif precision is Precision.INT8:
        text = (
            "with labels: top-1 accuracy drop <= max_top1_drop; else strict top-1 agreement "
            ">= min_top1 and every image's cosine >= min_image_cosine"
        )
        limits = {
            "max_top1_drop": max_drop,
            "min_top1": INT8_MIN_TOP1,
            "min_image_cosine": INT8_MIN_IMAGE_COSINE,
        }
    else:
        text = (
            "pooled and per-image cosine >= min_cosine; top-1 agreement (flips within the "
            "measured error count) >= ceil(min_top1 x images)"
        )
        limits = {"min_cosine": FP16_MIN_COSINE, "min_top1": FP16_MIN_TOP1}
    return {"precision": precision.value, "features": features, "rule": text, "limits": limits}


def compare_outputs(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    precision: Precision,
    *,
    inputs: str = NOISE,
) -> ParityResult:
    """Every named output judged on its own (feature maps: no top-1 rule); the result's
    figures are the worst output's, and it passes only if every output does."""
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise ValueError(f"the artifact lacks outputs {missing}; it has {sorted(candidate)}")
    each = {
        name: compare(reference[name], candidate[name], precision, inputs=inputs, classify=False)
        for name in reference
    }
    results = list(each.values())
    failed = tuple(f"{name}: {rule}" for name, r in each.items() for rule in r.failed_rules)
    return ParityResult(
        max_abs=max(r.max_abs for r in results),
        max_rel=max(r.max_rel for r in results),
        cosine=min(r.cosine for r in results),
        top1_agreement=1.0,  # no class scores: the top-1 rules do not apply to feature maps
        images=results[0].images,
        precision=precision.value,
        passed=not failed,
        min_image_cosine=min(r.min_image_cosine for r in results),
        top1_agreement_lenient=1.0,
        inputs=inputs,
        failed_rules=failed,
        outputs={name: r.to_dict() for name, r in each.items()},
    )
