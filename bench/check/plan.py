"""What a device check will run: the manifest's artifacts and their references, every file
proved inside DIR and equal to its recorded sha256 before anything runs or is written.

Bad usage (no manifest, a missing file, a path leaving DIR, an entry without a reference) is
a UsageError (exit 2); a file whose bytes changed since the export is a CheckFailure (exit 1).
Either is one line naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from partialnet.errors import PartialNetError, UsageError
from partialnet.export.output.manifest import MANIFEST_NAME, resolve_artifact
from partialnet.files import sha256_path


class CheckFailure(PartialNetError):
    """The check found something wrong with the export (exit code 1)."""


@dataclass(frozen=True)
class Planned:
    """One manifest entry, its file and its reference file, both verified."""

    entry: dict[str, Any]
    path: Path
    reference: Path

    @property
    def name(self) -> str:
        return str(self.entry["path"])


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise UsageError(f"export directory not found: {directory}")
    if not path.is_file():
        raise UsageError(
            f"no {MANIFEST_NAME} in {directory}: pass a partialnet-export output directory"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} cannot be read as JSON ({exc}): re-export") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise UsageError(f"{path} has no 'artifacts' list: re-export")
    if not manifest["artifacts"]:
        raise UsageError(f"{path} lists no artifacts: nothing to check")
    return manifest


def plan(directory: Path) -> tuple[dict[str, Any], list[Planned]]:
    """The manifest and its verified entries, in the manifest's order."""
    manifest = read_manifest(directory)
    where = directory / MANIFEST_NAME
    planned: list[Planned] = []
    digests: dict[Path, str] = {}
    for entry in manifest["artifacts"]:
        if not isinstance(entry, dict):
            raise UsageError(f"{where} has an artifact entry that is not an object: re-export")
        path = resolve_artifact(directory, entry)
        reference = entry.get("reference")
        if not isinstance(reference, dict):
            raise UsageError(
                f"{where} lists {entry['path']} without a reference (exported with --no-verify "
                "or by an earlier version): re-export it to check it on a device"
            )
        ref_path = resolve_artifact(directory, reference)
        _same_sha(path, entry.get("sha256"), "the artifact", digests)
        _same_sha(ref_path, reference.get("sha256"), f"the reference of {entry['path']}", digests)
        planned.append(Planned(entry, path, ref_path))
    return manifest, planned


def _same_sha(path: Path, recorded: Any, what: str, digests: dict[Path, str]) -> None:
    if path not in digests:
        digests[path] = sha256_path(path)
    if digests[path] != recorded:
        raise CheckFailure(
            f"{path}: sha256 differs from the manifest's ({what} changed after the export): "
            "copy the export again or re-export"
        )
