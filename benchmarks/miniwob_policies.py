"""Success rate of the oracle and random policies per MiniWoB family, on any MiniWoB env id.

On the real env this is the table of docs/data.md; on the synthetic twin
(``--env DreamGym-MiniWoB-v0``) it is the closed-loop fidelity check of the experience model:
``--compare`` runs both on the same seeds and prints |synthetic - real| per family. Synthetic
episodes run ``--batch`` at a time, their model calls batched into one per step.

    python benchmarks/miniwob_policies.py --env DreamGym-MiniWoB-Real-v0 --episodes 50 --seed 10000
    python benchmarks/miniwob_policies.py --env DreamGym-MiniWoB-v0 --compare --episodes 10 --batch 19
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import tempfile
from pathlib import Path

from dreamgym_env.collect import collect, read_trajectories
from dreamgym_env.domains.miniwob import TASK_IDS


def success_by_family(env_id: str, policy: str, episodes: int, seed: int, workdir: Path) -> dict[str, tuple[float, float]]:
    """(success rate, mean episode length) per family over ``episodes`` episodes each."""
    out = workdir / f"{policy}.jsonl.gz"
    collect(env_id, episodes * len(TASK_IDS), policy, out, seed=seed, task_ids=list(TASK_IDS), progress=True)
    wins: dict[str, list[float]] = collections.defaultdict(list)
    lengths: dict[str, list[int]] = collections.defaultdict(list)
    for trajectory in read_trajectories(out):
        wins[trajectory.task_id].append(float(trajectory.total_reward > 0))
        lengths[trajectory.task_id].append(len(trajectory.transitions))
    return {f: (sum(wins[f]) / len(wins[f]), sum(lengths[f]) / len(lengths[f])) for f in TASK_IDS if wins[f]}


def success_by_family_batched(env_id: str, policy: str, episodes: int, seed: int, batch: int,
                              max_steps: int = 12, families: list[str] | None = None,
                              env_kwargs: dict | None = None) -> dict[str, tuple[float, float]]:
    """As :func:`success_by_family`, ``batch`` episodes at a time: the synthetic env's model calls
    of one step go to the backend as one batch (same seeds as the real run's episodes)."""
    from tqdm.auto import tqdm

    from dreamgym_env.collect import episode_seed
    from dreamgym_env.domains.miniwob.oracles import make_policy
    from dreamgym_env.trainers.common import make_envs, step_many

    families = families or list(TASK_IDS)
    total = episodes * len(families)
    envs = make_envs(env_id, min(batch, total), {"max_episode_steps": max_steps, **(env_kwargs or {})})
    wins: dict[str, list[float]] = collections.defaultdict(list)
    lengths: dict[str, list[int]] = collections.defaultdict(list)
    with tqdm(total=total, desc=f"{policy} on {env_id}", unit="ep") as bar:
        for start in range(0, total, len(envs)):
            ids = list(range(start, min(total, start + len(envs))))
            agents, obs, infos, returns, steps = [], [], [], [0.0] * len(ids), [0] * len(ids)
            for env, i in zip(envs, ids):
                agent = make_policy(policy, seed=seed)
                agent.reset(seed=episode_seed(seed, i))
                o, info = env.reset(seed=episode_seed(seed, i), options={"task_id": families[i % len(families)]})
                agents.append(agent); obs.append(o); infos.append(info)
            live = list(range(len(ids)))
            for _ in range(max_steps):
                if not live:
                    break
                actions = [str(agents[j].act(obs[j], infos[j])) for j in live]
                outcomes = step_many([envs[j] for j in live], actions)
                still = []
                for j, (o, r, terminated, truncated, info) in zip(live, outcomes):
                    obs[j], infos[j] = o, info
                    returns[j] += float(r)
                    steps[j] += 1
                    if not (terminated or truncated):
                        still.append(j)
                live = still
            for j, i in enumerate(ids):
                wins[families[i % len(families)]].append(float(returns[j] > 0))
                lengths[families[i % len(families)]].append(steps[j])
            bar.update(len(ids))
    for env in envs:
        env.close()
    return {f: (sum(wins[f]) / len(wins[f]), sum(lengths[f]) / len(lengths[f])) for f in families if wins[f]}


def compare(synthetic_env: str, real_env: str, episodes: int, seed: int, batch: int, workdir: Path,
            env_kwargs: dict | None = None) -> None:
    """Closed loop: oracle and random success per family, synthetic beside real, same seeds."""
    rows = {}
    for policy in ("oracle", "random"):
        real = success_by_family(real_env, policy, episodes, seed, workdir)
        synthetic = success_by_family_batched(synthetic_env, policy, episodes, seed, batch, env_kwargs=env_kwargs)
        rows[policy] = (synthetic, real)
    extra = f" ({json.dumps(env_kwargs)})" if env_kwargs else ""
    print(f"closed loop: {synthetic_env}{extra} vs {real_env}, {episodes} episodes per family and policy, seed {seed}")
    print("| family | oracle synthetic | oracle real | |Δ| | random synthetic | random real | |Δ| |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    gaps: dict[str, list[float]] = {"oracle": [], "random": []}
    for family in TASK_IDS:
        cells = []
        for policy in ("oracle", "random"):
            synthetic, real = rows[policy]
            s, r = synthetic.get(family, (0.0, 0))[0], real.get(family, (0.0, 0))[0]
            gaps[policy].append(abs(s - r))
            cells += [f"{s:.2f}", f"{r:.2f}", f"{abs(s - r):.2f}"]
        print(f"| {family} | " + " | ".join(cells) + " |")
    for policy, values in gaps.items():
        print(f"mean |synthetic - real| over families, {policy}: {sum(values) / len(values):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="DreamGym-MiniWoB-Real-v0")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per family and policy")
    parser.add_argument("--seed", type=int, default=10000)
    parser.add_argument("--compare", action="store_true", help="closed loop: --env (synthetic) beside --real-env")
    parser.add_argument("--real-env", default="DreamGym-MiniWoB-Real-v0")
    parser.add_argument("--batch", type=int, default=19, help="synthetic episodes stepped together")
    parser.add_argument("--env-kwargs", type=json.loads, default=None,
                        help='JSON keyword arguments of the synthetic env, e.g. \'{"exact_retrieval": false}\'')
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per model request otherwise
    if args.compare:
        with tempfile.TemporaryDirectory() as tmp:
            compare(args.env, args.real_env, args.episodes, args.seed, args.batch, Path(tmp), args.env_kwargs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tables = {p: success_by_family(args.env, p, args.episodes, args.seed, Path(tmp)) for p in ("oracle", "random")}
    print(f"env {args.env}, {args.episodes} episodes per family and policy, seed {args.seed}")
    print("| family | oracle success | random success | oracle length | random length |")
    print("|---|---:|---:|---:|---:|")
    for family in TASK_IDS:
        (o, ol), (r, rl) = tables["oracle"].get(family, (0, 0)), tables["random"].get(family, (0, 0))
        print(f"| {family} | {o:.2f} | {r:.2f} | {ol:.1f} | {rl:.1f} |")
    for policy, table in tables.items():
        print(f"mean {policy} success over families: {sum(v[0] for v in table.values()) / len(table):.3f}")


if __name__ == "__main__":
    main()
