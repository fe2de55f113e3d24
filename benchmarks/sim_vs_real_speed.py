"""Synthetic against real MiniWoB steps/s, measured side by side in one run.

Synthetic: ``DreamGym-MiniWoB-v0`` as a vector env of N = 1, 8, 32 sub-envs (one batched model
call per step), with the default experience model in process (TransformersBackend) or any
backend (``--backends http://127.0.0.1:8000/v1`` for ``dreamgym serve``; several side by side,
e.g. a server with n-gram speculative decoding beside one without). Real: one Chromium browser
running ``DreamGym-MiniWoB-Real-v0``. Both take random admissible actions.

    python benchmarks/sim_vs_real_speed.py --sizes 1 8 32 --steps 4 --seed 0
    python benchmarks/sim_vs_real_speed.py --backends default http://127.0.0.1:8011/v1 http://127.0.0.1:8012/v1
    python benchmarks/sim_vs_real_speed.py --backends default:float32 default:bfloat16 --sizes 1 8 --steps 2
    python benchmarks/sim_vs_real_speed.py --backends http://127.0.0.1:8012/v1,http://127.0.0.1:8013/v1 \
        --env-kwargs '{}' '{"max_tokens": 1024}' --sizes 32

``--env-kwargs`` measures variants of the synthetic env side by side (the second line above: the
per-request answer budget against the former fixed 1,024-token cap).

``default:<dtype>`` runs the shipped model in process in that dtype (``default`` lets the
hardware pick: bf16 on CPUs with AVX-512 BF16 or AMX, fp32 elsewhere).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import gymnasium as gym
import numpy as np

import dreamgym_env  # noqa: F401 - registers the env ids
from dreamgym_env.device import cpu_description

logger = logging.getLogger("sim_vs_real_speed")


def _random_action(info: dict, rng: np.random.Generator) -> str:
    actions = info.get("admissible_actions") or ["click [1]"]
    return str(actions[rng.integers(len(actions))])


def real_steps_per_s(steps: int, seed: int) -> float:
    """Steps/s of one real browser (resets included, as an RL loop pays them)."""
    env = gym.make("DreamGym-MiniWoB-Real-v0")
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    started = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(_random_action(info, rng))
        if terminated or truncated:
            _, info = env.reset()
    elapsed = time.perf_counter() - started
    env.close()
    return steps / elapsed


def synthetic_steps_per_s(num_envs: int, steps: int, seed: int, backend: str, timeout_s: float,
                          env_kwargs: dict | None = None) -> float:
    """Sub-env steps/s of the synthetic vector env (every sub-env step counts)."""
    from dreamgym_env.backends import make_backend

    kwargs = dict(env_kwargs or {})
    if backend.startswith(("http://", "https://")):  # a server: built here to set its timeout
        # every sub-env's request in flight at once (the backend's default allows 64)
        kwargs["backend"] = make_backend(backend, timeout_s=timeout_s, max_concurrency=max(64, num_envs))
    elif backend.startswith("default:"):  # the shipped model in process, in the dtype named
        from dreamgym_env.backends.default_model import miniwob_model_dir
        from dreamgym_env.backends.transformers_backend import TransformersBackend

        kwargs["backend"] = TransformersBackend(miniwob_model_dir(), dtype=backend.split(":", 1)[1])
    elif backend != "default":
        kwargs["backend"] = backend
    envs = gym.make_vec("DreamGym-MiniWoB-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                        write_synthetic=False, **kwargs)
    rng = np.random.default_rng(seed)
    _, infos = envs.reset(seed=seed)
    envs.step([_random_action({"admissible_actions": a}, rng) for a in infos["admissible_actions"]])  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        _, _, _, _, infos = envs.step([_random_action({"admissible_actions": a}, rng) for a in infos["admissible_actions"]])
    elapsed = time.perf_counter() - started
    envs.close()
    return num_envs * steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32, 64, 128],
                        help="sub-envs N (N = 64 and 128 take tens of minutes on a CPU; a server needs "
                             "KV-cache room for N sequences)")
    parser.add_argument("--steps", type=int, default=4, help="vector steps per size (after one warm-up step)")
    parser.add_argument("--real-steps", type=int, default=200)
    parser.add_argument("--backends", nargs="+", default=["default"],
                        help="experience-model backend specs measured one after the other "
                             "('default': the shipped model in process; 'default:float32' / 'default:bfloat16': "
                             "in that dtype; http://host:port/v1: a server)")
    parser.add_argument("--env-kwargs", nargs="+", default=["{}"], metavar="JSON",
                        help="synthetic env keyword arguments, each a variant measured for every backend, e.g. "
                             "'{}' '{\"max_tokens\": 1024}' (the answer budget against the former fixed cap)")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="HTTP timeout of one model call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    variants = []
    for text in args.env_kwargs:
        try:
            variant = json.loads(text)
        except json.JSONDecodeError as exc:
            parser.error(f"--env-kwargs {text!r} is not JSON: {exc}")
        if not isinstance(variant, dict):
            parser.error(f"--env-kwargs {text!r} is not a JSON object")
        variants.append(variant)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per model request otherwise
    print(f"{cpu_description()}; {time.strftime('%Y-%m-%d')}; seed {args.seed}, "
          f"{args.steps} steps a size after one warm-up step")
    real = real_steps_per_s(args.real_steps, args.seed)
    print(f"real MiniWoB, one browser: {real:.1f} steps/s")
    print("| backend | env kwargs | N | synthetic steps/s | synthetic / real |\n|---|---|---|---|---|")
    for backend in args.backends:
        for variant in variants:
            for n in args.sizes:
                synthetic = synthetic_steps_per_s(n, args.steps, args.seed, backend, args.timeout_s, variant)
                print(f"| {backend} | {json.dumps(variant)} | {n} | {synthetic:.2f} | {synthetic / real:.3f} |", flush=True)


if __name__ == "__main__":
    main()
