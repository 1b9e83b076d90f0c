"""OpenVINO's CPU plugin on a lower instruction set, on this CPU: ``ONEDNN_MAX_CPU_ISA``.

oneDNN, which OpenVINO's CPU plugin builds its kernels with, honours an ISA cap read from
the environment. Facts measured with OpenVINO 2026.4 on a 2-core AMD EPYC (Zen, AVX-512
F/BW/VNNI/BF16), trained digits t0 IRs (fp32, and NNCF int8) at 64 px:

- ``ONEDNN_MAX_CPU_ISA=AVX2`` moves oneDNN's kernels to AVX2 without VNNI: f32
  convolutions ``brgconv_avx512_f32``/``_1x1_f32`` -> ``brgconv_avx2_f32``/``_1x1_f32``;
  int8 convolutions ``brgconv_avx512_I8``/``_1x1_I8`` -> ``jit_avx2_I8``/``jit_avx2_1x1_I8``
  (no ``vnni`` in any name); int8 FullyConnected ``brgemm_avx512_i8`` -> ``jit_gemm_i8``;
  MatMul, Softmax, Eltwise and the fused Subgraphs (snippets) ``jit_avx512``/``brgemm_avx512``
  -> ``*_avx2``. oneDNN's verbose log says ``isa:Intel AVX2``.
- One f32 FullyConnected runs ``gemm_mlas_f32`` with and without the cap: OpenVINO's bundled
  MLAS, which (like ONNX Runtime's) picks its kernel by CPUID; its name carries no ISA.
- Not every kernel: OpenVINO's own JIT Reduce (27 nodes in t0) and FakeQuantize (2 in the
  int8 IR) stay ``jit_avx512_f32``. Those are small; the convolutions and GEMMs, where the
  time and the int8 arithmetic are, run on AVX2 kernels. ``kernels()`` lists every kind.
- The cap is read once per process, when oneDNN is first used (the first compile_model):
  set after that it changes nothing. Each capped run is therefore a fresh subprocess.
- ``OPTIMIZATION_CAPABILITIES`` still lists BF16 and the default ``INFERENCE_PRECISION_HINT``
  stays bf16 (OpenVINO reads CPUID itself; the cap is oneDNN's), so a plain compile under
  the cap FAILS (``Supported primitive descriptors list is empty for node: ... Softmax``);
  an f16 or bf16 hint fails the same way. A real AVX2 CPU defaults to f32, so the capped
  runs ask for f32 explicitly (the runner's fp32 precision): what an AVX2 CPU runs.
- The core is still this one (Zen here): clocks, caches and execution ports are an AVX-512
  machine's. Timings are of AVX2 kernels on an AVX-512 core, not of an AVX2 CPU: quote them
  so (``ISA_LINE``).
- ONNX Runtime has no such cap: MLAS picks its kernels by CPUID. Its AVX2 outputs come from
  qemu (``emulated``), whose timing means nothing: its AVX2 speed stays unmeasured here.

Usage: ``run_capped("AVX2", [fp32_xml, int8_xml], images=..., iterations=50)``; the worker
is this module's ``__main__``, torch-free.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.machine import cpu_model

log = logging.getLogger(__name__)

ENV = "ONEDNN_MAX_CPU_ISA"
# Ops whose kernels decide an int8-vs-fp32 comparison: the ones the guard checks.
HEAVY_OPS = ("Convolution", "FullyConnected", "MatMul")


def isa_line(isa: str) -> str:
    """How every capped figure is quoted: the kernels' ISA and the core they ran on."""
    return f"{isa} kernels on an AVX-512 core ({cpu_model()}), {ENV}={isa}"


