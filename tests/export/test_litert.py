"""LiteRT export (issue 16): fp32/fp16/int8 .tflite through ``export()`` and its gate, NHWC I/O,
backbones, metadata read back, and the refusals (dynamic batch, missing SDK, a failed
conversion naming the op and the block).

Real conversions of the trained digits t0 at 64 px (tests/fixtures/digits_t0_64.ckpt), each
exported once per module; every artifact passes the export's own parity gate, and the
tolerances below are the gate's (``partialnet.export.gate.parity``) unless stated.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fixture_path
from torch import nn

from partialnet.errors import UsageError
from partialnet.export import export
from partialnet.export.errors import ExportFailure
from partialnet.runtimes import open_runner

pytest.importorskip("litert_torch", reason="LiteRT export needs the [litert] extra")
pytest.importorskip("ai_edge_litert", reason="LiteRT export needs the [litert] extra")

DIGITS = "digits_t0_64.ckpt"


def _export(out: Path, checkpoint: str = DIGITS, **kwargs) -> tuple[Path, dict]:
    manifest = export(fixture_path(checkpoint), targets="litert", output_dir=out, **kwargs)
    (record,) = manifest.artifacts
    assert record.status == "ok" and record.parity["passed"], record.parity
    return out / record.path, {**asdict(record), "_dir": str(out)}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> tuple[Path, dict]:
    return _export(tmp_path_factory.mktemp("litert-fp32"))


def test_fp32_passes_the_fp32_rule_and_runs_in_one_xnnpack_partition(fp32) -> None:
    path, record = fp32
    assert path.name == "partialnet-t0-64x64-fp32.tflite"
    # The gate's fp32 rule: max|diff| <= 1e-4 x max|ref|, cosine >= 0.99999 (it passed).
    assert record["parity"]["max_rel"] <= 1e-4 and record["parity"]["cosine"] >= 0.99999
    with open_runner("litert", path) as runner:
        info = runner.info()
    # The gates' clamp lowered as relu6 (targets/litert/form.py): one delegated graph; the
    # clamp form gives one partition per gate plus one (t0: 12).
    assert info.extra["delegate_partitions"] == 1
    assert info.input_shape == (1, 3, 64, 64) and info.batch_range == (1, 1)
    assert record["details"]["outputs"][0]["name"] == "logits"


def test_metadata_is_read_back_from_the_tflite(fp32) -> None:
    from partialnet.files import sha256_path
    from partialnet.runtimes.litert import read_tflite_metadata

    meta = read_tflite_metadata(fp32[0])
    assert meta["variant"] == "t0" and meta["classes"] == 10 and meta["precision"] == "fp32"
    assert meta["checkpoint_sha256"] == sha256_path(fixture_path(DIGITS))
    assert meta["preprocessing"] == record_preprocessing(fp32[1])
    assert meta["input_size"] == [64, 64] and meta["litert_layout"] == "NCHW"
    assert meta["mean"] and meta["std"]


def test_device_check_repeats_the_gate_on_the_tflite(fp32, tmp_path: Path) -> None:
    """``partialnet-bench check`` (the "verified where it runs" check) on the LiteRT export:
    same reference, same runner, same rule, so the same figures as the export's gate."""
    import json

    from partialnet.bench import cli

    out = tmp_path / "check"
    assert cli.main(["check", fp32[1]["_dir"], "--output", str(out), "--iterations", "3"]) == 0
    (row,) = json.loads((out / "report.json").read_text())["artifacts"]
    assert row["runtime"] == "litert" and row["status"] == "pass" and row["same_as_gate"]
    assert row["parity"]["cosine"] == fp32[1]["parity"]["cosine"]


def record_preprocessing(record: dict) -> dict:
    """What the export recorded as the preprocessing (the same facts as the ONNX metadata)."""
    from partialnet.export.output.manifest import load_manifest

    return load_manifest(Path(record["_dir"])).data["preprocessing"]


