"""Reading checkpoint files: format sniffing, safe unpickling, the model's own tensors.

Lightning ``.ckpt``, plain ``.pth`` (zip-based torch files) and ``.safetensors``, told apart
by their bytes, not their names.

A torch checkpoint is a pickle, and unpickling may call any importable function. We give
torch.load an unpickler whose `find_class` resolves only an allow-list (tensor rebuild
functions, containers, dtypes) and maps Lightning's AttributeDict and argparse.Namespace to
inert stand-ins, so neither Lightning nor any class the file names is imported or built.
Any other global aborts the load before it is called. There is no unsafe fallback.
"""

from __future__ import annotations

import _compat_pickle
import collections
import dataclasses
import os
import pickle
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from partialnet.errors import (
    CheckpointError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    missing_dependency,
)

PathLike = str | os.PathLike[str]
_HINT = ". Wrong variant or num_classes? Pass the right --variant (variant=...)"


class _AttributeDictStandIn(dict):  # type: ignore[type-arg]
    """Inert stand-in for Lightning's AttributeDict: a dict, with no behaviour of its own."""

    def __setstate__(self, state: object) -> None:  # the real class keeps no instance state
        pass


class _NamespaceStandIn:
    """Inert stand-in for argparse.Namespace: keeps the pickled attribute dict as data."""

    def __setstate__(self, state: object) -> None:
        self.fields = dict(state) if isinstance(state, dict) else {}


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    # Protocol 2 pickles `bytes` as _codecs.encode(text, 'latin1'); refusing other codecs keeps
    # the file from choosing which codec module gets looked up.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return text.encode("latin1")


_REBUILDS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter")
_ALLOWED: dict[str, Any] = {
    **{f"torch._utils.{n}": getattr(torch._utils, n) for n in _REBUILDS},
    # dtype objects (torch.float16, ...) are inert values some tensor rebuilds name.
    **{f"torch.{n}": v for n, v in vars(torch).items() if isinstance(v, torch.dtype)},
    "torch.Size": torch.Size,
    "torch.device": torch.device,
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.complex": complex,
    "_codecs.encode": _latin1_bytes,
    # Inert stand-ins: Lightning's hyper_parameters containers, without Lightning.
    "lightning_fabric.utilities.data.AttributeDict": _AttributeDictStandIn,
    "lightning.fabric.utilities.data.AttributeDict": _AttributeDictStandIn,
    "pytorch_lightning.utilities.parsing.AttributeDict": _AttributeDictStandIn,
    "argparse.Namespace": _NamespaceStandIn,
}


class _UnsafeGlobal(pickle.UnpicklingError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _RestrictedUnpickler(pickle.Unpickler):
    """find_class is the only way a pickle reaches code; it resolves nothing off the list.

    torch.load subclasses this and answers typed-storage names (torch.FloatStorage) itself
    with inert dtype markers before they get here.
    """

    def find_class(self, module: str, name: str) -> Any:
        # An overridden find_class sees protocol-2 names unmapped (__builtin__, copy_reg).
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        full = f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"
        if full not in _ALLOWED:
            raise _UnsafeGlobal(full)
        return _ALLOWED[full]


# torch.load takes a *module* and uses only its .Unpickler for zip files; it would call
# .load for the legacy format, which has none here (non-zip files never reach torch.load).
_SAFE_PICKLE = types.ModuleType("partialnet_restricted_pickle")
_SAFE_PICKLE.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]


@dataclasses.dataclass
class LoadedCheckpoint:
    state_dict: dict[str, Tensor]
    hparams: dict[str, Any]
    fmt: str
    epoch: int | None = None
    global_step: int | None = None


def _plain(value: Any) -> Any:
    """Stand-ins, OrderedDicts, tuples, dtypes to plain dicts/lists/scalars: data only."""
    if isinstance(value, _NamespaceStandIn):
        return _plain(getattr(value, "fields", {}))  # NEWOBJ skips __init__; BUILD may not run
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    return value.tolist() if isinstance(value, Tensor) else value


def _torch_load(p: Path) -> Any:
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
            # torch's zip reader does not check CRCs: a corrupted tensor would load silently.
            corrupt = zf.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise CheckpointError(
            f"{p} is truncated or corrupt (unreadable zip archive): re-download or re-save it"
        ) from exc
    if corrupt is not None:
        raise CheckpointError(f"{p} is corrupt (bad checksum in {corrupt}): re-download it")
    # torch.load would hand a TorchScript archive to torch.jit.load, i.e. run its code.
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        raise CheckpointError(
            f"{p} is a TorchScript archive, not a checkpoint: save the weights with "
            "torch.save(model.state_dict(), path) and load that"
        )
    if not any(n.endswith("data.pkl") for n in names):
        raise CheckpointError(f"{p} is a zip file but not a torch checkpoint (no data.pkl)")
    if os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        # torch then refuses any pickle_module, ours included; we never fall back to another.
        raise CheckpointError(
            f"cannot read {p}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which stops torch.load from "
            "using partialnet's restricted unpickler; unset it for this command"
        )
    try:
        # weights_only=False is what lets torch use our unpickler; its allow-list is stricter.
        # A file object, not the path: torch.load routes paths ending in .safetensors by name.
        with p.open("rb") as f:
            return torch.load(f, map_location="cpu", pickle_module=_SAFE_PICKLE, weights_only=False)
    except _UnsafeGlobal as exc:
        raise UnsafeCheckpointError(
            f"refused {p}: its pickle names the global '{exc.name}', which is not on the "
            "allow-list of tensor and container types; the file was not loaded and nothing "
            "from it was executed. Load only files you trust, re-saved as plain state dicts"
        ) from exc
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"could not read {p} ({reason}): re-save the checkpoint") from exc


