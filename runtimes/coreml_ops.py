"""numpy implementations of the MIL ops our ML programs use, following coremltools' op defs.

Each function takes the op's inputs by name (constants already read, optional inputs
absent when the program leaves them out) and returns its output(s). The interpreter
rounds every output to the dtype the program declares for it, so an fp16 program keeps
fp16 tensors between ops; inside an op the arithmetic is float32:

- elementwise ``add``/``sub``/``mul``/``real_div``/``sqrt``: float32 then one rounding to
  fp16, which is exactly IEEE fp16 arithmetic (float32 has more than 2 x 11 + 2 bits, so
  the double rounding is innocuous for these operations);
- ``conv``/``linear``/``matmul``: fp16 inputs, float32 accumulation, fp16 result;
- ``reduce_*``, ``softmax``, ``layer_norm``, ``batch_norm``, ``gelu``, ``sigmoid_hard``:
  computed in float32 as one fused step, then rounded once.

Apple's CPU, GPU and Neural Engine choose their own accumulation (the Neural Engine is
fp16 throughout, the GPU may accumulate in fp16): this approximates, not reproduces, a
device. ``erfc`` (for ``gelu`` EXACT) comes from torch, or from ``math`` where torch is not
installed (a device check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Op = Callable[[dict[str, Any]], Any]
F32 = np.float32


def _f32(x: Any) -> np.ndarray:
    """A float32 view of a float tensor (fp16 widened, float32 as is)."""
    x = np.asarray(x)
    return x.astype(F32) if x.dtype == np.float16 else x


def _axes(value: Any, rank: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    return tuple(int(a) % rank for a in np.atleast_1d(value))


# ---------------------------------------------------------------- elementwise


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Op:
    def op(a: dict[str, Any]) -> np.ndarray:
        x, y = np.asarray(a["x"]), np.asarray(a["y"])
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            x, y = _f32(x), _f32(y)
        return fn(x, y)

    return op


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Op:
    return lambda a: fn(_f32(a["x"]))


def rsqrt(a: dict[str, Any]) -> np.ndarray:
    return 1.0 / np.sqrt(_f32(a["x"]) + F32(a.get("epsilon", 1e-12)))


def cast(a: dict[str, Any]) -> np.ndarray:
    dtype = CAST_DTYPES[str(a["dtype"])]
    return np.asarray(a["x"]).astype(dtype)


CAST_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "bool": np.bool_,
}


# ---------------------------------------------------------------- activations


# erfc(z) ~ t exp(-z^2 + P(t)), t = 1 / (1 + z/2), z >= 0: Numerical Recipes' Chebyshev fit,
# fractional error < 1.2e-7 everywhere (about two float32 ulps), evaluated in float64.
_ERFC_COEFFS = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def _erfc(x: np.ndarray) -> np.ndarray:
    """erfc in numpy alone: the same numbers with or without torch, so a device's simulated
    check repeats the export gate's figures exactly (torch's float32 erfc differed from the
    standard library's in the last bits, which the device path would have used)."""
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.zeros_like(t)
    for c in reversed(_ERFC_COEFFS):
        poly = poly * t + c
    tail = t * np.exp(-z * z + poly)
    return np.where(x >= 0, tail, 2.0 - tail).astype(x.dtype)


