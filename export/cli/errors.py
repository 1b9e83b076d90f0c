"""How the command-line tools end: one line per failure, never a traceback unless asked.

Exit codes: 0 done, 1 a failure (export, parity, runtime, disk), 2 bad usage, 130
interrupted. ``--debug`` or ``PARTIALNET_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from partialnet.errors import PartialNetError, UsageError, exception_chain

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_ENV = "PARTIALNET_DEBUG"


def debug_requested(flag: bool = False) -> bool:
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def one_line(text: object, limit: int = 600) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _os_error_text(exc: OSError) -> str:
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return f"{exc.strerror or exc}{where}: check the path, free space and permissions"


def run_guarded(
    prog: str,
    body: Callable[[], int],
    *,
    debug: bool = False,
    on_failure: Callable[[PartialNetError], None] | None = None,
    interrupted: str = "interrupted; finished artifacts were kept, nothing partial was left",
) -> int:
    """Run ``body`` and turn every way it can fail into one line on stderr and an exit code.

    ``on_failure`` may print more (a summary table) for a PartialNetError that is not bad
    usage, before the line.
    """
    show_trace = debug_requested(debug)

    def report(kind: str, message: str, code: int) -> int:
        if show_trace:
            traceback.print_exc(file=sys.stderr)
        print(f"{prog}: {kind}: {one_line(message)}", file=sys.stderr, flush=True)
        return code

    try:
        return body()
    except UsageError as exc:
        return report("error", str(exc), EXIT_USAGE)
    except PartialNetError as exc:
        if _wraps_interrupt(exc):  # a failure line built around an interrupt: still one
            return report("stopped", interrupted, EXIT_INTERRUPTED)
        if on_failure is not None:
            on_failure(exc)
        return report("failed", str(exc), EXIT_FAILED)
    except OSError as exc:
        return report("failed", _os_error_text(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return report("stopped", interrupted, EXIT_INTERRUPTED)
    except MemoryError:
        return report(
            "failed", "out of memory: use a smaller batch or variant, or a larger machine", 1
        )
    except Exception as exc:  # a bug or an SDK's own error: still one line, trace on request
        if _wraps_interrupt(exc):  # torch.onnx's exporter wraps KeyboardInterrupt in its own
            return report("stopped", interrupted, EXIT_INTERRUPTED)
        hint = "" if show_trace else f"; rerun with --debug (or {DEBUG_ENV}=1) for the traceback"
        return report("failed", f"{type(exc).__name__}: {exc}{hint}", EXIT_FAILED)


def _wraps_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised from or during a KeyboardInterrupt."""
    return any(isinstance(e, KeyboardInterrupt) for e in exception_chain(exc))
