"""Argument parsing shared by partialnet-bench's subcommands: one-line usage errors (exit 2)
and comma-separated choice lists."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from partialnet.errors import UsageError


class UsageParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UsageError (one line, exit code 2), not SystemExit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def comma_choices(what: str, valid: tuple[str, ...]) -> Callable[[str], list[str]]:
    """A parser for 'a,b,c' whose items must be in ``valid``; duplicates dropped, order kept."""

    def parse(text: str) -> list[str]:
        names = [n.strip().lower() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in valid] if names else [text]
        if unknown:
            raise UsageError(
                f"unknown {what} {', '.join(map(repr, unknown))}; valid {what}s: {', '.join(valid)}"
            )
        return list(dict.fromkeys(names))

    return parse


def execution_precisions() -> tuple[tuple[str, ...], str]:
    """What ``--ov-precision`` takes (the targets' ``execution_precisions``) and the names of
    the runtimes that take it, for its help."""
    from partialnet.export.targets import TARGETS

    specs = [spec for spec in TARGETS if spec.execution_precisions]
    choices = tuple(dict.fromkeys(p for spec in specs for p in spec.execution_precisions))
    return choices, "/".join(spec.display for spec in specs)
