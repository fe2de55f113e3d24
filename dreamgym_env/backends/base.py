"""The ExperienceModel protocol: a batched text-generation call.

Argument names follow vLLM's sampling parameters (``temperature``, ``top_p``, ``max_tokens``,
``seed``, ``stop``) so that requests map one to one onto every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable


@dataclass
class GenerationRequest:
    """One chat completion to run.

    Attributes:
        messages: chat messages (``{"role": ..., "content": ...}``), rendered by ``prompts``.
        json_schema: when set, the backend constrains the output to this schema if it can.
        metadata: what the request is for (``kind``, ``task_id``, ``action``...). Real
            backends ignore it; ``ScriptedBackend`` answers from it.
    """

    messages: list[dict[str, str]]
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 384
    seed: int | None = None
    stop: list[str] | None = None
    json_schema: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationResult:
    """A backend's answer to one request; ``error`` is set instead of raising."""

    text: str = ""
    latency_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class ExperienceModel(Protocol):
    """What the env needs of a backend: one batched call, a name, and a way to close.

    A backend that knows which chat template its model was trained on may also set a
    ``prompt_version`` attribute (the in-process backends read it from the model card); the env
    then renders that version.
    """

    name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Answer every request; one result per request, in order, errors in ``result.error``."""
        ...

    def close(self) -> None:
        """Release servers, threads or models held by the backend."""
        ...
