"""Per-step framework overhead and vector batching efficiency of DreamGymEnv.

1. Overhead: everything a step costs except model inference (action parsing, top-k retrieval
   from a Chroma buffer, prompt rendering, output parsing, state update, writing the synthetic
   transition), with a zero-latency scripted backend, at each buffer size. A vector env of N
   sub-envs makes one batched retrieval per step; the overhead per step is the batch's time / N
   (``--overhead-envs 1 32``: a single env and a batch of 32).
2. Batching efficiency: a backend with a fixed simulated latency L per batched call; the vector
   env at N = 1, 8, 32 should approach N / L steps/s. Efficiency = measured steps/s / (N / L).

``--retrieval`` picks the env's ``exact_retrieval`` ("auto", the default, decides by size: see
``ExperienceBuffer.exact_max_entries``); each row names the mode the buffer used.

Prints figures; asserts nothing. Example:
    python benchmarks/step_overhead.py --sizes 10000 100000 --latency 0.25 --num-envs 32
"""

from __future__ import annotations

import argparse
import datetime
import logging
import math
import os
import platform
import statistics
import tempfile
import time

import chromadb
import numpy as np

from dreamgym_env.backends import ScriptedBackend
from dreamgym_env.buffer import ExperienceBuffer
from dreamgym_env.device import cpu_description
from dreamgym_env.domains import make_domain
from dreamgym_env.schema import Transition
from dreamgym_env.vector import DreamGymVectorEnv

logger = logging.getLogger("bench")

WORDS = ("home search cart order account review price filter sort page next back submit "
         "product customer invoice report issue merge request branch user post comment").split()
ROLES = ("link", "button", "textbox", "StaticText", "heading", "combobox", "checkbox")


def synthetic_real_transitions(n: int, start: int, task_ids: list[str], rng: np.random.Generator) -> list[Transition]:
    """``n`` real-looking web transitions (~20 element lines a state), 10 steps a trajectory.

    The random draws are made for all ``n`` at once (a per-line ``rng.choice`` took 1.2 ms a
    transition, more than a million-entry fill can afford); the content is of the same kind.
    """
    roles = rng.integers(len(ROLES), size=(n, 20))
    words = rng.integers(len(WORDS), size=(n, 20, 3))
    refs = rng.integers(1, 21, size=n)
    clicks = rng.random(n) < 0.7
    typed = rng.integers(len(WORDS), size=n)
    out = []
    for row, i in enumerate(range(start, start + n)):
        state = "\n".join(
            f"[{j + 1}] {ROLES[roles[row, j]]} '{WORDS[words[row, j, 0]]} {WORDS[words[row, j, 1]]} "
            f"{WORDS[words[row, j, 2]]}'"
            for j in range(20)
        )
        ref = int(refs[row])
        action = f"click [{ref}]" if clicks[row] else f'type [{ref}] "{WORDS[typed[row]]}"'
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


def machine() -> str:
    """CPU model, cores, vector ISA (the flags that decide BLAS speed) and versions."""
    return (f"{cpu_description()}; python {platform.python_version()}, "
            f"numpy {np.__version__}, chromadb {chromadb.__version__}")


def retrieval_mode(buffer: ExperienceBuffer, exact_retrieval: bool | str) -> str:
    """What the env's retrieval does on ``buffer`` now: "exact" or "hnsw" (and why for auto)."""
    if exact_retrieval != "auto":
        return "exact" if exact_retrieval else "hnsw"
    exact = buffer.auto_exact({"$and": [{"domain": "webarena"}, {"source": "real"}]})
    return f"auto: {'exact' if exact else 'hnsw'}"


