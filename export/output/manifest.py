"""manifest.json: what an output directory holds, how it was made, and how it verified."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from partialnet.errors import UsageError
from partialnet.export.output.files import atomic_file

MANIFEST_NAME = "manifest.json"


@dataclass
class ArtifactRecord:
    target: str
    path: str  # relative to the manifest's directory
    precision: str
    input_shape: list[int]
    dynamic_batch: list[int] | None
    sha256: str
    bytes: int
    seconds: float
    parity: dict[str, Any]
    status: str = "ok"  # "ok" or "failed" (parity violation)
    details: dict[str, Any] = field(default_factory=dict)
    # With labelled eval images: dataset, images, top1, top5, reference_top1, top1_agreement.
    accuracy: dict[str, Any] | None = None
    # The gate's inputs, eager outputs and rule (partialnet.export.gate.reference): path
    # (relative, beside the artifact), sha256, bytes. None: exported with --no-verify.
    reference: dict[str, Any] | None = None
    # --precision auto: {"max_drop", "candidates": [{precision, latency_ms, top1, passed}],
    # "chosen"} (partialnet.export.auto); None otherwise.
    selection: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.target, self.precision, self.path)


@dataclass
class Manifest:
    variant: str
    checkpoint: dict[str, Any] | None
    versions: dict[str, str]
    input_size: list[int]
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    # How inputs are preprocessed, and which images the latest export checked and calibrated on.
    data: dict[str, Any] = field(default_factory=dict)
    features: bool = False  # the backbone's stage maps (--features), not logits

    @property
    def identity(self) -> tuple[object, ...]:
        """What makes two exports the same model: their artifacts may share a directory."""
        sha = self.checkpoint.get("sha256") if isinstance(self.checkpoint, dict) else None
        return (self.variant, list(self.input_size), sha, self.features)

    def add(self, record: ArtifactRecord) -> None:
        """Add or replace the record for the same target, precision and file."""
        self.artifacts = [a for a in self.artifacts if a.key != record.key]
        self.artifacts.append(record)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifacts": [asdict(a) for a in self.artifacts],
            "variant": self.variant,
            "checkpoint": self.checkpoint,
            "versions": self.versions,
            "input_size": self.input_size,
            "data": self.data,
            "features": self.features,
        }

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @property
    def failed(self) -> list[ArtifactRecord]:
        return [a for a in self.artifacts if a.status != "ok"]


class ManifestError(UsageError):
    """A manifest.json that cannot be trusted as written: malformed, or naming a path that
    leaves its directory or is not a regular file or directory."""


def load_manifest(directory: Path) -> Manifest | None:
    """The manifest already in ``directory`` (records of earlier exports), if readable."""
    try:
        return read_manifest(directory)
    except ManifestError:
        return None


def read_manifest(directory: Path) -> Manifest:
    """``directory``'s manifest.json; a ManifestError (exit 2) names what is malformed."""
    path = Path(directory) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    except ValueError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("variant"), str):
        raise ManifestError(f"{path} has no 'variant': it is not a partialnet-export manifest")
    entries = data.get("artifacts", [])
    if not isinstance(entries, list):
        raise ManifestError(f"{path} has no 'artifacts' list")
    records = []
    for index, entry in enumerate(entries):
        _entry_path(path, index, entry)
        if not isinstance(entry, dict):
            raise ManifestError(f"{path}: artifact entry {index} is not an object")
        try:
            records.append(ArtifactRecord(**entry))
        except TypeError as exc:
            raise ManifestError(f"{path}: artifact entry {index} is malformed ({exc})") from exc
    other = data.get("data") or {}
    return Manifest(
        data["variant"],
        data.get("checkpoint"),
        data.get("versions", {}),
        data.get("input_size", []),
        records,
        other,
        bool(data.get("features", isinstance(other, dict) and "backbone_rule" in other)),
    )


def _entry_path(manifest: Path, index: int | None, entry: object) -> str:
    """The entry's ``path`` string, or a ManifestError naming the entry."""
    if isinstance(entry, ArtifactRecord):
        target, path = entry.target, entry.path
    else:
        target = entry.get("target") if isinstance(entry, Mapping) else None
        path = entry.get("path") if isinstance(entry, Mapping) else None
    name = "artifact entry" + (f" {index}" if index is not None else "")
    name += f" ({target})" if isinstance(target, str) else ""
    if not isinstance(path, str) or not path.strip():
        raise ManifestError(f"{manifest}: {name} has no 'path': re-export into a new directory")
    return path


