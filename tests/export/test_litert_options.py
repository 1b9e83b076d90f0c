"""LiteRT's place among the targets (issue 16), checked without its SDK: what ``all`` means,
and the missing-SDK refusal, which is what a venv without the [litert] extra meets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import fixture_path

from partialnet.errors import MissingDependencyError
from partialnet.export import export
from partialnet.export.options import Target, parse_targets


def test_all_leaves_litert_to_be_named() -> None:
    assert Target.LITERT not in parse_targets("all")
    assert parse_targets("all,litert")[-1] is Target.LITERT
    assert parse_targets("litert,onnx") == (Target.ONNX, Target.LITERT)


@pytest.mark.parametrize("module", ["litert_torch", "ai_edge_litert"])
def test_missing_sdk_names_the_extra_before_anything_is_written(
    module: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import -> ImportError, installed or not
    out = tmp_path / "out"
    with pytest.raises(MissingDependencyError, match=r"partialnet-export\[litert\]"):
        export(fixture_path("digits_t0_64.ckpt"), targets="litert", output_dir=out)
    assert not out.exists()
