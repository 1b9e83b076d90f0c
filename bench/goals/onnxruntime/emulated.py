"""ONNX Runtime as it runs on another x86 CPU, on this one: ``qemu-x86_64 -cpu MODEL``.

ONNX Runtime picks its int8 kernels by CPUID at run time. qemu-user (Debian: ``qemu-user``)
answers CPUID for the guest, so the same wheel inside ``qemu-x86_64 -cpu Haswell-noTSX`` runs
the AVX2 kernels (no AVX-512, no VNNI) on the real artifact: what it computes is what an AVX2
machine computes. Its speed means nothing (every instruction is translated); only outputs
are read from it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

AVX2_CPU = "Haswell-noTSX"  # AVX2 + FMA, no AVX-512, no VNNI (TSX off: TCG lacks it)

_RUN = """
import sys, numpy as np, onnxruntime as ort
images = np.load(sys.argv[1])
outs = []
for path in sys.argv[3:]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    outs.append(np.concatenate([s.run(None, {name: x[None]})[0] for x in images]))
np.save(sys.argv[2], np.stack(outs))
"""
_FEATURES = """
from numpy._core._multiarray_umath import __cpu_features__ as f
print(" ".join(name for name, on in sorted(f.items()) if on))
"""


def qemu() -> str | None:
    """The qemu-x86_64 binary, or None where qemu-user is not installed."""
    return shutil.which("qemu-x86_64")


def _as_guest(cpu: str, args: Sequence[str], timeout: float) -> str:
    binary = qemu()
    if binary is None:
        raise RuntimeError("qemu-x86_64 is not installed: apt-get install qemu-user")
    cmd = [binary, "-cpu", cpu, sys.executable, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def guest_cpu_features(cpu: str = AVX2_CPU) -> set[str]:
    """The CPU features numpy detects inside the emulated CPU (AVX2, AVX512F, ...)."""
    return set(_as_guest(cpu, ["-c", _FEATURES], timeout=300).split())


def onnx_outputs_on(
    cpu: str, models: Sequence[Path], images: np.ndarray, timeout: float = 1800
) -> list[np.ndarray]:
    """Each model's first output for every image (batch 1), computed by ONNX Runtime in the
    emulated ``cpu``."""
    with tempfile.TemporaryDirectory(prefix="partialnet-emulated-") as tmp:
        data, out, script = Path(tmp, "images.npy"), Path(tmp, "out.npy"), Path(tmp, "run.py")
        np.save(data, np.ascontiguousarray(images, np.float32))
        script.write_text(_RUN)
        _as_guest(cpu, [str(script), str(data), str(out), *map(str, models)], timeout)
        return list(np.load(out))
