"""Exports are transactions: what happens before the one commit step changes nothing in the
output directory, and after it the manifest lists exactly what is there.

Signals go to real ``partialnet-export`` processes (t0 at 64 px), timed by the progress line
that says which target is being built. Every check compares the bytes of every file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import snapshot_files

import partialnet.export.cli.main as cli
from partialnet.export.output.commit import OWNER_FILE, SCRATCH_PREFIX
from partialnet.export.output.files import sha256_path

SMALL = ["--variant", "t0", "--imgsz", "64"]
ONNX = "partialnet-t0-64x64-fp32.onnx"
IR = "partialnet-t0-64x64-fp32.openvino"


def _listed_equals_present(out: Path) -> dict[str, dict]:
    """The manifest lists exactly the artifacts in ``out``, each with its sha256."""
    manifest = json.loads((out / "manifest.json").read_text())
    records = {a["path"]: a for a in manifest["artifacts"]}
    # The gate's reference (inputs and eager outputs) that each record names, once.
    references = {a["reference"]["path"]: a["reference"] for a in records.values()}
    present = {p.name for p in out.iterdir() if p.name != "manifest.json"}
    assert present == set(records) | set(references), (present, set(records))
    for path, record in (records | references).items():
        assert sha256_path(out / path) == record["sha256"], path
    return records


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good onnx+openvino export, copied for each test that needs an earlier export."""
    out = tmp_path_factory.mktemp("golden") / "out"
    assert cli.main([*SMALL, "--target", "onnx,openvino", "--output", str(out)]) == 0
    return out


