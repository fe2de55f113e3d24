"""The sim-to-real experiment on MiniWoB, by one command.

Six arms, each trained with the bundled GRPO (same policy, same hyper-parameters) and each
evaluated greedily on real MiniWoB, on held-out seeds, ``eval_episodes`` per family, beside the
policy they all start from:

- ``untrained``: the initial policy of the seed, no RL (the baseline every arm must beat);
- ``real``: real MiniWoB only, a budget of ``real_steps`` real steps;
- ``synthetic``: synthetic experience only (DreamGym-MiniWoB-v0, curriculum on), no real step;
- ``s2r``: the ``synthetic`` policy, then ``real_steps / 10`` real steps;
- ``synthetic-no-curriculum``: ``synthetic`` with uniform task sampling and no generated tasks;
- ``synthetic-equal-steps``: ``synthetic`` with a budget of ``real_steps`` synthetic steps, the
  real-only arm's budget, so that the two compare step for step (``synthetic`` runs
  ``synthetic_iterations`` GRPO iterations, whatever steps they take).

Every arm of every seed writes ``output_dir/<arm>-seed<k>/result.json`` and is skipped when that
file exists, so an interrupted experiment resumes by rerunning the same command. The summary
(table, learning curves of real success against real steps used, and the goals checked) goes to
``--out`` (docs/results.md) and a plot next to it.

    python -m dreamgym_env.experiments.sim_to_real --seeds 0 1 2 --real-steps 800 --synthetic-iterations 20

``results/s2r`` is kept in git (each run's result.json and metrics.csv; policies, checkpoints and
TensorBoard files are not), so the table in docs/results.md can be checked run by run and an
experiment spread over several sessions resumes where it stopped (the s2r arm of a seed needs its
synthetic arm's policy.pt, so run those two in one go).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dreamgym_env.experiments.machine import describe_machine

logger = logging.getLogger(__name__)

ARMS = ("untrained", "real", "synthetic", "s2r", "synthetic-no-curriculum", "synthetic-equal-steps")
DEFAULT_FAMILIES = ["click-button", "click-link", "click-widget", "click-dialog-2", "enter-text"]


@dataclass
class SimToRealConfig:
    """What the experiment runs (one flag per field)."""

    families: list[str] = field(default_factory=lambda: list(DEFAULT_FAMILIES), metadata={"help": "MiniWoB task families trained and evaluated."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Training seeds (one run of every arm each)."})
    real_steps: int = field(default=2000, metadata={"help": "N: real steps of the real-only arm (S2R gets N/10)."})
    synthetic_iterations: int = field(default=40, metadata={"help": "GRPO iterations on synthetic experience."})
    groups: int = field(default=4, metadata={"help": "Tasks per GRPO iteration."})
    num_generations: int = field(default=4, metadata={"help": "Episodes per task (a GRPO group)."})
    max_steps: int = field(default=4, metadata={"help": "Step limit of an episode (training and evaluation)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate of the policy."})
    eval_episodes: int = field(default=50, metadata={"help": "Real evaluation episodes per family."})
    eval_points: int = field(default=5, metadata={"help": "Real evaluations along a real-step run (learning curve)."})
    eval_seed: int = field(default=100_000, metadata={"help": "First seed of the held-out evaluation episodes."})
    synthetic_env: str = field(default="DreamGym-MiniWoB-v0", metadata={"help": "Synthetic env id."})
    synthetic_env_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "gym.make kwargs of the synthetic env (JSON), e.g. a vLLM backend URL."})
    real_env: str = field(default="DreamGym-MiniWoB-Real-v0", metadata={"help": "Real env id."})
    output_dir: str = field(default="results/s2r", metadata={"help": "Runs (resumable) and summary.json; results/ is committed (result.json, metrics.csv; not the .pt files) so a later session resumes."})
    out: str = field(default="docs/results.md", metadata={"help": "Markdown report (a PNG plot is written beside it)."})
    arms: list[str] = field(default_factory=lambda: list(ARMS), metadata={"help": "Arms to run."})
    report_only: bool = field(default=False, metadata={"help": "Run nothing: write the report from the runs already finished (the others are listed as missing)."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown:
            raise ValueError(f"unknown arms {unknown}; choose from {list(ARMS)}")
        if "s2r" in self.arms and "synthetic" not in self.arms:
            raise ValueError("the s2r arm starts from the synthetic arm's policy: include 'synthetic'")
        if self.real_steps < 10:
            raise ValueError(f"real_steps ({self.real_steps}) must be >= 10 (S2R gets a tenth)")


def run_dir(cfg: SimToRealConfig, arm: str, seed: int) -> Path:
    """Where one arm of one seed keeps its run (result.json, metrics.csv, policy.pt)."""
    return Path(cfg.output_dir) / f"{arm}-seed{seed}"


def _grpo_config(cfg: SimToRealConfig, arm: str, seed: int, output_dir: Path):
    """The GRPOConfig of one arm and seed."""
    from dreamgym_env.trainers.grpo import GRPOConfig

    steps_per_iteration = cfg.groups * cfg.num_generations * max(1, cfg.max_steps // 2)
    common = dict(task_ids=list(cfg.families), groups=cfg.groups, num_generations=cfg.num_generations,
                  max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, seed=seed, output_dir=str(output_dir),
                  eval_env_id=cfg.real_env, eval_episodes=cfg.eval_episodes * len(cfg.families), eval_seed=cfg.eval_seed)
    if arm in ("real", "s2r"):
        budget = cfg.real_steps if arm == "real" else max(1, cfg.real_steps // 10)
        every = max(1, budget // steps_per_iteration // cfg.eval_points)
        init = str(run_dir(cfg, "synthetic", seed) / "policy.pt") if arm == "s2r" else ""
        return GRPOConfig(env_id=cfg.real_env, max_env_steps=budget, iterations=10**6, eval_every=every,
                          init_from=init, curriculum=True, generated_share=0.0, **common)
    if arm == "synthetic-equal-steps":  # real-only's budget in synthetic steps; evaluated once, at the end
        budget = dict(max_env_steps=cfg.real_steps, iterations=10**6, eval_every=10**6)
    else:
        budget = dict(iterations=cfg.synthetic_iterations, eval_every=cfg.synthetic_iterations)
    return GRPOConfig(env_id=cfg.synthetic_env, env_kwargs=dict(cfg.synthetic_env_kwargs),
                      curriculum=arm in ("synthetic", "synthetic-equal-steps"), **budget, **common)


def run_arm(cfg: SimToRealConfig, arm: str, seed: int, env_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train and evaluate one arm for one seed (or read its finished result)."""
    from dreamgym_env.trainers.grpo import train

    out_dir = run_dir(cfg, arm, seed)
    result_path = out_dir / "result.json"
    if result_path.is_file():
        logger.info("%s seed %d: done before, reading %s", arm, seed, result_path)
        return json.loads(result_path.read_text())
    grpo = _grpo_config(cfg, arm, seed, out_dir)
    if grpo.init_from and not Path(grpo.init_from).is_file():
        raise FileNotFoundError(
            f"the s2r arm of seed {seed} starts from {grpo.init_from}, which is missing (policies are not kept in git): "
            f"delete {Path(grpo.init_from).with_name('result.json')} to retrain the synthetic arm of that seed")
    if env_kwargs is not None and grpo.env_id == cfg.synthetic_env:
        grpo = dataclasses.replace(grpo, env_kwargs=dict(env_kwargs))
    began = time.perf_counter()
    out = _evaluate_untrained(grpo) if arm == "untrained" else train(grpo)
    real_used = out["env_steps"] if grpo.env_id == cfg.real_env else 0
    curve = [{"real_steps": e["env_steps"] if real_used else 0, "success_rate": e["success_rate"],
              **{k: v for k, v in e.items() if k.startswith("success/")}} for e in out["evaluations"]]
    if arm == "s2r":  # the curve starts where the synthetic policy stands, at 0 real steps
        start = json.loads((run_dir(cfg, "synthetic", seed) / "result.json").read_text())["final"]
        curve.insert(0, {**start, "real_steps": 0})
    result = {"arm": arm, "seed": seed, "real_steps_used": real_used,
              "synthetic_steps_used": 0 if real_used else out["env_steps"], "curve": curve, "final": curve[-1],
              "wall_s": time.perf_counter() - began}
    out_dir.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2))
    return result


