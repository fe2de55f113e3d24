"""Success rate of the oracle and random policies per MiniWoB family, on any MiniWoB env id.

On the real env this is the table of docs/data.md; on the synthetic twin
(``--env DreamGym-MiniWoB-v0``) it is the closed-loop fidelity check of the experience model.

    python benchmarks/miniwob_policies.py --env DreamGym-MiniWoB-Real-v0 --episodes 50 --seed 10000
"""

from __future__ import annotations

import argparse
import collections
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="DreamGym-MiniWoB-Real-v0")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per family and policy")
    parser.add_argument("--seed", type=int, default=10000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
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
