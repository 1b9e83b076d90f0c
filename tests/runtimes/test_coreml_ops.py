"""Every op of the MIL reference interpreter against torch/numpy, in fp32 and fp16 programs.

Each case builds a one-op MIL program with coremltools' builder (the same Program class the
package loader returns), runs it in ``MilInterpreter`` and compares with a float64
reference computed from the same (fp16-representable, for fp16) inputs.

Tolerances, relative to the reference:
- fp32, elementwise (add, sqrt, gelu, ...): 1e-6 relative plus 1e-6 x max|ref|, a few
  float32 ulps (6e-8 each), room for the transcendental functions (exp, tanh, erfc) that
  are not correctly rounded and for composites whose intermediates are input-sized.
- fp32, sums of K terms (conv, matmul, reductions, normalizations): 1e-5 x max|ref|; float32
  rounding over K <= 300 terms is ~sqrt(K) x 6e-8 ~ 1e-6 in practice, 1e-5 leaves 10x.
- fp16: the op computes in float32 and rounds once, so the result is the float16 nearest to
  a value within float32 error of the exact one: within 2^-11 (half an fp16 ulp) plus 1e-6,
  relative and x max|ref| as above; sums get 2^-10 x max|ref| (one fp16 ulp of the largest).
Shapes are fixed by the program, and the interpreter checks every result's shape and dtype
against it; here the dtype is asserted too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (extra [coreml])")
from coremltools.converters.mil.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from partialnet.runtimes.coreml_mil import MilInterpreter, UnsupportedOpError  # noqa: E402
from partialnet.runtimes.coreml_ops import OPS, conv_padding  # noqa: E402

DTYPES = [np.float32, np.float16]
ELEMENTWISE = {np.float32: 1e-6, np.float16: 2.0**-11 + 1e-6}
SUMS = {np.float32: 1e-5, np.float16: 2.0**-10}


def _mil_type(dtype: type) -> type:
    return types.fp16 if dtype == np.float16 else types.fp32


def run(build: Callable[..., object], *inputs: np.ndarray) -> np.ndarray:
    """Run ``build(x[, y])`` as a one-op program on ``inputs``; returns its first output."""
    specs = [mb.TensorSpec(shape=v.shape, dtype=_mil_type(v.dtype.type)) for v in inputs]
    if len(inputs) == 1:

        @mb.program(input_specs=specs, opset_version=ct.target.iOS16)
        def program(x):
            return build(x)

        feeds = {"x": inputs[0]}
    else:

        @mb.program(input_specs=specs, opset_version=ct.target.iOS16)
        def program(x, y):
            return build(x, y)

        feeds = {"x": inputs[0], "y": inputs[1]}
    interpreter = MilInterpreter(program)
    outs = interpreter.run(feeds)
    return outs[interpreter.outputs[0]]


def _rand(shape: tuple[int, ...], dtype: type, seed: int = 0, lo: float | None = None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) if lo is None else rng.uniform(lo, lo + 2.0, shape)
    return x.astype(dtype)


def _c(value: float | np.ndarray, dtype: type) -> np.ndarray:
    return np.asarray(value, dtype=dtype)


def _check(out: np.ndarray, ref: np.ndarray, dtype: type, sums: bool) -> None:
    assert out.dtype == dtype and out.shape == ref.shape
    out64 = out.astype(np.float64)
    if sums:
        atol = SUMS[dtype] * np.abs(ref).max()
        np.testing.assert_allclose(out64, ref, rtol=0, atol=atol)
    else:
        # Also absolute, at the same fraction of the tensor's scale: composite functions
        # (alpha * x + beta, gelu's tail) round intermediates as large as the input, so an
        # output near zero keeps only the input's absolute precision.
        atol = ELEMENTWISE[dtype] * np.abs(ref).max()
        np.testing.assert_allclose(out64, ref, rtol=ELEMENTWISE[dtype], atol=atol)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float64))


BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_broadcasts(name: str, dtype: type) -> None:
    positive = name in ("pow", "real_div")
    x = _rand((2, 4, 5, 6), dtype, 1, lo=0.5 if positive else None)
    y = _rand((1, 4, 1, 1), dtype, 2, lo=0.5 if positive else None)
    out = run(lambda a, b: getattr(mb, name)(x=a, y=b), x, y)
    _check(out, BINARY[name](x.astype(np.float64), y.astype(np.float64)), dtype, sums=False)


UNARY = {
    "sqrt": (np.sqrt, 0.1),
    "exp": (np.exp, None),
    "abs": (np.abs, None),
    "tanh": (np.tanh, None),
    "relu": (lambda v: np.maximum(v, 0), None),
    "sigmoid": (lambda v: 1 / (1 + np.exp(-v)), None),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name: str, dtype: type) -> None:
    fn, lo = UNARY[name]
    x = _rand((3, 7, 5), dtype, 3, lo=lo)
    _check(run(lambda a: getattr(mb, name)(x=a), x), fn(x.astype(np.float64)), dtype, False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rsqrt_adds_epsilon(dtype: type) -> None:
    x = _rand((4, 9), dtype, 4, lo=0.1)
    out = run(lambda a: mb.rsqrt(x=a, epsilon=_c(0.25, dtype)), x)
    _check(out, 1 / np.sqrt(x.astype(np.float64) + 0.25), dtype, False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("mode", "approximate"), [("EXACT", "none"), ("TANH_APPROXIMATION", "tanh"), ("SIGMOID", "")]
)
def test_gelu_modes(mode: str, approximate: str, dtype: type) -> None:
    x = _rand((2, 8, 6, 6), dtype, 5) * dtype(3)
    if mode == "SIGMOID":
        mode = "SIGMOID_APPROXIMATION"
        x64 = x.astype(np.float64)
        ref = x64 / (1 + np.exp(-1.702 * x64))
    else:
        ref = F.gelu(_t(x), approximate=approximate).numpy()
    _check(run(lambda a: mb.gelu(x=a, mode=mode), x), ref, dtype, False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("alpha", "beta"), [(1 / 6, 0.5), (0.2, 0.5), (0.3, 0.1)])
def test_sigmoid_hard_uses_alpha_and_beta(alpha: float, beta: float, dtype: type) -> None:
    x = _rand((2, 6, 4, 4), dtype, 6) * dtype(4)
    a, b = _c(alpha, dtype), _c(beta, dtype)  # the program holds them in its dtype
    out = run(lambda v: mb.sigmoid_hard(x=v, alpha=a, beta=b), x)
    ref = np.clip(float(a) * x.astype(np.float64) + float(b), 0, 1)
    _check(out, ref, dtype, False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("alpha", "beta"), [(0.0, 1.0), (-0.5, 2.0)])
def test_clip_bounds(alpha: float, beta: float, dtype: type) -> None:
    x = _rand((2, 6, 4, 4), dtype, 6) * dtype(3)
    a, b = _c(alpha, dtype), _c(beta, dtype)
    out = run(lambda v: mb.clip(x=v, alpha=a, beta=b), x)
    _check(out, np.clip(x.astype(np.float64), float(a), float(b)), dtype, False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
def test_constexpr_affine_dequantize_per_channel(axis: int, dtype: type) -> None:
    rng = np.random.default_rng(9)
    data = rng.integers(-128, 128, (4, 6, 3, 3)).astype(np.int8)
    channels = data.shape[axis]
    scale = rng.uniform(0.001, 0.02, channels).astype(dtype)
    zero = rng.integers(-3, 4, channels).astype(np.int8)
    x = _rand((1, 1), dtype, 10)

    def build(v):
        w = mb.constexpr_affine_dequantize(
            quantized_data=data, zero_point=zero, scale=scale, axis=axis
        )
        return mb.add(x=mb.reshape(x=w, shape=[-1]), y=mb.reshape(x=v, shape=[-1]))

    shape = [1] * 4
    shape[axis] = -1
    weights = (data.astype(np.float64) - zero.reshape(shape)) * scale.astype(np.float64).reshape(
        shape
    )
    _check(run(build, x), weights.reshape(-1) + float(x.reshape(-1)[0]), dtype, False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax(axis: int, dtype: type) -> None:
    x = _rand((2, 5, 7), dtype, 7) * dtype(3)
    ref = torch.softmax(_t(x), dim=axis).numpy()
    _check(run(lambda a: mb.softmax(x=a, axis=axis), x), ref, dtype, True)


@pytest.mark.parametrize("dtype", DTYPES)
# MIL's gamma/beta have the shape x.shape[axes]: with an affine only trailing axes broadcast.
@pytest.mark.parametrize(("axes", "affine"), [([1], False), ([2, 3], False), ([2, 3], True)])
def test_layer_norm_axes_epsilon_affine(axes: list[int], affine: bool, dtype: type) -> None:
    x = _rand((2, 6, 4, 5), dtype, 8) + dtype(1)
    kwargs: dict = {"epsilon": _c(0.01, dtype)}
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=tuple(axes), keepdims=True)
    ref = (x64 - mean) / np.sqrt(((x64 - mean) ** 2).mean(axis=tuple(axes), keepdims=True) + 0.01)
    if affine:
        norm_shape = x.shape[axes[0] :]
        gamma, beta = _rand(norm_shape, dtype, 9), _rand(norm_shape, dtype, 10)
        kwargs.update(gamma=gamma, beta=beta)
        ref = ref * gamma.astype(np.float64) + beta.astype(np.float64)
    out = run(lambda a: mb.layer_norm(x=a, axes=axes, **kwargs), x)
    _check(out, ref, dtype, True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm(dtype: type) -> None:
    x = _rand((2, 4, 3, 3), dtype, 11)
    mean, gamma, beta = (_rand((4,), dtype, s) for s in (12, 13, 14))
    var = _rand((4,), dtype, 15, lo=0.5)
    out = run(
        lambda a: mb.batch_norm(
            x=a, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=_c(1e-3, dtype)
        ),
        x,
    )
    ref = F.batch_norm(_t(x), _t(mean), _t(var), _t(gamma), _t(beta), eps=1e-3).numpy()
    _check(out, ref, dtype, True)


REDUCE = {"reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keep_dims", [False, True])
@pytest.mark.parametrize("axes", [[2, 3], [-1], None])
@pytest.mark.parametrize("name", sorted(REDUCE))
def test_reductions(name: str, axes: list[int] | None, keep_dims: bool, dtype: type) -> None:
    x = _rand((2, 3, 8, 8), dtype, 16) + dtype(0.5)
    out = run(lambda a: getattr(mb, name)(x=a, axes=axes, keep_dims=keep_dims), x)
    ref_axes = None if axes is None else tuple(axes)
    ref = np.asarray(REDUCE[name](x.astype(np.float64), axis=ref_axes, keepdims=keep_dims))
    _check(out, ref, dtype, True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [False, True])
def test_linear(bias: bool, dtype: type) -> None:
    x, w = _rand((3, 40), dtype, 17), _rand((12, 40), dtype, 18)
    b = _rand((12,), dtype, 19) if bias else None
    kwargs = {"bias": b} if bias else {}
    out = run(lambda a: mb.linear(x=a, weight=w, **kwargs), x)
    ref = F.linear(_t(x), _t(w), _t(b) if bias else None).numpy()
    _check(out, ref, dtype, True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("tx", "ty"), [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_transposes_and_broadcasts(tx: bool, ty: bool, dtype: type) -> None:
    x = _rand((2, 3, 5, 4) if tx else (2, 3, 4, 5), dtype, 20)
    y = _rand((1, 3, 6, 5) if ty else (1, 3, 5, 6), dtype, 21)
    out = run(lambda a, b: mb.matmul(x=a, y=b, transpose_x=tx, transpose_y=ty), x, y)
    xt, yt = _t(x), _t(y)
    ref = torch.matmul(xt.transpose(-1, -2) if tx else xt, yt.transpose(-1, -2) if ty else yt)
    _check(out, ref.numpy(), dtype, True)


CONVS = [
    # (in shape, weight shape, pad_type, pad, strides, dilations, groups)
    ((1, 8, 9, 9), (6, 8, 3, 3), "custom", [1, 1, 1, 1], [1, 1], [1, 1], 1),
    ((2, 8, 9, 10), (6, 8, 3, 3), "custom", [0, 2, 1, 0], [2, 1], [1, 1], 1),
    ((1, 4, 16, 16), (8, 4, 4, 4), "valid", None, [4, 4], [1, 1], 1),
    ((1, 6, 11, 11), (6, 3, 3, 3), "same", None, [2, 2], [1, 1], 2),
    ((1, 6, 10, 11), (6, 1, 4, 2), "same_lower", None, [1, 3], [1, 1], 6),
    ((1, 4, 12, 12), (5, 4, 3, 3), "custom", [2, 2, 2, 2], [1, 1], [2, 2], 1),
    ((1, 4, 12, 12), (5, 4, 2, 3), "same", None, [1, 1], [3, 2], 1),
    ((2, 16, 7, 7), (32, 16, 1, 1), "valid", None, [1, 1], [1, 1], 1),
]


def _torch_conv(x, w, b, pad_type, pad, strides, dilations, groups) -> np.ndarray:
    """torch conv2d on an input padded explicitly (torch's own 'same' is stride 1 only)."""
    if pad_type == "custom":
        pads = [(pad[0], pad[1]), (pad[2], pad[3])]
    elif pad_type == "valid":
        pads = [(0, 0), (0, 0)]
    else:  # coremltools' aggregated_pad: total = max(0, s*ceil(i/s) - i + k_eff - s)
        pads = []
        for i, k, s, d in zip(x.shape[2:], w.shape[2:], strides, dilations, strict=True):
            total = max(0, s * -(-i // s) - i + (k - 1) * d + 1 - s)
            lo, hi = total // 2, total - total // 2
            pads.append((hi, lo) if pad_type == "same_lower" else (lo, hi))
    xt = F.pad(_t(x), (*pads[1], *pads[0]))
    out = F.conv2d(xt, _t(w), None if b is None else _t(b), strides, 0, dilations, groups)
    return out.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CONVS)))
