"""Shared test helpers: seeded models with randomized statistics, the fixture files."""

from __future__ import annotations

import struct
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import partialnet
from partialnet.dpconv import DPConv
from partialnet.rpe import RelativePositionBias

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# upstream-partialnet.md: our model must reproduce the authors' logits for the fixture
# checkpoint within 1e-4 x max|logit| (float32 summation order differs between the graphs).
UPSTREAM_LOGITS_MAX_REL = 1e-4


def fixture_path(name: str) -> Path:
    """A file from tests/fixtures (part of the repository: a missing one is a failure)."""
    path = FIXTURES / name
    assert path.is_file(), f"test fixture {path} is missing from the checkout"
    return path


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affines, LayerNorm affines and bias tables.

    With running_mean 0 / running_var 1 and identity affines, a fold that drops or
    misplaces a BN still gives the right answer; randomizing them (as RepVGG's checks
    do) makes every folding bug visible.
    """
    gen = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            uniform(mod.running_mean, -0.5, 0.5)
            uniform(mod.running_var, 0.5, 2.0)
            uniform(mod.weight, 0.5, 1.5)
            uniform(mod.bias, -0.5, 0.5)
        elif isinstance(mod, nn.LayerNorm):
            uniform(mod.weight, 0.5, 1.5)
            uniform(mod.bias, -0.5, 0.5)
        elif isinstance(mod, RelativePositionBias):
            mod.lookup_table_bias.copy_(torch.randn(mod.lookup_table_bias.shape, generator=gen))
    return model


def set_dpconv_splits(model: nn.Module, c_divs: list[int]) -> list[int]:
    """Give each DPConv layer a learned split (cycling through ``c_divs``); returns them."""
    used = []
    for i, mod in enumerate(m for m in model.modules() if isinstance(m, DPConv)):
        c_div = c_divs[i % len(c_divs)]
        mod.c_div.fill_(c_div)
        mod.one_channel.fill_(mod.channels // c_div)
        used.append(c_div)
    return used


@pytest.fixture
def t0_random() -> nn.Module:
    torch.manual_seed(0)
    return randomize(partialnet.create_model("t0")).eval()


# PartialNet t0 trained on scikit-learn's digits at 64 px by
# `python -m partialnet.bench.data.train_digits` (seed 0, 30 epochs, test_crop_ratio 0.875).
DIGITS_CHECKPOINT = FIXTURES / "digits_t0_64.ckpt"


@pytest.fixture(scope="session")
def digits_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(train, val) ImageFolder folders of scikit-learn's digits as 64x64 RGB PNGs."""
    pytest.importorskip("sklearn", reason="the digits need scikit-learn (the test extra)")
    from partialnet.bench.data.datasets import write_digits_folders

    return write_digits_folders(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's bundled photographs as PNG/JPEG files (grayscale ones kept gray)."""
    pytest.importorskip("skimage", reason="the photographs need scikit-image (the test extra)")
    from partialnet.bench.data.datasets import write_photo_folder

    return write_photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def digits_checkpoint() -> Path:
    """The trained digits model in the authors' Lightning layout."""
    return fixture_path(DIGITS_CHECKPOINT.name)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 40 MiB tmpfs where this process may mount one (root on Linux), else None."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def corrupt_coreml_weight(package: Path) -> Path:
    """Negate the first 16 values of the stem's weight blob inside a saved ML program's
    weight.bin (a subtle defect the parity rules must catch; needs coremltools)."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(package))
    block = next(iter(spec.mlProgram.functions["main"].block_specializations.values()))
    const = next(
        op for op in block.operations if op.type == "const" and "stem" in op.outputs[0].name
    )
    blob = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(blob.read_bytes())
    # Blob metadata: sentinel u32, dtype u32, size in bytes u64, data offset u64.
    sentinel, _, size, offset = struct.unpack_from(
        "<IIQQ", data, const.attributes["val"].blobFileValue.offset
    )
    assert sentinel == 0xDEADBEEF and size >= 64
    values = np.frombuffer(data, np.float32, count=16, offset=offset)
    data[offset : offset + 64] = (-values).tobytes()
    blob.write_bytes(bytes(data))
    return package


def snapshot_files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones, scratch included) with its bytes: what
    "byte-identical" is checked against."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
