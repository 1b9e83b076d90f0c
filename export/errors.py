"""Export failures (exit code 1); bad usage is partialnet.errors.UsageError (exit code 2)."""

from __future__ import annotations

from partialnet.errors import PartialNetError, UsageError


class ExportFailure(PartialNetError):
    """Writing or checking an artifact failed; earlier artifacts are left as they were."""


class ParityFailure(ExportFailure):
    """An artifact's outputs differ from the eager model's beyond the stated tolerance.

    The artifact was not placed. Carries the manifest of what is in place and the rejected
    artifacts' records (with their numbers) so callers can show both.
    """

    def __init__(
        self, message: str, manifest: object | None = None, rejected: list | None = None
    ) -> None:
        super().__init__(message)
        self.manifest = manifest
        self.rejected = rejected or []


class OutputPathError(UsageError):
    """The output location cannot be written (permissions, a file in the way)."""