def test_conv_padding_strides_dilations_groups(case: int, dtype: type) -> None:
    shape, wshape, pad_type, pad, strides, dilations, groups = CONVS[case]
    x, w = _rand(shape, dtype, 22), _rand(wshape, dtype, 23)
    b = _rand((wshape[0],), dtype, 24) if case % 2 else None
    kwargs = {"pad": pad} if pad is not None else {}
    if b is not None:
        kwargs["bias"] = b

    def build(a):
        return mb.conv(
            x=a,
            weight=w,
            pad_type=pad_type,
            strides=strides,
            dilations=dilations,
            groups=groups,
            **kwargs,
        )

    out = run(build, x)
    ref = _torch_conv(x, w, b, pad_type, pad, strides, dilations, groups)
    _check(out, ref, dtype, True)


def test_same_padding_puts_the_odd_row_where_mil_says() -> None:
    # 4-tap kernel, stride 1: 3 rows of padding; "same" puts the extra one after, "same_lower"
    # before (coremltools' conv and pool docs).
    assert conv_padding("same", None, (10,), (4,), (1,), (1,)) == [(1, 2)]
    assert conv_padding("same_lower", None, (10,), (4,), (1,), (1,)) == [(2, 1)]
    assert conv_padding("same", None, (11,), (3,), (2,), (1,)) == [(1, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_sizes_and_num_splits(dtype: type) -> None:
    x = _rand((1, 12, 3, 3), dtype, 25)

    def build(a):
        return mb.split(x=a, split_sizes=[4, 8], axis=1)[1]

    np.testing.assert_array_equal(run(build, x), x[:, 4:])
    out = run(lambda a: mb.split(x=a, num_splits=3, axis=-3)[2], x)
    np.testing.assert_array_equal(out, x[:, 8:])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("interleave", [False, True])
def test_concat(interleave: bool, dtype: type) -> None:
    x, y = _rand((2, 3, 4), dtype, 26), _rand((2, 3, 4), dtype, 27)
    out = run(lambda a, b: mb.concat(values=[a, b, a], axis=1, interleave=interleave), x, y)
    if interleave:  # [x0, y0, x0, x1, y1, x1, ...] along the axis
        ref = np.stack([x, y, x], axis=2).reshape(2, 9, 4)
    else:
        ref = np.concatenate([x, y, x], axis=1)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layout_ops(dtype: type) -> None:
    x = _rand((2, 1, 6, 4), dtype, 28)
    np.testing.assert_array_equal(
        run(lambda a: mb.reshape(x=a, shape=[0, -1, 3, 0]), x), x.reshape(2, 2, 3, 4)
    )
    np.testing.assert_array_equal(run(lambda a: mb.squeeze(x=a, axes=[1]), x), x[:, 0])
    np.testing.assert_array_equal(run(lambda a: mb.squeeze(x=a), x), x[:, 0])
    np.testing.assert_array_equal(run(lambda a: mb.expand_dims(x=a, axes=[-1]), x), x[..., None])
    out = run(lambda a: mb.transpose(x=a, perm=[0, 3, 1, 2]), x)
    np.testing.assert_array_equal(out, x.transpose(0, 3, 1, 2))


def test_cast_keeps_the_programs_dtypes() -> None:
    x = _rand((3, 5), np.float32, 29) * np.float32(1000)
    half = run(lambda a: mb.cast(x=a, dtype="fp16"), x)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, x.astype(np.float16))  # round to nearest even
    back = run(lambda a: mb.cast(x=a, dtype="fp32"), half)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, half.astype(np.float32))
    np.testing.assert_array_equal(run(lambda a: mb.cast(x=a, dtype="int32"), x), x.astype(np.int32))


