"""What the numbers were measured on: the machine, the software, the thread settings, the
artifacts (checked against their manifest), and each runtime's own peak on a large GEMM."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.export.targets import toolchain_packages
from partialnet.machine import cpu_isa, cpu_model, isa_summary
from partialnet.versions import package_versions

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def core_counts() -> dict[str, int | None]:
    """Cores; psutil (the [bench] extra) tells physical ones, a bare device leaves it None."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    try:
        import psutil
    except ImportError:
        return {"physical_cores": None, "logical_cores": os.cpu_count(), "usable_cores": usable}
    return {
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "usable_cores": usable,
    }


def thread_settings(threads: int | None) -> dict[str, Any]:
    """torch's thread count only where torch is already loaded: a device check never
    imports it."""
    torch = sys.modules.get("torch")
    return {
        "requested": threads,
        "torch_num_threads": torch.get_num_threads() if torch is not None else None,
        "env": {var: os.environ.get(var) for var in THREAD_ENV_VARS},
    }


def gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs as nvidia-smi lists them (name, driver, memory); empty where there is none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    query = "--query-gpu=name,driver_version,memory.total,compute_cap"
    try:
        out = subprocess.run(
            [smi, query, "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return []
    keys = ("name", "driver", "memory", "compute_capability")
    return [
        dict(zip(keys, (v.strip() for v in line.split(",")), strict=False))
        for line in out.stdout.splitlines()
        if line.strip()
    ]


def collect_environment(threads: int | None, argv: list[str] | None = None) -> dict[str, Any]:
    """The environment section of report.json (the bench adds runners and peaks to it)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(argv) if argv else None,
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_isa(),
        "isa": isa_summary(),
        **core_counts(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(sdks=toolchain_packages()),
        "threads": thread_settings(threads),
        "load_average_at_start": list(load) if load else None,
    }


# --- each runtime's own peak on a large fp32 GEMM ------------------------------------------


def _best_gflops(run: Callable[[], object], n: int, repeats: int) -> float:
    """2*n^3 FLOPs over the fastest of ``repeats`` timed calls, after one untimed call."""
    run()
    best = min(_timed(run) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(run: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def _matmul_onnx(path: Path, n: int) -> None:
    from onnx import TensorProto, helper, save

    def tensor(name: str) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n])

    node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    graph = helper.make_graph([node], "peak_gemm", [tensor("A"), tensor("B")], [tensor("Y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # old enough for every runtime we load it into
    save(model, str(path))


class PeakGemm:
    """GFLOP/s each runtime reaches on an ``size``x``size`` fp32 matmul with the bench's
    thread count; measured at most once per runtime per run.

    torch: ``torch.matmul``; the other runtimes: a one-node MatMul ONNX compiled for the CPU
    as their runner would (``RuntimeSpec.cpu_matmul``). Runtimes without a CPU matmul
    reference, or whose SDK is missing, get None, with the reason in ``errors``.
    """

    def __init__(self, threads: int | None, size: int = 2048, repeats: int = 5) -> None:
        self.threads = threads
        self.size = size
        self.repeats = repeats
        self.values: dict[str, float | None] = {}
        self.errors: dict[str, str] = {}

    def get(self, runtime: str) -> float | None:
        if self.size <= 0:
            return None
        if runtime not in self.values:
            try:
                self.values[runtime] = self._measure(runtime)
            except Exception as exc:  # recorded in the report, never fatal
                self.values[runtime] = None
                self.errors[runtime] = f"{type(exc).__name__}: {exc}"
        return self.values[runtime]

    def to_dict(self) -> dict[str, Any]:
        return {
            "gemm_size": self.size,
            "threads": self.threads,
            "gflops_per_s": self.values,
            "errors": self.errors,
        }

    def _measure(self, runtime: str) -> float:
        n = self.size
        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        if runtime == "torch":
            return self._torch(a, b)
        from partialnet.runtimes.registry import runtime_spec

        opener = runtime_spec(runtime).cpu_matmul_opener()
        if opener is None:
            raise NotImplementedError(f"no GEMM peak reference for {runtime}")
        with tempfile.TemporaryDirectory(prefix="partialnet-peak-") as tmp:
            path = Path(tmp) / "matmul.onnx"
            _matmul_onnx(path, n)
            matmul = opener(path, self.threads)
            return _best_gflops(lambda: matmul(a, b), self.size, self.repeats)

    def _torch(self, a: np.ndarray, b: np.ndarray) -> float:
        import torch

        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            with torch.inference_mode():
                return _best_gflops(lambda: torch.matmul(ta, tb), self.size, self.repeats)
        finally:
            torch.set_num_threads(before)
