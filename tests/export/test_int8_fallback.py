"""The accuracy-aware int8 fallback, on a trained model that plain int8 breaks.

The model is the trained digits t0 (64 px) with two residual-stream channels of stage 0
scaled by 1024 where they are written and by 1/1024 where they are read
(``partialnet.bench.data.outliers``): the same fp32 function, but per-tensor int8
activations spend their range on those channels. The gate runs on the 359 held-out val
digits, calibration on a seeded sample of the train digits (disjoint folders).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import partialnet
from partialnet.bench.data.outliers import amplify_channels
from partialnet.export import export
from partialnet.export.cli.main import main as cli_main
from partialnet.export.errors import ParityFailure

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

CALIBRATION_IMAGES = 64


@pytest.fixture(scope="module")
def models(digits_checkpoint: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    trained = partialnet.load_checkpoint(digits_checkpoint).eval()
    return trained, amplify_channels(trained).eval()


def test_amplified_model_computes_the_same_function(models) -> None:
    trained, amplified = models
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 3, 64, 64), np.float32))
    with torch.inference_mode():
        ref, out = trained(x), amplified(x)
        inner = amplified.patch_embed(x)
    # Power-of-two scaling is exact in float32 and the sums run in the same order, so the
    # logits agree to float32 resolution (1e-6 relative leaves room for re-association).
    assert float((ref - out).abs().max() / ref.abs().max()) <= 1e-6
    # ... while two channels of the stage-0 stream are ~1000x the others.
    per_channel = inner.abs().amax(dim=(0, 2, 3))
    assert float(per_channel[[0, 3]].min()) > 100 * float(per_channel[[1, 2, 4, 5]].max())


def _export(model, out: Path, folders, target: str, **kw):
    train, val = folders
    return export(
        model,
        targets=target,
        precision="int8",
        output_dir=out,
        eval_data=val,
        calibration_data=train,
        calibration_images=CALIBRATION_IMAGES,
        **kw,
    )


def test_plain_int8_collapses_and_fallback_off_refuses(models, digits_folders, tmp_path) -> None:
    _, amplified = models
    with pytest.raises(ParityFailure) as failure:
        _export(amplified, tmp_path, digits_folders, "onnx", int8_fallback=False)
    top1 = [r.parity["accuracy"]["top1"] for r in failure.value.rejected]
    assert max(top1) < 0.5  # chance is 10%; the eager model has 99.4%
    assert not list(tmp_path.glob("*.onnx"))


@pytest.fixture(scope="module")
def onnx_fallback(models, digits_folders, tmp_path_factory):
    _, amplified = models
    out = tmp_path_factory.mktemp("fallback-onnx")
    return _export(amplified, out, digits_folders, "onnx")


def test_onnx_fallback_restores_accuracy_with_few_float_layers(onnx_fallback) -> None:
    records = {r.details["flavour"]: r for r in onnx_fallback.artifacts}
    assert set(records) == {"onnxruntime", "tensorrt"}
    for record in records.values():
        fallback = record.details["fallback"]
        assert fallback["needed"] and fallback["after"]["passed"]
        assert fallback["before"]["top1"] < 0.5
        acc = record.accuracy
        assert acc["reference_top1"] - acc["top1"] <= 0.01 + 1e-12  # the --max-drop 1.0 rule
        floated = record.details["float_layers"]
        assert floated and len(floated) <= 0.4 * fallback["quantizable_layers"]
        assert record.details["fp32_nodes"][-len(floated) :] == floated
        assert fallback["search_seconds"] > 0


def test_onnx_fallback_is_deterministic(models, digits_folders, onnx_fallback, tmp_path) -> None:
    _, amplified = models
    again = _export(amplified, tmp_path, digits_folders, "onnx")
    first = {r.path: r.details["float_layers"] for r in onnx_fallback.artifacts}
    second = {r.path: r.details["float_layers"] for r in again.artifacts}
    assert first == second


def test_openvino_fallback(models, digits_folders, tmp_path) -> None:
    pytest.importorskip("nncf")
    _, amplified = models
    manifest = _export(amplified, tmp_path, digits_folders, "openvino")
    (record,) = manifest.artifacts
    fallback = record.details["fallback"]
    assert fallback["needed"] and fallback["after"]["passed"]
    assert record.accuracy["reference_top1"] - record.accuracy["top1"] <= 0.01 + 1e-12
    assert len(record.details["float_layers"]) <= 0.4 * fallback["quantizable_layers"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--precision", "auto", "--calibration-data", "x"], "--max-drop"),
        (["--precision", "auto", "--max-drop", "-1", "--calibration-data", "x"], "--max-drop"),
        (["--precision", "auto", "--max-drop", "101", "--calibration-data", "x"], "--max-drop"),
        (["--precision", "auto", "--max-drop", "1"], "--eval-data"),
        (["--precision", "int8", "--max-drop", "nan", "--calibration-data", "x"], "--max-drop"),
    ],
)
def test_bad_budget_or_no_images_is_a_usage_error(extra, needle, tmp_path, capsys) -> None:
    code = cli_main(["--variant", "t0", "--imgsz", "64", "--output", str(tmp_path), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert needle in err[-1] and len(err) == 1
    assert not any(tmp_path.iterdir())


def test_fallback_without_labels_uses_the_agreement_rules(models, digits_folders, tmp_path):
    _, amplified = models
    train, _ = digits_folders
    manifest = export(
        amplified,
        targets="onnx",
        precision="int8",
        output_dir=tmp_path,
        calibration_data=train,
        calibration_images=CALIBRATION_IMAGES,
    )
    for record in manifest.artifacts:
        fallback = record.details["fallback"]
        assert record.accuracy is None and "top1" not in fallback["after"]
        assert fallback["needed"] and not fallback["before"]["passed"]
        # The label-free int8 rule on the held-out calibration images: agreement >= 97% and
        # every image's cosine >= 0.98 (partialnet.export.gate.parity).
        assert fallback["after"]["top1_agreement"] >= 0.97
        assert fallback["after"]["min_image_cosine"] >= 0.98
        assert record.parity["inputs"] == "calibration images held out from int8 calibration"


def test_the_gate_reuses_the_fallbacks_last_verdict(
    models, digits_folders, tmp_path, monkeypatch
) -> None:
    """The fallback judged each Q/DQ graph last with the gate's own images and rule: the
    gate takes that verdict instead of running the same bytes again (one judgement per
    artifact, not two), and the record carries it."""
    from partialnet.export.targets.base import TargetContext

    judged: list[float] = []
    real = TargetContext.judge_runner

    def counted(self: TargetContext, runner):  # a spy: the real judgement, counted
        result = real(self, runner)
        judged.append(result.min_image_cosine)
        return result

    monkeypatch.setattr(TargetContext, "judge_runner", counted)
    trained, _ = models
    train, val = digits_folders
    manifest = export(
        trained,
        targets="onnx",
        precision="int8",
        output_dir=tmp_path,
        eval_data=val,
        calibration_data=train,
        calibration_images=CALIBRATION_IMAGES,
    )
    assert len(manifest.artifacts) == 2  # the onnxruntime and tensorrt Q/DQ flavours
    assert len(judged) == 2  # plain int8 holds on the trained model: one verdict each
    for record in manifest.artifacts:
        assert not record.details["fallback"]["needed"]
        assert record.parity["min_image_cosine"] in judged
