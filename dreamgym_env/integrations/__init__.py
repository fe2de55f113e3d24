"""Adapters that let RL frameworks which do not take a ``gymnasium.Env`` train on DreamGym envs.

Every adapter wraps a registered env id, synthetic or real, so moving a policy from the
experience model to the real twin is a change of env id (or of server URL), never of code.

- :mod:`~dreamgym_env.integrations.openenv_server`: an OpenEnv server (HTTP + WebSocket) for
  TRL, SkyRL, ms-swift, AgileRL, Unsloth and other OpenEnv consumers
  (``dreamgym serve-env``); needs ``pip install "dreamgym-env[openenv]"``.
- :mod:`~dreamgym_env.integrations.openenv_client`: the matching ``EnvClient`` and a
  Gymnasium env that plays a remote server.
- :mod:`~dreamgym_env.integrations.models`: the pydantic Action / Observation / State types.
- :mod:`~dreamgym_env.integrations.trl_env`: a class for
  ``GRPOTrainer(environment_factory=...)`` whose tool methods are the action verbs.
- :mod:`~dreamgym_env.integrations.verl_loop`: a verl agent loop (``agent_name: dreamgym``)
  that keeps the policy's token ids and masks the observation tokens.
- :mod:`~dreamgym_env.integrations.batching`: a backend wrapper that merges the model calls
  of concurrent sessions into batched ones, and the backend/buffer those sessions share.
- :mod:`~dreamgym_env.integrations.serve_env_cli`: the ``serve-env`` flags (no openenv import).

Nothing here is imported by ``import dreamgym_env``; each module imports its framework lazily
and names the extra to install when it is missing.
"""