@dataclass(frozen=True)
class CappedRun:
    """What the capped subprocess reports, one entry per model in the order given."""

    isa: str
    # "layerType primitiveType" -> node count, from the compiled model's runtime graph.
    kernels: list[dict[str, int]]
    precisions: list[str]  # the compiled INFERENCE_PRECISION_HINT of each model
    outputs: list[np.ndarray] | None  # first output per image (batch 1), when images given
    p50_ms: list[float] | None  # best p50 over rounds (batch 1, 224 px), when timed

    def heavy_kernels(self, index: int) -> dict[str, int]:
        """The Convolution/FullyConnected/MatMul kernels of model ``index``."""
        return {k: n for k, n in self.kernels[index].items() if k.split()[0] in HEAVY_OPS}

    def off_cap(self, index: int) -> dict[str, int]:
        """Kernels of model ``index`` whose name says an ISA above the cap (avx512, amx,
        vnni): among HEAVY_OPS there must be none; elsewhere OpenVINO's own JIT kernels
        (Reduce, FakeQuantize) are known to ignore the cap."""
        above = ("avx512", "amx", "vnni")
        return {k: n for k, n in self.kernels[index].items() if any(a in k for a in above)}

    def describe(self, index: int) -> str:
        heavy = ", ".join(f"{k} x{n}" for k, n in sorted(self.heavy_kernels(index).items()))
        rest = self.off_cap(index)
        note = (
            f"; not capped: {', '.join(f'{k} x{n}' for k, n in sorted(rest.items()))}"
            if rest
            else ""
        )
        return f"{heavy}{note}"


def kernels(compiled: Any) -> dict[str, int]:
    """Every node's layer type and primitive type in a compiled model's runtime graph."""
    counts: collections.Counter[str] = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layer, primitive = rt["layerType"].astype(str), rt["primitiveType"].astype(str)
        if layer not in ("Const", "Input", "Output"):
            counts[f"{layer} {primitive}"] += 1
    return dict(counts)


def run_capped(
    isa: str,
    models: Sequence[Path],
    images: np.ndarray | None = None,
    *,
    threads: int = 2,
    iterations: int = 0,
    rounds: int = 3,
    timeout: float = 1800,
) -> CappedRun:
    """Open each OpenVINO model (fp32 execution) in a subprocess started with
    ``ONEDNN_MAX_CPU_ISA=isa``; report its kernels, its outputs for ``images`` (batch 1),
    and with ``iterations`` > 0 its best p50 at batch 1 (sides alternate over ``rounds``)."""
    with tempfile.TemporaryDirectory(prefix="partialnet-ov-isa-") as tmp:
        job = {
            "models": [str(m) for m in models],
            "images": None,
            "outputs": str(Path(tmp, "outputs.npy")),
            "result": str(Path(tmp, "result.json")),
            "threads": threads,
            "iterations": iterations,
            "rounds": rounds,
        }
        if images is not None:
            job["images"] = str(Path(tmp, "images.npy"))
            np.save(job["images"], np.ascontiguousarray(images, np.float32))
        Path(tmp, "job.json").write_text(json.dumps(job))
        env = {**os.environ, ENV: isa}
        cmd = [sys.executable, "-m", __name__, str(Path(tmp, "job.json"))]
        log.info("OpenVINO with %s=%s: %d model(s)", ENV, isa, len(models))
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"OpenVINO with {ENV}={isa} failed: {done.stderr.strip()[-800:]}")
        result = json.loads(Path(job["result"]).read_text())
        outputs = list(np.load(job["outputs"])) if images is not None else None
    return CappedRun(isa, result["kernels"], result["precisions"], outputs, result["p50_ms"])


def _worker(job_path: str) -> None:
    # Torch-free on purpose: only the runner, numpy and the timing loop the goals use.
    from partialnet.bench.goals.timing import best_p50
    from partialnet.runtimes import open_runner

    job = json.loads(Path(job_path).read_text())
    images = np.load(job["images"]) if job["images"] else None
    found, precisions, outputs = [], [], []
    for path in job["models"]:
        # precision="fp32" sets INFERENCE_PRECISION_HINT=f32: under the cap OpenVINO's own
        # default stays bf16 and would fail to compile (see the module docstring).
        with open_runner("openvino", path, threads=job["threads"], precision="fp32") as runner:
            found.append(kernels(runner.compiled))
            precisions.append(runner.info().precision)
            if images is not None:
                outputs.append(
                    np.concatenate([runner.infer(images[i : i + 1]) for i in range(len(images))])
                )
    p50 = None
    if job["iterations"] > 0:
        sides = {str(i): ("openvino", path) for i, path in enumerate(job["models"])}
        best = best_p50(sides, 1, job["threads"], job["iterations"], job["rounds"])
        p50 = [best[str(i)] for i in range(len(job["models"]))]
    if images is not None:
        np.save(job["outputs"], np.stack(outputs))
    result = {"kernels": found, "precisions": precisions, "p50_ms": p50}
    Path(job["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    _worker(sys.argv[1])
