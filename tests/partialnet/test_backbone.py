"""backbone_from_checkpoint: the two loading rules (classifier, backbone state dict)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomize
from torch import nn

import partialnet
from partialnet.backbone import (
    FEATURE_STRIDES,
    RULE_BACKBONE,
    RULE_CLASSIFIER,
    backbone_from_checkpoint,
    describe_outputs,
    feature_shapes,
)
from partialnet.errors import CheckpointMismatchError

SIDE = 64
# Inference form vs eager, relative to each map's max |value|: exact algebra evaluated in
# another fp32 order, the bound test_reparam uses for the classifier.
REPARAM_REL_TOL = 1e-5


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, SIDE, SIDE))).float()


def _stage_outputs(classifier: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    out, feats = classifier.patch_embed(x), []
    for idx, stage in enumerate(classifier.stages):
        out = stage(out)
        if idx % 2 == 0:
            feats.append(out)
    return feats


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def classifier() -> nn.Module:
    torch.manual_seed(0)
    return randomize(partialnet.create_model("t0", num_classes=10), seed=1).eval()


@pytest.fixture(scope="module")
def trained_backbone() -> nn.Module:
    """A backbone with trained-looking (randomized) detection norms."""
    torch.manual_seed(0)
    return randomize(partialnet.create_model("t0", features_only=True), seed=2).eval()


def test_classifier_checkpoint_gives_the_raw_stage_outputs(classifier, x, tmp_path):
    path = tmp_path / "classifier.pth"
    torch.save(classifier.state_dict(), path)
    model, rule = backbone_from_checkpoint(path)
    assert rule == RULE_CLASSIFIER and model.checkpoint_info["backbone_rule"] == rule
    assert not hasattr(model, "head") and not model.training
    with torch.inference_mode():
        feats, want = model(x), _stage_outputs(classifier, x)
    assert len(feats) == 4
    for got, ref in zip(feats, want, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)  # same modules, same weights


def test_classifier_backbone_inference_form_has_identity_norms(classifier, x, tmp_path):
    path = tmp_path / "classifier.pth"
    torch.save(classifier.state_dict(), path)
    model, _ = backbone_from_checkpoint(path)
    inference = partialnet.reparameterize(model, SIDE)
    assert inference.feature_norms.identity == [True] * 4
    assert not list(inference.feature_norms.buffers())  # nothing to multiply by
    with torch.inference_mode():
        for got, ref in zip(inference(x), model(x), strict=True):
            assert _rel(got, ref) <= REPARAM_REL_TOL


@pytest.mark.parametrize("prefix", ["", "backbone."])
def test_backbone_state_dict_loads_strictly_with_its_norms(trained_backbone, x, tmp_path, prefix):
    state = {prefix + k: v for k, v in trained_backbone.state_dict().items()}
    if prefix:  # an mmdetection detector: other parts sit beside the backbone
        state["neck.lateral_convs.0.conv.weight"] = torch.zeros(8, 32, 1, 1)
        saved = {"meta": {"epoch": 12}, "state_dict": state}
    else:
        saved = state
    path = tmp_path / "backbone.pth"
    torch.save(saved, path)
    model, rule = backbone_from_checkpoint(path)
    assert rule == RULE_BACKBONE
    for i in range(4):
        norm, ref = getattr(model, f"norm{2 * i}"), getattr(trained_backbone, f"norm{2 * i}")
        assert isinstance(norm, nn.BatchNorm2d)
        torch.testing.assert_close(norm.running_var, ref.running_var, rtol=0, atol=0)
    with torch.inference_mode():
        for got, ref in zip(model(x), trained_backbone(x), strict=True):
            torch.testing.assert_close(got, ref, rtol=0, atol=0)
        inference = partialnet.reparameterize(model, SIDE)
        assert inference.feature_norms.identity == [False] * 4
        for got, ref in zip(inference(x), trained_backbone(x), strict=True):
            assert _rel(got, ref) <= REPARAM_REL_TOL


def test_backbone_state_dict_missing_a_norm_is_refused(trained_backbone, tmp_path):
    state = {k: v for k, v in trained_backbone.state_dict().items() if not k.startswith("norm4.")}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointMismatchError, match="norm4"):
        backbone_from_checkpoint(tmp_path / "partial.pth")


def test_backbone_state_dict_with_a_stray_key_is_refused(trained_backbone, tmp_path):
    state = dict(trained_backbone.state_dict())
    state["stages.0.blocks.0.extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "stray.pth")
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        backbone_from_checkpoint(tmp_path / "stray.pth")


def test_classifier_of_another_variant_is_refused(classifier, tmp_path):
    torch.save(classifier.state_dict(), tmp_path / "t0.pth")
    with pytest.raises(CheckpointMismatchError):
        backbone_from_checkpoint(tmp_path / "t0.pth", variant="t1")


def test_feature_shapes_follow_the_strides():
    shapes = feature_shapes((32, 64, 128, 256), (64, 96), batch=None)
    assert [s["name"] for s in shapes] == ["feat0", "feat1", "feat2", "feat3"]
    assert [s["stride"] for s in shapes] == list(FEATURE_STRIDES)
    assert shapes[0]["shape"] == [-1, 32, 16, 24] and shapes[3]["shape"] == [-1, 256, 2, 3]


def test_describe_outputs_matches_what_the_models_return(trained_backbone, classifier, x):
    inference = partialnet.reparameterize(trained_backbone, SIDE)
    with torch.inference_mode():
        feats, logits = inference(x), classifier(x)
    described = describe_outputs(inference, batch=2)
    assert [d["shape"] for d in described] == [list(f.shape) for f in feats]
    assert [d["stride"] for d in described] == list(FEATURE_STRIDES)
    assert describe_outputs(classifier, batch=None) == [
        {"name": "logits", "stride": None, "shape": [-1, logits.shape[1]]}
    ]
