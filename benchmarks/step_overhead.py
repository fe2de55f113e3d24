"""Per-step framework overhead and vector batching efficiency of DreamGymEnv.

1. Overhead: everything a step costs except model inference (action parsing, top-k retrieval
   from a Chroma buffer, prompt rendering, output parsing, state update, writing the synthetic
   transition), with a zero-latency scripted backend, at buffer sizes 1k, 10k and 100k.
2. Batching efficiency: a backend with a fixed simulated latency L per batched call; the vector
   env at N = 1, 8, 32 should approach N / L steps/s. Efficiency = measured steps/s / (N / L).

Prints figures; asserts nothing. Example:
    python benchmarks/step_overhead.py --sizes 1000 10000 100000 --latency 0.25 1.0
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time

import numpy as np

from dreamgym_env.backends import ScriptedBackend
from dreamgym_env.buffer import ExperienceBuffer
from dreamgym_env.domains import make_domain
from dreamgym_env.env import DreamGymEnv
from dreamgym_env.schema import Transition
from dreamgym_env.vector import DreamGymVectorEnv

logger = logging.getLogger("bench")

WORDS = ("home search cart order account review price filter sort page next back submit "
         "product customer invoice report issue merge request branch user post comment").split()
ROLES = ("link", "button", "textbox", "StaticText", "heading", "combobox", "checkbox")


def synthetic_real_transitions(n: int, start: int, task_ids: list[str], rng: np.random.Generator) -> list[Transition]:
    """``n`` real-looking web transitions (~20 element lines a state), 10 steps a trajectory."""
    out = []
    for i in range(start, start + n):
        lines = [
            f"[{j}] {ROLES[rng.integers(len(ROLES))]} '{' '.join(rng.choice(WORDS, 3))}'"
            for j in range(1, 21)
        ]
        state = "\n".join(lines)
        ref = int(rng.integers(1, 21))
        action = f"click [{ref}]" if rng.random() < 0.7 else f'type [{ref}] "{rng.choice(WORDS)}"'
        next_state = state.replace(f"[{ref}] ", f"[{ref}] focused ", 1)
        traj, step = divmod(i, 10)
        out.append(Transition(
            domain="webarena", task_id=task_ids[traj % len(task_ids)], trajectory_id=f"bench-{traj}",
            step=step, state=state, action=action, next_state=next_state,
            reward=float(step == 9), done=step == 9, goal="benchmark", source="real",
        ))
    return out


def fill(buffer: ExperienceBuffer, target: int, task_ids: list[str], rng: np.random.Generator) -> float:
    """Grow the buffer's real entries to ``target``; returns inserts/s."""
    have = buffer.count({"source": "real"})
    if have >= target:
        return float("nan")
    started = time.perf_counter()
    chunk = 5000
    for start in range(have, target, chunk):
        buffer.add(synthetic_real_transitions(min(chunk, target - start), start, task_ids, rng))
    return (target - have) / (time.perf_counter() - started)


def measure_overhead(buffer: ExperienceBuffer, steps: int, warmup: int, top_k: int, seed: int) -> dict[str, float]:
    """Step times (ms) of one env with a zero-latency backend over ``steps`` steps, after
    ``warmup`` untimed ones; episodes of 20 steps."""
    env = DreamGymEnv("webarena", backend=ScriptedBackend(), buffer=buffer, top_k=top_k)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    times = []
    hits, misses = buffer.payload_hits, buffer.payload_misses
    for i in range(warmup + steps):
        if i == warmup:
            hits, misses = buffer.payload_hits, buffer.payload_misses
        action = f"click [{int(rng.integers(1, 20))}]"
        started = time.perf_counter()
        _, _, terminated, truncated, info = env.step(action)
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
        assert info["error"] is None and len(info["retrieved"]) == top_k
        if terminated or truncated or i % 20 == 19:
            env.reset()
    env.close()
    times.sort()
    hits, misses = buffer.payload_hits - hits, buffer.payload_misses - misses
    return {
        "p50": statistics.median(times),
        "p95": times[int(0.95 * (len(times) - 1))],
        "mean": statistics.fmean(times),
        "hit_rate": hits / max(1, hits + misses),
    }


def measure_batching(num_envs: int, latency: float, steps: int, buffer: ExperienceBuffer | None) -> float:
    """Steps/s of the vector env against a backend answering each batch after ``latency`` s."""
    envs = DreamGymVectorEnv(num_envs, backend=ScriptedBackend(latency_s=latency),
                             buffer=buffer if buffer is not None else False, write_synthetic=False)
    envs.reset(seed=0)
    actions = ["click [3]"] * num_envs
    envs.step(actions)  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        envs.step(actions)
    elapsed = time.perf_counter() - started
    envs.close()
    return steps * num_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--steps", type=int, default=500, help="timed steps per buffer size")
    parser.add_argument("--warmup", type=int, default=100, help="untimed steps first (warms the payload cache)")
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.25, 1.0], help="simulated seconds per batched call")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch-steps", type=int, default=20)
    parser.add_argument("--buffer-dir", default=None, help="reuse a buffer directory between runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("dreamgym_env").setLevel(logging.WARNING)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, {os.cpu_count()} cores; python {platform.python_version()}; seed {args.seed}")
    task_ids = make_domain("webarena").task_ids
    rng = np.random.default_rng(args.seed)
    buffer_dir = args.buffer_dir or tempfile.mkdtemp(prefix="dreamgym-bench-")
    buffer = ExperienceBuffer(buffer_dir)

    print("\n## Per-step overhead (zero-latency scripted backend, top_k={}, retrieval + synthetic writes)".format(args.top_k))
    print("| real entries | inserts/s while filling | p50 ms | p95 ms | mean ms | payload cache hits |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in sorted(args.sizes):
        rate = fill(buffer, size, task_ids, rng)
        stats = measure_overhead(buffer, args.steps, args.warmup, args.top_k, args.seed + size)
        size = buffer.count({"source": "real"})  # the real size (a reused buffer may be larger)
        print(f"| {size:,} | {rate:,.0f} | {stats['p50']:.2f} | {stats['p95']:.2f} | {stats['mean']:.2f} "
              f"| {stats['hit_rate']:.0%} |", flush=True)

    print("\n## Vector batching efficiency (backend answers each batched call after L seconds)")
    print("| L (s) | num_envs | buffer | steps/s | ideal N/L | efficiency |")
    print("|---:|---:|---|---:|---:|---:|")
    for latency in args.latency:
        for label, buf in (("none", None), (f"{buffer.count({'source': 'real'}):,} real", buffer)):
            for n in args.num_envs:
                sps = measure_batching(n, latency, args.batch_steps, buf)
                ideal = n / latency
                print(f"| {latency} | {n} | {label} | {sps:.1f} | {ideal:.1f} | {sps / ideal:.3f} |", flush=True)


if __name__ == "__main__":
    main()
