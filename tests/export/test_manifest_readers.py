"""Readers of an export directory stay inside it: every manifest path is resolved by
``resolve_artifact`` before anything is hashed or loaded, and whatever leaves the directory
or is not a regular file or directory is refused in one line (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from partialnet.export.output.files import sha256_path
from partialnet.export.output.manifest import ManifestError, read_manifest, resolve_artifact


def _entry(path: str, sha: str = "0" * 64, target: str = "onnx") -> dict[str, object]:
    return {
        "target": target,
        "path": path,
        "precision": "fp32",
        "input_shape": [1, 3, 64, 64],
        "dynamic_batch": None,
        "sha256": sha,
        "bytes": 1,
        "seconds": 0.0,
        "parity": {},
    }


def _export_dir(tmp_path: Path, entries: list[dict[str, object]]) -> Path:
    out = tmp_path / "export"
    out.mkdir(exist_ok=True)
    manifest = {"variant": "t0", "input_size": [64, 64], "artifacts": entries}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file beside (not inside) the export directory, with a matching sha256 recorded."""
    path = tmp_path / "elsewhere" / "x.onnx"
    path.parent.mkdir()
    path.write_bytes(b"not yours")
    return path


def test_paths_inside_resolve_and_links_that_stay_inside_are_allowed(tmp_path: Path) -> None:
    out = _export_dir(tmp_path, [])
    (out / "a.onnx").write_bytes(b"a")
    (out / "ir.openvino").mkdir()
    (out / "ir.openvino" / "m.xml").write_text("<xml/>")
    (out / "link.onnx").symlink_to("a.onnx")
    assert resolve_artifact(out, _entry("a.onnx")) == (out / "a.onnx").resolve()
    assert resolve_artifact(out, _entry("ir.openvino")).is_dir()
    assert resolve_artifact(out, _entry("link.onnx")) == (out / "a.onnx").resolve()


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("../../../etc/passwd", "not a path inside"),
        ("/etc/passwd", "not a path inside"),
        ("/dev/zero", "not a path inside"),
        ("../elsewhere/x.onnx", "not a path inside"),
        ("sub/../../elsewhere/x.onnx", "not a path inside"),
        ("escape.onnx", "leads out of"),  # a symbolic link to ../elsewhere/x.onnx
        ("ir.openvino", "leads out of"),  # a directory holding such a link
        ("fifo.onnx", "FIFO"),
        ("missing.onnx", "missing"),
        ("", "has no 'path'"),
    ],
)
def test_paths_that_leave_the_directory_or_are_not_files_are_refused(
    path: str, fragment: str, tmp_path: Path, outside: Path
) -> None:
    out = _export_dir(tmp_path, [])
    (out / "escape.onnx").symlink_to(outside)
    (out / "ir.openvino").mkdir()
    (out / "ir.openvino" / "m.bin").symlink_to(outside)
    os.mkfifo(out / "fifo.onnx")
    with pytest.raises(ManifestError, match=fragment):
        resolve_artifact(out, _entry(path))


def test_an_entry_without_path_is_named(tmp_path: Path) -> None:
    entry = _entry("a.onnx", target="openvino")
    del entry["path"]
    out = _export_dir(tmp_path, [_entry("b.onnx"), entry])
    with pytest.raises(ManifestError, match=r"artifact entry 1 \(openvino\) has no 'path'"):
        read_manifest(out)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    # A subprocess with a timeout: if a FIFO were opened again, the test fails, not hangs.
    return subprocess.run(
        [sys.executable, "-m", "partialnet.bench.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "case", ["escape", "absolute", "fifo", "device-link", "no-path", "no-input-shape"]
)
def test_bench_and_parity_refuse_bad_entries_with_exit_2(
    case: str, tmp_path: Path, outside: Path
) -> None:
    matching = sha256_path(outside)  # a matching sha256 must not make a foreign file ours
    out = _export_dir(tmp_path, [])
    if case == "escape":
        entry = _entry("../elsewhere/x.onnx", matching)
    elif case == "absolute":
        entry = _entry(str(outside), matching)
    elif case == "fifo":
        os.mkfifo(out / "fifo.onnx")
        entry = _entry("fifo.onnx")
    elif case == "device-link":
        (out / "zero.onnx").symlink_to("/dev/zero")
        entry = _entry("zero.onnx")
    else:
        (out / "x.onnx").write_bytes(b"x")
        entry = _entry("x.onnx", sha256_path(out / "x.onnx"))
        del entry["path" if case == "no-path" else "input_shape"]
    _export_dir(tmp_path, [entry])
    for argv in (["--artifacts", str(out)], ["parity", "--artifacts", str(out)]):
        done = _run([*argv, "--output", str(tmp_path / "report")])
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, done.stderr
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "manifest.json" in lines[0]
    # Refused before anything ran: no report (the commands may create the empty folder).
    assert not list((tmp_path / "report").rglob("*"))


def test_resolve_artifact_needs_only_the_standard_library() -> None:
    # The device check calls it where torch is not installed: its module, and the modules
    # that module imports from this project, import no third-party package.
    import ast

    import partialnet.errors
    import partialnet.export.errors
    import partialnet.export.output.files
    import partialnet.export.output.manifest
    import partialnet.files

    modules = [
        partialnet.export.output.manifest,
        partialnet.export.output.files,
        partialnet.export.errors,
        partialnet.errors,
        partialnet.files,
    ]
    for module in modules:
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top == "partialnet" or top in sys.stdlib_module_names, (module, name)
