"""Closed-loop fidelity of a MiniWoB experience model: paired starts and replay agreement.

Scoring single transitions (``dreamgym eval-model``) says little about what an agent trained in
the synthetic env will meet. Here the same scripted policies act in the real env and in the
synthetic one, and the episodes are compared:

- **Paired closed loop**: episode ``i`` of policy ``p`` runs first on the real env (reset seed
  :func:`~dreamgym_env.collect.episode_seed` ``(seed, i)``); the synthetic episode then starts
  from exactly the page and goal the real env showed (``reset(options={"task": {...,
  "initial_state": ...}})``) with the policy seeded the same, so the two differ only in
  dynamics. Reported: success per family on both, and the mean over families of
  ``|synthetic - real|`` with a bootstrap 95 % interval (episodes resampled within family, pairs
  kept together).
- **Replay agreement**: each real episode's actions are replayed in the synthetic env from its
  start; an episode agrees when the synthetic env gives the same outcome (success or not).

With a deterministic backend (greedy decoding) everything is reproducible from ``seed``.

A run with a ``workdir`` keeps what it has done there: the real episodes (``collect`` appends and
skips those already run) and every synthetic pair, written a chunk of episodes at a time. Rerun
the same command to resume after an interruption, or with more ``--episodes`` to extend a run:
episode ``i`` is the same episode whatever the total, so the first 6 of 30 are a 6-episode run's.
One workdir holds one model's run; it refuses a rerun with another env, backend, seed or
families.

    dreamgym closed-loop --backend http://127.0.0.1:8000/v1 --episodes 30 --workdir runs/closed-loop-mymodel \\
        --output results/fidelity/closed-loop.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["ClosedLoopResult", "EpisodePair", "bootstrap_mean_gap", "closed_loop", "format_closed_loop"]

#: Scripted policies the closed loop runs by default (see ``dreamgym collect --policy``).
DEFAULT_POLICIES = ("oracle", "random", "near-miss")


@dataclass
class EpisodePair:
    """One real episode and its synthetic twin (same start, same policy seed)."""

    policy: str
    family: str
    episode: int
    real_success: bool
    synthetic_success: bool
    real_steps: int
    synthetic_steps: int
    #: The real episode's actions replayed in the synthetic env: did it succeed there?
    replay_success: bool | None = None
    synthetic_error: str | None = None


def bootstrap_mean_gap(pairs: Sequence[EpisodePair], *, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float, float]:
    """Mean over families of ``|synthetic success - real success|`` and its bootstrap 95 % interval.

    Episodes are resampled with replacement within each family, each pair kept whole, so the
    interval reflects how many episodes a family has.

    Returns:
        (gap, lower, upper); NaNs when ``pairs`` is empty.
    """
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in pairs:
        groups[p.family].append((float(p.synthetic_success), float(p.real_success)))
    if not groups:
        return math.nan, math.nan, math.nan
    by_family = {family: np.asarray(rows) for family, rows in groups.items()}

    def gap(samples: Mapping[str, np.ndarray]) -> float:
        return float(np.mean([abs(a[:, 0].mean() - a[:, 1].mean()) for a in samples.values()]))

    rng = np.random.default_rng(seed)
    boot = np.empty(resamples)
    for b in range(resamples):
        boot[b] = gap({f: a[rng.integers(len(a), size=len(a))] for f, a in by_family.items()})
    return gap(by_family), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


def _share_interval(hits: Sequence[bool], resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """A share and its bootstrap 95 % interval."""
    a = np.asarray(hits, dtype=float)
    if not len(a):
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    boot = a[rng.integers(len(a), size=(resamples, len(a)))].mean(axis=1)
    return float(a.mean()), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


@dataclass
class ClosedLoopResult:
    """Every episode pair and the figures computed from them."""

    synthetic_env: str
    real_env: str
    episodes_per_family: int
    seed: int
    pairs: list[EpisodePair] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for policy in sorted({p.policy for p in self.pairs}):
            rows = [p for p in self.pairs if p.policy == policy]
            gap, lo, hi = bootstrap_mean_gap(rows, seed=self.seed)
            agree = [p.replay_success == p.real_success for p in rows if p.replay_success is not None]
            share, alo, ahi = _share_interval(agree, seed=self.seed)
            failed = [p.replay_success == p.real_success for p in rows if p.replay_success is not None and not p.real_success]
            out[policy] = {
                "episodes": len(rows),
                "real_success": float(np.mean([p.real_success for p in rows])),
                "synthetic_success": float(np.mean([p.synthetic_success for p in rows])),
                "mean_abs_gap": gap, "gap_ci95": [lo, hi],
                "replay_agreement": share, "replay_agreement_ci95": [alo, ahi],
                "replay_agreement_real_failures": float(np.mean(failed)) if failed else math.nan,
                "real_failures": len(failed),
                "synthetic_errors": sum(p.synthetic_error is not None for p in rows),
            }
        return out

    def per_family(self) -> dict[str, dict[str, dict[str, float]]]:
        table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
        groups: dict[tuple[str, str], list[EpisodePair]] = defaultdict(list)
        for p in self.pairs:
            groups[(p.family, p.policy)].append(p)
        for (family, policy), rows in sorted(groups.items()):
            replayed = [p for p in rows if p.replay_success is not None]
            table[family][policy] = {
                "episodes": len(rows),
                "real": float(np.mean([p.real_success for p in rows])),
                "synthetic": float(np.mean([p.synthetic_success for p in rows])),
                "replay_agreement": float(np.mean([p.replay_success == p.real_success for p in replayed])) if replayed else math.nan,
            }
        return dict(table)

    def to_dict(self) -> dict[str, Any]:
        return {"synthetic_env": self.synthetic_env, "real_env": self.real_env,
                "episodes_per_family": self.episodes_per_family, "seed": self.seed,
                "summary": self.summary(), "per_family": self.per_family(),
                "pairs": [asdict(p) for p in self.pairs]}


def _run_synthetic(envs: list[Any], starts: Sequence[Mapping[str, Any]], actors: Sequence[Any],
                   max_steps: int, desc: str = "", progress: bool = False) -> list[tuple[bool, int, str | None]]:
    """Run episodes in the synthetic envs, each model step one batched call for every live episode.

    Up to ``len(envs)`` episodes are live at once; when one ends, its env starts the next
    (continuous batching: a long episode does not hold back the batch). ``starts[i]``: reset
    options and seed of episode ``i``; ``actors[i]``: a policy with ``act(obs, info)`` or a list
    of actions to replay (the episode ends when it runs out). Returns (success, steps, first
    error) per episode.
    """
    from tqdm.auto import tqdm

    from dreamgym_env.trainers.common import step_many

    results: list[tuple[bool, int, str | None]] = [(False, 0, None)] * len(starts)
    obs: dict[int, str] = {}
    infos: dict[int, Any] = {}
    steps = [0] * len(starts)
    success = [False] * len(starts)
    errors: list[str | None] = [None] * len(starts)
    pending = list(range(len(starts)))[::-1]
    live: dict[int, Any] = {}  # episode -> its env
    free = list(envs)
    bar = tqdm(total=len(starts), desc=desc, unit="ep", disable=not progress)

    def finish(i: int) -> None:
        results[i] = (success[i], steps[i], errors[i])
        free.append(live.pop(i))
        bar.update(1)

    def next_action(i: int) -> str | None:
        actor = actors[i]
        if steps[i] >= max_steps:
            return None
        if isinstance(actor, list):
            return actor[steps[i]] if steps[i] < len(actor) else None
        return str(actor.act(obs[i], infos[i]))

    while pending or live:
        while pending and free:
            i = pending.pop()
            env = free.pop()
            live[i] = env
            obs[i], infos[i] = env.reset(seed=starts[i]["seed"], options=starts[i]["options"])
            errors[i] = infos[i].get("error")
        acting = []
        for i in list(live):
            action = None if errors[i] else next_action(i)
            if action is None:
                finish(i)
            else:
                acting.append((i, action))
        if not acting:
            continue
        outcomes = step_many([live[i] for i, _ in acting], [a for _, a in acting])
        for (i, _), (o, r, terminated, truncated, info) in zip(acting, outcomes):
            obs[i], infos[i] = o, info
            steps[i] += 1
            success[i] = success[i] or float(r) > 0
            if info.get("error") and errors[i] is None:
                errors[i] = str(info["error"])
            if terminated or truncated:
                finish(i)
    bar.close()
    return results


def closed_loop(
    synthetic_env: str = "DreamGym-MiniWoB-v0",
    real_env: str = "DreamGym-MiniWoB-Real-v0",
    *,
    policies: Sequence[str] = DEFAULT_POLICIES,
    episodes: int = 30,
    families: Sequence[str] | None = None,
    seed: int = 10000,
    batch: int = 32,
    max_steps: int = 12,
    replay: bool = True,
    env_kwargs: Mapping[str, Any] | None = None,
    workdir: str | Path | None = None,
    chunk: int = 128,
    progress: bool = False,
) -> ClosedLoopResult:
    """Run every policy ``episodes`` times per family on the real env, then on the synthetic env
    from the same starts (and, with ``replay``, replay the real actions there).

    Args:
        synthetic_env: the synthetic env id (its backend and buffer through ``env_kwargs``).
        real_env: the real twin.
        policies: scripted policies (``oracle``, ``random``, ``mixed``, ``near-miss``).
        episodes: episodes per family and policy.
        families: task families (default: every MiniWoB family).
        seed: episode ``i`` resets the real env with ``episode_seed(seed, i)``.
        batch: synthetic episodes stepped together (one batched model call a step).
        max_steps: step limit of both envs.
        replay: also replay each real episode's actions in the synthetic env.
        env_kwargs: keyword arguments of the synthetic env (e.g. ``backend``, ``buffer``).
        workdir: where the real trajectories and the synthetic pairs are kept (default: a
            temporary folder); a run with the same workdir resumes, or extends to more episodes.
        chunk: synthetic episodes run (with their replays) before their pairs are saved.
        progress: tqdm bars.

    Raises:
        ValueError: on unknown families, ``episodes < 1``, or a ``workdir`` holding a run with
            other settings.
    """
    from dreamgym_env.collect import collect, read_trajectories
    from dreamgym_env.domains.miniwob import TASK_IDS
    from dreamgym_env.trainers.common import make_envs

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    families = list(families or TASK_IDS)
    unknown = sorted(set(families) - set(TASK_IDS))
    if unknown:
        raise ValueError(f"unknown MiniWoB families {unknown}; known: {sorted(TASK_IDS)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    result = ClosedLoopResult(synthetic_env, real_env, episodes, seed)
    kwargs = {"max_episode_steps": max_steps, "write_synthetic": False, **dict(env_kwargs or {})}
    total = episodes * len(families)
    envs: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        _claim_workdir(folder, {"synthetic_env": synthetic_env, "real_env": real_env, "seed": seed,
                                "max_steps": max_steps, "replay": replay, "families": families,
                                "env_kwargs": _describe(kwargs)})
        try:
            for policy in policies:
                out = folder / f"real-{policy}-s{seed}.jsonl.gz"
                collect(real_env, total, policy, out, seed=seed, task_ids=families,
                        max_episode_steps=max_steps, progress=progress)
                real = {_episode_of(t): t for t in read_trajectories(out)}
                real = [real[i] for i in sorted(real) if i < total]
                saved = folder / f"pairs-{policy}-s{seed}.jsonl"
                done = _read_pairs(saved)
                todo = [t for t in real if _episode_of(t) not in done]
                if todo and not envs:  # made once, for every policy's episodes
                    envs = make_envs(synthetic_env, min(batch, total), kwargs)
                logger.info("closed loop: %s, %d synthetic episodes (%d done before)", policy, len(todo), len(real) - len(todo))
                for begin in range(0, len(todo), chunk):
                    part = todo[begin:begin + chunk]
                    pairs = _pair_chunk(envs, part, policy, seed, max_steps, replay,
                                        f"synthetic {policy} {begin + len(part)}/{len(todo)}", progress)
                    with saved.open("a") as f:
                        f.writelines(json.dumps(asdict(p)) + "\n" for p in pairs)
                    done.update({p.episode: p for p in pairs})
                result.pairs += [done[_episode_of(t)] for t in real]
        finally:
            for env in envs:
                env.close()
    return result


def _episode_of(traj: Any) -> int:
    """The run's episode index of a collected trajectory (its id ends in ``-e<index>``)."""
    return int(traj.trajectory_id.rsplit("-e", 1)[1])