def _load_safetensors(p: Path) -> dict[str, Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise missing_dependency("safetensors", "safetensors", "Reading .safetensors") from exc
    try:
        return load_file(str(p), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"could not read {p} as safetensors ({exc}): re-save it") from exc


def _model_weights(obj: Mapping[Any, Any], p: object) -> dict[str, Tensor]:
    """The network's own tensors, from a bare state dict or a {'state_dict'|'model': ...}."""
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    for prefix in ("model.", "module."):  # Lightning's attribute name; DDP's wrapper
        if any(isinstance(k, str) and k.startswith(prefix) for k in obj):
            # Anything else (criterion.teacher_model.* of a distillation run) belongs to the
            # training wrapper, not to PartialNet.
            n = len(prefix)
            obj = {k[n:]: v for k, v in obj.items() if isinstance(k, str) and k.startswith(prefix)}
            break
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise CheckpointError(f"{p}: entry {k!r} is a {type(v).__name__}, not a tensor")
    return dict(obj)


def read_checkpoint(path: PathLike) -> LoadedCheckpoint:
    p = Path(path)
    try:
        if p.is_dir():
            raise CheckpointError(f"{p} is a directory: pass the checkpoint file inside it")
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(16)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {p} does not exist: check the path") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc.strerror}") from exc
    if size == 0:
        raise CheckpointError(f"checkpoint {p} is empty: re-download or re-save it")
    # safetensors: a u64 little-endian header length, then the JSON header.
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return LoadedCheckpoint(_model_weights(_load_safetensors(p), p), {}, "safetensors")
    if not head.startswith(b"PK\x03\x04"):
        raise CheckpointError(
            f"{p} is not a format we read (zip-based torch .ckpt/.pth or .safetensors); "
            "legacy pre-1.6 torch files must be re-saved with a current torch"
        )
    obj = _torch_load(p)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a state dict")
    try:
        hparams = _plain(obj.get("hyper_parameters") or {})
    except RecursionError as exc:  # a self-referencing structure
        raise CheckpointError(f"{p}: its hyper_parameters are malformed (cyclic)") from exc
    lightning = "pytorch-lightning_version" in obj or "hyper_parameters" in obj
    epoch, step = obj.get("epoch"), obj.get("global_step")
    return LoadedCheckpoint(
        _model_weights(obj, p),
        hparams if isinstance(hparams, dict) else {},
        "lightning" if lightning else "pth",
        epoch if isinstance(epoch, int) else None,
        step if isinstance(step, int) else None,
    )


def load_state_dict(path: PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The model's state dict (no `model.` prefix) and the training hyper-parameters."""
    loaded = read_checkpoint(path)
    return loaded.state_dict, loaded.hparams


def load_weights_into(model: nn.Module, path_or_state: PathLike | Mapping[str, Tensor]) -> None:
    """Strict load: every key and shape must match; only old files' num_batches_tracked may lack."""
    if isinstance(path_or_state, Mapping):
        state = _model_weights(path_or_state, "state dict")
    else:
        state = read_checkpoint(path_or_state).state_dict
    own = model.state_dict()
    # BatchNorm gained num_batches_tracked in torch 0.4.1; eval never reads it.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or bad:
        lines = {
            "missing": [f"{k} {tuple(own[k].shape)}" for k in missing],
            "unexpected": [f"{k} {tuple(state[k].shape)}" for k in unexpected],
            "shape mismatch": [
                f"{k} has {tuple(state[k].shape)}, model expects {tuple(own[k].shape)}" for k in bad
            ],
        }
        parts = [
            f"{label}: {', '.join(ks[:5])}" + (f" (+{len(ks) - 5} more)" if ks[5:] else "")
            for label, ks in lines.items()
            if ks
        ]
        name = getattr(getattr(model, "cfg", None), "name", type(model).__name__)
        raise CheckpointMismatchError(
            f"checkpoint does not match the model ({name}): " + "; ".join(parts) + _HINT
        )
    full = {**{k: v for k, v in own.items() if k not in state}, **state}
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied into the parameter
        raise CheckpointMismatchError(f"could not copy the weights into the model: {exc}") from exc