@pytest.fixture
def earlier(golden: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(golden, out)
    return out


def _start(out: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "partialnet.export.cli", *SMALL, "--output", str(out)]
    return subprocess.Popen(
        [*argv, "--target", "onnx,openvino", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc: subprocess.Popen[str], marker: str) -> list[str]:
    """Read progress lines until one holds ``marker`` (the process is then past it)."""
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"the export ended before {marker!r}: {''.join(seen)}")


@pytest.mark.parametrize(
    ("sig", "marker", "delay"),
    [
        # Inside torch.onnx's exporter, which may wrap the interrupt in its own error.
        (signal.SIGINT, "[1/2] onnx: exporting", 1.5),
        # The ONNX was built and passed its gate in scratch; the IR is being built.
        (signal.SIGINT, "[2/2] openvino: exporting", 0.0),
        (signal.SIGTERM, "[2/2] openvino: exporting", 0.0),
        (signal.SIGKILL, "[2/2] openvino: exporting", 0.0),
    ],
    ids=["sigint-in-torch-onnx", "sigint-after-onnx", "sigterm", "sigkill"],
)
def test_a_signal_before_the_commit_changes_nothing(
    sig: signal.Signals, marker: str, delay: float, earlier: Path
) -> None:
    before = snapshot_files(earlier)
    proc = _start(earlier, "--dynamic-batch", "1:2:4")  # different bytes, same names
    _wait_for(proc, marker)
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    scratch = [p for p in earlier.iterdir() if p.name.startswith(SCRATCH_PREFIX)]
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
    else:  # no handler: the process dies, its scratch stays until the next export
        assert proc.returncode == -sig, err
    if sig == signal.SIGINT:
        assert not scratch and snapshot_files(earlier) == before  # every byte, hidden files too
        return
    assert len(scratch) == 1 and (scratch[0] / OWNER_FILE).is_file()
    left = {k: v for k, v in snapshot_files(earlier).items() if not k.startswith(SCRATCH_PREFIX)}
    assert left == before
    # The next export into the directory removes the scratch of the dead one.
    assert cli.main([*SMALL, "--target", "onnx", "--output", str(earlier)]) == 0
    assert not [p for p in earlier.iterdir() if p.name.startswith(SCRATCH_PREFIX)]
    _listed_equals_present(earlier)


def test_an_interrupt_wrapped_by_the_onnx_exporter_is_still_exit_130(
    earlier: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What torch.onnx does in some of its code paths (3 of 10 SIGINTs in the issue).
    import torch
    from torch.onnx._internal.exporter._errors import TorchExportError

    def wrapped(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise TorchExportError("Failed to export the model with torch.export") from exc

    monkeypatch.setattr(torch.onnx, "export", wrapped)
    before = snapshot_files(earlier)
    assert cli.main([*SMALL, "--target", "onnx,openvino", "--output", str(earlier)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert snapshot_files(earlier) == before


def test_a_partly_rejected_export_places_what_passed_and_keeps_the_earlier_records(
    earlier: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from partialnet.export.targets.openvino import convert

    real = convert.export_openvino

    def fp16_weights(*args, **kwargs):  # a real IR, but its weights rounded to fp16
        return real(*args, **{**kwargs, "compress_to_fp16": True})

    monkeypatch.setattr(convert, "export_openvino", fp16_weights)
    old_records = _listed_equals_present(earlier)
    old_ir = snapshot_files(earlier / IR)
    argv = [*SMALL, "--target", "onnx,openvino", "--dynamic-batch", "1:2:4"]
    assert cli.main([*argv, "--output", str(earlier)]) == 1
    assert "parity violation for openvino" in capsys.readouterr().err
    records = _listed_equals_present(earlier)  # the manifest equals the directory
    assert records[IR] == old_records[IR] and snapshot_files(earlier / IR) == old_ir
    assert records[ONNX]["dynamic_batch"] == [1, 2, 4]  # the new ONNX passed: placed
    assert records[ONNX]["sha256"] != old_records[ONNX]["sha256"]


def test_a_name_taken_by_something_else_is_refused_before_building(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / IR).write_text("a plain file where the IR directory goes")
    before = snapshot_files(out)
    started = time.monotonic()
    assert cli.main([*SMALL, "--target", "onnx,openvino", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists and is a file" in err and "onnx: exporting" not in err
    assert snapshot_files(out) == before and sorted(os.listdir(out)) == [IR]
    print(f"refused after {time.monotonic() - started:.1f} s")  # no timed assertion


def test_another_models_export_is_refused_unless_replace(
    earlier: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot_files(earlier)
    other = ["--variant", "t0", "--imgsz", "96", "--target", "onnx", "--output", str(earlier)]
    assert cli.main(other) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "another model" in line and "--replace" in line
    assert snapshot_files(earlier) == before
    assert cli.main([*other, "--replace"]) == 0
    records = _listed_equals_present(earlier)  # t0 at 64's files are gone, not unlisted
    assert set(records) == {"partialnet-t0-96x96-fp32.onnx"}


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until only about ``leave`` bytes are free."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))
    assert abs(shutil.disk_usage(disk).free - leave) < 2 << 20


def test_a_full_disk_inside_the_openvino_writer_says_so_and_changes_nothing(
    small_disk: Path | None, capsys: pytest.CaptureFixture[str]
) -> None:
    if small_disk is None:
        pytest.skip("cannot mount a small tmpfs here (needs root): the SDK's own error path")
    out = small_disk / "out"
    assert cli.main([*SMALL, "--target", "onnx", "--output", str(out)]) == 0
    before = snapshot_files(out)
    # Room for the new ONNX in scratch (14 MB), not for the IR after it: OpenVINO's writer
    # fails with "basic_ios::clear: iostream error", which does not say why.
    _fill(small_disk, 20 << 20)
    capsys.readouterr()
    assert cli.main([*SMALL, "--target", "onnx,openvino", "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "openvino export failed: no space left on the device" in err[-1], err
    assert snapshot_files(out) == before  # the ONNX passed, but the commit found no room


def test_enospc_reported_by_a_writer_is_named(
    earlier: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import openvino

    def quota(*args, **kwargs):  # an SDK that wraps the OS error in its own
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as exc:
            raise RuntimeError("Exception from src/core: cannot write") from exc

    monkeypatch.setattr(openvino, "save_model", quota)
    before = snapshot_files(earlier)
    assert cli.main([*SMALL, "--target", "openvino", "--output", str(earlier)]) == 1
    assert "disk quota exceeded" in capsys.readouterr().err
    assert snapshot_files(earlier) == before