def _pair_chunk(envs: list[Any], real: Sequence[Any], policy: str, seed: int, max_steps: int, replay: bool,
                desc: str, progress: bool) -> list[EpisodePair]:
    """The synthetic twins (and replays) of some real episodes, as pairs."""
    from dreamgym_env.collect import episode_seed
    from dreamgym_env.domains.miniwob.oracles import make_policy

    starts, actors, replays = [], [], []
    for traj in real:
        episode = _episode_of(traj)
        task = {"task_id": traj.task_id, "goal": traj.goal, "initial_state": traj.transitions[0].state}
        starts.append({"seed": episode_seed(seed, episode), "options": {"task": task}, "episode": episode})
        agent = make_policy(policy, seed=seed)
        if hasattr(agent, "reset"):
            agent.reset(seed=episode_seed(seed, episode))
        actors.append(agent)
        replays.append([t.action for t in traj.transitions])
    jobs = actors + (replays if replay else [])  # run and replays share the batch
    done = _run_synthetic(envs, starts + (starts if replay else []), jobs, max_steps,
                          desc + (" + replay" if replay else ""), progress)
    synthetic = done[:len(starts)]
    replayed = done[len(starts):] if replay else [None] * len(real)
    return [EpisodePair(policy=policy, family=traj.task_id, episode=start["episode"],
                        real_success=traj.total_reward > 0, synthetic_success=ok,
                        real_steps=len(traj.transitions), synthetic_steps=steps,
                        replay_success=None if rep is None else rep[0], synthetic_error=error)
            for traj, start, (ok, steps, error), rep in zip(real, starts, synthetic, replayed)]


