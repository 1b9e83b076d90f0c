"""Reading checkpoint files: format sniffing, safe unpickling, the model's own tensors.

Lightning ``.ckpt``, plain ``.pth`` (zip-based torch files) and ``.safetensors``, told apart
by their bytes, not their names.

A torch checkpoint is a pickle, and unpickling may call any importable function. We read it
with ``torch.load(weights_only=True)``: torch's own unpickler resolves only its allow-list of
tensor-rebuild functions, dtypes and containers, and builds, fills and calls nothing else.
Lightning's ``AttributeDict`` (under each module path it has had) is registered as a plain
dict and ``argparse.Namespace`` as an inert stand-in, so neither Lightning nor any class the
file names is imported. Any other global aborts the load before it is called; there is no
fallback to an unrestricted load.

Why this and not a restricted ``pickle.Unpickler`` of our own (an allow-list in
``find_class`` handed to torch.load as ``pickle_module``), measured with torch 2.13:
- both refuse every malicious pickle in tests/partialnet/test_checkpoint.py (``os.system``,
  ``eval``) before anything runs, and both read the authors' fixture (its hyper_parameters
  are a plain dict), faked Lightning AttributeDict/Namespace hyper-parameters and protocol-2
  pickles (torch.save's default, which Lightning uses);
- with ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` in the environment torch refuses any custom
  unpickler, so the hand-written one had to refuse to load; this one loads;
- the unpickling code is about half as long (~25 lines against ~55) and relies on torch's
  documented security boundary, not on how ``torch.load`` subclasses a ``pickle_module``;
- its allow-list is wider than the hand-written one (sparse, quantized and nested tensor
  rebuilds, bytearray, Counter, ``_codecs.encode`` with any codec), all of them data
  constructors that torch maintains and fixes as a security boundary; and it also checks
  NEWOBJ, BUILD and SETITEMS targets by type, which a ``find_class`` allow-list does not;
- it does not read pickle protocols 3-5 that use opcodes beyond protocol 2 (FRAME, BINBYTES);
  those files get a one-line error asking to re-save with torch.save's default protocol.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import warnings
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
    first_line,
    missing_dependency,
)

PathLike = str | os.PathLike[str]
_HINT = ". Wrong variant or num_classes? Pass the right --variant (variant=...)"


class _NamespaceStandIn:
    """Inert stand-in for argparse.Namespace: keeps the pickled attribute dict as data."""

    def __setstate__(self, state: object) -> None:
        self.fields = dict(state) if isinstance(state, dict) else {}


# Lightning's AttributeDict is read as a plain dict (weights_only fills only exact dicts).
_SAFE_GLOBALS: list[Any] = [
    (dict, "lightning_fabric.utilities.data.AttributeDict"),
    (dict, "lightning.fabric.utilities.data.AttributeDict"),
    (dict, "pytorch_lightning.utilities.parsing.AttributeDict"),
    (_NamespaceStandIn, "argparse.Namespace"),
]


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
            data_pkl = next((n for n in names if n.endswith("data.pkl")), None)
            protocol = _pickle_protocol(zf, data_pkl) if data_pkl and corrupt is None else 0
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
    if data_pkl is None:
        raise CheckpointError(f"{p} is a zip file but not a torch checkpoint (no data.pkl)")
    try:
        # A file object, not the path: torch.load routes paths ending in .safetensors by name.
        # A protocol above 2 gets our error below, not torch's warning.
        with (
            torch.serialization.safe_globals(_SAFE_GLOBALS),
            p.open("rb") as f,
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(p)
        if unsafe:
            raise UnsafeCheckpointError(
                f"refused {p}: its pickle names the global '{unsafe[0]}', which is not on the "
                "allow-list of tensor and container types; the file was not loaded and nothing "
                "from it was executed. Load only files you trust, re-saved as plain state dicts"
            ) from exc
        if protocol > 2:
            raise CheckpointError(
                f"cannot read {p}: it was saved with pickle protocol {protocol}, which torch's "
                "weights-only loader does not fully read; re-save it with torch.save(obj, path) "
                "and its default protocol (2)"
            ) from exc
        raise CheckpointError(f"could not read {p} ({first_line(exc, 200)}): re-save it") from exc
    except Exception as exc:
        raise CheckpointError(f"could not read {p} ({first_line(exc, 200)}): re-save it") from exc


def _unsafe_globals(p: Path) -> list[str]:
    """The globals off the allow-list that the file names; read by scanning, not loading."""
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.serialization.get_unsafe_globals_in_checkpoint(p)
    except Exception:  # an opcode the scanner does not know: no name to report
        return []


def _pickle_protocol(zf: zipfile.ZipFile, data_pkl: str) -> int:
    with zf.open(data_pkl) as f:
        head = f.read(2)
    return head[1] if len(head) == 2 and head[0] == pickle.PROTO[0] else 0


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
    # fp16/bf16/fp64 weights are cast to the model's float; integers, bools and complex
    # numbers where the model holds floats are not weights, and a cast would hide that.
    kinds = [
        k
        for k in state
        if k in own and own[k].is_floating_point() and not state[k].is_floating_point()
    ]
    if kinds:
        listed = ", ".join(f"{k} is {state[k].dtype}" for k in kinds[:5])
        more = f" (+{len(kinds) - 5} more)" if kinds[5:] else ""
        raise CheckpointMismatchError(
            f"checkpoint tensors of the wrong kind where the model holds floats: {listed}{more}; "
            "save the trained floating-point weights (fp32, fp16 or bf16)"
        )
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
