"""Atomic artifact writing: a failed or interrupted export never leaves a truncated file
under the final name, and never replaces a good earlier artifact."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from partialnet.export.errors import OutputPathError

# Re-exported: one digest helper for checkpoints and artifacts (partialnet cannot import export).
from partialnet.files import sha256_path as sha256_path


def prepare_output_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it writable; one-line errors say what to do."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(
            f"output path {path} exists and is not a directory: "
            "remove it or choose another --output"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise OutputPathError(
            f"cannot write to output directory {path}: {exc.strerror}; choose another --output"
        ) from exc
    return path


def check_destination(final: Path, is_dir: bool) -> None:
    """Refuse to replace something of another kind (a directory where a file goes, ...)."""
    if final.exists() and final.is_dir() != is_dir:
        kind = "directory" if final.is_dir() else "file"
        raise OutputPathError(
            f"{final} exists and is a {kind}, not a previous artifact: "
            "move it away or choose another --output"
        )


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it replaces ``final`` atomically."""
    check_destination(final, is_dir=False)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial")
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; an artifact gets the permissions any new file would get.
    tmp_path.chmod(0o666 & ~_current_umask())
    try:
        yield tmp_path
        if not tmp_path.exists() or tmp_path.stat().st_size == 0:
            raise OSError(f"nothing was written for {final.name}")
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomically(final: Path, data: bytes | memoryview) -> None:
    """``final`` holds ``data`` completely, or is left as it was."""
    with atomic_file(final) as tmp, open(tmp, "wb") as fh:
        fh.write(memoryview(data))
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a not-yet-existing path to write a directory artifact (an .mlpackage) to; on
    success it takes the place of ``final`` (see ``place``)."""
    check_destination(final, is_dir=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
    try:
        staged = tmp / final.name
        yield staged
        if not staged.is_dir():
            raise OSError(f"nothing was written for {final.name}")
        place(staged, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def place(staged: Path, final: Path) -> None:
    """Move a finished artifact (file or directory) from scratch to ``final`` on the same
    filesystem, replacing an earlier one only at the last moment.

    A file is swapped by one atomic rename. A directory (a target whose artifact is one,
    ``TargetSpec.directory``) cannot be swapped atomically: the earlier one is renamed aside,
    the new one renamed in, and the earlier one deleted only then, or renamed back if the
    second rename fails. Readers may briefly see no directory, never a mix of the two.
    """
    is_dir = staged.is_dir()
    check_destination(final, is_dir=is_dir)
    if not is_dir:
        os.replace(staged, final)
        return
    aside = final.with_name(f".{final.name}.previous")
    shutil.rmtree(aside, ignore_errors=True)
    had_old = final.exists()
    if had_old:
        os.replace(final, aside)
    try:
        os.replace(staged, final)
    except BaseException:
        if had_old:
            os.replace(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def describe_os_error(exc: OSError, doing: str, where: Path) -> str:
    """One line for a failed write: what was being done, why, and what to do about it."""
    fixes = {
        errno.ENOSPC: f"no space left on the device holding {where}: free some space or "
        "choose another --output",
        errno.EDQUOT: f"disk quota exceeded under {where}: free some space or choose another "
        "--output",
        errno.EROFS: f"{where} is on a read-only file system: choose another --output",
        errno.EACCES: f"permission denied under {where}: choose a writable --output",
        errno.EPERM: f"operation not permitted under {where}: choose a writable --output",
    }
    reason = fixes.get(exc.errno or -1)
    if reason is None:
        reason = f"{exc.strerror or exc} ({where})"
    return f"{doing} failed: {reason}; earlier artifacts were left as they were"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def size_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
