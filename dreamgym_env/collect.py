"""Collect real trajectories (``dreamgym collect``), read them back, and split them.

One episode is one line of JSONL (``Trajectory.to_json()``, gzip-compressed when the path ends
in ``.gz``). Episode ``i`` of a run with seed ``s`` always resets its env with the same seed and
gets the trajectory id ``"<env>-<policy>-s<s>-e<i>"``, so a run can be stopped and resumed:
episodes already in the file are skipped.

>>> stats = collect("DreamGym-MiniWoB-Real-v0", episodes=100, policy="mixed",
...                 out_path="miniwob.jsonl.gz", seed=0, epsilon=0.2)   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import os
import re
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np

from dreamgym_env.errors import DreamGymError
from dreamgym_env.schema import Trajectory, Transition

logger = logging.getLogger(__name__)

__all__ = [
    "CollectStats", "add_collect_parser", "collect", "episode_seed", "read_trajectories",
    "split_trajectories", "trajectory_id", "write_trajectories",
]

PolicyLike = Any  # "oracle" | "random" | "mixed" | an object with act(obs, info) | a callable


# -- ids and seeds -------------------------------------------------------------------------------------


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of episode ``episode`` in a run seeded ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1)[0])


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower().split(":")[-1]).strip("-")


def trajectory_id(env_id: str, seed: int, episode: int, policy: str = "") -> str:
    """``"<env slug>[-<policy>]-s<seed>-e<episode>"``, e.g.
    ``dreamgym-miniwob-real-v0-mixed-eps0.2-s0-e000012``: the same run resumes into the same ids,
    another policy or seed writes new ones into the same file."""
    middle = f"-{_slug(policy)}" if policy else ""
    return f"{_slug(env_id)}{middle}-s{int(seed)}-e{int(episode):06d}"


# -- files ---------------------------------------------------------------------------------------------


def _open_text(path: str | os.PathLike[str], mode: str, *, like: str | os.PathLike[str] | None = None):
    """Open a text file, gzip-compressed when ``like`` (default: ``path``) ends in ``.gz``."""
    if str(like if like is not None else path).endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def _complete_lines(path: str | os.PathLike[str]) -> tuple[list[str], bool]:
    """The complete lines of a JSONL(.gz) file, and whether its tail was cut (crash mid-write)."""
    lines: list[str] = []
    damaged = False
    try:
        with _open_text(path, "r") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    damaged = True
                    break
                lines.append(line)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        damaged = True
    return lines, damaged


def read_trajectories(path: str | os.PathLike[str]) -> Iterator[Trajectory]:
    """The trajectories of a JSONL or JSONL.gz file (a cut last line is ignored)."""
    lines, damaged = _complete_lines(path)
    if damaged:
        logger.warning("%s ends with an incomplete record (interrupted write); it is ignored", path)
    for line in lines:
        if line.strip():
            yield Trajectory.from_json(line)


def write_trajectories(path: str | os.PathLike[str], trajectories: Sequence[Trajectory]) -> None:
    """Write trajectories as JSONL (gzip when ``path`` ends in ``.gz``), replacing the file."""
    tmp = f"{path}.tmp"
    with _open_text(tmp, "w", like=path) as fh:
        for traj in trajectories:
            fh.write(traj.to_json() + "\n")
    os.replace(tmp, path)


def _existing_ids(path: Path) -> set[str]:
    """Trajectory ids already in ``path``; a cut tail is removed so appending stays valid."""
    if not path.exists():
        return set()
    lines, damaged = _complete_lines(path)
    ids = set()
    good = []
    for line in lines:
        if not line.strip():
            continue
        try:
            ids.add(json.loads(line)["trajectory_id"])
            good.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            damaged = True
    if damaged:
        logger.warning("%s: dropping an incomplete record left by an interrupted run", path)
        tmp = f"{path}.tmp"
        with _open_text(tmp, "w", like=path) as fh:
            fh.writelines(good)
        os.replace(tmp, path)
    return ids


# -- collection -------------------------------------------------------------------------------------------


@dataclass
class CollectStats:
    """What a collection run did."""

    env_id: str
    out_path: str
    policy: str
    episodes: int = 0
    skipped: int = 0
    failed_resets: int = 0
    transitions: int = 0
    successes: int = 0
    invalid_actions: int = 0
    browser_errors: int = 0
    elapsed_s: float = 0.0
    env_s: float = 0.0
    buffer_added: int | None = None
    per_task: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    @property
    def steps_per_s(self) -> float:
        """Transitions per second of wall time (resets, policy and writing included)."""
        return self.transitions / self.elapsed_s if self.elapsed_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env_id, "out": self.out_path, "policy": self.policy,
            "episodes": self.episodes, "skipped": self.skipped, "failed_resets": self.failed_resets,
            "transitions": self.transitions, "successes": self.successes,
            "success_rate": round(self.success_rate, 4), "invalid_actions": self.invalid_actions,
            "browser_errors": self.browser_errors, "elapsed_s": round(self.elapsed_s, 2),
            "steps_per_s": round(self.steps_per_s, 2),
            "env_steps_per_s": round(self.transitions / self.env_s, 2) if self.env_s else 0.0,
            "buffer_added": self.buffer_added, "per_task": self.per_task,
        }


def _make_policy(policy: PolicyLike, epsilon: float, seed: int, recover: float) -> tuple[Any, str]:
    if isinstance(policy, str):
        from dreamgym_env.domains.miniwob.oracles import make_policy

        name = {"mixed": f"mixed-eps{epsilon:g}", "near-miss": f"near-miss-rec{recover:g}"}.get(policy, policy)
        return make_policy(policy, epsilon=epsilon, seed=seed, recover=recover), name
    return policy, getattr(policy, "name", type(policy).__name__)


def _act(policy: Any, obs: str, info: Mapping[str, Any]) -> str:
    if hasattr(policy, "act"):
        return str(policy.act(obs, info))
    return str(policy(obs, info))


def _state_of(obs: str) -> str:
    from dreamgym_env.domains.miniwob.oracles import parse_observation

    return parse_observation(obs)[2]


def collect(
    env_id: str,
    episodes: int,
    policy: PolicyLike,
    out_path: str | os.PathLike[str],
    seed: int = 0,
    epsilon: float = 0.2,
    buffer: Any = None,
    *,
    task_ids: Sequence[str] | None = None,
    max_episode_steps: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    buffer_batch: int = 50,
    progress: bool = False,
    recover: float = 0.2,
) -> CollectStats:
    """Run ``episodes`` episodes of ``env_id`` and append each as one JSONL line to ``out_path``.

    Args:
        env_id: a registered env id (e.g. ``"DreamGym-MiniWoB-Real-v0"``).
        episodes: the run's episode count; those already in ``out_path`` are skipped.
        policy: ``"oracle"``, ``"random"``, ``"mixed"``, ``"near-miss"``, an object with
            ``act(obs, info)`` (and optionally ``reset(seed)``, and ``step_extra()``: a dict
            stored in the transition's ``extra``), or a callable ``(obs, info) -> action``.
        out_path: JSONL file (``.gz``: gzip-compressed), appended to.
        seed: run seed: episode ``i`` resets with :func:`episode_seed` ``(seed, i)``.
        epsilon: random-action probability of the ``mixed`` policy.
        buffer: an ExperienceBuffer, or a path / URI to open one, that receives every new
            trajectory too (None: file only).
        task_ids: cycle through these tasks (episode ``i`` plays ``task_ids[i % n]``); None lets
            the env draw.
        max_episode_steps: override the registered step limit.
        env_kwargs: more keyword arguments of ``gym.make``.
        buffer_batch: trajectories per buffer insert.
        progress: show a tqdm bar (on stderr).
        recover: share of ``near-miss`` episodes that return to the real goal after the mistake.

    Returns:
        CollectStats of the episodes run now (not the skipped ones).
    """
    import gymnasium as gym

    import dreamgym_env  # noqa: F401 - registers the ids

    if episodes < 0:
        raise ValueError(f"episodes must be >= 0, got {episodes}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    done_ids = _existing_ids(out)
    agent, policy_name = _make_policy(policy, epsilon, seed, recover)
    todo = [i for i in range(episodes) if trajectory_id(env_id, seed, i, policy_name) not in done_ids]
    stats = CollectStats(env_id=env_id, out_path=str(out), policy=policy_name, skipped=episodes - len(todo))
    if isinstance(buffer, (str, os.PathLike)):
        from dreamgym_env.buffer import ExperienceBuffer

        buffer = ExperienceBuffer.from_uri(str(buffer))
    if buffer is not None:
        stats.buffer_added = 0
    if not todo:
        return stats

    kwargs = dict(env_kwargs or {})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    env = gym.make(env_id, **kwargs)
    domain = getattr(getattr(env.unwrapped, "domain", None), "name", _slug(env_id))
    pending: list[Trajectory] = []
    per_task: dict[str, Counter] = defaultdict(Counter)

    def flush_buffer() -> None:
        if buffer is not None and pending:
            stats.buffer_added += len(buffer.add_trajectories(pending).added)
        pending.clear()

    from tqdm.auto import tqdm

    bar = tqdm(total=episodes, initial=stats.skipped, disable=not progress, desc=f"collect {policy_name}", unit="ep")
    started = time.perf_counter()
    try:
        with _open_text(out, "a") as fh:
            for episode in todo:
                tid = trajectory_id(env_id, seed, episode, policy_name)
                options: dict[str, Any] = {"trajectory_id": tid}
                if task_ids:
                    options["task_id"] = task_ids[episode % len(task_ids)]
                ep_seed = episode_seed(seed, episode)
                if hasattr(agent, "reset"):
                    agent.reset(seed=ep_seed)
                t0 = time.perf_counter()
                try:
                    obs, info = env.reset(seed=ep_seed, options=options)
                except DreamGymError as exc:
                    logger.error("episode %d: reset failed (%s); it is left for a later run", episode, exc)
                    stats.failed_resets += 1
                    stats.env_s += time.perf_counter() - t0
                    bar.update(1)
                    continue
                stats.env_s += time.perf_counter() - t0
                traj = Trajectory(trajectory_id=tid, domain=domain, task_id=str(info["task_id"]),
                                  goal=str(info.get("goal", "")), source=info.get("source", "real"))
                state = _state_of(obs)
                terminated = truncated = False
                step = 0
                while not (terminated or truncated):
                    action = _act(agent, obs, info)
                    policy_extra = agent.step_extra() if hasattr(agent, "step_extra") else None
                    t0 = time.perf_counter()
                    obs, reward, terminated, truncated, info = env.step(action)
                    stats.env_s += time.perf_counter() - t0
                    if info.get("error"):  # the browser failed: this step is not a real transition
                        stats.browser_errors += 1
                        break
                    next_state = _state_of(obs)
                    extra: dict[str, Any] = {"raw_reward": float(info.get("raw_reward", reward))}
                    if truncated:
                        extra["truncated"] = True
                    if info.get("last_action_error"):
                        extra["last_action_error"] = info["last_action_error"]
                    if step == 0 and "miniwob_seed" in info:
                        extra["miniwob_seed"] = info["miniwob_seed"]
                    if policy_extra:
                        extra.update(policy_extra)
                    valid = bool(info.get("valid_action", True))
                    stats.invalid_actions += not valid
                    traj.transitions.append(Transition(
                        domain=domain, task_id=traj.task_id, trajectory_id=tid, step=step,
                        state=state, action=action, next_state=next_state, reward=float(reward),
                        done=bool(terminated), goal=traj.goal, valid_action=valid,
                        source=traj.source, policy_version=policy_name, extra=extra,
                    ))
                    state = next_state
                    step += 1
                if not traj.transitions:
                    continue
                fh.write(traj.to_json() + "\n")
                fh.flush()
                success = traj.total_reward > 0
                stats.episodes += 1
                stats.transitions += len(traj.transitions)
                stats.successes += success
                per_task[traj.task_id].update(episodes=1, successes=int(success), transitions=len(traj.transitions))
                pending.append(traj)
                if len(pending) >= buffer_batch:
                    flush_buffer()
                elapsed = time.perf_counter() - started
                bar.set_postfix(steps_s=f"{stats.transitions / elapsed:.1f}", success=f"{stats.success_rate:.2f}", refresh=False)
                bar.update(1)
        flush_buffer()
    finally:
        bar.close()
        stats.elapsed_s = time.perf_counter() - started
        stats.per_task = {k: dict(v) for k, v in sorted(per_task.items())}
        env.close()
    logger.info(
        "collected %d episodes, %d transitions in %.1f s (%.1f steps/s), success %.2f",
        stats.episodes, stats.transitions, stats.elapsed_s, stats.steps_per_s, stats.success_rate,
    )
    return stats


# -- held-out splits -----------------------------------------------------------------------------------------


def _unit(text: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for ``text`` (same on every machine and run)."""
    return zlib.crc32(f"{seed}:{text}".encode()) / 2**32


def split_trajectories(
    path: str | os.PathLike[str] | Sequence[Trajectory],
    by: Literal["episode", "family"] = "episode",
    test_fraction: float = 0.2,
    held_out_families: Sequence[str] | None = None,
    seed: int = 0,
) -> tuple[list[Trajectory], list[Trajectory]]:
    """Split trajectories into (train, test) without leaking an episode across the two.

    Args:
        path: a JSONL(.gz) file, or trajectories already loaded.
        by: ``"episode"``: each episode goes to test with probability ``test_fraction`` (decided
            by a hash of its id, so the split is stable as a file grows); ``"family"``: whole task
            families go to test (``held_out_families``, else ``ceil(test_fraction * families)``
            families picked by hash).
        test_fraction: share of episodes (or families) held out.
        held_out_families: families whose episodes always go to test (both modes).
        seed: changes which episodes / families the hash picks.
    """
    if by not in ("episode", "family"):
        raise ValueError(f"by must be 'episode' or 'family', got {by!r}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    trajectories = list(read_trajectories(path) if isinstance(path, (str, os.PathLike)) else path)
    families = sorted({t.task_id for t in trajectories})
    held = set(held_out_families or ())
    unknown = held - set(families)
    if unknown:
        logger.warning("held-out families not in the data: %s", sorted(unknown))
    if by == "family" and not held:
        count = min(len(families), math.ceil(test_fraction * len(families))) if test_fraction > 0 else 0
        held = set(sorted(families, key=lambda f: _unit(f, seed))[:count])
    train, test = [], []
    for traj in trajectories:
        if traj.task_id in held:
            test.append(traj)
        elif by == "episode" and _unit(traj.trajectory_id, seed) < test_fraction:
            test.append(traj)
        else:
            train.append(traj)
    return train, test


# -- command line ----------------------------------------------------------------------------------------------


def add_collect_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dreamgym collect`` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "collect", help="run a real env with a scripted policy and save the trajectories as JSONL",
        description="Run episodes of a real env (default DreamGym-MiniWoB-Real-v0) and append one "
        "Trajectory JSON line per episode to --out (gzip when it ends in .gz). Resumable: episodes "
        "already in the file are skipped.",
    )
    parser.add_argument("--env", default="DreamGym-MiniWoB-Real-v0", help="registered env id")
    parser.add_argument("--episodes", type=int, required=True, help="episodes of the run (resumes)")
    parser.add_argument("--policy", choices=["oracle", "random", "mixed", "near-miss"], default="mixed",
                        help="oracle: scripted solver; random: random admissible action; "
                        "mixed: oracle, or with probability --epsilon a random action; "
                        "near-miss: oracle with one plausible mistake an episode (the other button, "
                        "a box too many or too few, a wrong or partial text, early Submit, ...)")
    parser.add_argument("--recover", type=float, default=0.2,
                        help="near-miss: share of episodes that go back to the real goal after the mistake")
    parser.add_argument("--epsilon", type=float, default=0.2, help="random-action probability of mixed")
    parser.add_argument("--out", required=True, help="output JSONL file (.jsonl or .jsonl.gz)")
    parser.add_argument("--buffer", default=None, help="also add the trajectories to this buffer (path or http://host:port)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (episode i resets with a seed derived from it)")
    parser.add_argument("--task-ids", default=None, help="comma-separated tasks to cycle through (default: the env draws)")
    parser.add_argument("--max-steps", type=int, default=None, help="override the registered step limit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_cmd_collect)
    return parser


def _cmd_collect(args: argparse.Namespace) -> int:
    task_ids = [t.strip() for t in args.task_ids.split(",") if t.strip()] if args.task_ids else None
    stats = collect(
        args.env, args.episodes, args.policy, args.out, seed=args.seed, epsilon=args.epsilon,
        buffer=args.buffer, task_ids=task_ids, max_episode_steps=args.max_steps,
        progress=not args.no_progress, recover=args.recover,
    )
    print(json.dumps(stats.to_dict()))
    return 0 if not stats.failed_resets else 1