def _evaluate_untrained(grpo) -> dict[str, Any]:
    """Real success of the policy GRPO starts from for this seed (same seed, same constructor), in
    the shape :func:`train` returns."""
    import torch

    from dreamgym_env.trainers.common import evaluate, make_policy

    torch.manual_seed(grpo.seed)
    policy = make_policy(grpo, None).eval()
    result = evaluate(policy, grpo.eval_env_id, grpo.eval_episodes, grpo.eval_seed, grpo.max_steps, task_ids=grpo.task_ids)
    return {"evaluations": [{"iteration": 0, "env_steps": 0, **result}], "env_steps": 0}


def run_experiment(cfg: SimToRealConfig, env_kwargs: Mapping[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every arm for every seed (synthetic before s2r); returns the results by arm."""
    order = [a for a in ARMS if a in cfg.arms]
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in order}
    for seed in cfg.seeds:
        for arm in order:
            logger.info("arm %s, seed %d", arm, seed)
            results[arm].append(run_arm(cfg, arm, seed, env_kwargs))
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "summary.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), "results": results},
                                                                  indent=2, default=str))
    return results


def finished_results(cfg: SimToRealConfig) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The runs of ``cfg``'s arms and seeds that have a result.json, by arm, and the names of those without."""
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in ARMS if a in cfg.arms}
    missing = []
    for seed in cfg.seeds:
        for arm in results:
            path = run_dir(cfg, arm, seed) / "result.json"
            if path.is_file():
                results[arm].append(json.loads(path.read_text()))
            else:
                missing.append(path.parent.name)
    return results, missing


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if values else "-"


def summarise(cfg: SimToRealConfig, results: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Final real success per arm (mean, std over seeds) and the issue's goals checked, each on
    the seeds both of its arms have finished."""
    final = {arm: [r["final"]["success_rate"] for r in runs] for arm, runs in results.items()}
    mean = {arm: float(np.mean(v)) for arm, v in final.items() if v}
    by_seed = {arm: {r["seed"]: r["final"]["success_rate"] for r in runs} for arm, runs in results.items()}

    def paired(a: str, b: str) -> tuple[float, float] | None:
        seeds = sorted(set(by_seed.get(a, {})) & set(by_seed.get(b, {})))
        if not seeds:
            return None
        return float(np.mean([by_seed[a][s] for s in seeds])), float(np.mean([by_seed[b][s] for s in seeds]))

    goals = {}
    if pair := paired("s2r", "real"):
        goals["(c) S2R >= (a) real-only with 10x fewer real steps"] = pair[0] >= pair[1]
    if pair := paired("synthetic", "real"):
        goals["(b) synthetic-only >= 0.8 x (a) real-only"] = pair[0] >= 0.8 * pair[1]
    if pair := paired("synthetic", "synthetic-no-curriculum"):
        goals["curriculum helps: (b) > (d)"] = pair[0] > pair[1]
    if pair := paired("synthetic-equal-steps", "real"):
        goals["(e) synthetic-only with N synthetic steps >= 0.8 x (a) real-only with N real steps"] = pair[0] >= 0.8 * pair[1]
    return {"final": final, "mean": mean, "goals": goals}


def write_report(cfg: SimToRealConfig, results: Mapping[str, list[dict[str, Any]]], command: str,
                 missing: list[str] | None = None) -> Path:
    """docs/results.md (table, goals, commands, machine) and the learning-curve plot beside it."""
    summary = summarise(cfg, results)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = _kept_notes(out)
    plot = out.with_name(out.stem + "_s2r_curve.png")
    plotted = _plot(results, plot)
    names = {"untrained": "(0) untrained: the start of every arm, no RL", "real": "(a) real only", "synthetic": "(b) synthetic only", "s2r": "(c) S2R: synthetic + N/10 real",
             "synthetic-no-curriculum": "(d) (b) without curriculum", "synthetic-equal-steps": "(e) synthetic only, N synthetic steps"}
    lines = [
        "# Sim-to-real on MiniWoB", "",
        "Policies trained by the bundled GRPO (`TextActionPolicy`, same hyper-parameters in every arm) and evaluated",
        f"greedily on real MiniWoB, held-out seeds from {cfg.eval_seed}, {cfg.eval_episodes} episodes per family.", "",
        f"Command: `{command}`", "",
        f"Families: {', '.join(cfg.families)}. Seeds: {', '.join(map(str, cfg.seeds))}. Budget: N = {cfg.real_steps} real steps",
        f"(S2R: {cfg.real_steps // 10}); synthetic arms: {cfg.synthetic_iterations} GRPO iterations of {cfg.groups}×{cfg.num_generations}",
        f"episodes (arm (e): N = {cfg.real_steps} synthetic steps), step limit {cfg.max_steps}. Synthetic env: `{cfg.synthetic_env}` {json.dumps(cfg.synthetic_env_kwargs) if cfg.synthetic_env_kwargs else '(default model)'}.",
        f"Machine: {describe_machine()}. Date: {time.strftime('%Y-%m-%d')}.{_served_by()}", "",
        "| arm | seeds | real steps (RL) | synthetic steps | real success (mean ± std over seeds) | " + " | ".join(cfg.families) + " |",
        "|---|---|---:|---:|---:|" + "---:|" * len(cfg.families),
    ]
    synthetic_steps = {r["seed"]: r["synthetic_steps_used"] for r in results.get("synthetic", [])}
    for arm, runs in results.items():
        if not runs:
            continue
        per_family = [_mean_std([r["final"].get(f"success/{f}", float("nan")) for r in runs]) for f in cfg.families]
        # S2R's synthetic steps are those of the synthetic run it starts from
        synthetic = [synthetic_steps.get(r["seed"], 0) if arm == "s2r" else r["synthetic_steps_used"] for r in runs]
        lines.append(f"| {names[arm]} | {', '.join(str(r['seed']) for r in runs)} | {int(np.mean([r['real_steps_used'] for r in runs]))} | "
                     f"{int(np.mean(synthetic))} | {_mean_std(summary['final'][arm])} | "
                     + " | ".join(per_family) + " |")
    lines += ["", "Goals (from the issue), checked on the means over the seeds both arms have finished:", ""]
    lines += [f"- {goal}: {'met' if ok else 'NOT met'}" for goal, ok in summary["goals"].items()]
    if plotted:
        lines += ["", f"![real success against real steps used]({plot.name})", "",
                  "Learning curves: real success against the real steps spent in RL, the mean over seeds (thick) and",
                  "each seed (thin); real-only starts from the untrained policy, S2R from the synthetic one; the",
                  "synthetic arms spend no real step and are drawn as points at 0."]
    if missing:
        lines += ["", f"**Not run yet** (the table above averages only the finished runs): {', '.join(missing)}."]
    lines += ["", "Per seed (final real success):", ""]
    lines += [f"- {names[arm]}: " + ", ".join(f"seed {r['seed']}: {r['final']['success_rate']:.3f} "
                                           f"({r['wall_s'] / 60:.0f} min)" for r in runs)
              for arm, runs in results.items() if runs]
    lines += ["", NOTES_MARKER, kept] if kept else ["", NOTES_MARKER, ""]
    out.write_text("\n".join(lines).rstrip("\n") + "\n")
    return out


#: Everything below this line of an existing report is kept when the report is rewritten.
NOTES_MARKER = "<!-- notes below this line are written by hand and kept when the report is regenerated -->"


def _kept_notes(report: Path) -> str:
    """The hand-written part of an existing report (after ``NOTES_MARKER``), or ''."""
    if not report.is_file():
        return ""
    _, marker, notes = report.read_text().partition(NOTES_MARKER)
    return notes.strip("\n") if marker else ""


def _served_by() -> str:
    """Where the synthetic env's model ran, when DREAMGYM_BASE_URL sent it to servers."""
    import os

    urls = [u for u in os.environ.get("DREAMGYM_BASE_URL", "").split(",") if u.strip()]
    return f" The synthetic env's model was served by {len(urls)} vLLM server(s) (DREAMGYM_BASE_URL)." if urls else ""


#: Marker of each arm drawn as a single point at 0 real steps.
POINT_MARKERS = {"untrained": "s", "synthetic": "D", "synthetic-no-curriculum": "^", "synthetic-equal-steps": "v"}


def _plot(results: Mapping[str, list[dict[str, Any]]], path: Path) -> bool:
    """Mean real success against real steps used, one line per arm; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    start = {r["seed"]: r["final"]["success_rate"] for r in results.get("untrained", [])}
    for arm, runs in results.items():
        if not runs:
            continue
        curves = []
        for r in runs:
            x = [c["real_steps"] for c in r["curve"]]
            y = [c["success_rate"] for c in r["curve"]]
            if arm == "real" and r["seed"] in start:  # real RL starts from the untrained policy
                x, y = [0, *x], [start[r["seed"]], *y]
            curves.append((x, y))
        # seeds evaluate at different step counts: average their curves interpolated on every seed's points
        grid = sorted({v for x, _ in curves for v in x if v <= min(max(x) for x, _ in curves)})
        mean = [np.mean([np.interp(g, x, y) for x, y in curves]) for g in grid]
        if len(grid) == 1:  # an arm with no real step: a larger marker drawn over the curves starting there
            ax.plot(grid, mean, linestyle="none", marker=POINT_MARKERS.get(arm, "s"), markersize=9, zorder=3,
                    label=f"{arm} (mean of {len(runs)})")
            continue
        line, = ax.plot(grid, mean, marker="o", label=f"{arm} (mean of {len(runs)})")
        for x, y in curves if len(runs) > 1 else []:
            ax.plot(x, y, color=line.get_color(), alpha=0.3, linewidth=0.8)
    ax.set_xlabel("real steps used in RL")
    ax.set_ylabel("real success (held-out seeds)")
    ax.set_ylim(0, 1.02)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    from dreamgym_env.experiments.cli import parse_experiment

    cfg, command = parse_experiment(SimToRealConfig, "dreamgym_env.experiments.sim_to_real", __doc__, argv)
    if cfg.report_only:
        results, missing = finished_results(cfg)
        command = command.replace(" --report-only", "")
    else:
        results, missing = run_experiment(cfg), []
    report = write_report(cfg, results, command, missing)
    logger.info("report: %s", report)
    print(json.dumps(summarise(cfg, results), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
