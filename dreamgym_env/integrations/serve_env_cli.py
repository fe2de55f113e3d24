"""The ``serve-env`` command line flags, importable without openenv-core (``dreamgym --help`` stays fast)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of ``dreamgym serve-env`` / ``python -m dreamgym_env.integrations.openenv_server``."""
    parser.add_argument("--env", default="DreamGym-WebArena-v0", help="registered env id (synthetic or real twin)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--max-concurrent", type=int, default=8, help="most WebSocket sessions at once")
    parser.add_argument("--max-episode-steps", type=int, default=None, help="step limit (default: the registration's)")
    parser.add_argument("--session-timeout-s", type=float, default=None, help="close sessions idle this long")
    parser.add_argument("--backend", default=None, help="backend spec (http://host:port/v1, transformers:DIR, scripted); "
                        "default: DREAMGYM_* environment variables, else the embedded model")
    parser.add_argument("--buffer", default=None, help="buffer path or http://host:port; 'none' or '' turns retrieval off")
    parser.add_argument("--env-kwargs", default="{}", help='more gym.make arguments as JSON, e.g. \'{"top_k": 2}\'')
    parser.add_argument("--no-batching", action="store_true", help="do not merge concurrent sessions' model calls")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def env_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``gym.make`` keyword arguments the flags ask for."""
    kwargs = json.loads(args.env_kwargs or "{}")
    if not isinstance(kwargs, dict):
        raise SystemExit("--env-kwargs must be a JSON object")
    if args.backend is not None:
        kwargs["backend"] = args.backend
    if args.buffer is not None:
        kwargs["buffer"] = False if args.buffer.strip().lower() in ("none", "false", "") else args.buffer
    return kwargs


def run(args: argparse.Namespace) -> int:
    """Serve what ``args`` (parsed with :func:`add_arguments`) asks for, until interrupted."""
    from dreamgym_env.integrations.openenv_server import serve

    serve(
        args.env, host=args.host, port=args.port, log_level=args.log_level,
        max_concurrent_envs=args.max_concurrent, max_episode_steps=args.max_episode_steps,
        session_timeout_s=args.session_timeout_s, batch_model_calls=not args.no_batching,
        **env_kwargs_from_args(args),
    )
    return 0
