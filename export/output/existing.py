"""What an output directory already holds, and whether a new export may join it.

Exports of the same model (variant, input size, checkpoint, logits or stage maps) share a
directory: each precision and target has its own file, and the manifest lists them all.
Another model's export is refused before anything is built, unless ``--replace`` asks to
remove its listed files in the commit step; otherwise its files would stay on disk unlisted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from partialnet.export.errors import OutputPathError
from partialnet.export.output.manifest import (
    MANIFEST_NAME,
    ArtifactRecord,
    Manifest,
    ManifestError,
    read_manifest,
    resolve_artifact,
)

log = logging.getLogger(__name__)


@dataclass
class Earlier:
    """Records kept in the new manifest, files the commit removes (``--replace``), and the
    gate references the kept records name (removed once no record names them)."""

    keep: list[ArtifactRecord] = field(default_factory=list)
    remove: list[Path] = field(default_factory=list)
    references: dict[str, Path] = field(default_factory=dict)


def describe_model(manifest: Manifest) -> str:
    variant, size, sha, features = manifest.identity
    weights = f"checkpoint sha256 {str(sha)[:12]}" if sha else "random weights"
    shape = "x".join(str(s) for s in size) if size else "?"
    return f"{variant}{' --features' if features else ''} at {shape} from {weights}"


def _resolvable(out_dir: Path, records: list[ArtifactRecord]) -> list[tuple[ArtifactRecord, Path]]:
    """Records whose file (and reference, if any) is in ``out_dir``; others (missing, or
    pointing out of it) are dropped from the new manifest and never touched."""
    found = []
    for record in records:
        try:
            path = resolve_artifact(out_dir, record)
            if record.reference:
                resolve_artifact(out_dir, record.reference)
            found.append((record, path))
        except ManifestError as exc:
            log.warning("dropping a manifest record: %s", exc)
    return found


def _references(out_dir: Path, records: list[ArtifactRecord]) -> dict[str, Path]:
    return {
        str(r.reference["path"]): resolve_artifact(out_dir, r.reference)
        for r in records
        if r.reference
    }


def earlier_export(out_dir: Path, fresh: Manifest, replace: bool) -> Earlier:
    """What the export keeps of ``out_dir``'s manifest, or a one-line refusal (exit 2)."""
    if not (out_dir / MANIFEST_NAME).exists():
        return Earlier()
    hint = f"choose another --output, or pass --replace to remove what {out_dir} lists"
    try:
        earlier = read_manifest(out_dir)
    except ManifestError as exc:
        if replace:  # nothing trustworthy to remove: the new manifest takes its place
            return Earlier()
        raise OutputPathError(f"{exc}; {hint}") from exc
    if earlier.identity == fresh.identity:
        keep = [r for r, _ in _resolvable(out_dir, earlier.artifacts)]
        return Earlier(keep=keep, references=_references(out_dir, keep))
    if not replace:
        raise OutputPathError(
            f"{out_dir} holds an export of another model ({describe_model(earlier)}, this one "
            f"is {describe_model(fresh)}): {hint}"
        )
    found = _resolvable(out_dir, earlier.artifacts)
    references = _references(out_dir, [r for r, _ in found])
    return Earlier(remove=[path for _, path in found] + list(references.values()))
