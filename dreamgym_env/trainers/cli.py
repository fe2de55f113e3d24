"""``dreamgym train --algo ppo|grpo``: flags from the fields of PPOConfig and GRPOConfig."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from dreamgym_env.config_args import add_config_arguments


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """One flag per config field (shared names once); the algorithm keeps the fields it has."""
    from dreamgym_env.trainers.grpo import GRPOConfig
    from dreamgym_env.trainers.ppo import PPOConfig

    parser = sub.add_parser("train", help="train a text policy on a DreamGym env (bundled PPO or GRPO)")
    parser.add_argument("--algo", choices=["ppo", "grpo"], default="grpo")
    parser.add_argument("--env", dest="env_id", default=PPOConfig.env_id, help="env id (synthetic or real twin)")
    seen = {"env_id"}
    for config in (PPOConfig, GRPOConfig):  # shared fields once; each algorithm keeps the fields it has
        seen.update(add_config_arguments(parser, config, skip=seen, suppress_scalar_defaults=True))
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
