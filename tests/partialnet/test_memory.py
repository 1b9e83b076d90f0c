"""An input size whose export cannot fit in memory is refused up front, with the estimate;
the sizes people export at stay allowed."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

import partialnet
from partialnet.errors import InputShapeError
from partialnet.memory import check_export_fits, export_memory_estimate, memory_limit

_model = functools.cache(partialnet.create_model)  # building l takes seconds: once


@pytest.mark.parametrize("variant", ["t0", "l"])
@pytest.mark.parametrize("side", [224, 512, 1024])
def test_usual_sizes_are_allowed(variant: str, side: int) -> None:
    model = _model(variant)
    # Below 2 GiB (l at 1024: ~1.6 GiB), so any machine that runs an export allows them.
    assert export_memory_estimate(model, (side, side), 1) < 2 * 2**30
    check_export_fits(model, (side, side), 1)


def test_the_estimate_grows_with_the_attention_over_the_tokens() -> None:
    model = _model("t0")
    # 8192 px: 65,536 tokens; the last stage's baked bias alone is 2 blocks x 4 heads x
    # 65536^2 float32 = 137 GB, which the estimate must include (it is a lower bound).
    assert export_memory_estimate(model, (8192, 8192), 1) > 2 * 4 * 65536**2 * 4


def test_imgsz_8192_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from partialnet.export import export

    limit = memory_limit()
    if limit is None or limit > 500 * 2**30:
        pytest.skip(f"this machine has {limit} bytes: an 8192 px export might fit")
    out = tmp_path / "out"
    with pytest.raises(InputShapeError, match=r"at 8192x8192 needs at least \d+\.\d GiB"):
        export(variant="t0", imgsz=8192, output_dir=out)
    assert not out.exists()
