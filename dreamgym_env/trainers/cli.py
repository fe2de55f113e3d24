"""``dreamgym train --algo ppo|grpo``: flags from the fields of PPOConfig and GRPOConfig."""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields
from typing import Any


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """One flag per config field (shared names once); the algorithm keeps the fields it has."""
    from dreamgym_env.trainers.grpo import GRPOConfig
    from dreamgym_env.trainers.ppo import PPOConfig

    parser = sub.add_parser("train", help="train a text policy on a DreamGym env (bundled PPO or GRPO)")
    parser.add_argument("--algo", choices=["ppo", "grpo"], default="grpo")
    parser.add_argument("--env", dest="env_id", default=PPOConfig.env_id, help="env id (synthetic or real twin)")
    seen = {"env_id"}
    for config in (PPOConfig, GRPOConfig):
        for f in fields(config):
            if f.name in seen:
                continue
            seen.add(f.name)
            flag = "--" + f.name.replace("_", "-")
            help_text = f.metadata.get("help", "").replace("%", "%%")
            default: Any = None if f.default is MISSING else f.default
            if f.name == "env_kwargs":
                parser.add_argument(flag, type=json.loads, default={}, help=help_text + " (JSON)")
            elif f.name == "task_ids":
                parser.add_argument(flag, nargs="*", default=[], help=help_text)
            elif isinstance(default, bool):
                parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            else:
                kind = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
                parser.add_argument(flag, type=kind, default=argparse.SUPPRESS,
                                    help=f"{help_text} (default: {default}; {config.__name__})")
    parser.set_defaults(func=_cmd_train)
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from dreamgym_env.trainers import grpo, ppo

    module = ppo if args.algo == "ppo" else grpo
    config_cls = ppo.PPOConfig if args.algo == "ppo" else grpo.GRPOConfig
    given = {f.name: getattr(args, f.name) for f in fields(config_cls) if hasattr(args, f.name)}
    result = module.train(config_cls(**given))
    print(json.dumps(result, indent=2, default=str))
    return 0
