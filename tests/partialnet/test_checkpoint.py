"""Checkpoint loading: formats, the authors' Lightning layout, safety, and error messages."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import UPSTREAM_LOGITS_MAX_REL, fixture_path, randomize, set_dpconv_splits
from torch import nn

from partialnet.checkpoint import (
    config_from_checkpoint,
    load_checkpoint,
    load_state_dict,
    load_weights_into,
)
from partialnet.errors import (
    CheckpointError,
    CheckpointMismatchError,
    ConfigError,
    MissingDependencyError,
    UnsafeCheckpointError,
)
from partialnet.model import create_model

# The smallest valid input (32 px: every stage map is at least 1x1, the channel attention's
# std sees 2x2), so the forward passes stay cheap on a shared 2-core machine.
SMALL_INPUT = (1, 3, 32, 32)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # Small convolutions on a shared 2-core machine: OpenMP threads spinning against other
    # processes cost far more than they save. Restored afterwards for other modules.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_model(name: str, **overrides: Any) -> nn.Module:
    """Seeded weights with non-trivial BN/LN statistics and bias tables: all must load."""
    torch.manual_seed(0)
    return randomize(create_model(name, **overrides)).eval()


@pytest.fixture(scope="module")
def t0_10() -> nn.Module:
    return _random_model("t0", num_classes=10)


@pytest.fixture(scope="module")
def t1_10() -> nn.Module:
    return _random_model("t1", num_classes=10)


@pytest.fixture(scope="module")
def small_input() -> torch.Tensor:
    return torch.randn(SMALL_INPUT, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def t0_10_output(t0_10: nn.Module, small_input: torch.Tensor) -> torch.Tensor:
    return _outputs(t0_10, small_input)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _prefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v for k, v in state.items()}


# Same weights, same float32 CPU kernels, same input: outputs are bitwise equal, so the
# round trips below compare exactly (any tolerance could hide a wrongly loaded buffer).


def test_fixture_reproduces_the_authors_logits() -> None:
    ckpt = fixture_path("upstream_t0_224.ckpt")
    x = torch.from_numpy(np.load(fixture_path("upstream_t0_224_input.npy")))
    expected = torch.from_numpy(np.load(fixture_path("upstream_t0_224_logits.npy")))
    model = load_checkpoint(ckpt)
    assert not model.training
    assert model.cfg.name == "t0" and model.cfg.act == "gelu"
    bound = UPSTREAM_LOGITS_MAX_REL * expected.abs().max().item()
    torch.testing.assert_close(_outputs(model, x), expected, rtol=0, atol=bound)
    info = model.checkpoint_info
    assert info["format"] == "lightning" and info["path"] == str(ckpt)
    assert info["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert isinstance(info["epoch"], int) and isinstance(info["global_step"], int)


def test_fixture_config_from_shapes_matches_its_hyper_parameters() -> None:
    state, hparams = load_state_dict(fixture_path("upstream_t0_224.ckpt"))
    assert not any(k.startswith("model.") for k in state)
    assert type(hparams) is dict
    # Without the training cfg the architecture must be read off the shapes identically.
    assert config_from_checkpoint(state, {}, None) == config_from_checkpoint(state, hparams, None)


@pytest.mark.parametrize("prefix", [False, True], ids=["bare", "model-prefix"])
@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_pth_layouts_load_every_tensor(
    tmp_path: Path, t0_10: nn.Module, prefix: bool, wrapper: str | None
) -> None:
    state = t0_10.state_dict()
    payload: dict[str, Any] = _prefixed(state) if prefix else state
    if wrapper is not None:
        payload = {wrapper: payload}
    path = tmp_path / "weights.pth"
    torch.save(payload, path)
    loaded, hparams = load_state_dict(path)
    assert hparams == {}
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_pth_round_trip_gives_identical_outputs(
    tmp_path: Path, t0_10: nn.Module, small_input: torch.Tensor, t0_10_output: torch.Tensor
) -> None:
    path = tmp_path / "weights.pth"
    torch.save(t0_10.state_dict(), path)
    model = load_checkpoint(path)
    assert model.cfg.name == "t0" and model.cfg.num_classes == 10
    assert model.checkpoint_info["format"] == "pth"
    assert torch.equal(_outputs(model, small_input), t0_10_output)


def test_safetensors_round_trip_detected_by_content(
    tmp_path: Path, t0_10: nn.Module, small_input: torch.Tensor, t0_10_output: torch.Tensor
) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "weights.pth"  # misleading suffix on purpose: detection reads bytes
    save_file({k: v.contiguous() for k, v in t0_10.state_dict().items()}, str(path))
    model = load_checkpoint(path)
    assert model.checkpoint_info["format"] == "safetensors"
    assert torch.equal(_outputs(model, small_input), t0_10_output)


def test_dpconv_checkpoint_keeps_its_learned_splits(
    tmp_path: Path, small_input: torch.Tensor
) -> None:
    source = _random_model("t0", auto_div=True, num_classes=10)
    set_dpconv_splits(source, [1, 2, 4, 8])  # eval convolves one_channel: it must load
    path = tmp_path / "dpconv.pth"
    torch.save(source.state_dict(), path)
    model = load_checkpoint(path)
    assert model.cfg.auto_div and model.cfg.name == "custom"  # not the registered t0
    assert torch.equal(_outputs(model, small_input), _outputs(source, small_input))


def test_torch_zip_named_safetensors_is_read_as_a_pickle(tmp_path: Path, t0_10: nn.Module) -> None:
    path = tmp_path / "weights.safetensors"  # torch.load alone would route this by suffix
    torch.save(t0_10.state_dict(), path)
    state, _ = load_state_dict(path)
    assert all(torch.equal(state[k], v) for k, v in t0_10.state_dict().items())


def test_missing_safetensors_package_names_the_extra(
    tmp_path: Path, t0_10: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"head.bias": t0_10.head.bias.detach().clone()}, str(path))
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(MissingDependencyError, match=r"partialnet-export\[safetensors\]"):
        load_state_dict(path)


def _install_fake_attribute_dict(monkeypatch: pytest.MonkeyPatch, qualified: str) -> type:
    """A dict subclass pickled under Lightning's name (pickle checks the name resolves)."""
    module_name, _, cls_name = qualified.rpartition(".")

    class FakeAttributeDict(dict):  # mimics Lightning's: attribute access to the keys
        def __getattr__(self, key: str) -> Any:
            try:
                return self[key]
            except KeyError as exc:
                raise AttributeError(key) from exc

    FakeAttributeDict.__module__ = module_name
    FakeAttributeDict.__name__ = FakeAttributeDict.__qualname__ = cls_name
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    setattr(sys.modules[module_name], cls_name, FakeAttributeDict)
    return FakeAttributeDict


