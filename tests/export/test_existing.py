"""Which earlier exports a new one may join: the same variant, input size, checkpoint and
logits-or-features; anything else is refused unless ``replace``, which removes only the
files the earlier manifest lists inside its directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from partialnet.export.errors import OutputPathError
from partialnet.export.output.existing import earlier_export
from partialnet.export.output.manifest import ArtifactRecord, Manifest


def _record(path: str) -> ArtifactRecord:
    return ArtifactRecord("onnx", path, "fp32", [1, 3, 64, 64], None, "0" * 64, 1, 0.0, {})


def _manifest(**changes: object) -> Manifest:
    base = Manifest("t0", {"path": "a.ckpt", "sha256": "ab" * 32}, {}, [64, 64])
    return dataclasses.replace(base, **changes)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.onnx").write_bytes(b"m")
    (tmp_path / "outside.onnx").write_bytes(b"not listed as ours")
    earlier = _manifest(artifacts=[_record("m.onnx"), _record("../outside.onnx")])
    earlier.write(out)
    return out


def test_the_same_model_keeps_the_records_whose_files_are_inside(out: Path) -> None:
    # Another checkpoint path with the same bytes is the same model.
    fresh = _manifest(checkpoint={"path": "/elsewhere/a.ckpt", "sha256": "ab" * 32})
    found = earlier_export(out, fresh, replace=False)
    assert [r.path for r in found.keep] == ["m.onnx"] and found.remove == []


@pytest.mark.parametrize(
    "changes",
    [
        {"variant": "t1"},
        {"input_size": [96, 96]},
        {"checkpoint": {"path": "a.ckpt", "sha256": "cd" * 32}},
        {"checkpoint": None},
        {"features": True},
    ],
    ids=["variant", "size", "checkpoint", "random-weights", "features"],
)
def test_another_model_is_refused_and_replace_removes_only_its_files_inside(
    changes: dict[str, object], out: Path
) -> None:
    fresh = _manifest(**changes)
    with pytest.raises(OutputPathError, match=r"another model.*--replace"):
        earlier_export(out, fresh, replace=False)
    found = earlier_export(out, fresh, replace=True)
    assert found.keep == [] and found.remove == [(out / "m.onnx").resolve()]


def test_an_unreadable_manifest_is_refused_unless_replace(out: Path) -> None:
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(OutputPathError, match=r"not valid JSON.*--replace"):
        earlier_export(out, _manifest(), replace=False)
    assert earlier_export(out, _manifest(), replace=True).remove == []
