"""A verl agent loop that plays DreamGym envs: ``agent_name: dreamgym``.

verl's rollout runs one agent loop per trajectory. This one resets a DreamGym env (synthetic or
real twin), shows the first observation after the dataset prompt, then alternates: the policy
writes one action (its real token ids, as the rollout server returned them, mask 1), the env
steps, and the next observation is appended as a user turn (template tokens, mask 0), until the
episode ends, ``max_turns`` actions were taken or ``response_length`` tokens are used. The
episode's return becomes ``reward_score`` (verl puts it on the last response token, so no reward
function is needed).

Register it by importing this module in the rollout workers, or, with arguments, through an
agent-loop config file (``actor_rollout_ref.rollout.agent.agent_loop_config_path``)::

    # dreamgym_agent.yaml
    - name: dreamgym
      _target_: dreamgym_env.integrations.verl_loop.DreamGymAgentLoop
      env_id: DreamGym-WebArena-v0
      env_kwargs: {backend: "http://127.0.0.1:8000/v1", max_episode_steps: 15}
      max_turns: 15

and give the dataset rows ``agent_name: dreamgym`` (or set ``rollout.agent.default_agent_loop``)
and, in ``extra_info``, a ``seed`` (the ``rollout.n`` samples of a row then start alike) and
optionally ``task_id`` or ``env_id``. The policy answers each turn with one action of the
grammar (``click [12]``); the last non-empty line of its answer is taken, code fences stripped.

Written against verl 0.9 (``verl.experimental.agent_loop``, the Continuous Token builders).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import Any, ClassVar
from uuid import uuid4

import gymnasium as gym

import dreamgym_env  # noqa: F401 - registers the env ids
from dreamgym_env.errors import MissingDependencyError
from dreamgym_env.integrations.batching import SharedResources

try:
    from verl.experimental.agent_loop.agent_loop import (
        AgentLoopBase,
        AgentLoopOutput,
        register,
    )
except ImportError as exc:  # pragma: no cover - exercised only without verl
    raise MissingDependencyError("verl", "verl", "the verl agent loop") from exc

logger = logging.getLogger(__name__)

__all__ = ["DreamGymAgentLoop", "extract_action"]

_FENCE = re.compile(r"```[a-zA-Z]*")


def extract_action(text: str) -> str:
    """The action in a policy's answer: its last non-empty line, without code fences or backticks."""
    lines = [line.strip().strip("`").strip() for line in _FENCE.sub("", text).splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""


class _EnvPool:
    """Reusable envs of one (id, kwargs): verl builds an agent loop per trajectory, the env
    (and its backend, buffer, browser) should not be rebuilt each time."""

    _pools: ClassVar[dict[tuple, _EnvPool]] = {}
    _lock = threading.Lock()

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]):
        self.env_id = env_id
        self.env_kwargs = env_kwargs
        self.free: list[gym.Env] = []
        self.shared: SharedResources | None = None
        self.lock = threading.Lock()

    @classmethod
    def get(cls, env_id: str, env_kwargs: dict[str, Any]) -> _EnvPool:
        key = (env_id, repr(sorted(env_kwargs.items())))
        with cls._lock:
            if key not in cls._pools:
                cls._pools[key] = cls(env_id, dict(env_kwargs))
            return cls._pools[key]

    def acquire(self) -> gym.Env:
        with self.lock:
            if self.free:
                return self.free.pop()
            if self.shared is None:  # one backend (batched) and one buffer for every env of the pool
                self.shared = SharedResources(self.env_id, self.env_kwargs)
        return gym.make(self.env_id, **self.shared.session_kwargs(self.env_kwargs))

    def release(self, env: gym.Env) -> None:
        with self.lock:
            self.free.append(env)


