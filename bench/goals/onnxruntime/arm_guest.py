"""The emulated ARM device's Python, prepared once and cached: Debian bookworm's aarch64
Python 3.11 (its .debs unpacked into a sysroot), PyPI's aarch64 wheels of onnxruntime and
numpy at this venv's versions, and this project's packages laid out as its wheel installs
them, without torch. ``partialnet.bench.goals.onnxruntime.emulated_arm`` runs things in it.

Everything lives under ``$PARTIALNET_ARM64_CACHE`` (default ~/.cache/partialnet-arm64):
preparing needs apt-get (Debian's arm64 package lists, fetched into a private apt state:
the system's dpkg configuration is not touched), pip and a package index; using it afterwards
needs neither.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The guest interpreter and what it loads: python3.11's own dependencies (ldd and its stdlib's
# extension modules) and libstdc++/libgcc for onnxruntime. numpy's wheel brings its OpenBLAS.
DEBIAN_PACKAGES = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libcrypt1",
    "libuuid1",
)
GUEST_PYTHON = "usr/bin/python3.11"
GUEST_PY_VERSION = "3.11"
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64", "manylinux_2_17_aarch64")
# The device path's distributions: onnxruntime pulls in flatbuffers, packaging and protobuf.
PINNED = ("onnxruntime", "numpy")
READY = ".ready.json"


class EmulationUnavailable(RuntimeError):
    """The emulated ARM Python cannot be prepared or run here; the message says why in one
    line (what is missing and what would bring it)."""


def cache_dir() -> Path:
    return Path(os.environ.get("PARTIALNET_ARM64_CACHE") or Path.home() / ".cache/partialnet-arm64")


def qemu() -> str | None:
    """The qemu-aarch64 binary, or None where qemu-user is not installed."""
    return shutil.which("qemu-aarch64")


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def run_tool(cmd: Sequence[str], what: str, timeout: float, **kwargs: Any) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EmulationUnavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise EmulationUnavailable(f"{what} failed: {last_line(done.stderr or done.stdout)}")
    return done.stdout


def replace_dir(tmp: Path, final: Path) -> None:
    """Put a finished ``tmp`` at ``final``; a concurrent preparer that won keeps its copy."""
    if final.exists():
        shutil.rmtree(final)
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _dir_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*"))


def _ready(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / READY).read_text())
    except (OSError, ValueError):
        return None


def _build_sysroot(cache: Path, sysroot: Path) -> None:
    """Debian's arm64 .debs, fetched with a private apt state and unpacked (no dpkg install:
    nothing is configured, no maintainer script runs, the host's dpkg never hears of arm64)."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise EmulationUnavailable(f"{tool} is not available: the aarch64 sysroot needs Debian")
    work = Path(tempfile.mkdtemp(prefix="apt-", dir=cache))
    try:
        (work / "lists" / "partial").mkdir(parents=True)
        (work / "cache" / "archives" / "partial").mkdir(parents=True)
        (work / "debs").mkdir()
        apt = [
            "apt-get",
            "-q",
            "-o", "APT::Architecture=arm64",
            "-o", "APT::Architectures::=arm64",
            "-o", f"Dir::State::Lists={work / 'lists'}",
            "-o", f"Dir::Cache={work / 'cache'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", "APT::Sandbox::User=root",  # writes into our folder, not _apt's
        ]  # fmt: skip
        run_tool([*apt, "update"], "apt-get update (Debian arm64 lists)", timeout=600)
        run_tool(
            [*apt, "download", *DEBIAN_PACKAGES],
            "apt-get download (arm64 python3.11)",
            timeout=600,
            cwd=work / "debs",
        )
        tmp = Path(tempfile.mkdtemp(prefix="sysroot-", dir=cache))
        debs = sorted((work / "debs").glob("*.deb"))
        for deb in debs:
            run_tool(["dpkg-deb", "-x", str(deb), str(tmp)], f"dpkg-deb -x {deb.name}", timeout=300)
        (tmp / READY).write_text(json.dumps({"debs": [d.name for d in debs]}, indent=1))
        replace_dir(tmp, sysroot)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # 19 MB of lists and the .debs: not needed


