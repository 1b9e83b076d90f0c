"""Which versions of the toolchain's packages are installed, read from package metadata so
that no SDK is imported to learn it. One collector for export manifests and bench reports.

The SDKs' names come from the registered runtimes and targets
(``partialnet.export.targets.toolchain_packages``); this layer only knows its own.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from importlib import metadata

# Name reported -> distribution names to try (the first installed one wins).
PACKAGES: dict[str, tuple[str, ...]] = {
    "partialnet-export": ("partialnet-export",),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "pillow": ("pillow",),
    "tritonclient": ("tritonclient",),
    "matplotlib": ("matplotlib",),
    "psutil": ("psutil",),
}


def package_versions(
    installed_only: bool = False, sdks: Mapping[str, tuple[str, ...]] | None = None
) -> dict[str, str | None]:
    """Python's and each package's version (``PACKAGES`` and then ``sdks``); None (or left
    out) when not installed."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name, dists in {**PACKAGES, **(sdks or {})}.items():
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