@register("dreamgym")
class DreamGymAgentLoop(AgentLoopBase):
    """Multi-turn rollouts of a DreamGym env for verl (see the module docstring).

    Args:
        env_id: default env id (a row's ``extra_info["env_id"]`` overrides it).
        env_kwargs: ``gym.make`` keyword arguments (``backend``, ``buffer``, ``max_episode_steps``...).
        max_turns: most actions per trajectory.
        args, kwargs: what verl passes to every agent loop (config, server manager, tokenizer...).
    """

    def __init__(self, *args: Any, env_id: str = "DreamGym-WebArena-v0", env_kwargs: dict[str, Any] | None = None,
                 max_turns: int = 15, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.max_turns = max_turns
        self.response_length = self.rollout_config.response_length

    async def _env_call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        extra = dict(kwargs.get("extra_info") or {})
        env_id = str(extra.get("env_id") or self.env_id)
        options = {k: extra[k] for k in ("task_id", "task") if extra.get(k) is not None}
        seed = extra.get("seed")
        pool = _EnvPool.get(env_id, self.env_kwargs)
        env = await self._env_call(pool.acquire)
        try:
            return await self._episode(env, env_id, sampling_params, kwargs, seed, options)
        finally:
            pool.release(env)

    async def _episode(self, env: gym.Env, env_id: str, sampling_params: dict[str, Any], kwargs: dict[str, Any],
                       seed: Any, options: dict[str, Any]) -> AgentLoopOutput:
        obs, info = await self._env_call(env.reset, seed=None if seed is None else int(seed), options=options or None)

        # 1. prompt: the dataset's messages, the first observation appended to the last user turn
        messages = [dict(m) for m in (kwargs.get("raw_prompt") or [])]
        if messages and messages[-1].get("role") == "user":
            messages[-1]["content"] = f"{messages[-1].get('content') or ''}{obs}"
        else:
            messages.append({"role": "user", "content": obs})
        token_ids = await self.ct_build_initial_tokens(messages)
        response_mask: list[int] = []
        response_logprobs: list[float] | None = None
        metrics: dict[str, Any] = {}
        request_id = uuid4().hex
        total, turn_scores, actions = 0.0, [], []
        terminated = truncated = False
        assistant_turns = user_turns = 0

        # 2. turns: policy tokens (mask 1), then the env's next observation (mask 0)
        while assistant_turns < self.max_turns:
            output = await self.server_manager.generate(
                request_id=request_id, prompt_ids=token_ids, sampling_params=sampling_params
            )
            assistant_turns += 1
            if output.log_probs and response_logprobs is None:
                response_logprobs = [0.0] * len(response_mask)
            merged, response_mask, response_logprobs = await self.ct_merge_assistant_token(
                token_ids, output.token_ids, response_mask, response_logprobs,
                assistant_logprobs=output.log_probs or None,
            )
            token_ids = merged.token_ids
            text = self.tokenizer.decode(output.token_ids, skip_special_tokens=True)
            messages.append({"role": "assistant", "content": text})
            action = extract_action(text)
            actions.append(action)
            obs, reward, terminated, truncated, info = await self._env_call(env.step, action)
            total += float(reward)
            turn_scores.append(float(reward))
            if terminated or truncated or len(response_mask) >= self.response_length:
                break
            if assistant_turns >= self.max_turns:
                break
            previous = list(messages)
            messages.append({"role": "user", "content": obs})
            merged, mask, logprobs = await self.ct_merge_context_msg(
                previous, messages, token_ids, response_mask, response_logprobs
            )
            if len(mask) >= self.response_length:
                break
            token_ids, response_mask, response_logprobs = merged.token_ids, mask, logprobs
            user_turns += 1

        # 3. output: the prompt, then every response token with its mask, and the return
        n = len(response_mask)
        prompt_ids = token_ids[: len(token_ids) - n]
        response_ids = token_ids[len(token_ids) - n:] if n else []
        L = self.response_length
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids[:L],
            response_mask=response_mask[:L],
            response_logprobs=response_logprobs[:L] if response_logprobs else None,
            reward_score=total,
            num_turns=1 + assistant_turns + user_turns,
            metrics=metrics,
            extra_fields={
                "turn_scores": turn_scores,
                "tool_rewards": [],
                "dreamgym": {
                    "env_id": env_id, "task_id": str(info.get("task_id", "")), "actions": actions,
                    "terminated": bool(terminated), "truncated": bool(truncated), "source": info.get("source"),
                },
            },
        )