def _read_pairs(path: Path) -> dict[int, EpisodePair]:
    """The pairs a run saved before, by episode (a line cut by an interruption is ignored)."""
    pairs: dict[int, EpisodePair] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                pair = EpisodePair(**json.loads(line))
            except (ValueError, TypeError):
                continue
            pairs[pair.episode] = pair
    return pairs


def _describe(kwargs: Mapping[str, Any]) -> dict[str, str]:
    """The env's keyword arguments as text (an object, e.g. a backend or a buffer, by its class
    and its name or path)."""
    out = {}
    for key, value in sorted(kwargs.items()):
        if isinstance(value, (str, int, float, bool, type(None), list, dict)):
            out[key] = json.dumps(value, sort_keys=True, default=str)
        else:
            out[key] = f"{type(value).__name__}({getattr(value, 'name', '') or getattr(value, 'path', '')})"
    return out


def _claim_workdir(folder: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings in ``folder``, or check them against those recorded there."""
    path = folder / "closed-loop-settings.json"
    if path.is_file():
        before = json.loads(path.read_text())
        differ = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if differ:
            raise ValueError(
                f"{folder} holds a closed-loop run with other settings ({', '.join(differ)}: "
                f"{ {k: before.get(k) for k in differ} } there, { {k: settings.get(k) for k in differ} } now); "
                "use another --workdir for this run, or delete that one to start over")
        return
    path.write_text(json.dumps(settings, indent=1, sort_keys=True))


def format_closed_loop(result: ClosedLoopResult) -> str:
    """Markdown: per family and policy real / synthetic success and replay agreement, then the summary."""
    summary = result.summary()
    policies = list(summary)
    head = "| family | " + " | ".join(f"{p} real | {p} synthetic | {p} replay agrees" for p in policies) + " |"
    lines = [f"closed loop: {result.synthetic_env} vs {result.real_env}, {result.episodes_per_family} episodes "
             f"per family and policy, paired starts, seed {result.seed}", "", head,
             "|---" + "|---:" * (3 * len(policies)) + "|"]
    for family, row in result.per_family().items():
        cells = []
        for p in policies:
            r = row.get(p)
            cells += ["" if r is None else f"{r['real']:.2f}", "" if r is None else f"{r['synthetic']:.2f}",
                      "" if r is None else f"{r['replay_agreement']:.2f}"]
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    lines.append("")
    for p, s in summary.items():
        lines.append(
            f"{p}: {s['episodes']} episodes, success real {s['real_success']:.3f} / synthetic {s['synthetic_success']:.3f}; "
            f"mean |synthetic - real| over families {s['mean_abs_gap']:.3f} (95 % CI {s['gap_ci95'][0]:.3f}-{s['gap_ci95'][1]:.3f}); "
            f"replay agreement {s['replay_agreement']:.3f} (95 % CI {s['replay_agreement_ci95'][0]:.3f}-"
            f"{s['replay_agreement_ci95'][1]:.3f}), on real failures {s['replay_agreement_real_failures']:.3f} "
            f"({s['real_failures']}); synthetic errors {s['synthetic_errors']}")
    return "\n".join(lines)


def add_closed_loop_parser(sub: Any) -> argparse.ArgumentParser:
    """``dreamgym closed-loop``."""
    parser = sub.add_parser(
        "closed-loop", help="paired closed loop and replay agreement of a MiniWoB experience model",
        description="Scripted policies on the real MiniWoB env and on the synthetic env from the same "
        "starts; prints success per family, the mean |synthetic - real| gap with a bootstrap 95 %% interval "
        "and the replay agreement of the real episodes' actions.",
    )
    parser.add_argument("--env", default="DreamGym-MiniWoB-v0", help="synthetic env id")
    parser.add_argument("--real-env", default="DreamGym-MiniWoB-Real-v0")
    parser.add_argument("--backend", default=None, help="experience model backend of the synthetic env "
                        "(http://host:port/v1, transformers:DIR, ...; default: the env's own)")
    parser.add_argument("--episodes", type=int, default=30, help="episodes per family and policy")
    parser.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES),
                        choices=["oracle", "random", "mixed", "near-miss"])
    parser.add_argument("--families", nargs="+", default=None, help="default: every family")
    parser.add_argument("--seed", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=32, help="synthetic episodes stepped together")
    parser.add_argument("--no-replay", action="store_true", help="skip replay agreement")
    parser.add_argument("--workdir", default=None, help="keep the real episodes and synthetic pairs here; rerunning "
                        "resumes (or extends to more --episodes); one folder per model (default: a temporary folder)")
    parser.add_argument("--env-kwargs", type=json.loads, default=None,
                        help='more JSON keyword arguments of the synthetic env, e.g. \'{"exact_retrieval": false}\'')
    parser.add_argument("--output", default=None, help="write every pair and the figures as JSON here "
                        "(and the table beside it as .md)")
    parser.set_defaults(func=_cmd_closed_loop)
    return parser


def _cmd_closed_loop(args: argparse.Namespace) -> int:
    kwargs = dict(args.env_kwargs or {})
    if args.backend:
        kwargs["backend"] = args.backend
    result = closed_loop(args.env, args.real_env, policies=args.policies, episodes=args.episodes,
                         families=args.families, seed=args.seed, batch=args.batch, replay=not args.no_replay,
                         env_kwargs=kwargs, workdir=args.workdir, progress=True)
    table = format_closed_loop(result)
    print(table)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=1))
        out.with_suffix(".md").write_text(table + "\n")
    return 0
