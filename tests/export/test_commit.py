"""The commit step on its own: signals held back while it runs, and a rename that fails
inside it puts back what had already moved."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from partialnet.export.errors import ExportFailure
from partialnet.export.output.commit import Staged, commit, signals_deferred
from partialnet.export.output.manifest import Manifest


def test_an_interrupt_during_the_step_is_delivered_after_it() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("finished")  # reached: the interrupt waited
    assert done == ["finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_failed_rename_puts_back_what_had_moved(tmp_path: Path) -> None:
    out, scratch = tmp_path / "out", tmp_path / "out" / ".scratch"
    scratch.mkdir(parents=True)
    (out / "a.onnx").write_bytes(b"old a")
    (out / "manifest.json").write_text("old manifest")
    (scratch / "a.onnx").write_bytes(b"new a")
    (scratch / "b.openvino").mkdir()  # vanishes before its rename: the step fails there
    items = [Staged(scratch / "a.onnx", "a.onnx"), Staged(scratch / "b.openvino", "b.openvino")]

    class Vanishing(Manifest):
        def to_dict(self):  # called once the names were checked, before anything moves
            (scratch / "b.openvino").rmdir()
            return super().to_dict()

    with pytest.raises(ExportFailure, match="placing the artifacts failed"):
        commit(out, scratch, items, Vanishing("t0", None, {}, [64, 64]))
    assert (out / "a.onnx").read_bytes() == b"old a"
    assert (out / "manifest.json").read_text() == "old manifest"
    assert not (out / "b.openvino").exists()
