"""Serve any registered DreamGym env, synthetic or real, as an OpenEnv environment server.

OpenEnv (``openenv-core``) is the env protocol that TRL, SkyRL, ms-swift, AgileRL and Unsloth
consume: a FastAPI app with a WebSocket session per client (``/ws``: reset, step, state) plus
stateless HTTP routes (``/reset``, ``/step``, ``/schema``, ``/health``). Here each session gets
its own Gymnasium env; all sessions of a synthetic env share one experience-model backend
(through :class:`~dreamgym_env.integrations.batching.BatchingBackend`, so concurrent steps
become batched model calls) and one replay buffer.

Run it::

    dreamgym serve-env --env DreamGym-WebArena-v0 --port 8001 --max-concurrent 16
    python -m dreamgym_env.integrations.openenv_server --env DreamGym-WebArena-v0 --backend scripted

or build the app in Python: ``app = create_dreamgym_app("DreamGym-WebArena-v0", backend="http://...")``.
Then connect with :class:`~dreamgym_env.integrations.openenv_client.DreamGymEnvClient`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym

import dreamgym_env
from dreamgym_env.errors import MissingDependencyError

try:
    from openenv.core.env_server.http_server import create_app
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import ConcurrencyConfig, EnvironmentMetadata
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("openenv-core", "openenv", "the OpenEnv server") from exc

from dreamgym_env.integrations.batching import SharedResources
from dreamgym_env.integrations.models import (
    DreamGymAction,
    DreamGymObservation,
    DreamGymState,
)

logger = logging.getLogger(__name__)

__all__ = ["DreamGymEnvironment", "QuietWebSocketClose", "SharedResources", "create_dreamgym_app", "main", "serve"]

#: Messages of the observations a session gets when it steps out of turn.
EPISODE_OVER = "the episode is over; call reset() to start a new one"
NOT_STARTED = "no episode yet; call reset() first"


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and unknown objects made JSON-safe."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    return str(value)


class DreamGymEnvironment(Environment[DreamGymAction, DreamGymObservation, DreamGymState]):
    """An OpenEnv ``Environment`` around one Gymnasium env of a registered DreamGym id.

    Every call into the Gymnasium env runs on this object's own single worker thread, so the
    server's event loop never blocks on a model call, and envs that must stay on one thread
    (Playwright-driven real twins) do.

    Args:
        env_id: a registered id, e.g. ``"DreamGym-WebArena-v0"`` or a real twin.
        env_kwargs: keyword arguments of ``gym.make`` (``backend``, ``buffer``, ``top_k``...).
        max_episode_steps: step limit (truncation); None keeps the registration's.
        shared: resources shared by the sessions of a server (see :class:`SharedResources`).

    ``reset(seed=..., episode_id=..., task_id=..., task=..., options=...)``: with the same seed
    (and a deterministic backend) the first observation is the same, which GRPO groups need.
    A malformed action is no error: the observation says why in ``last_action_error``.
    """

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(
        self,
        env_id: str = "DreamGym-WebArena-v0",
        env_kwargs: dict[str, Any] | None = None,
        max_episode_steps: int | None = None,
        shared: SharedResources | None = None,
    ):
        super().__init__()
        gym.spec(env_id)  # unknown ids fail here, with Gymnasium's suggestions
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        if max_episode_steps is not None:
            self.env_kwargs["max_episode_steps"] = max_episode_steps
        self.shared = shared
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dreamgym-session")
        self._env: gym.Env | None = None
        self._state = DreamGymState(env_id=env_id)
        self._last_obs = DreamGymObservation()

    # ------------------------------------------------------------ Gymnasium side (worker thread)
    def _make_env(self) -> gym.Env:
        if self._env is None:
            kwargs = self.shared.session_kwargs(self.env_kwargs) if self.shared else self.env_kwargs
            self._env = gym.make(self.env_id, **kwargs)
        return self._env

    def _reset_sync(self, seed: int | None, episode_id: str | None, options: dict[str, Any]) -> DreamGymObservation:
        env = self._make_env()
        self._reset_rubric()
        obs, info = env.reset(seed=seed, options=options or None)
        self._state = DreamGymState(
            env_id=self.env_id,
            episode_id=episode_id or str(info.get("trajectory_id") or uuid.uuid4()),
            step_count=0,
            task_id=str(info.get("task_id", "")),
            goal=str(info.get("goal", "")),
            seed=seed,
        )
        self._last_obs = self._observation(obs, 0.0, False, False, info)
        self._last_obs.reward = None  # OpenEnv: no reward at reset
        return self._last_obs

    def _step_sync(self, action: DreamGymAction) -> DreamGymObservation:
        if self._env is None or self._state.episode_id is None:
            return self._refusal(NOT_STARTED)
        if self._state.done:
            return self._refusal(EPISODE_OVER)
        obs, reward, terminated, truncated, info = self._env.step(action.action_str)
        state = self._state
        state.step_count += 1
        state.cum_reward += float(reward)
        state.done = bool(terminated or truncated)
        state.truncated = bool(truncated)
        self._last_obs = self._observation(obs, reward, terminated, truncated, info)
        return self._last_obs

    def _observation(self, obs: str, reward: float, terminated: bool, truncated: bool,
                     info: dict[str, Any]) -> DreamGymObservation:
        info = jsonable({**info, "terminated": bool(terminated), "truncated": bool(truncated)})
        admissible = info.get("admissible_actions")
        return DreamGymObservation(
            text=str(obs),
            goal=str(info.get("goal", self._state.goal)),
            task_id=str(info.get("task_id", self._state.task_id)),
            last_action_error=str(info.get("last_action_error") or ""),
            error=str(info.get("error") or ""),
            admissible_actions=list(admissible) if admissible is not None else None,
            truncated=bool(truncated),
            info=info,
            reward=float(reward),
            done=bool(terminated or truncated),
            metadata=info,
        )

    def _refusal(self, message: str) -> DreamGymObservation:
        """The last observation again, with ``message`` as the action error and no reward."""
        obs = self._last_obs.model_copy(deep=True)
        obs.last_action_error = message
        obs.reward = 0.0
        obs.done = self._state.done or obs.done
        obs.info = {**obs.info, "last_action_error": message, "valid_action": False}
        obs.metadata = obs.info
        return obs

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the worker thread and wait (for the sync API)."""
        return self._executor.submit(fn, *args).result()

    async def _acall(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    # ----------------------------------------------------------------------- OpenEnv API
    @staticmethod
    def _options(kwargs: dict[str, Any]) -> dict[str, Any]:
        options = dict(kwargs.pop("options", None) or {})
        for key in ("task_id", "task"):
            if kwargs.get(key) is not None:
                options[key] = kwargs.pop(key)
        if kwargs:
            logger.debug("reset: ignoring unknown arguments %s", sorted(kwargs))
        return options

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> DreamGymObservation:
        return self._call(self._reset_sync, seed, episode_id, self._options(kwargs))

    async def reset_async(self, seed: int | None = None, episode_id: str | None = None,
                          **kwargs: Any) -> DreamGymObservation:
        return await self._acall(self._reset_sync, seed, episode_id, self._options(kwargs))

    def step(self, action: DreamGymAction, timeout_s: float | None = None, **kwargs: Any) -> DreamGymObservation:
        return self._call(self._step_sync, action)

    async def step_async(self, action: DreamGymAction, timeout_s: float | None = None,
                         **kwargs: Any) -> DreamGymObservation:
        # The model call is I/O for the server: run the blocking env.step off the event loop.
        return await self._acall(self._step_sync, action)

    @property
    def state(self) -> DreamGymState:
        return self._state

    def get_metadata(self) -> EnvironmentMetadata:
        spec = gym.spec(self.env_id)
        return EnvironmentMetadata(
            name=self.env_id,
            description=f"DreamGym env {self.env_id} ({spec.entry_point}) served over OpenEnv: text "
            "observations, text actions in the domain's grammar, outcome reward 1 on success.",
            version=dreamgym_env.__version__,
            documentation_url="https://arxiv.org/abs/2511.03773",
        )

    def close(self) -> None:
        env, self._env = self._env, None
        if env is not None:
            try:
                self._executor.submit(env.close).result(timeout=30)
            except Exception:
                logger.warning("closing the env of a session failed", exc_info=True)
        self._executor.shutdown(wait=False)


class QuietWebSocketClose:
    """ASGI middleware: a client that hangs up first is the normal end of a session.

    openenv-core 0.3's ``/ws`` handler closes the socket after the client's ``close`` message and
    only expects ``RuntimeError`` when the client was faster; uvicorn raises a disconnect error
    instead, which it would log as "Exception in ASGI application" for every finished session.
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        from starlette.websockets import WebSocketDisconnect

        try:
            await self.app(scope, receive, send)
        except (WebSocketDisconnect, OSError) as exc:
            logger.debug("websocket closed by the client first: %r", exc)
        except Exception as exc:  # uvicorn's ClientDisconnected (a private class) and the like
            if type(exc).__name__ != "ClientDisconnected":
                raise
            logger.debug("websocket closed by the client first: %r", exc)


def create_dreamgym_app(
    env_id: str = "DreamGym-WebArena-v0",
    *,
    max_concurrent_envs: int = 8,
    max_episode_steps: int | None = None,
    session_timeout_s: float | None = None,
    batch_model_calls: bool = True,
    max_batch_wait_s: float = 0.005,
    **env_kwargs: Any,
):
    """The FastAPI app of an OpenEnv server for ``env_id``.

    Args:
        env_id: registered DreamGym id (synthetic or real twin).
        max_concurrent_envs: most WebSocket sessions at once (each has its own env).
        max_episode_steps: step limit per episode; None keeps the registration's.
        session_timeout_s: close sessions idle this long (None: never).
        batch_model_calls: merge concurrent sessions' model calls into batched backend calls.
        max_batch_wait_s: how long a batch waits for more requests.
        env_kwargs: ``gym.make`` keyword arguments (``backend``, ``buffer``, ``top_k``...).

    Returns:
        A FastAPI app; serve it with uvicorn (``uvicorn.run(app, host=..., port=...)``).
    """
    shared = SharedResources(env_id, env_kwargs, batch_model_calls=batch_model_calls, max_batch_wait_s=max_batch_wait_s)
    factory = functools.partial(
        DreamGymEnvironment, env_id=env_id, env_kwargs=env_kwargs, max_episode_steps=max_episode_steps, shared=shared
    )
    app = create_app(
        factory,
        DreamGymAction,
        DreamGymObservation,
        env_name=env_id,
        concurrency_config=ConcurrencyConfig(max_concurrent_envs=max_concurrent_envs, session_timeout=session_timeout_s),
    )
    app.router.on_shutdown.append(shared.close)
    app.state.dreamgym_shared = shared
    app.add_middleware(QuietWebSocketClose)
    return app


def serve(env_id: str = "DreamGym-WebArena-v0", *, host: str = "127.0.0.1", port: int = 8001,
          log_level: str = "info", **app_kwargs: Any) -> None:
    """Build the app and serve it with uvicorn until interrupted."""
    import uvicorn

    app = create_dreamgym_app(env_id, **app_kwargs)
    logger.info("OpenEnv server for %s on http://%s:%d (WebSocket /ws)", env_id, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, ws_max_size=64 * 1024 * 1024)


# --------------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dreamgym_env.integrations.openenv_server`` (the flags of ``dreamgym serve-env``)."""
    from dreamgym_env.integrations.serve_env_cli import add_arguments, run

    parser = add_arguments(argparse.ArgumentParser(prog="python -m dreamgym_env.integrations.openenv_server",
                                                   description=__doc__.split("\n\n")[0]))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
