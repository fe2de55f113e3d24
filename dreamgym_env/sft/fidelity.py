"""``dreamgym fidelity``: every fidelity figure of a MiniWoB experience model, into one folder.

One command for what decides whether a model ships: ``eval-model`` on the whole test split
(held-out episodes of seen families and held-out families, failed and successful endings
apart) and the paired closed loop with replay agreement (:mod:`dreamgym_env.sft.closed_loop`),
both through the same backend. It writes ``eval.json`` / ``eval.md``, ``closed-loop.json`` /
``closed-loop.md`` and ``summary.md`` (each figure beside its goal) to ``--out-dir``.

    dreamgym fidelity --model runs/miniwob-v1/model --backend http://127.0.0.1:8000/v1 \\
        --out-dir results/fidelity/miniwob-v1 --episodes 30
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

#: The goals of the fidelity issue: (figure, where it is read from, goal, higher is better).
GOALS: tuple[tuple[str, tuple[str, ...], float, bool], ...] = (
    ("valid output, held-out episodes", ("eval", "seen", "valid_output"), 0.999, True),
    ("reward+done, held-out episodes", ("eval", "seen", "reward_done_acc"), 0.99, True),
    ("exact next state, non-terminal", ("eval", "seen", "exact_non_terminal"), 0.95, True),
    ("exact next state, state-changing", ("eval", "seen", "exact_state_changing"), 0.90, True),
    ("reward on failed endings", ("eval", "seen", "reward_acc_failed_endings"), 0.95, True),
    ("reward on successful endings", ("eval", "seen", "reward_acc_successful_endings"), 0.95, True),
    ("held-out families: reward+done", ("eval", "held_out_families", "reward_done_acc"), 0.90, True),
    ("held-out families: exact state-changing", ("eval", "held_out_families", "exact_state_changing"), 0.70, True),
    ("closed loop |gap|, oracle", ("loop", "oracle", "mean_abs_gap"), 0.05, False),
    ("closed loop |gap| 95 % upper, oracle", ("loop", "oracle", "gap_ci95", 1), 0.08, False),
    ("closed loop |gap|, random", ("loop", "random", "mean_abs_gap"), 0.05, False),
    ("closed loop |gap| 95 % upper, random", ("loop", "random", "gap_ci95", 1), 0.08, False),
    ("replay agreement, oracle", ("loop", "oracle", "replay_agreement"), 0.95, True),
    ("replay agreement, random", ("loop", "random", "replay_agreement"), 0.95, True),
    ("replay agreement, near-miss", ("loop", "near-miss", "replay_agreement"), 0.95, True),
)


def _lookup(figures: Mapping[str, Any], path: tuple[Any, ...]) -> float:
    value: Any = figures
    for key in path:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return math.nan
    return float(value)


def goal_table(figures: Mapping[str, Any]) -> str:
    """Markdown: each goal beside its figure (``figures``: ``{"eval": ..., "loop": ...}``)."""
    lines = ["| figure | goal | measured | met |", "|---|---:|---:|---|"]
    for name, path, goal, higher in GOALS:
        value = _lookup(figures, path)
        if math.isnan(value):
            lines.append(f"| {name} | {'≥' if higher else '≤'} {goal:g} | not measured | |")
            continue
        met = value >= goal if higher else value <= goal
        lines.append(f"| {name} | {'≥' if higher else '≤'} {goal:g} | {value:.3f} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def add_fidelity_parser(sub: Any) -> argparse.ArgumentParser:
    """``dreamgym fidelity``."""
    parser = sub.add_parser(
        "fidelity", help="eval-model on the whole test split and the paired closed loop, written to one folder",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--model", default=None, help="a dreamgym sft model directory (default: the embedded "
                        "MiniWoB model); its card names the data, split and prompt")
    parser.add_argument("--backend", default=None, help="serve it through this backend (http://host:port/v1 "
                        "of dreamgym serve; default: TransformersBackend on --model)")
    parser.add_argument("--out-dir", required=True, help="folder for eval.*, closed-loop.* and summary.md")
    parser.add_argument("--episodes", type=int, default=30, help="closed loop: episodes per family and policy")
    parser.add_argument("--seed", type=int, default=10000, help="closed loop: reset seeds of the real episodes")
    parser.add_argument("--batch", type=int, default=32, help="closed loop: synthetic episodes stepped together")
    parser.add_argument("--batch-size", type=int, default=32, help="eval-model: requests per batch")
    parser.add_argument("--max-per-group", type=int, default=None, help="eval-model: a sample instead of the whole split")
    parser.add_argument("--skip-eval", action="store_true", help="keep an existing eval.json, run the closed loop only")
    parser.set_defaults(func=_cmd_fidelity)
    return parser


def _cmd_fidelity(args: argparse.Namespace) -> int:
    from dreamgym_env.backends import make_backend
    from dreamgym_env.backends.default_model import card_data_files
    from dreamgym_env.buffer.defaults import seeded_buffer
    from dreamgym_env.domains.miniwob.domain import real_dataset_path
    from dreamgym_env.sft.closed_loop import closed_loop, format_closed_loop
    from dreamgym_env.sft.evaluate import evaluate_model, format_table, load_model_card

    model_dir, card = load_model_card(args.model)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backend = make_backend(args.backend or f"transformers:{model_dir}", shared=False)
    figures: dict[str, Any] = {}
    eval_path = out / "eval.json"
    if args.skip_eval and eval_path.is_file():
        figures["eval"] = json.loads(eval_path.read_text())
    else:
        result = evaluate_model(backend, card=card, max_per_group=args.max_per_group, batch_size=args.batch_size,
                                progress=True)
        figures["eval"] = asdict(result)
        eval_path.write_text(json.dumps(figures["eval"], indent=1))
        (out / "eval.md").write_text(format_table(result) + "\n")
    # The synthetic env retrieves from the data the model was trained on, as its training prompts did.
    buffer = seeded_buffer("miniwob", card_data_files(model_dir) or [str(real_dataset_path())])
    loop = closed_loop(episodes=args.episodes, seed=args.seed, batch=args.batch, progress=True,
                       workdir=out / "closed-loop-work",  # a rerun resumes the closed loop
                       env_kwargs={"backend": backend, "prompt_version": card.get("prompt_version"),
                                   "buffer": buffer})
    figures["loop"] = loop.summary()
    (out / "closed-loop.json").write_text(json.dumps(loop.to_dict(), indent=1))
    (out / "closed-loop.md").write_text(format_closed_loop(loop) + "\n")
    summary = (f"model: {model_dir} (backend {getattr(backend, 'name', args.backend)})\n\n"
               + goal_table(figures) + "\n")
    (out / "summary.md").write_text(summary)
    print(summary)
    return 0
