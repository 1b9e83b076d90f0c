"""The wheel holds every module under the one import root and imports outside the checkout."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = {
    "partialnet": "partialnet",
    "export": "partialnet/export",
    "runtimes": "partialnet/runtimes",
    "bench": "partialnet/bench",
}


def _expected_modules() -> set[str]:
    names = set()
    for folder, package in SOURCE_DIRS.items():
        # Every sub-package too: one missing from pyproject's ``packages`` is left out.
        for path in (ROOT / folder).rglob("*.py"):
            names.add(f"{package}/{path.relative_to(ROOT / folder).as_posix()}")
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with the setuptools already installed (no network needed).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("partialnet_export-*.whl")
    return built


def test_wheel_has_every_module_under_partialnet(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _expected_modules() - names
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"
    bare = sorted(n for n in names if n.split("/")[0] in {"export", "runtimes", "bench"})
    assert not bare, f"bare top-level packages in the wheel: {bare}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "partialnet-export = partialnet.export.cli.main:main" in text
    assert "partialnet-bench = partialnet.bench.cli:main" in text


def test_wheel_imports_outside_checkout(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            target,
            str(wheel),
        ],
        check=True,
    )
    # Dependencies (torch, SDKs) come from this environment's site-packages, appended after
    # the fresh venv's own, so the wheel's copy of partialnet wins over the editable one.
    deps = [p for p in site.getsitepackages() if "site-packages" in p]
    Path(target, "deps.pth").write_text("\n".join(deps) + "\n")
    modules = sorted(m.removesuffix(".py").replace("/", ".") for m in _expected_modules())
    code = (
        "import importlib, partialnet\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m.removesuffix('.__init__'))\n"
        "print(partialnet.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith(target), result.stdout


def _fake_distribution(site_packages: Path, name: str, version: str) -> None:
    """An installed distribution as pip sees one (metadata only, no code)."""
    info = site_packages / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def test_installing_keeps_the_users_torch(wheel: Path, tmp_path: Path) -> None:
    """pip resolves the wheel's dependencies against an environment whose torch is another
    release in range: it must install nothing but partialnet-export. An exact pin (or an
    upper bound below 2.14) would make pip want another torch, which --no-index cannot find,
    so the dry run fails."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    installed = (
        ("torch", "2.14.0"),
        ("numpy", "2.0.0"),
        ("pillow", "11.0.0"),
        ("packaging", "24.0"),
    )
    for name, version in installed:
        _fake_distribution(site_packages, name, version)
    report = tmp_path / "report.json"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--dry-run"]
    done = subprocess.run(
        [*pip, "--no-index", "--quiet", "--report", str(report), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    wanted = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert wanted == ["partialnet-export"]
