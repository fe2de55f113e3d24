"""Turn a DreamGym text env (synthetic or real) into an env Stable-Baselines3 trains unchanged.

``DiscreteAdmissibleActions`` maps ``Discrete(max_actions)`` onto ``info["admissible_actions"]``
and exposes ``action_masks()`` for sb3-contrib's ``MaskablePPO``. ``TextEmbeddingObservation``
turns the text observation into a ``Box``: hashed n-gram embeddings of the observation, of the
goal and of each admissible action with the element line it acts on, so that a policy can match
actions to the goal. Offline and deterministic (no model download).

    env = make_sb3_env("DreamGym-MiniWoB-v0", max_actions=16)
    model = MaskablePPO("MlpPolicy", env).learn(2048)
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from dreamgym_env.patch import line_ref


class DiscreteAdmissibleActions(gym.Wrapper):
    """``Discrete(max_actions)`` over the current admissible actions.

    Args:
        env: an env whose ``info`` carries ``admissible_actions`` (list of action strings).
        max_actions: size of the action space; further admissible actions are cut.
        invalid: what an index past the current list does: ``"wrap"`` (index modulo the list
            length, so plain PPO never wastes a step) or ``"reject"`` (sends a no-op action the
            env rejects: reward 0 and ``last_action_error``, as a wrong click would).
    """

    def __init__(self, env: gym.Env, max_actions: int = 32, invalid: str = "wrap"):
        super().__init__(env)
        if max_actions < 1:
            raise ValueError(f"max_actions must be >= 1, got {max_actions}")
        if invalid not in ("wrap", "reject"):
            raise ValueError(f"invalid must be 'wrap' or 'reject', got {invalid!r}")
        self.max_actions = max_actions
        self.invalid = invalid
        self.action_space = gym.spaces.Discrete(max_actions)
        self.actions: list[str] = []

    def _remember(self, info: dict[str, Any]) -> dict[str, Any]:
        if "admissible_actions" not in info:
            raise KeyError(
                "DiscreteAdmissibleActions needs info['admissible_actions']; this env does not list "
                "its actions (use a domain that does, e.g. MiniWoB, or a generation-mode policy)"
            )
        self.actions = [str(a) for a in info["admissible_actions"]][: self.max_actions]
        info["action_texts"] = list(self.actions)
        return info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._remember(info)

    def action_text(self, index: int) -> str:
        """The action string that ``index`` stands for now."""
        index = int(index)
        if not 0 <= index < self.max_actions:
            raise ValueError(f"action index {index} is outside Discrete({self.max_actions})")
        if index < len(self.actions):
            return self.actions[index]
        if self.invalid == "wrap" and self.actions:
            return self.actions[index % len(self.actions)]
        return "noop"

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        text = self.action_text(action)
        obs, reward, terminated, truncated, info = self.env.step(text)
        info["action_text"] = text
        return obs, reward, terminated, truncated, self._remember(info)

    def action_masks(self) -> np.ndarray:
        """True for indices that name an admissible action now (sb3-contrib's MaskablePPO)."""
        mask = np.zeros(self.max_actions, dtype=bool)
        mask[: len(self.actions)] = True
        if not mask.any():  # nothing admissible: let the policy pick, the env will reject it
            mask[:] = True
        return mask


class TextEmbeddingObservation(gym.ObservationWrapper):
    """The text observation as a flat ``Box``: [observation, goal, action_1 … action_K] embeddings.

    Args:
        env: a text env, usually wrapped in :class:`DiscreteAdmissibleActions` (then the K
            admissible actions, each with its element line, are embedded too; absent ones are 0).
        dim: embedding size of each part (hashed character and word n-grams, unit vectors).
    """

    def __init__(self, env: gym.Env, dim: int = 64):
        super().__init__(env)
        from dreamgym_env.buffer.embedders import HashingEmbeddingFunction

        self.embedder = HashingEmbeddingFunction(dim=dim)
        self.dim = dim
        try:
            self.max_actions = int(env.get_wrapper_attr("max_actions"))
        except AttributeError:
            self.max_actions = 0
        rows = 2 + self.max_actions
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(rows * dim,), dtype=np.float32)
        self._goal = ""
        self._actions: list[str] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._goal, self._actions = info.get("goal", ""), info.get("action_texts", [])
        return self.observation(obs), info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._goal, self._actions = info.get("goal", ""), info.get("action_texts", [])
        return self.observation(obs), reward, terminated, truncated, info

    def observation(self, observation: str) -> np.ndarray:
        lines = {line_ref(l): l.strip() for l in str(observation).splitlines() if line_ref(l) is not None}
        texts = [str(observation), self._goal]
        for action in self._actions[: self.max_actions]:
            start, end = action.find("["), action.find("]")
            ref = action[start + 1 : end] if 0 <= start < end else None
            texts.append(f"{action} {lines.get(ref, '')}")
        out = np.zeros((2 + self.max_actions, self.dim), dtype=np.float32)
        out[: len(texts)] = self.embedder.embed(texts)
        return out.reshape(-1)

    def action_masks(self) -> np.ndarray:
        """The inner :class:`DiscreteAdmissibleActions` mask (gymnasium wrappers do not forward
        attribute access, and MaskablePPO asks the outermost env)."""
        return self.env.get_wrapper_attr("action_masks")()


def make_sb3_env(env_id: str, *, max_actions: int = 32, dim: int = 64, invalid: str = "wrap",
                 **make_kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **make_kwargs)`` wrapped for SB3: Discrete admissible actions with
    ``action_masks()``, Box observations."""
    env = gym.make(env_id, **make_kwargs)
    return TextEmbeddingObservation(DiscreteAdmissibleActions(env, max_actions, invalid), dim=dim)
