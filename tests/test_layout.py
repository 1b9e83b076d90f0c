"""Issue 15's goal, kept: each target is named in at most 5 source files outside its own
modules (export/targets/<target>/, the runner runtimes/<runtime>*.py, and its own goal
harnesses bench/goals/<runtime>/).

A file names a target when the target's or its runtime's name appears anywhere in it, in any
case (code, identifiers, strings or comments: ``grep -il``). The ONNX target is counted by
its runtime's name, ``onnxruntime``: its own name, ``onnx``, is the format every other target
is built from (and "ONNX Runtime" in prose, comparisons in other targets' notes, is not
counted).
Today each target is named by the four registration points it needs (``Target``,
``TARGETS``, ``Runtime``, ``RUNTIMES``) plus at most one goal harness or the CLI that
compares it with another.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
from pathlib import Path

import pytest

import partialnet.export.targets as targets_package
from partialnet.export.options import Target
from partialnet.export.targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("partialnet", "export", "runtimes", "bench")
LIMIT = 5


def _sources() -> dict[str, str]:
    listed = subprocess.run(
        ["git", "ls-files", *(f"{d}/*.py" for d in SOURCE_DIRS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {path: (ROOT / path).read_text(encoding="utf-8") for path in listed}


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    found = _sources()
    if not found:
        pytest.skip("not a git checkout: the tracked sources cannot be listed")
    return found


def _own_package(spec) -> str:
    """The folder under export/targets/ whose ``SPEC`` this is (``tensorrt`` for ``trt``)."""
    for info in pkgutil.iter_modules(targets_package.__path__):
        if (
            info.ispkg
            and importlib.import_module(f"{targets_package.__name__}.{info.name}").SPEC is spec
        ):
            return info.name
    raise AssertionError(f"no package under export/targets/ registers {spec.target.value}")


def _files_naming(spec, sources: dict[str, str]) -> list[str]:
    runtime = spec.runtime.value
    words = {runtime} if spec.target is Target.ONNX else {spec.target.value, runtime}
    pattern = re.compile("|".join(map(re.escape, sorted(words))), re.I)
    own = (
        f"export/targets/{_own_package(spec)}/",
        f"runtimes/{runtime}",
        f"bench/goals/{runtime}/",
    )
    return sorted(
        path for path, text in sources.items() if not path.startswith(own) and pattern.search(text)
    )


@pytest.mark.parametrize("spec", TARGETS, ids=lambda spec: spec.target.value)
def test_a_target_is_named_in_few_files_beyond_its_own(spec, sources: dict[str, str]) -> None:
    naming = _files_naming(spec, sources)
    assert len(naming) <= LIMIT, f"{spec.target.value} named in {len(naming)} files: {naming}"


def test_the_count_sees_a_mention() -> None:
    # Negative control: a file naming the target in a comment is counted.
    spec = next(s for s in TARGETS if s.target is Target.OPENVINO)
    fake = {
        "bench/perf/new.py": "# faster than OpenVINO here\n",
        "bench/perf/other.py": "from x import quantize_openvino\n",
        "runtimes/openvino.py": "openvino",
        "bench/goals/openvino/isa.py": "openvino",
    }
    assert _files_naming(spec, fake) == ["bench/perf/new.py", "bench/perf/other.py"]
