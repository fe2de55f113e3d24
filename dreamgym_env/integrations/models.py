"""The OpenEnv wire types of DreamGym envs: Action, Observation and State (pydantic).

Field names follow OpenEnv's BrowserGym environment where they fit (``action_str``; ``text``,
``goal``, ``last_action_error``, ``error``), plus what the Gymnasium contract adds:
``admissible_actions``, ``truncated`` and the JSON-safe ``info`` dict (``reasoning``,
``retrieved`` ids, ``valid_action``, ``model_latency_s``, ``source``, ``task_id``...).

One difference from OpenEnv's BrowserGym: ``last_action_error`` is the error *text* (empty when
the action was fine), as in BrowserGym itself and in the Gymnasium ``info`` of DreamGym envs,
not a bool; a non-empty string is truthy, so ``if obs.last_action_error:`` reads the same.

OpenEnv 0.3's serializer leaves ``metadata`` out of what goes over the wire, so the server puts
the info dict in the ``info`` field, and :class:`DreamGymEnvClient` copies it back into
``metadata``: ``obs.metadata["reasoning"]`` works in process and over the network alike.
"""

from __future__ import annotations

from typing import Any

from dreamgym_env.errors import MissingDependencyError

try:
    from openenv.core.env_server.types import Action, Observation, State
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("openenv-core", "openenv", "the OpenEnv server and client") from exc
from pydantic import Field

__all__ = ["DreamGymAction", "DreamGymObservation", "DreamGymState"]


class DreamGymAction(Action):
    """One action of the env's grammar, as text.

    Examples: ``click [12]``, ``type [7] "hello"``, ``scroll [down]``, ``stop [answer]``. A string
    the grammar rejects is not an error of the request: it comes back as ``last_action_error``.
    """

    action_str: str = Field(..., description='Action in the env\'s grammar, e.g. "click [12]" or "stop [done]"')


class DreamGymObservation(Observation):
    """What the agent sees after ``reset`` or ``step``.

    ``done`` is ``terminated or truncated`` (OpenEnv has one flag); ``truncated`` says which.
    """

    text: str = Field(default="", description="The observation text: 'Goal: ...\\nState:\\n...' (one element per line)")
    goal: str = Field(default="", description="Task goal of the current episode")
    task_id: str = Field(default="", description="Id of the current task")
    last_action_error: str = Field(default="", description="Why the last action was rejected (empty when it was fine)")
    error: str = Field(default="", description="Experience-model or env failure that truncated the episode (empty when none)")
    admissible_actions: list[str] | None = Field(default=None, description="Actions the domain lists as possible, when it can")
    truncated: bool = Field(default=False, description="The episode ended by truncation (step limit or model failure)")
    info: dict[str, Any] = Field(default_factory=dict, description="The Gymnasium info dict, JSON-safe (reasoning, retrieved, ...)")


class DreamGymState(State):
    """Episode bookkeeping of one session (``GET /state`` or the WebSocket ``state`` message)."""

    env_id: str = Field(default="", description="Registered Gymnasium id served")
    task_id: str = Field(default="", description="Id of the current task")
    goal: str = Field(default="", description="Goal of the current task")
    seed: int | None = Field(default=None, description="Seed of the last reset")
    cum_reward: float = Field(default=0.0, description="Sum of rewards in the current episode")
    done: bool = Field(default=False, description="The current episode has ended")
    truncated: bool = Field(default=False, description="It ended by truncation")
