"""One way to mute an SDK's chatter for the length of a call, and to restore it after.

SDKs (exporters, converters, quantizers) log advice per node, print progress bars and warn
about versions; none of it is actionable for a user of this
toolchain, and it would bury the progress lines. Everything muted here is restored on exit,
logger levels included.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def muted(
    loggers: Sequence[str] = (),
    *,
    stdout: bool = False,
    stderr: bool = False,
    python_warnings: bool = False,
    progress_bars: bool = False,
) -> Iterator[None]:
    """Within the block: ``loggers`` ("" is the root) log errors only; optionally stdout and
    stderr are swallowed, Python warnings ignored and tqdm bars disabled (TQDM_DISABLE)."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    old_tqdm = os.environ.get("TQDM_DISABLE")
    with contextlib.ExitStack() as stack:
        for logger, _ in saved:
            logger.setLevel(logging.ERROR)
        stack.callback(_restore_levels, saved)
        if progress_bars:
            os.environ["TQDM_DISABLE"] = "1"
            stack.callback(_restore_env, "TQDM_DISABLE", old_tqdm)
        if python_warnings:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        if stdout:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        if stderr:
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        yield


def _restore_levels(saved: list[tuple[logging.Logger, int]]) -> None:
    for logger, level in saved:
        logger.setLevel(level)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