def _save_lightning_ckpt(path: Path, model: nn.Module, attribute_dict: str) -> None:
    """A checkpoint in the authors' Lightning layout, hyper_parameters as an AttributeDict."""
    with pytest.MonkeyPatch.context() as mp:
        cls = _install_fake_attribute_dict(mp, attribute_dict)
        hparams = cls(
            embed_dim=48, depths=[1, 2, 8, 2], act_layer="GELU", use_spatial_attn=True,
            n_div=4, auto_div=False, use_channel_attn=True, patnet_t0=True, mlp_ratio=2,
            feature_dim=1280, patch_size=4, patch_stride=4, patch_size2=2, patch_stride2=2,
            layer_scale_init_value=0, norm_layer="BN", image_size=[256, 192],
            args=argparse.Namespace(lr=0.004, gpus=(0, 1)),
        )  # fmt: skip
        teacher = {"criterion.teacher_model.stem.weight": torch.randn(8, 3, 3, 3)}
        torch.save(
            {
                "epoch": 7,
                "global_step": 1234,
                "pytorch-lightning_version": "2.1.3",
                "state_dict": {**_prefixed(model.state_dict()), **teacher},
                "hyper_parameters": hparams,
                "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}}],
                "loops": {"fit_loop": {"epoch_progress": {"total": {"completed": 7}}}},
            },
            path,
        )


@pytest.mark.parametrize(
    "attribute_dict",
    [
        "lightning_fabric.utilities.data.AttributeDict",
        "pytorch_lightning.utilities.parsing.AttributeDict",
    ],
)
def test_lightning_hparams_read_without_lightning(
    tmp_path: Path, t1_10: nn.Module, attribute_dict: str
) -> None:
    top = attribute_dict.split(".")[0]
    path = tmp_path / "last.ckpt"
    _save_lightning_ckpt(path, t1_10, attribute_dict)
    assert top not in sys.modules  # the fake is gone: loading must not need the class

    state, hp = load_state_dict(path)
    assert top not in sys.modules
    assert set(state) == set(t1_10.state_dict())  # prefix stripped, teacher dropped
    assert type(hp) is dict and hp["args"] == {"lr": 0.004, "gpus": [0, 1]}
    cfg = config_from_checkpoint(state, hp, None)
    assert (cfg.name, cfg.act, cfg.num_classes) == ("t1", "gelu", 10)
    assert cfg.meta.input_size == (256, 192) and cfg.meta.num_classes == 10


