"""One exception type per kind of user mistake; every message names the fix.

The CLIs map ``UsageError`` subclasses to exit code 2 and ``ExportFailure``/``ParityFailure``
(defined in ``partialnet.export``) to exit code 1.
"""

from __future__ import annotations


class PartialNetError(Exception):
    """Base of every error this toolchain raises on purpose."""


class UsageError(PartialNetError):
    """The user asked for something that cannot be done as asked (exit code 2)."""


class UnknownVariantError(UsageError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(UsageError, ValueError):
    """A model configuration that PartialNet cannot be built with."""


class CheckpointError(UsageError):
    """A checkpoint that cannot be read: missing, truncated, of an unknown format."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle names a global outside the allow-list; nothing was executed."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not match the model it is loaded into."""


class InputShapeError(UsageError, ValueError):
    """An input the model cannot take: wrong channels, too small, not a multiple of 32."""


class MissingDependencyError(UsageError, ImportError):
    """An optional SDK is not installed; the message names the pip extra to install."""


def missing_dependency(module: str, extra: str, purpose: str) -> MissingDependencyError:
    """Build the error for an absent optional SDK, naming the extra that installs it."""
    return MissingDependencyError(
        f"{purpose} needs the '{module}' package, which is not installed: "
        f"pip install 'partialnet-export[{extra}]'"
    )


class DataError(UsageError):
    """An image folder that cannot be used: missing, without images, or of the wrong layout."""


class ImageReadError(DataError):
    """An image file that cannot be decoded; the message names the file."""


class ClassCountError(DataError):
    """A labelled folder whose class sub-folders do not match the model's classes."""


def first_line(exc: BaseException, limit: int | None = 300, default: str | None = None) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters: what a one-line
    error shows of an SDK's multi-line message (``--debug`` keeps the whole traceback).
    An empty message gives ``default`` (the exception's type name unless given)."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else (type(exc).__name__ if default is None else default)
    return text if limit is None else text[:limit]


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from or during, each once."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__cause__, item.__context__]
    return seen
