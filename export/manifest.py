"""manifest.json: what an output directory holds, how it was made, and how it verified."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from partialnet.errors import UsageError
from partialnet.export.files import atomic_file

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
        }

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @property
    def failed(self) -> list[ArtifactRecord]:
        return [a for a in self.artifacts if a.status != "ok"]


def load_manifest(directory: Path) -> Manifest | None:
    """The manifest already in ``directory`` (records of earlier exports), if readable."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        records = [ArtifactRecord(**a) for a in data.get("artifacts", [])]
        return Manifest(
            data["variant"],
            data.get("checkpoint"),
            data.get("versions", {}),
            data.get("input_size", []),
            records,
            data.get("data") or {},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_verified_manifest(directory: Path) -> dict[str, Any]:
    """manifest.json of an export directory as a dict, once every file it lists exists with
    its recorded sha256; otherwise a one-line UsageError saying what does not match."""
    from partialnet.export.files import sha256_path

    if not directory.is_dir():
        raise UsageError(f"artifacts directory not found: {directory}")
    path = directory / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except OSError:
        raise UsageError(
            f"no {MANIFEST_NAME} in {directory}: pass a partialnet-export output directory"
        ) from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest.get("artifacts"), list):
        raise UsageError(f"{path} has no 'artifacts' list")
    bad = []
    for entry in manifest["artifacts"]:
        file = directory / entry["path"]
        if not file.exists():
            bad.append(f"{entry['path']} (missing)")
        elif entry.get("sha256") != sha256_path(file):
            bad.append(f"{entry['path']} (sha256 differs)")
    if bad:
        raise UsageError(f"manifest does not match its files: {', '.join(bad)}")
    return manifest


def resolve_artifact(directory: Path, entry: Mapping[str, Any] | ArtifactRecord) -> Path:
    """The file or directory a manifest entry's ``path`` names, proved to lie inside
    ``directory``; a one-line UsageError (exit 2) for a missing, absolute, ``..`` or
    symlinked-out path. Standard library only: the device check runs it without torch.

    (Minimal version for the device check; issue 18 writes the complete one.)
    """
    root = Path(directory)
    raw = entry.get("path") if isinstance(entry, Mapping) else entry.path
    where = root / MANIFEST_NAME
    if not isinstance(raw, str) or not raw.strip():
        raise UsageError(f"{where} has an entry without a 'path': re-export")
    rel = PurePosixPath(raw.replace("\\", "/"))
    if rel.is_absolute() or PureWindowsPath(raw).drive or ".." in rel.parts:
        raise UsageError(
            f"{where} lists {raw!r}, which is not a path inside {root}: a manifest may name "
            "only files in its own directory"
        )
    real_root, real = os.path.realpath(root), os.path.realpath(root / rel)
    if os.path.commonpath([real_root, real]) != real_root:
        raise UsageError(f"{where} lists {raw!r}, which leads out of {root} (a symbolic link)")
    if not os.path.exists(real):
        raise UsageError(f"{where} lists {raw!r}, which is missing from {root}")
    return root / rel
