"""dreamgym_env: DreamGym experience models as Gymnasium environments.

Importing the package registers the environment ids (Gymnasium 1.x ignores entry points):

>>> import gymnasium as gym, dreamgym_env
>>> env = gym.make("DreamGym-WebArena-v0")   # doctest: +SKIP
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

ENV_IDS = (
    "DreamGym-WebArena-v0",
    "DreamGym-WebArena-Real-v0",
    "DreamGym-WebArenaLite-v0",
    "DreamGym-WebArenaLite-Real-v0",
    "DreamGym-MiniWoB-v0",
    "DreamGym-MiniWoB-Real-v0",
)


def _register() -> None:
    if "DreamGym-WebArena-v0" not in registry:
        register(
            id="DreamGym-WebArena-v0",
            entry_point="dreamgym_env.env:DreamGymEnv",
            vector_entry_point="dreamgym_env.vector:DreamGymVectorEnv",
            max_episode_steps=30,
            kwargs={"domain": "webarena"},
        )
    if "DreamGym-WebArena-Real-v0" not in registry:
        register(
            id="DreamGym-WebArena-Real-v0",
            entry_point="dreamgym_env.domains.webarena.real_env:WebArenaRealEnv",
            max_episode_steps=30,
            nondeterministic=True,
        )
    if "DreamGym-WebArenaLite-v0" not in registry:  # the paper's 165-task WebArena benchmark
        register(
            id="DreamGym-WebArenaLite-v0",
            entry_point="dreamgym_env.env:DreamGymEnv",
            vector_entry_point="dreamgym_env.vector:DreamGymVectorEnv",
            max_episode_steps=30,
            kwargs={"domain": "webarena-lite"},
        )
    if "DreamGym-WebArenaLite-Real-v0" not in registry:
        register(
            id="DreamGym-WebArenaLite-Real-v0",
            entry_point="dreamgym_env.domains.webarena.real_env:WebArenaRealEnv",
            max_episode_steps=30,
            nondeterministic=True,
            kwargs={"subset": "lite"},
        )
    if "DreamGym-MiniWoB-v0" not in registry:
        register(
            id="DreamGym-MiniWoB-v0",
            entry_point="dreamgym_env.env:DreamGymEnv",
            vector_entry_point="dreamgym_env.vector:DreamGymVectorEnv",
            max_episode_steps=12,
            kwargs={"domain": "miniwob"},
        )
    if "DreamGym-MiniWoB-Real-v0" not in registry:
        register(
            id="DreamGym-MiniWoB-Real-v0",
            entry_point="dreamgym_env.domains.miniwob.real_env:MiniWoBRealEnv",
            max_episode_steps=12,
        )


_register()


def __getattr__(name: str):  # lazy re-exports: importing the package stays light
    if name == "DreamGymEnv":
        from dreamgym_env.env import DreamGymEnv

        return DreamGymEnv
    if name == "DreamGymVectorEnv":
        from dreamgym_env.vector import DreamGymVectorEnv

        return DreamGymVectorEnv
    if name == "ExperienceBuffer":
        from dreamgym_env.buffer import ExperienceBuffer

        return ExperienceBuffer
    raise AttributeError(f"module 'dreamgym_env' has no attribute {name!r}")


__all__ = ["ENV_IDS", "DreamGymEnv", "DreamGymVectorEnv", "ExperienceBuffer", "__version__"]
