"""The command-line tools' progress: the library logs to the ``partialnet`` logger, and a CLI
prints those records to stderr for as long as it runs (one line each, in its own format)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

ROOT = "partialnet"


class _LineHandler(logging.Handler):
    def __init__(self, line: Callable[[logging.LogRecord, str], str | None]) -> None:
        super().__init__()
        self._line = line

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            line = self._line(record, text)
            if line is not None:
                print(line, file=sys.stderr, flush=True)
        except Exception:  # a logging failure must not fail the export
            self.handleError(record)


@contextlib.contextmanager
def progress_to_stderr(
    line: Callable[[logging.LogRecord, str], str | None], level: int = logging.INFO
) -> Iterator[None]:
    """Print every ``partialnet`` record at ``level`` and above as ``line(record, text)``
    (None: skip it); ``text`` is the message, prefixed "warning: " for warnings. The logger's
    level, propagation and handlers are as they were afterwards."""
    logger = logging.getLogger(ROOT)
    handler = _LineHandler(line)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # printed here; not again by a handler the host configured
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
