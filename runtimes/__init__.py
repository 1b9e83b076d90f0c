"""Runners: open an exported artifact with its runtime and run numpy batches through it.

Importing this package needs only torch and numpy; each SDK is imported when its runner is
activated (see ``available_runtimes()`` for what can run here, and why not).
"""

from .base import Runner, RunnerInfo, Runtime, RuntimeUnavailableError
from .registry import available_runtimes, open_runner

__all__ = [
    "Runner",
    "RunnerInfo",
    "Runtime",
    "RuntimeUnavailableError",
    "available_runtimes",
    "open_runner",
]