def gelu(a: dict[str, Any]) -> np.ndarray:
    x = _f32(a["x"])
    mode = str(a.get("mode", "EXACT"))
    # 1 + erf(u) as erfc(-u), and 1 + tanh(u) as 2 sigmoid(2u): the same functions without
    # the cancellation that costs all relative precision where x is very negative.
    if mode == "EXACT":
        return F32(0.5) * x * _erfc(x * F32(-1.0 / np.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        inner = F32(np.sqrt(2.0 / np.pi)) * (x + F32(0.044715) * x * x * x)
        return x * _sigmoid(F32(2.0) * inner)
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(F32(1.702) * x)
    raise ValueError(f"gelu mode {mode!r} is not one of EXACT, TANH_APPROXIMATION, ...")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return F32(1.0) / (F32(1.0) + np.exp(-x))


def constexpr_affine_dequantize(a: dict[str, Any]) -> np.ndarray:
    """8-bit weights (iOS16): (quantized_data - zero_point) * scale, per channel on ``axis``.

    The result takes the scale's dtype, as the op's definition says."""
    data = np.asarray(a["quantized_data"]).astype(F32)
    zero, scale = np.asarray(a["zero_point"]).astype(F32), np.asarray(a["scale"])
    axis = int(a["axis"]) % data.ndim
    shape = [1] * data.ndim
    shape[axis] = -1
    if zero.ndim:
        zero = zero.reshape(shape)
    scale32 = scale.astype(F32).reshape(shape) if scale.ndim else scale.astype(F32)
    return ((data - zero) * scale32).astype(scale.dtype)


def clip(a: dict[str, Any]) -> np.ndarray:
    """MIL clip: min(max(x, alpha), beta)."""
    return np.minimum(np.maximum(_f32(a["x"]), F32(a["alpha"])), F32(a["beta"]))


def sigmoid_hard(a: dict[str, Any]) -> np.ndarray:
    x = _f32(a["x"])
    return np.clip(F32(a["alpha"]) * x + F32(a["beta"]), F32(0.0), F32(1.0))


def softmax(a: dict[str, Any]) -> np.ndarray:
    x = _f32(a["x"])
    axis = int(a.get("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------- normalization, reduction


def layer_norm(a: dict[str, Any]) -> np.ndarray:
    x = _f32(a["x"])
    axes = _axes(a.get("axes"), x.ndim) or tuple(range(x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=axes, keepdims=True)
    out = centered / np.sqrt(var + F32(a.get("epsilon", 1e-5)))
    # gamma/beta have the shape of x.shape[axes] (the trailing axes), so they broadcast.
    if a.get("gamma") is not None:
        out = out * _f32(a["gamma"])
    if a.get("beta") is not None:
        out = out + _f32(a["beta"])
    return out


def batch_norm(a: dict[str, Any]) -> np.ndarray:
    x = _f32(a["x"])
    shape = (1, -1) + (1,) * (x.ndim - 2)  # per channel, axis 1
    mean = _f32(a["mean"]).reshape(shape)
    scale = 1.0 / np.sqrt(_f32(a["variance"]).reshape(shape) + F32(a.get("epsilon", 1e-5)))
    if a.get("gamma") is not None:
        scale = scale * _f32(a["gamma"]).reshape(shape)
    out = (x - mean) * scale
    if a.get("beta") is not None:
        out = out + _f32(a["beta"]).reshape(shape)
    return out


def _reduce(fn: Callable[..., np.ndarray]) -> Op:
    def op(a: dict[str, Any]) -> np.ndarray:
        x = _f32(a["x"])
        axes = _axes(a.get("axes"), x.ndim)
        return fn(x, axis=axes, keepdims=bool(a.get("keep_dims", False)), dtype=F32)

    return op


def _reduce_max(x: np.ndarray, axis: Any, keepdims: bool, dtype: Any) -> np.ndarray:
    return np.max(x, axis=axis, keepdims=keepdims)


# ---------------------------------------------------------------- linear algebra


def linear(a: dict[str, Any]) -> np.ndarray:
    out = _f32(a["x"]) @ _f32(a["weight"]).T
    return out + _f32(a["bias"]) if a.get("bias") is not None else out


def matmul(a: dict[str, Any]) -> np.ndarray:
    x, y = _f32(a["x"]), _f32(a["y"])
    if a.get("transpose_x", False) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if a.get("transpose_y", False) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def conv_padding(
    pad_type: str,
    pad: Sequence[int] | None,
    size: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[tuple[int, int]]:
    """(before, after) per spatial axis, as coremltools' ``aggregated_pad`` defines them."""
    if pad_type == "valid":
        return [(0, 0)] * len(size)
    if pad_type == "custom":
        p = [int(v) for v in (pad if pad is not None else [0] * 2 * len(size))]
        return [(p[2 * i], p[2 * i + 1]) for i in range(len(size))]
    if pad_type not in ("same", "same_lower"):
        raise ValueError(f"conv pad_type {pad_type!r} is not valid, custom, same or same_lower")
    out = []
    for i, k, s, d in zip(size, kernel, strides, dilations, strict=True):
        eff = (k - 1) * d + 1
        total = max(0, s * -(-i // s) - i + eff - s)
        small, big = total // 2, total - total // 2
        out.append((big, small) if pad_type == "same_lower" else (small, big))
    return out


def conv(a: dict[str, Any]) -> np.ndarray:
    """2-D convolution (N, C, H, W): one im2col copy and one matmul per group."""
    x, w = _f32(a["x"]), _f32(a["weight"])
    if x.ndim != 4:
        raise NotImplementedError(f"conv on rank-{x.ndim} input (only 2-D convs are supported)")
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    groups = int(a.get("groups", 1))
    strides = [int(s) for s in a.get("strides", (1, 1))]
    dil = [int(d) for d in a.get("dilations", (1, 1))]
    pads = conv_padding(str(a["pad_type"]), a.get("pad"), (h, wd), (kh, kw), strides, dil)
    if any(p for pair in pads for p in pair):
        x = np.pad(x, ((0, 0), (0, 0), *pads))
    eh, ew = (kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1
    ho = (x.shape[2] - eh) // strides[0] + 1
    wo = (x.shape[3] - ew) // strides[1] + 1
    og = o // groups
    wmat = w.reshape(groups, og, cg * kh * kw)
    if (kh, kw) == (1, 1) and strides == [1, 1]:
        cols = x.reshape(n, groups, cg, ho * wo)
    else:
        win = np.lib.stride_tricks.sliding_window_view(x, (eh, ew), axis=(2, 3))
        win = win[:, :, :: strides[0], :: strides[1], :: dil[0], :: dil[1]][:, :, :ho, :wo]
        # (N, C, Ho, Wo, kh, kw) -> (N, groups, Cg * kh * kw, Ho * Wo): the one copy
        win = win.reshape(n, groups, cg, ho, wo, kh, kw).transpose(0, 1, 2, 5, 6, 3, 4)
        cols = win.reshape(n, groups, cg * kh * kw, ho * wo)
    out = np.matmul(wmat, cols).reshape(n, o, ho, wo)
    if a.get("bias") is not None:
        out += _f32(a["bias"]).reshape(1, o, 1, 1)
    return out


# ---------------------------------------------------------------- tensor shape and layout


def split(a: dict[str, Any]) -> list[np.ndarray]:
    x = np.asarray(a["x"])
    axis = int(a["axis"]) % x.ndim
    if a.get("split_sizes") is not None:
        sizes = [int(s) for s in np.atleast_1d(a["split_sizes"])]
    else:
        parts = int(a["num_splits"])
        sizes = [x.shape[axis] // parts] * parts
    if sum(sizes) != x.shape[axis]:
        raise ValueError(f"split sizes {sizes} do not add up to the axis length {x.shape[axis]}")
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def concat(a: dict[str, Any]) -> np.ndarray:
    values = [np.asarray(v) for v in a["values"]]
    axis = int(a["axis"])
    if not a.get("interleave", False):
        return np.concatenate(values, axis=axis)
    # interleave: [a0, b0, a1, b1, ...] along the axis, every input the same shape
    stacked = np.stack(values, axis=axis % values[0].ndim + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


def reshape(a: dict[str, Any]) -> np.ndarray:
    x = np.asarray(a["x"])
    shape = [int(s) for s in np.atleast_1d(a["shape"])]
    # 0 copies the input's dimension, counting from the right (iOS17; the same as iOS15's
    # rule where len(shape) == rank(x)); a 0 beyond the input's rank is 1.
    for i, s in enumerate(shape):
        if s == 0:
            j = x.ndim - (len(shape) - i)
            shape[i] = x.shape[j] if j >= 0 else 1
    return x.reshape(shape)


def squeeze(a: dict[str, Any]) -> np.ndarray:
    x = np.asarray(a["x"])
    axes = _axes(a.get("axes"), x.ndim)
    return np.squeeze(x, axis=axes)


def expand_dims(a: dict[str, Any]) -> np.ndarray:
    x = np.asarray(a["x"])
    rank = x.ndim + len(np.atleast_1d(a["axes"]))
    return np.expand_dims(x, tuple(int(v) % rank for v in np.atleast_1d(a["axes"])))


def transpose(a: dict[str, Any]) -> np.ndarray:
    return np.transpose(np.asarray(a["x"]), [int(p) for p in a["perm"]])


def classify(a: dict[str, Any]) -> tuple[Any, dict[Any, float]]:
    """The predicted class and the class -> probability map (batch 1, as Core ML's)."""
    probs = np.asarray(a["probabilities"], dtype=F32)
    if probs.size != len(a["classes"]) or (probs.ndim > 1 and probs.shape[0] != 1):
        raise ValueError(f"classify takes one row of {len(a['classes'])} probabilities")
    probs = probs.reshape(-1)
    classes = list(a["classes"])
    return classes[int(probs.argmax())], {k: float(p) for k, p in zip(classes, probs, strict=True)}


OPS: dict[str, Op] = {
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(np.divide),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "pow": _binary(np.power),
    "sqrt": _unary(np.sqrt),
    "rsqrt": rsqrt,
    "exp": _unary(np.exp),
    "abs": _unary(np.abs),
    "tanh": _unary(np.tanh),
    "relu": _unary(lambda x: np.maximum(x, F32(0.0))),
    "sigmoid": _unary(_sigmoid),
    "sigmoid_hard": sigmoid_hard,
    "clip": clip,
    "constexpr_affine_dequantize": constexpr_affine_dequantize,
    "gelu": gelu,
    "softmax": softmax,
    "cast": cast,
    "layer_norm": layer_norm,
    "batch_norm": batch_norm,
    "reduce_mean": _reduce(np.mean),
    "reduce_sum": _reduce(np.sum),
    "reduce_max": _reduce(_reduce_max),
    "linear": linear,
    "matmul": matmul,
    "conv": conv,
    "split": split,
    "concat": concat,
    "reshape": reshape,
    "squeeze": squeeze,
    "expand_dims": expand_dims,
    "transpose": transpose,
    "classify": classify,
}
"""Every MIL op type the interpreter runs (plus ``const``, read when the program loads)."""