def test_fp32_matches_the_authors_fixture_logits(tmp_path: Path) -> None:
    """The fp32 rule on the authors'-format checkpoint at 224 px against its stored logits."""
    x = np.load(fixture_path("upstream_t0_224_input.npy")).astype(np.float32)
    want = np.load(fixture_path("upstream_t0_224_logits.npy"))
    path, _ = _export(tmp_path, "upstream_t0_224.ckpt", batch=len(x))
    with open_runner("litert", path) as runner:
        got = runner.infer(x)
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    a, b = got.ravel().astype(np.float64), want.ravel().astype(np.float64)
    cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert rel <= 1e-4 and cosine >= 0.99999, (rel, cosine)


def test_fp16_weights_with_nhwc_io(tmp_path_factory, fp32) -> None:
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    path, _ = _export(tmp_path_factory.mktemp("litert-fp16"), precision="fp16", **NHWC)
    # Float casting halves the conv/FC weights: the file is about half the fp32 one.
    assert path.stat().st_size < 0.6 * fp32[0].stat().st_size
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    kinds = {graph.Tensors(i).Type() for i in range(graph.TensorsLength())}
    assert schema.TensorType.FLOAT16 in kinds
    from ai_edge_litert.interpreter import Interpreter

    raw = Interpreter(model_path=str(path))
    assert tuple(raw.get_input_details()[0]["shape"]) == (1, 64, 64, 3)
    with open_runner("litert", path) as nhwc, open_runner("litert", fp32[0]) as nchw:
        assert nhwc.info().extra["layout"] == "NHWC"
        # XNNPACK takes the fp16 weights' DEQUANTIZE ops too: still one partition.
        assert nhwc.info().extra["delegate_partitions"] == 1
        x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
        # fp16-rounded weights: within the fp16 rule's cosine (>= 0.999) of the fp32 model.
        a, b = nhwc.infer(x).ravel(), nchw.infer(x).ravel()
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.999


NHWC = {"litert_nhwc": True}


def test_backbone_exports_four_maps(tmp_path: Path) -> None:
    path, record = _export(tmp_path, features=True, **NHWC)  # the gate judged every map
    outputs = record["details"]["outputs"]
    assert [o["name"] for o in outputs] == ["feat0", "feat1", "feat2", "feat3"]
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with open_runner("litert", path) as runner:
        got = runner.infer_all(x)  # the NHWC maps come back NCHW from the runner
    assert {k: list(v.shape) for k, v in got.items()} == {o["name"]: o["shape"] for o in outputs}


def test_int8_passes_the_int8_rule_on_held_out_digits(tmp_path: Path, digits_folders) -> None:
    train, val = digits_folders
    path, record = _export(
        tmp_path, precision="int8", calibration_data=train, eval_data=val, calibration_images=64
    )
    accuracy = record["accuracy"]
    # The int8 rule with labels: top-1 at most 1 point below the eager model's (it passed).
    assert accuracy["top1"] >= accuracy["reference_top1"] - 0.01, accuracy
    assert record["details"]["quantized_ops"]
    with open_runner("litert", path) as runner:
        info = runner.info()
    assert info.precision == "int8" and info.extra["io_dtype"] == "float32"


def test_dynamic_batch_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="fixed batch"):
        export(fixture_path(DIGITS), targets="litert", dynamic_batch="1:2:4", output_dir=out)
    assert not out.exists()


class _Cumulative(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumprod(x, 1)  # litert-torch 0.10 has no lowering for aten.cumprod


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.Sequential(nn.Conv2d(3, 3, 1), _Cumulative())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


def test_conversion_failure_names_the_op_and_the_block(tmp_path: Path) -> None:
    from partialnet.export.targets.litert.convert import _NamedIO, convert_litert

    model = _NamedIO(_Net(), nhwc=False).eval()
    with pytest.raises(ExportFailure) as caught:
        convert_litert(model, torch.zeros(1, 3, 8, 8), tmp_path / "x.tflite")
    message = str(caught.value)
    assert "aten.cumprod" in message and "stages.1 (_Cumulative)" in message, message
    assert "\n" not in message