def measure_overhead(buffer: ExperienceBuffer, num_envs: int, steps: int, warmup: int, top_k: int, seed: int,
                     exact_retrieval: bool | str) -> dict[str, float]:
    """Per-step overhead (ms) of a vector env of ``num_envs`` with a zero-latency backend:
    each batched step's time / ``num_envs``, over ``steps`` env steps after ``warmup`` untimed
    ones. Episodes last 20 steps; their resets (which write the episode's synthetic steps and
    read a real initial state) are timed apart, per episode."""
    envs = DreamGymVectorEnv(num_envs, backend=ScriptedBackend(), buffer=buffer, top_k=top_k,
                             exact_retrieval=exact_retrieval)
    rng = np.random.default_rng(seed)
    batches, warm = -(-steps // num_envs), -(-warmup // num_envs)
    times, reset_times = [], []
    hits, misses = buffer.payload_hits, buffer.payload_misses
    for i in range(warm + batches):
        if i == warm:
            hits, misses = buffer.payload_hits, buffer.payload_misses
        if i % 20 == 0:
            started = time.perf_counter()
            envs.reset(seed=seed + i)
            if i >= warm:
                reset_times.append((time.perf_counter() - started) * 1000 / num_envs)
        actions = [f"click [{int(r)}]" for r in rng.integers(1, 20, size=num_envs)]
        started = time.perf_counter()
        _, _, terminated, truncated, info = envs.step(actions)
        if i >= warm:
            times.append((time.perf_counter() - started) * 1000 / num_envs)
        errors = [e for e in info.get("error", []) if e]
        assert not errors and not (terminated.any() or truncated.any()), errors[:1]
    envs.close()
    times.sort()
    hits, misses = buffer.payload_hits - hits, buffer.payload_misses - misses
    return {
        "p50": statistics.median(times),
        "p95": times[math.ceil(0.95 * len(times)) - 1],  # nearest rank
        "mean": statistics.fmean(times),
        "reset": statistics.median(reset_times) if reset_times else float("nan"),
        "hit_rate": hits / max(1, hits + misses),
    }


def measure_batching(num_envs: int, latency: float, steps: int, buffer: ExperienceBuffer | None,
                     exact_retrieval: bool | str) -> float:
    """Steps/s of the vector env against a backend answering each batch after ``latency`` s."""
    envs = DreamGymVectorEnv(num_envs, backend=ScriptedBackend(latency_s=latency),
                             buffer=buffer if buffer is not None else False, write_synthetic=False,
                             exact_retrieval=exact_retrieval)
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
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--steps", type=int, default=960, help="timed env steps per row")
    parser.add_argument("--warmup", type=int, default=96, help="untimed env steps first (warm the caches)")
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--overhead-envs", type=int, nargs="+", default=[1, 32],
                        help="sub-envs of the vector env timed for overhead (per step = batch time / N)")
    parser.add_argument("--retrieval", choices=["auto", "exact", "hnsw"], default="auto",
                        help="the env's exact_retrieval: auto (default), True or False")
    parser.add_argument("--latency", type=float, nargs="+", default=[0.25, 1.0], help="simulated seconds per batched call")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch-steps", type=int, default=20)
    parser.add_argument("--buffer-dir", default=None, help="reuse a buffer directory between runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("dreamgym_env").setLevel(logging.WARNING)
    exact_retrieval = {"auto": "auto", "exact": True, "hnsw": False}[args.retrieval]

    print(f"machine: {machine()}")
    print(f"date {datetime.date.today()}; seed {args.seed}; env exact_retrieval={exact_retrieval!r}; "
          f"load average at start {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")
    task_ids = make_domain("webarena").task_ids
    rng = np.random.default_rng(args.seed)
    buffer_dir = args.buffer_dir or tempfile.mkdtemp(prefix="dreamgym-bench-")
    buffer = ExperienceBuffer(buffer_dir)

    print(f"\n## Per-step overhead (zero-latency scripted backend, top_k={args.top_k}, retrieval + synthetic writes)")
    print("| real entries | inserts/s while filling | retrieval | batch N | p50 ms/step | p95 ms/step | mean ms/step "
          "| reset ms/episode (median) | payload cache hits |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for size in sorted(args.sizes):
        rate = fill(buffer, size, task_ids, rng)
        size = buffer.count({"source": "real"})  # the real size (a reused buffer may be larger)
        for n in args.overhead_envs:
            mode = retrieval_mode(buffer, exact_retrieval)
            stats = measure_overhead(buffer, n, args.steps, args.warmup, args.top_k, args.seed + size, exact_retrieval)
            print(f"| {size:,} | {rate:,.0f} | {mode} | {n} | {stats['p50']:.2f} | {stats['p95']:.2f} | {stats['mean']:.2f} "
                  f"| {stats['reset']:.1f} | {stats['hit_rate']:.0%} |", flush=True)

    print("\n## Vector batching efficiency (backend answers each batched call after L seconds)")
    print("| L (s) | num_envs | buffer | retrieval | steps/s | ideal N/L | efficiency |")
    print("|---:|---:|---|---|---:|---:|---:|")
    for latency in args.latency:
        for label, buf in (("none", None), (f"{buffer.count({'source': 'real'}):,} real", buffer)):
            mode = retrieval_mode(buf, exact_retrieval) if buf is not None else "-"
            for n in args.num_envs:
                sps = measure_batching(n, latency, args.batch_steps, buf, exact_retrieval)
                ideal = n / latency
                print(f"| {latency} | {n} | {label} | {mode} | {sps:.1f} | {ideal:.1f} | {sps / ideal:.3f} |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")


if __name__ == "__main__":
    main()
