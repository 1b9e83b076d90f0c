"""Verify before placing, and one line for every failure: a rejected, failed, interrupted or
out-of-space export leaves the earlier artifacts and manifest byte-identical."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from conftest import snapshot_files

import partialnet
import partialnet.export.cli.main as cli

SMALL = ["--variant", "t0", "--imgsz", "64"]


def _good_export(out: Path) -> dict[str, bytes]:
    assert cli.main([*SMALL, "--target", "onnx,openvino", "--output", str(out)]) == 0
    before = snapshot_files(out)
    assert "manifest.json" in before and any(k.endswith(".onnx") for k in before)
    assert any(k.endswith(".bin") for k in before)  # the IR pair, inside its directory
    return before


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("[")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_nan_checkpoint_is_rejected_and_nothing_is_replaced(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    before = _good_export(out)
    capsys.readouterr()
    torch.manual_seed(0)
    model = partialnet.create_model("t0")
    model.stages[0].blocks[0].mlp[1].running_var.fill_(float("nan"))
    ckpt = tmp_path / "nan.pth"
    torch.save(model.state_dict(), ckpt)
    args = ["--checkpoint", str(ckpt), "--imgsz", "64", "--target", "onnx,openvino"]
    # Another model's weights: --replace lets it in, yet nothing passes, so nothing changes.
    code = cli.main([*args, "--replace", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    line = _one_line(captured.err)
    assert "parity violation" in line and "not placed" in line
    assert "FAIL" in captured.out  # the table shows the rejected artifacts' numbers
    assert snapshot_files(out) == before


def test_interrupted_export_leaves_everything_as_it_was(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "out"
    before = _good_export(out)
    from partialnet.export.targets.openvino import convert as openvino_export

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(openvino_export, "export_openvino", interrupt)
    # The ONNX was already built and verified in scratch: an interrupt must not place it.
    assert cli.main([*SMALL, "--target", "onnx,openvino", "--output", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert snapshot_files(out) == before


def test_sdk_error_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "out"
    before = _good_export(out)
    capsys.readouterr()
    import openvino

    def broken(*args, **kwargs):
        raise RuntimeError("Exception from src/core: something inside OpenVINO\nsecond line")

    monkeypatch.setattr(openvino, "convert_model", broken)
    args = [*SMALL, "--target", "openvino", "--output", str(out)]
    assert cli.main(args) == 1
    line = _one_line(capsys.readouterr().err)
    assert "OpenVINO could not convert" in line and "second line" not in line
    assert snapshot_files(out) == before
    assert cli.main([*args, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_later_failure_still_places_what_passed(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    from partialnet.export.targets.openvino import convert as openvino_export

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(openvino_export, "export_openvino", broken)
    assert cli.main([*SMALL, "--target", "onnx,openvino", "--output", str(out)]) == 1
    assert "openvino export failed: RuntimeError: boom" in capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("reference-"))
    assert names == ["manifest.json", "partialnet-t0-64x64-fp32.onnx"]
    # The gate's reference went in with the first artifact placed (partialnet-bench check).
    assert len(list(out.glob("reference-*.npz"))) == 1


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--target", "onnx,trt", "--trt-compute-capability", "ampere"], "compute capability"),
        (["--target", "onnx,coreml", "--coreml-min-target", "iOS99"], "deployment target"),
        (["--target", "onnx,coreml", "--coreml-labels", "/nonexistent/labels"], "labels"),
        (["--target", "onnx,trt", "--workspace", "0"], "--workspace"),
    ],
)
def test_target_options_are_checked_before_anything_is_written(
    extra: list[str], fragment: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert cli.main([*SMALL, *extra, "--output", str(out)]) == 2
    assert fragment in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_label_count_must_match_the_classes(tmp_path: Path, capsys) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    out = tmp_path / "out"
    args = [*SMALL, "--target", "coreml", "--coreml-labels", str(labels), "--output", str(out)]
    assert cli.main(args) == 2
    assert "2 labels for a model with 1000 classes" in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_full_disk_is_one_line_and_keeps_earlier_artifacts(
    small_disk: Path | None, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = (small_disk or tmp_path) / "out"
    assert cli.main([*SMALL, "--target", "onnx", "--output", str(out)]) == 0
    before = snapshot_files(out)
    capsys.readouterr()
    if small_disk is not None:
        # Fill the rest of the 40 MiB: the next ONNX (14 MB) cannot be written in scratch.
        filler = small_disk / "filler"
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * (1 << 20))
                    fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        for size in (1 << 16, 1 << 12, 1):  # take the last scraps too
            try:
                with open(filler, "ab") as fh:
                    while True:
                        fh.write(b"\0" * size)
                        fh.flush()
            except OSError:
                pass
    else:  # no tmpfs here: the write itself says the disk is full
        import onnx

        def no_space(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(onnx, "save", no_space)
    assert cli.main([*SMALL, "--target", "onnx", "--output", str(out)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "no space left" in line and "earlier artifacts were left as they were" in line
    assert snapshot_files(out) == before
