"""Ablations of the experience model, in the paper's spirit, by one command.

Each variant is the recipe of the shipped MiniWoB model with one thing taken away, trained by
``dreamgym sft`` on the same reduced budget (``--epochs``) and scored the same way:

- ``full``: the recipe (retrieved demos, reasoning, history, patch states, pretrained base);
- ``no-retrieval``: no retrieved demos (k = 0);
- ``no-reasoning``: answers without a reasoning trace;
- ``no-history``: no past actions in the prompt;
- ``whole-state``: the whole next state instead of a patch;
- ``from-scratch``: the base's architecture with random weights, every weight trained.

Scores: teacher-forced held-out exact match logged at the end of training (seen families; one
forward pass) and greedy, schema-constrained ``eval-model`` figures on a sample of
``--max-per-group`` held-out transitions of seen families and as many of held-out families.
Every variant writes ``output_dir/<variant>/result.json`` and is skipped when it exists; an
interrupted training resumes from its checkpoint. The table goes to ``--out``.

    python -m dreamgym_env.experiments.ablations --epochs 0.5 --max-per-group 30 --out docs/ablations.md
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dreamgym_env.experiments.machine import describe_machine

logger = logging.getLogger(__name__)

#: Variant name -> (SFTConfig fields it changes, what that removes).
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "full": ({}, "the recipe: demos k=2, reasoning, 2 past actions, patch, pretrained base"),
    "no-retrieval": ({"top_k": 0}, "no retrieved demos (k = 0)"),
    "no-reasoning": ({"reasoning": False}, "no reasoning trace"),
    "no-history": ({"history_length": 0}, "no past actions"),
    "whole-state": ({"state_format": "whole"}, "whole next state instead of a patch"),
    "from-scratch": ({"init": "scratch", "lora_rank": 0, "learning_rate": 1e-3},
                     "random weights, every weight trained (lr 1e-3)"),
}


@dataclass
class AblationConfig:
    """What the ablation study runs (one flag per field)."""

    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={"help": "Variants to run, in order."})
    epochs: float = field(default=0.5, metadata={"help": "Training budget of every variant (passes over the training examples)."})
    held_out_families: list[str] = field(default_factory=lambda: ["click-option", "click-tab", "enter-password"], metadata={"help": "Families never trained on (as the shipped model)."})
    max_per_group: int = field(default=30, metadata={"help": "Greedy evaluation: held-out transitions of seen families, and as many of held-out families."})
    eval_batch_size: int = field(default=8, metadata={"help": "Batch size of the greedy evaluation."})
    seed: int = field(default=0, metadata={"help": "Seed of training and of the evaluation sample."})
    sft_overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": "Further SFTConfig fields for every variant (JSON), e.g. {\"device\": \"cuda\"}."})
    output_dir: str = field(default="results/ablations", metadata={"help": "One run directory per variant; results/ is committed (result.json, log.jsonl, split.json), weights and checkpoints are not."})
    out: str = field(default="docs/ablations.md", metadata={"help": "Markdown report."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
        if self.epochs <= 0 or self.max_per_group < 1:
            raise ValueError("epochs must be > 0 and max_per_group >= 1")


def recipe() -> dict[str, Any]:
    """The SFTConfig fields every variant starts from: the shipped model's data, prompt and
    reasoning rule, pinned so that the study does not move when ``dreamgym sft``'s defaults do;
    fp32, as the first variants trained, whatever the CPU (bf16 autocast would change speed and
    numerics between variants)."""
    from dreamgym_env.domains.miniwob.domain import real_dataset_path

    return {"data": [str(real_dataset_path())], "prompt_version": "v3", "reasoning_rule": "v1", "precision": "fp32"}


def sft_config(cfg: AblationConfig, variant: str):
    """The SFTConfig of one variant."""
    from dreamgym_env.sft.train import SFTConfig

    changes, _ = VARIANTS[variant]
    fields = {**recipe(), "output_dir": str(Path(cfg.output_dir) / variant), "epochs": cfg.epochs, "seed": cfg.seed,
              "held_out_families": list(cfg.held_out_families), **cfg.sft_overrides, **changes}
    return SFTConfig(**fields)


def run_variant(cfg: AblationConfig, variant: str) -> dict[str, Any]:
    """Train and score one variant (or read its finished result)."""
    from dreamgym_env.backends.transformers_backend import TransformersBackend
    from dreamgym_env.sft.evaluate import evaluate_model
    from dreamgym_env.sft.train import MODEL_CARD, train

    result_path = Path(cfg.output_dir) / variant / "result.json"
    if result_path.is_file():
        logger.info("%s: done before, reading %s", variant, result_path)
        return json.loads(result_path.read_text())
    sft = sft_config(cfg, variant)
    trained = train(sft)
    if not trained.get("finished"):
        raise RuntimeError(f"{variant}: training stopped early (max_hours); rerun to resume")
    model_dir = Path(trained["model"])
    card = json.loads((model_dir / MODEL_CARD).read_text())
    backend = TransformersBackend(model_dir, max_batch_size=cfg.eval_batch_size)
    greedy = evaluate_model(backend, card=card, max_per_group=cfg.max_per_group, seed=cfg.seed,
                            batch_size=cfg.eval_batch_size, progress=True)
    result = {"variant": variant, "sft_config": asdict(sft), "steps": trained["steps"],
              "train_tokens": trained["train_tokens"], "train_hours": trained["train_hours"],
              "device": trained["device"], "machine": describe_machine(), "teacher_forced": trained["held_out_teacher_forced"],
              "greedy": {k: v for k, v in asdict(greedy).items() if k != "answers"}}
    result_path.write_text(json.dumps(result, indent=2))
    return result


def _cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "–"


def median_tokens_per_s(log_path: Path) -> float | None:
    """Median training tokens/s over the steps of a run's log.jsonl.

    Robust where the summed clock is not: a run paused mid-step (SIGSTOP) or sharing the CPU
    with other work charges that time to a few steps, which moves the sum but not the median.
    """
    import statistics

    if not log_path.is_file():
        return None
    speeds = [row["perf/tokens_per_s"] for row in map(json.loads, log_path.read_text().splitlines())
              if "perf/tokens_per_s" in row]
    return statistics.median(speeds) if speeds else None


def machines_line(results: list[dict[str, Any]]) -> str:
    """Which machine trained which variants: speeds (tok/s, hours) compare only within one."""
    by_machine: dict[str, list[str]] = {}
    for r in results:
        by_machine.setdefault(r.get("machine") or "not recorded", []).append(r["variant"])
    if len(by_machine) <= 1:
        return f"Machine: {next(iter(by_machine), describe_machine())}."
    parts = [f"{', '.join(variants)} on {machine}" for machine, variants in by_machine.items()]
    return f"Machines: {'; '.join(parts)} (tok/s and hours compare only on one machine)."


def format_report(cfg: AblationConfig, results: list[dict[str, Any]], command: str) -> str:
    """The markdown report: one row per finished variant, then the variants not run yet."""
    lines = [
        "# Experience-model ablations (MiniWoB)", "",
        "Each variant is the shipped model's recipe with one thing taken away, trained on the same "
        "reduced budget and scored the same way (docstring of `dreamgym_env/experiments/ablations.py`).", "",
        f"Command: `{command}`", "",
        f"Budget: {cfg.epochs} epochs per variant; seed {cfg.seed}; held-out families "
        f"{', '.join(cfg.held_out_families)}; greedy sample of {cfg.max_per_group} seen-family and "
        f"{cfg.max_per_group} held-out-family transitions. {machines_line(results)} "
        f"Report date: {time.strftime('%Y-%m-%d')}.", "",
        "Hours: the training clock summed over steps; it includes any pause or CPU contention during a "
        "step. Tok/s: the median over steps, which does not; tokens / tok/s is the uncontended time.", "",
        "TF: teacher-forced exact match of the state part on 200 held-out seen-family examples "
        "(given the true reasoning). Greedy: the model's own answers.", "",
        "| variant | what changes | steps | tokens | hours | tok/s | TF non-terminal | TF state-changing | valid | reward+done "
        "| exact non-terminal | exact state-changing | held-out families: reward+done | held-out families: state-changing |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        tf = r.get("teacher_forced") or {}
        seen, unseen = r["greedy"]["seen"], r["greedy"]["held_out_families"]
        speed = median_tokens_per_s(Path(cfg.output_dir) / r["variant"] / "log.jsonl")
        lines.append(
            f"| {r['variant']} | {VARIANTS[r['variant']][1]} | {r['steps']} | {r.get('train_tokens', 0) / 1e3:.0f}k "
            f"| {r['train_hours']:.2f} | {f'{speed:.0f}' if speed else '–'} "
            f"| {_cell(tf.get('exact_state_non_terminal'))} | {_cell(tf.get('exact_state_changing'))} "
            f"| {_cell(seen.get('valid_output'))} | {_cell(seen.get('reward_done_acc'))} "
            f"| {_cell(seen.get('exact_non_terminal'))} | {_cell(seen.get('exact_state_changing'))} "
            f"| {_cell(unseen.get('reward_done_acc'))} | {_cell(unseen.get('exact_state_changing'))} |"
        )
    finished = {r["variant"] for r in results}
    missing = [v for v in cfg.variants if v not in finished]
    if missing:
        lines += ["", f"**Not run yet**: {', '.join(missing)} (rerun the command: finished variants are read back)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from dreamgym_env.experiments.cli import parse_experiment

    cfg, command = parse_experiment(AblationConfig, "dreamgym_env.experiments.ablations", __doc__, argv)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for variant in cfg.variants:  # the report is rewritten after each variant, so a long study shows progress
        results.append(run_variant(cfg, variant))
        out.write_text(format_report(cfg, results, command))
        logger.info("report (%d of %d variants): %s", len(results), len(cfg.variants), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