def test_lightning_checkpoint_round_trip(
    tmp_path: Path, t1_10: nn.Module, small_input: torch.Tensor
) -> None:
    path = tmp_path / "last.ckpt"
    _save_lightning_ckpt(path, t1_10, "lightning_fabric.utilities.data.AttributeDict")
    model = load_checkpoint(path)
    assert model.cfg.name == "t1"
    assert model.checkpoint_info["format"] == "lightning"
    assert (model.checkpoint_info["epoch"], model.checkpoint_info["global_step"]) == (7, 1234)
    assert torch.equal(_outputs(model, small_input), _outputs(t1_10, small_input))


def test_hparams_activation_wins_and_a_nonstandard_net_is_custom(t1_10: nn.Module) -> None:
    state = t1_10.state_dict()
    hp = {"embed_dim": 48, "depths": [1, 2, 8, 2], "act_layer": "RELU", "use_spatial_attn": True}
    cfg = config_from_checkpoint(state, hp, None)
    assert cfg.act == "relu" and cfg.name == "custom"  # t1 is GELU: not a registered variant


def test_layer_scale_is_refused(t0_10: nn.Module) -> None:
    hp = {"embed_dim": 32, "depths": [1, 2, 8, 2], "layer_scale_init_value": 1e-6}
    with pytest.raises(ConfigError, match="layer scale"):
        config_from_checkpoint(t0_10.state_dict(), hp, None)


