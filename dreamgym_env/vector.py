"""DreamGymVectorEnv: N synthetic envs whose steps go to the experience model as ONE batch."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamgym_env.backends import make_backend
from dreamgym_env.domains import make_domain
from dreamgym_env.env import DreamGymEnv, StepPlan, _resolve_buffer, run_plans


class DreamGymVectorEnv(VectorEnv):
    """``num_envs`` DreamGymEnvs sharing one backend and one buffer.

    ``step(actions)`` parses every action, runs one batched retrieval and one batched backend
    call for all sub-envs (plus one per retry round), so a batching server (vLLM) or a batched
    in-process model serves N steps in about the time of one. Registered as the
    ``vector_entry_point`` of every DreamGym id: ``gym.make_vec(id, num_envs=N)``.

    Args:
        num_envs: number of sub-environments.
        max_episode_steps: step limit of each episode (truncation), as in ``gym.make``.
        autoreset_mode: Gymnasium's autoreset mode (NEXT_STEP by default, or SAME_STEP).
        env_kwargs: the arguments of :class:`DreamGymEnv`.
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        max_episode_steps: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        domain: Any = "webarena",
        sites: Sequence[str] | None = None,
        backend: Any = None,
        buffer: Any = None,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode DISABLED is not supported; use NEXT_STEP or SAME_STEP")
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        domain_obj = make_domain(domain, sites=sites)
        shared_backend = make_backend(backend, default_model=domain_obj.default_model())
        shared_buffer = _resolve_buffer(buffer, domain_obj)
        self.envs = [
            DreamGymEnv(domain_obj, backend=shared_backend, buffer=shared_buffer if shared_buffer is not None else False,
                        render_mode=render_mode, **env_kwargs)
            for _ in range(num_envs)
        ]
        self.backend = shared_backend
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._elapsed = np.zeros(num_envs, dtype=np.int64)

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        """Reset all sub-envs, or those in ``options["reset_mask"]``.

        ``seed`` may be one int (sub-env i gets ``seed + i``) or one seed per sub-env.
        """
        super().reset(seed=seed if seed is None or isinstance(seed, (int, np.integer)) else None)
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        observations = list(self._last_obs) if hasattr(self, "_last_obs") else [""] * self.num_envs
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            if not mask[i]:
                continue
            observations[i], info = env.reset(seed=seeds[i], options=options)
            infos = self._add_info(infos, info, i)
            self._elapsed[i] = 0
            self._needs_reset[i] = False
        self._last_obs = tuple(observations)
        return self._last_obs, infos

    def step(
        self, actions: Sequence[str]
    ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = list(actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} envs")
        observations = list(self._last_obs)
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminations = np.zeros(self.num_envs, dtype=bool)
        truncations = np.zeros(self.num_envs, dtype=bool)
        step_infos: list[dict[str, Any] | None] = [None] * self.num_envs

        stepping: list[int] = []
        for i, env in enumerate(self.envs):
            if self._needs_reset[i]:  # NEXT_STEP: this step resets, the action is ignored
                observations[i], step_infos[i] = env.reset()
                self._elapsed[i] = 0
                self._needs_reset[i] = False
            else:
                stepping.append(i)

        plans: list[StepPlan] = [self.envs[i].plan_step(actions[i]) for i in stepping]
        run_plans(self.backend, [self.envs[i] for i in stepping], plans)
        for i, plan in zip(stepping, plans):
            assert plan.outcome is not None
            observations[i], rewards[i], terminations[i], truncations[i], step_infos[i] = plan.outcome
            self._elapsed[i] += 1
            if self.max_episode_steps is not None and self._elapsed[i] >= self.max_episode_steps:
                truncations[i] = truncations[i] or not terminations[i]
            if terminations[i] or truncations[i]:
                if self.autoreset_mode == AutoresetMode.SAME_STEP:
                    final_obs, final_info = observations[i], step_infos[i]
                    observations[i], reset_info = self.envs[i].reset()
                    self._elapsed[i] = 0
                    step_infos[i] = {**reset_info, "final_obs": final_obs, "final_info": final_info}
                else:
                    self._needs_reset[i] = True

        infos: dict[str, Any] = {}
        for i, info in enumerate(step_infos):
            if info is not None:
                infos = self._add_info(infos, info, i)
        self._last_obs = tuple(observations)
        return self._last_obs, rewards, terminations, truncations, infos

    def render(self) -> tuple[str | None, ...] | None:
        if self.render_mode != "ansi":
            return None
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()
