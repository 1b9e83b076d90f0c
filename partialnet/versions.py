"""Which versions of the toolchain's packages are installed, read from package metadata so
that no SDK is imported to learn it. One collector for export manifests and bench reports."""

from __future__ import annotations

import platform
from importlib import metadata

# Name reported -> distribution names to try (the first installed one wins).
PACKAGES: dict[str, tuple[str, ...]] = {
    "partialnet-export": ("partialnet-export",),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "pillow": ("pillow",),
    "onnx": ("onnx",),
    "onnxscript": ("onnxscript",),
    "onnxsim": ("onnxsim",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "openvino": ("openvino",),
    "nncf": ("nncf",),
    "coremltools": ("coremltools",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
    "tensorrt-rtx": ("tensorrt-rtx-cu12-bindings",),
    "tritonclient": ("tritonclient",),
    "matplotlib": ("matplotlib",),
    "psutil": ("psutil",),
}


def package_versions(installed_only: bool = False) -> dict[str, str | None]:
    """Python's and each package's version; None (or left out) when not installed."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name, dists in PACKAGES.items():
        version = None
        for dist in dists:
            try:
                version = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
        if version is not None or not installed_only:
            found[name] = version
    return found