def resolve_artifact(
    directory: Path, entry: Mapping[str, Any] | ArtifactRecord, index: int | None = None
) -> Path:
    """The file or directory a manifest entry names, proved to lie inside ``directory``.

    Refused with one line (ManifestError, exit 2) before anything is opened: a missing or
    empty ``path``, an absolute path, ``..``, a symbolic link (also inside an artifact
    directory) that leads out of ``directory``, and anything but regular files and
    directories (a FIFO would block a reader forever, a device never ends). Uses only the
    standard library: the device check calls it where torch is not installed. ``index``
    (the entry's position) only makes the message more precise.
    """
    root = Path(directory)
    raw = _entry_path(root / MANIFEST_NAME, index, entry)
    rel = PurePosixPath(raw.replace("\\", "/"))
    if rel.is_absolute() or PureWindowsPath(raw).drive or ".." in rel.parts or not rel.parts:
        raise ManifestError(
            f"{root / MANIFEST_NAME} lists {raw!r}, which is not a path inside {root}: "
            "a manifest may name only files in its own directory"
        )
    real_root = os.path.realpath(root)
    real = os.path.realpath(root / rel)
    _inside(real_root, real, raw, root)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise ManifestError(f"{root / MANIFEST_NAME} lists {raw!r}, which is missing") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {root / rel}: {exc.strerror}") from exc
    if stat.S_ISDIR(mode):
        for sub_dir, dirs, files in os.walk(real):
            for name in dirs + files:
                sub = os.path.join(sub_dir, name)
                if os.path.islink(sub):
                    _inside(real_root, os.path.realpath(sub), raw, root)
                _regular_or_dir(os.stat(sub).st_mode, sub, raw, root)
    else:
        _regular_or_dir(mode, real, raw, root)
    return Path(real)


def _inside(real_root: str, real: str, raw: str, root: Path) -> None:
    if real == real_root or os.path.commonpath([real_root, real]) != real_root:
        raise ManifestError(
            f"{root / MANIFEST_NAME} lists {raw!r}, which leads out of {root} (a symbolic "
            "link): a manifest may name only files in its own directory"
        )


def _regular_or_dir(mode: int, path: str, raw: str, root: Path) -> None:
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ManifestError(
            f"{root / MANIFEST_NAME} lists {raw!r}, and {path} is not a regular file or "
            "directory (a FIFO, socket or device): refusing to read it"
        )


def read_verified_manifest(directory: Path) -> dict[str, Any]:
    """manifest.json of an export directory as a dict, once every file it lists lies inside
    the directory (``resolve_artifact``) and has its recorded sha256; otherwise a one-line
    UsageError saying what does not match. Nothing is hashed until every entry resolves."""
    from partialnet.export.output.files import sha256_path

    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"artifacts directory not found: {directory}")
    path = directory / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except OSError:
        raise UsageError(
            f"no {MANIFEST_NAME} in {directory}: pass a partialnet-export output directory"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise UsageError(f"{path} has no 'artifacts' list")
    for index, entry in enumerate(manifest["artifacts"]):
        _check_entry(path, index, entry)
    files = [resolve_artifact(directory, e, i) for i, e in enumerate(manifest["artifacts"])]
    bad = [
        f"{entry['path']} (sha256 differs)"
        for entry, file in zip(manifest["artifacts"], files, strict=True)
        if entry.get("sha256") != sha256_path(file)
    ]
    if bad:
        raise UsageError(f"manifest does not match its files: {', '.join(bad)}")
    return manifest


# What a reader needs of every entry, and the JSON type it must have.
_REQUIRED = {"target": str, "path": str, "precision": str, "input_shape": list, "sha256": str}


def _check_entry(manifest: Path, index: int, entry: object) -> None:
    """A ManifestError naming the entry when it lacks what readers use."""
    _entry_path(manifest, index, entry)
    assert isinstance(entry, Mapping)  # _entry_path refused anything else
    for key, kind in _REQUIRED.items():
        if not isinstance(entry.get(key), kind):
            raise ManifestError(
                f"{manifest}: artifact entry {index} ({entry.get('target')}) has no valid "
                f"{key!r}: re-export into a new directory"
            )
