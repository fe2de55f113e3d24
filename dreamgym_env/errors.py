"""Exceptions raised by dreamgym_env."""

from __future__ import annotations

import difflib
from typing import Iterable


class DreamGymError(Exception):
    """Base class of every error raised by this package."""


class UnknownTaskError(DreamGymError, KeyError):
    """A task id that the domain's task set does not contain."""

    def __init__(self, task_id: object, known: Iterable[str], domain: str):
        known = [str(k) for k in known]
        close = difflib.get_close_matches(str(task_id), known, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        super().__init__(
            f"Unknown task id {task_id!r} for domain {domain!r} ({len(known)} tasks).{hint}"
        )

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class BackendError(DreamGymError):
    """The experience model could not be reached or did not answer in time."""


class BackendUnavailableError(BackendError):
    """A server that does not answer, or an optional dependency that is missing."""


class ModelOutputError(DreamGymError):
    """The experience model's output could not be parsed or failed the schema."""

    def __init__(self, message: str, raw_output: str = ""):
        excerpt = raw_output if len(raw_output) <= 200 else raw_output[:200] + "…"
        super().__init__(f"{message} (raw output: {excerpt!r})" if raw_output else message)
        self.raw_output = raw_output


class ReplayBufferError(DreamGymError):
    """The replay buffer rejected an operation."""


class MissingDependencyError(DreamGymError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str = ""):
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"{package} is required{what}. Install it with: pip install \"dreamgym-env[{extra}]\""
        )


class ModelNotFoundError(DreamGymError, FileNotFoundError):
    """A model path that does not exist or holds no model."""


class DataNotFoundError(DreamGymError, FileNotFoundError):
    """A trajectory data file that does not exist."""