class _ShellExploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _EvalExploit(_ShellExploit):
    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize(
    ("exploit", "names"),
    [(_ShellExploit, ("posix.system", "os.system")), (_EvalExploit, ("builtins.eval",))],
)
@pytest.mark.parametrize(
    "loader",
    [load_state_dict, load_checkpoint, lambda p: create_model("t0", checkpoint=str(p))],
    ids=["load_state_dict", "load_checkpoint", "create_model"],
)
def test_malicious_pickle_is_refused_without_running(
    tmp_path: Path,
    t0_10: nn.Module,
    exploit: type[_ShellExploit],
    names: tuple[str, ...],
    loader: Callable[[Path], Any],
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _prefixed(t0_10.state_dict()), "x": exploit(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        loader(path)
    message = str(info.value)
    assert any(name in message for name in names), message
    assert "not loaded" in message and "nothing" in message
    assert not marker.exists()


def test_forced_weights_only_environment_still_loads(
    tmp_path: Path, t0_10: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With this set torch refuses any custom unpickler; torch's own weights-only one is used.
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "last.ckpt"
    _save_lightning_ckpt(path, t0_10, "lightning_fabric.utilities.data.AttributeDict")
    state, hp = load_state_dict(path)
    assert all(torch.equal(state[k], v) for k, v in t0_10.state_dict().items())
    assert hp["args"] == {"lr": 0.004, "gpus": [0, 1]}


def test_explicit_protocol_2_pickle_with_bytes_loads(tmp_path: Path, t0_10: nn.Module) -> None:
    # Protocol 2 (torch.save's default) spells bytes as _codecs.encode(text, 'latin1').
    path = tmp_path / "p2.ckpt"
    payload = {"state_dict": _prefixed(t0_10.state_dict()), "hyper_parameters": {"b": b"\xff"}}
    torch.save(payload, path, pickle_protocol=2)
    state, hp = load_state_dict(path)
    assert hp == {"b": b"\xff"} and set(state) == set(t0_10.state_dict())


@pytest.mark.parametrize("protocol", [4, 5])
def test_newer_pickle_protocol_is_one_line_error(
    tmp_path: Path, t0_10: nn.Module, protocol: int
) -> None:
    path = tmp_path / "p.ckpt"
    torch.save({"state_dict": _prefixed(t0_10.state_dict())}, path, pickle_protocol=protocol)
    with pytest.raises(CheckpointError, match=f"pickle protocol {protocol}.*re-save") as info:
        load_state_dict(path)
    assert "\n" not in str(info.value)


def _valid_ckpt(tmp_path: Path, model: nn.Module) -> Path:
    path = tmp_path / "ok.ckpt"
    torch.save({"state_dict": _prefixed(model.state_dict()), "epoch": 1}, path)
    return path


def _truncated(tmp_path: Path, model: nn.Module) -> Path:
    data = _valid_ckpt(tmp_path, model).read_bytes()
    (tmp_path / "half.ckpt").write_bytes(data[: len(data) // 2])
    return tmp_path / "half.ckpt"


def _bit_rot(tmp_path: Path, model: nn.Module) -> Path:
    # The zip directory is intact but tensor bytes are not: torch alone would load it.
    data = bytearray(_valid_ckpt(tmp_path, model).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    (tmp_path / "rot.ckpt").write_bytes(bytes(data))
    return tmp_path / "rot.ckpt"


def _torchscript(tmp_path: Path, model: nn.Module) -> Path:
    with warnings.catch_warnings():  # torch.jit is deprecated, but users still hold such files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(tmp_path / "ts.pt"))
    return tmp_path / "ts.pt"


def _write(name: str, data: bytes) -> Callable[[Path, nn.Module], Path]:
    def make(tmp_path: Path, model: nn.Module) -> Path:
        (tmp_path / name).write_bytes(data)
        return tmp_path / name

    return make


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_truncated, "truncated"),
        (_bit_rot, "corrupt"),
        (_write("empty.ckpt", b""), "empty"),
        (_write("noise.ckpt", os.urandom(256)), "not a format"),
        (lambda tmp_path, model: tmp_path, "directory"),
        (lambda tmp_path, model: tmp_path / "absent.ckpt", "does not exist"),
        (_torchscript, "TorchScript"),
    ],
    ids=["truncated", "bit-rot", "empty", "noise", "directory", "missing", "torchscript"],
)
def test_unreadable_files_raise_checkpoint_error(
    tmp_path: Path, t0_10: nn.Module, make: Callable[[Path, nn.Module], Path], words: str
) -> None:
    path = make(tmp_path, t0_10)
    with pytest.raises(CheckpointError, match=words) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_variant_lists_keys_and_shapes(tmp_path: Path, t1_10: nn.Module) -> None:
    path = _valid_ckpt(tmp_path, t1_10)
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights_into(create_model("t0", num_classes=10), path)
    message = str(info.value)
    assert "unexpected: stages.0.blocks.0.mlp.4." in message
    assert "patch_embed.proj.weight has (48, 3, 4, 4), model expects (32, 3, 4, 4)" in message
    assert "--variant" in message
    with pytest.raises(CheckpointMismatchError, match=r"patch_embed\.proj\.weight"):
        load_checkpoint(path, variant="t0")


def test_wrong_head_is_named_with_both_shapes(tmp_path: Path, t0_10: nn.Module) -> None:
    path = _valid_ckpt(tmp_path, t0_10)
    with pytest.raises(CheckpointMismatchError) as info:
        create_model("t0", checkpoint=str(path))
    assert "head.weight has (10, 1280), model expects (1000, 1280)" in str(info.value)


def test_missing_key_is_named_but_old_num_batches_tracked_is_tolerated(
    t0_10: nn.Module,
) -> None:
    state = dict(t0_10.state_dict())
    no_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    model = create_model("t0", num_classes=10).eval()
    load_weights_into(model, no_counters)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in no_counters.items())
    del no_counters["stages.0.blocks.0.mlp.3.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"missing: stages\.0\.blocks\.0\.mlp\.3\."):
        load_weights_into(model, no_counters)


def test_variant_argument_takes_classes_from_the_head(tmp_path: Path, t0_10: nn.Module) -> None:
    model = load_checkpoint(_valid_ckpt(tmp_path, t0_10), variant="t0")
    assert model.cfg.name == "t0" and model.cfg.num_classes == 10


def test_unknown_layout_without_hparams_asks_for_variant(tmp_path: Path) -> None:
    custom = create_model("t0", depths=(1, 1, 2, 1))
    path = tmp_path / "custom.pth"
    torch.save(custom.state_dict(), path)
    with pytest.raises(ConfigError, match="variant"):
        load_checkpoint(path)


def test_foreign_state_dict_is_not_partialnet() -> None:
    with pytest.raises(CheckpointMismatchError, match="not a PartialNet checkpoint"):
        config_from_checkpoint(nn.Linear(4, 2).state_dict(), {}, None)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, torch.uint8])
def test_non_float_tensors_where_the_model_holds_floats_are_refused(
    dtype: torch.dtype, tmp_path: Path, t0_10: nn.Module
) -> None:
    state = {k: v.clone() for k, v in t0_10.state_dict().items()}
    state["head.weight"] = state["head.weight"].to(dtype)  # would be cast silently
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=f"head.weight is {dtype}"):
        load_checkpoint(path, variant="t0")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_load_and_are_cast(
    dtype: torch.dtype, tmp_path: Path, t0_10: nn.Module
) -> None:
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in t0_10.state_dict().items()}
    path = tmp_path / "half.pth"
    torch.save(state, path)
    model = load_checkpoint(path, variant="t0")
    assert model.head.weight.dtype == torch.float32
    assert torch.equal(model.head.weight, state["head.weight"].float())