def test_fp16_program_rounds_between_ops() -> None:
    # 1 + 2^-11 is not an fp16 value: an fp16 program rounds the sum before the next op,
    # so (x + 2^-11) - x is 0 where float32 would keep 2^-11.
    x = np.ones((4,), np.float16)

    def build(a):
        eps = _c(2.0**-11, np.float16 if a.dtype == types.fp16 else np.float32)
        return mb.sub(x=mb.add(x=a, y=eps), y=a)

    assert run(build, x).tolist() == [0.0] * 4
    assert run(build, x.astype(np.float32)).tolist() == [2.0**-11] * 4


def test_every_registered_op_is_covered_here() -> None:
    tested = set(BINARY) | set(UNARY) | set(REDUCE)
    tested |= {"rsqrt", "gelu", "sigmoid_hard", "clip", "softmax", "layer_norm", "batch_norm"}
    tested |= {"linear", "matmul", "conv", "split", "concat", "reshape", "squeeze"}
    tested |= {"expand_dims", "transpose", "cast"}
    tested |= {"constexpr_affine_dequantize"}
    tested |= {"classify"}  # through the image classifier package (test_coreml_interpreter)
    assert tested == set(OPS)


def test_unknown_op_is_refused_by_name_at_load() -> None:
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3))], opset_version=ct.target.iOS16)
    def program(x):
        return mb.floor(x=mb.relu(x=x))

    with pytest.raises(UnsupportedOpError, match=r"MIL op 'floor' \(first at 'floor_0'\)"):
        MilInterpreter(program)


def test_erfc_is_numpy_alone_and_within_two_float32_ulps() -> None:
    """gelu's erfc is the same numpy code with or without torch (a torch-free device's
    simulated check must repeat the export gate's figures exactly), and close to the
    standard library's double-precision erfc: relative error <= 2e-7, the fit's own 1.2e-7
    plus the float32 result's rounding (6e-8)."""
    import math
    import sys

    from partialnet.runtimes import coreml_ops

    x = np.linspace(-6, 12, 20001, dtype=np.float32)  # erfc(12) ~ 1e-64: still normal
    ref = np.array([math.erfc(float(v)) for v in x])
    got = coreml_ops._erfc(x).astype(np.float64)
    tiny = ref > np.finfo(np.float32).tiny  # below it float32 itself is subnormal
    assert np.max(np.abs(got[tiny] - ref[tiny]) / ref[tiny]) <= 2e-7
    torch_module = sys.modules.pop("torch", None)
    sys.modules["torch"] = None  # type: ignore[assignment]  # import torch now fails
    try:
        without = coreml_ops._erfc(x)
    finally:
        del sys.modules["torch"]
        if torch_module is not None:
            sys.modules["torch"] = torch_module
    assert np.array_equal(without, coreml_ops._erfc(x))
