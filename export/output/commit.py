"""The one step of an export that changes the output directory.

Everything before it (building, gating) happens in a scratch directory inside the output
directory, so a failed, rejected or interrupted export changes nothing. ``commit`` first
checks the destination (writable, no name taken by something of another kind, enough free
space) and writes the new manifest into scratch; only then, with SIGINT and SIGTERM held
back for the few milliseconds it takes, it renames every passing artifact into place, removes
what ``--replace`` drops, and renames the manifest in last. A rename that fails in that step
puts back what had already moved. Only SIGKILL (or a power cut) inside those milliseconds
can leave a mix.

Scratch directories carry the pid of their export; the next export into the same directory
removes those whose process is gone (a SIGKILLed export cannot clean up after itself).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from partialnet.export.errors import ExportFailure, OutputPathError
from partialnet.export.output.files import describe_os_error, size_bytes
from partialnet.export.output.manifest import MANIFEST_NAME, Manifest

log = logging.getLogger(__name__)

SCRATCH_PREFIX = ".partialnet-export-"
OWNER_FILE = "owner.json"
# Room left beyond what the commit writes: a file system at its last megabytes fails in
# ways (metadata blocks, journal) that the byte count alone does not predict.
FREE_SPACE_MARGIN = 16 << 20
# A scratch directory without an owner file is either being created this instant or was
# left by a version that wrote none; the latter are removed once this old.
UNOWNED_GRACE_S = 3600.0


@dataclass(frozen=True)
class Staged:
    """A passing artifact in scratch and the name it takes in the output directory."""

    staged: Path
    name: str


# --- scratch ------------------------------------------------------------------------------


def _owner_alive(owner: dict[str, object]) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # another machine's export (a shared file system): not ours to judge
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def remove_stale_scratch(out_dir: Path) -> list[Path]:
    """Remove scratch directories in ``out_dir`` whose export process is gone."""
    removed = []
    for entry in out_dir.glob(f"{SCRATCH_PREFIX}*"):
        if entry.is_symlink() or not entry.is_dir():
            continue
        try:
            owner = json.loads((entry / OWNER_FILE).read_text())
            stale = not _owner_alive(owner if isinstance(owner, dict) else {})
        except FileNotFoundError:
            stale = time.time() - entry.stat().st_mtime > UNOWNED_GRACE_S
        except (OSError, ValueError):
            stale = False
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                log.info("removed %s, left by an export that no longer runs", entry)
                removed.append(entry)
    return removed


@contextlib.contextmanager
def scratch_dir(out_dir: Path) -> Iterator[Path]:
    """A scratch directory inside ``out_dir`` (same file system: placing is a rename),
    marked with this process's pid, removed on the way out."""
    remove_stale_scratch(out_dir)
    path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=out_dir))
    try:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        (path / OWNER_FILE).write_text(json.dumps(owner))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- signals ------------------------------------------------------------------------------


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then deliver them as they came.

    Only the main thread can set handlers; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(received):
            signal.raise_signal(sig)  # the restored handler: KeyboardInterrupt, or exit


# --- checks -------------------------------------------------------------------------------


def check_names(out_dir: Path, names: dict[str, bool]) -> None:
    """Refuse when a name an artifact takes (``name -> is a directory``) holds something of
    another kind or a link; called before building and again at the commit."""
    for name, is_dir in names.items():
        final = out_dir / name
        if final.is_symlink():
            raise OutputPathError(
                f"{final} is a symbolic link where the export writes {name}: remove it or "
                "choose another --output"
            )
        if final.exists() and final.is_dir() != is_dir:
            kind = "directory" if final.is_dir() else "file"
            raise OutputPathError(
                f"{final} exists and is a {kind}, not an earlier {name}: move it away or "
                "choose another --output"
            )
    if (out_dir / MANIFEST_NAME).is_dir():
        raise OutputPathError(
            f"{out_dir / MANIFEST_NAME} is a directory: move it away or choose another --output"
        )


def _check_space(out_dir: Path, items: list[Staged], manifest_bytes: int) -> None:
    """Renames within one file system need no space; anything that would be copied (a name
    on another mount) and the manifest do."""
    here = out_dir.stat().st_dev
    moving = sum(
        size_bytes(i.staged)
        for i in items
        if (out_dir / i.name).exists() and (out_dir / i.name).stat().st_dev != here
    )
    needed = moving + manifest_bytes + FREE_SPACE_MARGIN
    free = shutil.disk_usage(out_dir).free
    if free < needed:
        raise ExportFailure(
            f"placing the artifacts failed: no space left on the device holding {out_dir} "
            f"({free / 2**20:.0f} MiB free, {needed / 2**20:.0f} MiB needed): free some space "
            "or choose another --output; earlier artifacts were left as they were"
        )


def disk_is_short(where: Path, need: int = 0) -> bool:
    """Whether the file system under ``where`` has less than ``need`` bytes plus the margin
    free: how an SDK's opaque write error is told apart from its other errors."""
    try:
        return shutil.disk_usage(where).free < need + FREE_SPACE_MARGIN
    except OSError:
        return False


# --- the commit ---------------------------------------------------------------------------


def commit(
    out_dir: Path,
    scratch: Path,
    items: list[Staged],
    manifest: Manifest,
    remove: Sequence[Path] = (),
) -> None:
    """Place ``items`` and ``manifest`` in ``out_dir`` in one step; ``remove``: earlier
    artifacts (resolved inside ``out_dir``) that ``--replace`` drops."""
    check_names(out_dir, {i.name: i.staged.is_dir() for i in items})
    text = json.dumps(manifest.to_dict(), indent=2) + "\n"
    _check_space(out_dir, items, len(text.encode()))
    aside = scratch / ".previous"
    try:
        aside.mkdir()
        staged_manifest = scratch / MANIFEST_NAME
        with open(staged_manifest, "w") as fh:  # written (and synced) before anything moves
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        staged_manifest.chmod(0o666 & ~_umask())
    except OSError as exc:
        raise ExportFailure(describe_os_error(exc, "writing the manifest", out_dir)) from exc
    moved: list[tuple[Path, Path | None, Path]] = []  # (final, its old copy aside, staged)
    with signals_deferred():
        try:
            for n, item in enumerate(items):
                final = out_dir / item.name
                old = None
                if final.exists():
                    old = aside / f"{n}-{item.name}"
                    os.replace(final, old)
                moved.append((final, old, item.staged))
                os.replace(item.staged, final)
            taken = {os.path.realpath(m[0]) for m in moved}
            for n, path in enumerate(remove):
                if path.exists() and os.path.realpath(path) not in taken:
                    os.replace(path, aside / f"removed-{n}-{path.name}")
                    moved.append((path, aside / f"removed-{n}-{path.name}", path))
            os.replace(staged_manifest, out_dir / MANIFEST_NAME)
        except OSError as exc:
            _roll_back(moved)
            raise ExportFailure(describe_os_error(exc, "placing the artifacts", out_dir)) from exc
    for final, _old, staged in moved:
        # Placements are announced per target by the caller; removals only here.
        removed = staged == final
        log.log(
            logging.INFO if removed else logging.DEBUG,
            "%s %s",
            "removed" if removed else "placed",
            final,
        )


def _roll_back(moved: list[tuple[Path, Path | None, Path]]) -> None:
    """Undo the renames of a commit that could not finish, newest first."""
    for final, old, staged in reversed(moved):
        with contextlib.suppress(OSError):
            if final.exists() and staged != final:
                os.replace(final, staged)
            if old is not None and old.exists():
                os.replace(old, final)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
