"""Content digests of files on disk, shared by checkpoint loading and the exporters."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20  # 1 MiB: large checkpoints and engines are hashed without loading them whole


def sha256_path(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, or of a directory's files (relative names and bytes, sorted).

    A directory artifact (an ``.mlpackage``) hashes the same wherever it is moved.
    """
    root = Path(path)
    digest = hashlib.sha256()
    is_dir = root.is_dir()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if is_dir else [root]
    for file in files:
        if is_dir:
            digest.update(str(file.relative_to(root)).encode())
        with open(file, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
