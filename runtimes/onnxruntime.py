"""Run an ONNX model with ONNX Runtime on exactly the execution provider asked for.

The inference form's ``SpatialGateOut`` split (channels a multiple of 8/16) leaves ONNX
Runtime's fp32 and int8 latency unchanged within 1% (t1 224 px, batch 1)."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import UsageError

from . import base
from .base import UNBOUNDED_BATCH, Runner, RunnerInfo, Runtime, RuntimeUnavailableError
from .registry import RUNTIMES

# Our provider name -> (ONNX Runtime's name, the device it runs on): the CPU and CUDA ones,
# then one per runtime whose backend ONNX Runtime also reaches (named after that runtime).
PROVIDERS = {
    "cpu": ("CPUExecutionProvider", "cpu"),
    "cuda": ("CUDAExecutionProvider", "cuda"),
    **{spec.runtime.value: spec.ort_provider for spec in RUNTIMES if spec.ort_provider},
}


def native_precisions() -> frozenset[str]:
    """fp16 on ARM64 CPUs with half-precision arithmetic, where MLAS has fp16 GEMM kernels;
    nothing on x86: its CPU provider runs an fp16 graph in fp32 behind casts (t0 64 px,
    AVX-512: 0.75 ms fp16 vs 0.72 ms fp32), so an fp16 artifact is never faster there."""
    from partialnet.machine import cpu_isa

    machine = platform.machine().lower()
    if machine == "arm64":  # macOS: every Apple silicon core computes fp16
        return frozenset({"fp16"})
    if machine == "aarch64" and "asimdhp" in cpu_isa():
        return frozenset({"fp16"})
    return frozenset()


def _onnx_precision(path: Path) -> str:
    """fp16 when any initializer is float16 (fp16 models may keep float32 I/O), else fp32."""
    onnx = base.import_sdk("onnx", "onnx", "reading an ONNX model's precision")
    weights = onnx.load(str(path), load_external_data=False).graph.initializer
    half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    return "fp16" if half else "fp32"


class OnnxRuntimeRunner(Runner):
    """``allow_spinning`` keeps ONNX Runtime's default (idle pool threads spin-wait for the
    next task): the way users run it, and with 2 threads on a quiet machine ~1.3x faster
    than without (t1 224 px). Pass ``allow_spinning=False`` where runtimes share the cores
    (parity, interleaved comparisons): spinning threads would steal from the other side."""

    name = Runtime.ONNXRUNTIME.value

    def __init__(
        self,
        path: str | Path,
        provider: str = "cpu",
        threads: int | None = None,
        allow_spinning: bool = True,
    ):
        """``allow_spinning`` keeps ONNX Runtime's default: idle pool threads spin, which is
        what users run and about 1.3x faster at batch 1 on 2 threads. Turn it off where
        another runtime shares the cores (parity checks, interleaved comparisons)."""
        super().__init__()
        base.check_options(threads, provider=(provider, tuple(PROVIDERS)))
        if not isinstance(allow_spinning, bool):
            raise UsageError(f"allow_spinning must be True or False, got {allow_spinning!r}")
        self.path, self.provider, self.threads = Path(path), provider, threads
        self.artifact_label = self.path.name
        self.allow_spinning = allow_spinning
        self.session: Any = None

    def _activate(self) -> None:
        ort = base.import_sdk("onnxruntime", "onnx", "the ONNX Runtime runner")
        base.check_artifact(self.path, "ONNX model")
        asked, available = PROVIDERS[self.provider][0], ort.get_available_providers()
        fix = f"install an onnxruntime build with {asked} and its drivers, or use provider 'cpu'"
        if asked not in available:
            raise RuntimeUnavailableError(
                f"ONNX Runtime provider {asked} was asked for, but onnxruntime "
                f"{ort.__version__} here offers only {', '.join(available)}: {fix}"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads or 0  # 0: ORT picks one per physical core
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not self.allow_spinning:  # else ONNX Runtime's default (on) stays
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # CPU follows so single nodes the provider lacks can run; a whole-graph fallback is refused.
        chain = [asked] if asked == "CPUExecutionProvider" else [asked, "CPUExecutionProvider"]
        session = ort.InferenceSession(str(self.path), opts, providers=chain)
        if session.get_providers()[0] != asked:
            raise RuntimeUnavailableError(
                f"ONNX Runtime was asked for {asked}, but the session runs on "
                f"{session.get_providers()[0]} (the provider failed to initialize): {fix}"
            )
        inp, meta = session.get_inputs()[0], session.get_modelmeta().custom_metadata_map
        dims = tuple(d if isinstance(d, int) else -1 for d in inp.shape)  # symbolic -> -1
        lo, hi = int(meta.get("batch_min", 1)), int(meta.get("batch_max", UNBOUNDED_BATCH))
        self.batch_range = (dims[0], dims[0]) if dims[0] > 0 else (lo, hi)
        self._input, self.input_shape = inp, dims
        self._outputs = [out.name for out in session.get_outputs()]
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self._precision = meta.get("precision") or _onnx_precision(self.path)
        self.session, self._version = session, ort.__version__

    def _deactivate(self) -> None:
        self.session = None

    def _infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        # Every output is computed (a backbone costs all of them); infer() keeps the first.
        outs = self.session.run(self._outputs, {self._input.name: batch})
        return {
            name: np.asarray(out, dtype=np.float32)
            for name, out in zip(self._outputs, outs, strict=True)
        }

    def _info(self) -> RunnerInfo:
        providers = self.session.get_providers()
        return RunnerInfo(
            runtime=self.name,
            version=self._version,
            device=PROVIDERS[self.provider][1],
            precision=self._precision,
            provider=providers[0],
            input_shape=self.input_shape,
            batch_range=self.batch_range,
            extra={
                "threads": self.threads,
                "providers": providers,
                "allow_spinning": self.allow_spinning,
            },
        )


def cpu_matmul(path: Path, threads: int | None) -> Callable[[np.ndarray, np.ndarray], Any]:
    """The one-node MatMul ONNX at ``path`` (inputs A, B) on the CPU provider with ONNX
    Runtime's default spinning (as the runner), called on two operands: the bench's GEMM
    peak reference for this runtime."""
    ort = base.import_sdk("onnxruntime", "onnx", "the ONNX Runtime runner")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda a, b: session.run(None, {"A": a, "B": b})