def _host_versions() -> dict[str, str]:
    versions = {}
    for dist in PINNED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError as exc:
            raise EmulationUnavailable(
                f"{dist} is not installed here: its version is pinned"
            ) from exc
    return versions


def _build_site(cache: Path, site: Path, versions: Mapping[str, str]) -> None:
    """PyPI's aarch64 cp311 wheels at this venv's versions, installed with --target (pip
    picks them by the platform tags; nothing is built)."""
    tags = [f"--platform={p}" for p in WHEEL_PLATFORMS]
    tags += [f"--python-version={GUEST_PY_VERSION}", "--implementation=cp"]
    tags += ["--abi=cp311", "--abi=abi3", "--abi=none", "--only-binary=:all:"]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = Path(tempfile.mkdtemp(prefix="wheels-", dir=cache))
    tmp = Path(tempfile.mkdtemp(prefix="site-", dir=cache))
    try:
        pins = [f"{dist}=={v}" for dist, v in versions.items()]
        run_tool([*pip, "download", *tags, "-d", str(wheels), *pins], "pip download", timeout=900)
        found = sorted(str(w) for w in wheels.glob("*.whl"))
        run_tool(
            [*pip, "install", *tags, "--no-deps", "--no-index", "--target", str(tmp), *found],
            "pip install --target (aarch64 wheels)",
            timeout=900,
        )
        (tmp / READY).write_text(json.dumps({"wheels": [Path(w).name for w in found]}, indent=1))
        replace_dir(tmp, site)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(wheels, ignore_errors=True)


@dataclass(frozen=True)
class Guest:
    """A prepared aarch64 Python: ``sysroot`` (Debian's python3.11 and libraries) and
    ``site`` (the aarch64 wheels)."""

    cache: Path
    sysroot: Path
    site: Path

    @property
    def python(self) -> Path:
        return self.sysroot / GUEST_PYTHON

    def size_bytes(self) -> int:
        return _dir_size(self.sysroot) + _dir_size(self.site)


def prepare(cache: Path | None = None, *, download: bool = True) -> Guest:
    """The cached guest, made first where ``download`` allows (apt + pip, ~1 minute from
    cold). Raises EmulationUnavailable with the one-line reason otherwise."""
    if qemu() is None:
        raise EmulationUnavailable("qemu-aarch64 is not installed: apt-get install qemu-user")
    cache = cache or cache_dir()
    versions = _host_versions()
    sysroot = cache / "sysroot"
    site = cache / ("site-" + "-".join(f"{d}{v}" for d, v in versions.items()))
    missing = [p for p in (sysroot, site) if _ready(p) is None]
    if missing and not download:
        raise EmulationUnavailable(
            f"the aarch64 Python is not prepared in {cache}: run "
            "`python -m partialnet.bench.goals.onnxruntime.emulated_arm --prepare` (.ci/run does)"
        )
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
    if _ready(sysroot) is None:
        log.info("emulated ARM: fetching Debian's arm64 python3.11 into %s", sysroot)
        _build_sysroot(cache, sysroot)
    if _ready(site) is None:
        pins = ", ".join(f"{d} {v}" for d, v in versions.items())
        log.info("emulated ARM: fetching the aarch64 wheels (%s) into %s", pins, site)
        _build_site(cache, site, versions)
    return Guest(cache, sysroot, site)


def install_project(target: Path) -> None:
    """This project's packages, laid out as its wheel installs them (partialnet.export and
    the others live in their own folders here), wherever they are installed from."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    # Parents before children: partialnet's folder first, the subpackages copied into it.
    for package in ("partialnet", "partialnet.export", "partialnet.runtimes", "partialnet.bench"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise EmulationUnavailable(f"{package} is not importable here")
        source = Path(next(iter(spec.submodule_search_locations)))
        # dirs_exist_ok: from a wheel the subpackages are inside partialnet/ already.
        shutil.copytree(source, target / Path(*package.split(".")), ignore=skip, dirs_exist_ok=True)
