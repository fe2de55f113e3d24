"""Clients of a DreamGym OpenEnv server: an OpenEnv ``EnvClient`` and a Gymnasium env.

>>> from dreamgym_env.integrations.openenv_client import DreamGymEnvClient
>>> with DreamGymEnvClient(base_url="http://127.0.0.1:8001").sync() as env:   # doctest: +SKIP
...     result = env.reset(seed=0)
...     result = env.step("click [2]")          # a plain string, or DreamGymAction(action_str=...)
...     print(result.observation.text, result.reward, result.done)

:class:`RemoteDreamGymEnv` plays the same server through the Gymnasium API, so a Gymnasium
consumer moves between a local env, a remote synthetic env and a remote real twin by changing
an env id or a URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym

from dreamgym_env.errors import MissingDependencyError

try:
    from openenv.core.client_types import StepResult
    from openenv.core.env_client import EnvClient
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("openenv-core", "openenv", "the OpenEnv client") from exc

from dreamgym_env.integrations.models import (
    DreamGymAction,
    DreamGymObservation,
    DreamGymState,
)
from dreamgym_env.spaces import UnicodeText

__all__ = ["DreamGymEnvClient", "RemoteDreamGymEnv"]

_OBS_FIELDS = set(DreamGymObservation.model_fields) - {"reward", "done", "metadata"}


class DreamGymEnvClient(EnvClient[DreamGymAction, DreamGymObservation, DreamGymState]):
    """Async OpenEnv client of a DreamGym server (one WebSocket = one session = one env).

    ``step`` takes a :class:`DreamGymAction` or a plain action string. ``.sync()`` gives the
    blocking wrapper. The Gymnasium info dict arrives in ``observation.info`` and, as in
    process, in ``observation.metadata``.
    """

    def _step_payload(self, action: DreamGymAction | str) -> dict[str, Any]:
        if isinstance(action, str):
            action = DreamGymAction(action_str=action)
        return action.model_dump()

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[DreamGymObservation]:
        data = payload.get("observation", {}) or {}
        fields = {k: v for k, v in data.items() if k in _OBS_FIELDS}
        observation = DreamGymObservation(
            **fields, reward=payload.get("reward"), done=bool(payload.get("done", False)),
            metadata=dict(data.get("info") or {}),
        )
        return StepResult(observation=observation, reward=payload.get("reward"), done=bool(payload.get("done", False)))

    def _parse_state(self, payload: dict[str, Any]) -> DreamGymState:
        return DreamGymState(**payload)


class RemoteDreamGymEnv(gym.Env[str, str]):
    """A Gymnasium env whose steps run on a DreamGym OpenEnv server.

    Args:
        base_url: the server, e.g. ``"http://127.0.0.1:8001"``.
        message_timeout_s: how long one reset/step may take (model calls included).

    ``reset(seed=..., options={"task_id": ...})`` and ``step(action)`` return what the served
    env returns (``info`` is its JSON-safe info dict); ``terminated``/``truncated`` come from the
    server's ``done`` and ``truncated`` fields.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, base_url: str, *, message_timeout_s: float = 300.0, max_observation_length: int = 100_000,
                 max_action_length: int = 1_000):
        self.base_url = base_url
        self.observation_space = UnicodeText(max_observation_length)
        self.action_space = UnicodeText(max_action_length)
        self._client = DreamGymEnvClient(base_url=base_url, message_timeout_s=message_timeout_s).sync()
        self._client.connect()

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        kwargs: dict[str, Any] = {"options": dict(options or {})}
        if seed is not None:
            kwargs["seed"] = seed
        result = self._client.reset(**kwargs)
        return result.observation.text, dict(result.observation.info)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        result = self._client.step(DreamGymAction(action_str=str(action)))
        obs = result.observation
        truncated = bool(obs.truncated)
        terminated = bool(result.done) and not truncated
        return obs.text, float(result.reward or 0.0), terminated, truncated, dict(obs.info)

    def close(self) -> None:
        try:
            self._client.close()
        finally:
            super().close()
