"""The inference form: exact folds, frozen splits, baked bias, traceability."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import randomize, set_dpconv_splits

import partialnet
from partialnet.errors import ConfigError, InputShapeError
from partialnet.inference import InferencePartialNet
from partialnet.layers import LayerNorm2d

# float32 re-association of folded products moves outputs by ~1e-7 relative (measured
# 4e-7 on t0/t1); 1e-5 x max|eager| leaves 20x margin and still catches any dropped term.
REL_TOL = 1e-5


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("name", partialnet.list_variants())
def test_every_variant_folds_exactly(name: str) -> None:
    torch.manual_seed(1)
    model = randomize(partialnet.create_model(name), seed=1).eval()
    fast = partialnet.reparameterize(model)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert _rel_diff(model(x), fast(x)) <= REL_TOL


@pytest.mark.parametrize("size", [(224, 224), (256, 256), (192, 320)])
def test_sizes_including_non_square(size) -> None:
    torch.manual_seed(2)
    model = randomize(partialnet.create_model("t1"), seed=2).eval()
    fast = partialnet.reparameterize(model, size)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert _rel_diff(model(x), fast(x)) <= REL_TOL


def test_large_input_uses_logarithmic_buckets() -> None:
    # 1024 px: stage-3 map 32x32, distances up to 44 > alpha=20, the log part of iRPE.
    torch.manual_seed(3)
    model = randomize(partialnet.create_model("t0"), seed=3).eval()
    fast = partialnet.reparameterize(model, 1024)
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        assert _rel_diff(model(x), fast(x)) <= REL_TOL


def test_dpconv_learned_splits_freeze_to_static_indices() -> None:
    torch.manual_seed(4)
    model = randomize(partialnet.create_model("t0", auto_div=True), seed=4).eval()
    used = set_dpconv_splits(model, [2, 4, 8])
    assert {2, 4, 8} <= set(used)
    fast = partialnet.reparameterize(model)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert _rel_diff(model(x), fast(x)) <= REL_TOL
    splits = list(fast.split_indices.values())
    # Only the used weights are kept: stage-0 block 0 has 32 channels, split 2 -> 16 kept.
    assert splits[0] == [16, 16]
    first = fast.stages[0][0].mixer.conv
    assert first.weight.shape == (16, 16, 3, 3)


def test_original_untouched_and_idempotent(t0_random) -> None:
    before = copy.deepcopy(t0_random.state_dict())
    once = partialnet.reparameterize(t0_random)
    for key, value in t0_random.state_dict().items():
        assert torch.equal(value, before[key]), key
    twice = partialnet.reparameterize(once)
    assert isinstance(twice, InferencePartialNet)
    assert once.state_dict().keys() == twice.state_dict().keys()
    for key, value in once.state_dict().items():
        assert torch.equal(value, twice.state_dict()[key]), key


def test_rebake_for_another_size_matches_fresh_reparam(t0_random) -> None:
    at224 = partialnet.reparameterize(t0_random, 224)
    rebaked = partialnet.reparameterize(at224, (256, 320))
    fresh = partialnet.reparameterize(t0_random, (256, 320))
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        assert torch.allclose(rebaked(x), fresh(x), rtol=0, atol=1e-6)


def test_no_training_layers_left(t0_random) -> None:
    fast = partialnet.reparameterize(t0_random)
    # isinstance, not type membership: subclasses (LayerNorm2d, SyncBatchNorm) count too.
    banned = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout, torch.nn.LayerNorm)
    left = [name for name, m in fast.named_modules() if isinstance(m, banned)]
    assert left == []
    # The eager model does have them, so the check above looks at the right kinds.
    assert any(isinstance(m, LayerNorm2d) for m in t0_random.modules())


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("t0", {}), ("t1", {}), ("t0", {"auto_div": True}), ("t0", {"features_only": True})],
    ids=["t0", "t1-spatial", "t0-dpconv", "t0-backbone"],
)
def test_float64_model_folds_in_float64(name: str, overrides: dict) -> None:
    torch.manual_seed(7)
    model = randomize(partialnet.create_model(name, **overrides), seed=7).eval().double()
    if overrides.get("auto_div"):
        set_dpconv_splits(model, [2, 4])
    fast = partialnet.reparameterize(model, 64)
    assert {t.dtype for t in fast.state_dict().values()} == {torch.float64}
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ref, out = model(x), fast(x)
    # float64 re-association of the folds moves outputs by ~1e-15 relative (measured
    # 1.1e-15 to 1.7e-15); any float32 step on the way would show as ~1e-7, far above 1e-12.
    pairs = zip(ref, out, strict=True) if isinstance(ref, list) else [(ref, out)]
    for a, b in pairs:
        assert b.dtype == torch.float64
        assert _rel_diff(a, b) <= 1e-12


@pytest.mark.parametrize("name", ["t0", "t1"])
def test_meta_model_folds_on_meta(name: str) -> None:
    # No values on meta: this checks that every tensor the fold creates follows the weights'
    # device and dtype (a CPU tensor mixed in would fail, or land in the result).
    model = partialnet.create_model(name).eval().to(device="meta", dtype=torch.float64)
    fast = partialnet.reparameterize(model, 64)
    tensors = dict(fast.named_parameters()) | dict(fast.named_buffers())
    assert tensors
    wrong = {k: (t.device, t.dtype) for k, t in tensors.items() if not t.is_meta}
    wrong |= {k: (t.device, t.dtype) for k, t in tensors.items() if t.dtype != torch.float64}
    assert wrong == {}


def test_meta_dpconv_model_is_refused_with_the_reason() -> None:
    model = partialnet.create_model("t0", auto_div=True).eval().to("meta")
    with pytest.raises(ConfigError, match="meta device"):
        partialnet.reparameterize(model, 64)


def test_other_size_is_refused(t0_random) -> None:
    fast = partialnet.reparameterize(t0_random, 224)
    with pytest.raises(InputShapeError, match="built for 224x224"):
        fast(torch.randn(1, 3, 256, 256))
    with pytest.raises(InputShapeError, match="multiples of 32"):
        partialnet.reparameterize(t0_random, 200)


def test_traces_with_export_jit_and_fx() -> None:
    torch.manual_seed(5)
    model = randomize(partialnet.create_model("t1"), seed=5).eval()
    fast = partialnet.reparameterize(model)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = fast(x)
        exported = torch.export.export(fast, (x,)).module()
        traced = torch.jit.trace(fast, x)
        graph = torch.fx.symbolic_trace(fast)
        for out in (exported(x), traced(x), graph(x)):
            assert torch.allclose(out, ref, rtol=0, atol=1e-6)


def test_backbone_inference_form() -> None:
    torch.manual_seed(6)
    model = randomize(partialnet.create_model("t0", features_only=True), seed=6).eval()
    fast = partialnet.reparameterize(model)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(model(x), fast(x), strict=True):
            assert _rel_diff(a, b) <= REL_TOL


def test_upstream_checkpoint_in_inference_form() -> None:
    import numpy as np
    from conftest import UPSTREAM_LOGITS_MAX_REL, fixture_path

    model = partialnet.load_checkpoint(fixture_path("upstream_t0_224.ckpt"))
    fast = partialnet.reparameterize(model)
    x = torch.from_numpy(np.load(fixture_path("upstream_t0_224_input.npy")))
    ref = np.load(fixture_path("upstream_t0_224_logits.npy"))
    with torch.no_grad():
        out = fast(x).numpy()
    assert np.abs(out - ref).max() <= UPSTREAM_LOGITS_MAX_REL * np.abs(ref).max()
