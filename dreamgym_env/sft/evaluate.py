"""``dreamgym eval-model``: fidelity of an experience model on held-out real transitions.

Greedy, schema-constrained generation through any backend, on the test split the model was
trained without (held-out episodes of seen families, and separately the held-out families),
with demos retrieved from a buffer of training trajectories only. Reports valid-output rate,
reward / done accuracy, next-state exact match (non-terminal and state-changing steps) beside
the copy baseline, element-level F1 and tokens/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from dreamgym_env.patch import apply_patch, line_ref
from dreamgym_env.schema import ModelOutput, parse_model_output

logger = logging.getLogger(__name__)


@dataclass
class Scored:
    """One held-out transition and what the model answered."""

    valid: bool
    reward_ok: bool
    done_ok: bool
    exact: bool
    copy_exact: bool
    terminal: bool
    changed: bool
    f1: float
    task_id: str
    succeeded: bool  # the real transition earned a positive reward


def element_f1(predicted: str, real: str) -> float:
    """F1 between the element lines of two states (an element counts when its whole line matches)."""
    p = {l.strip() for l in predicted.splitlines() if line_ref(l) is not None}
    r = {l.strip() for l in real.splitlines() if line_ref(l) is not None}
    if not p and not r:
        return 1.0
    hits = len(p & r)
    if not hits:
        return 0.0
    precision, recall = hits / len(p), hits / len(r)
    return 2 * precision * recall / (precision + recall)


def score(example: Any, raw: str | None) -> Scored:
    """Compare a model answer (None: the request failed) with the real transition."""
    t = example.transition
    output: ModelOutput | None = None
    predicted_state: str | None = None
    if raw is not None:
        try:
            output = parse_model_output(raw, example.state_format)
            predicted_state = (apply_patch(t.state, output.patch or []) if example.state_format == "patch"
                               else output.next_state)
        except Exception:  # noqa: BLE001 - any unparseable answer counts as invalid
            output = None
    valid = output is not None and predicted_state is not None
    return Scored(
        valid=valid,
        reward_ok=valid and output.reward == t.reward,  # type: ignore[union-attr]
        done_ok=valid and output.done == bool(t.done),  # type: ignore[union-attr]
        exact=valid and predicted_state == t.next_state,
        copy_exact=t.state == t.next_state,
        terminal=bool(t.done),
        changed=t.state != t.next_state,
        f1=element_f1(predicted_state, t.next_state) if valid else 0.0,
        task_id=t.task_id,
        succeeded=t.reward > 0,
    )


def summarize(scored: Sequence[Scored]) -> dict[str, float | int]:
    """The fidelity figures of a set of scored transitions."""

    def rate(rows, key) -> float:
        rows = list(rows)
        return sum(getattr(r, key) for r in rows) / len(rows) if rows else float("nan")

    non_terminal = [s for s in scored if not s.terminal]
    changing = [s for s in non_terminal if s.changed]
    # Episode endings split by the real outcome: a model that rewards every ending is right on
    # the successes and wrong on every failure, which one overall reward accuracy hides.
    failed = [s for s in scored if s.terminal and not s.succeeded]
    succeeded = [s for s in scored if s.terminal and s.succeeded]
    return {
        "transitions": len(scored),
        "valid_output": rate(scored, "valid"),
        "reward_acc": rate(scored, "reward_ok"),
        "done_acc": rate(scored, "done_ok"),
        "reward_done_acc": sum(s.reward_ok and s.done_ok for s in scored) / max(1, len(scored)),
        "non_terminal": len(non_terminal),
        "exact_non_terminal": rate(non_terminal, "exact"),
        "copy_exact_non_terminal": rate(non_terminal, "copy_exact"),
        "state_changing": len(changing),
        "exact_state_changing": rate(changing, "exact"),
        "element_f1_non_terminal": sum(s.f1 for s in non_terminal) / max(1, len(non_terminal)),
        "failed_endings": len(failed),
        "reward_acc_failed_endings": rate(failed, "reward_ok"),
        "successful_endings": len(succeeded),
        "reward_acc_successful_endings": rate(succeeded, "reward_ok"),
    }


@dataclass
class EvalResult:
    seen: dict[str, Any]
    held_out_families: dict[str, Any]
    per_family: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens_per_s: float = 0.0
    requests_per_s: float = 0.0
    model: str = ""
    #: One row per scored transition: where it is from, its real reward and done, the raw answer.
    answers: list[dict[str, Any]] = field(default_factory=list, repr=False)


#: ``--endings`` filters: which episode endings to keep (the last step, by its real reward).
ENDINGS = ("failed", "successful")


def _ends_as(trajectory: Any, endings: str) -> bool:
    last = trajectory.transitions[-1] if trajectory.transitions else None
    return last is not None and last.done and (last.reward > 0) == (endings == "successful")


def generate_answers(backend: Any, examples: Sequence[Any], schema: dict[str, Any], max_tokens: int,
                     batch_size: int = 32, progress: bool = False) -> tuple[list[str | None], float, int]:
    """Greedy answers of ``backend`` to every example; returns (texts, seconds, completion tokens)."""
    from dreamgym_env.backends.base import GenerationRequest

    texts: list[str | None] = []
    seconds, tokens = 0.0, 0
    for start in tqdm(range(0, len(examples), batch_size), desc="eval-model", disable=not progress):
        chunk = examples[start : start + batch_size]
        requests = [GenerationRequest(e.messages, temperature=0.0, max_tokens=max_tokens, json_schema=schema,
                                      seed=0, metadata={"kind": "eval"}) for e in chunk]
        began = time.perf_counter()
        results = backend.generate(requests)
        seconds += time.perf_counter() - began
        for r in results:
            texts.append(None if r.error else r.text)
            tokens += r.completion_tokens or 0
    return texts, seconds, tokens


def test_examples(card: dict[str, Any], *, max_per_group: int | None = None, seed: int = 0,
                  progress: bool = False, data: Sequence[str] | None = None,
                  endings: str | None = None) -> tuple[list[Any], dict[str, Any], int]:
    """The model's test examples rebuilt from its card (demos from the training episodes only),
    at most ``max_per_group`` drawn from each group (held-out episodes of seen families, held-out
    families); returns (examples, output schema, max output tokens).

    ``data`` replaces the card's data files, split the same way (a stable hash of episode ids):
    e.g. a model trained on more data scored on the test split of an earlier model's data, so that
    both are scored on the same transitions with demos from the same training episodes.

    ``endings`` ("failed" or "successful") keeps only the last step of the test episodes that end
    that way: e.g. whether a model rewards wrong final clicks."""
    import random

    from dreamgym_env.schema import output_json_schema
    from dreamgym_env.sft.data import load_split, train_buffer
    from dreamgym_env.sft.examples import build_examples
    from dreamgym_env.sft.train import SFTConfig, _resolve

    cfg = SFTConfig(**{**card["config"], **({"data": list(data)} if data else {})})
    domain, files, top_k, history, state_format = _resolve(cfg)
    split = load_split(files, test_fraction=cfg.test_fraction, held_out_families=cfg.held_out_families,
                       seed=cfg.split_seed, reasoning=cfg.reasoning, rule_version=cfg.reasoning_rule)
    held = set(cfg.held_out_families)
    test = split.test
    if endings is not None:
        if endings not in ENDINGS:
            raise ValueError(f"endings must be one of {ENDINGS}, got {endings!r}")
        test = [t for t in test if _ends_as(t, endings)]
    if max_per_group is not None:  # sample episodes first, so that only the sample's examples are built
        rng = random.Random(seed)
        groups = [[t for t in test if t.task_id not in held], [t for t in test if t.task_id in held]]
        test = []
        for group in groups:
            rng.shuffle(group)
            taken = 0
            for trajectory in group:
                if taken >= max_per_group:
                    break
                test.append(trajectory)
                taken += 1 if endings else len(trajectory.transitions)
    buffer = train_buffer(split.train)
    examples = build_examples(test, domain, buffer=buffer, top_k=top_k, history_length=history,
                              state_format=state_format, prompt_version=card.get("prompt_version", cfg.prompt_version), progress=progress)
    buffer.close()
    if endings is not None:
        last = {t.trajectory_id: t.transitions[-1].step for t in test}
        examples = [e for e in examples if e.transition.step == last[e.transition.trajectory_id]]
    if max_per_group is not None:
        rng = random.Random(seed)
        seen = [e for e in examples if e.transition.task_id not in held]
        unseen = [e for e in examples if e.transition.task_id in held]
        examples = rng.sample(seen, min(max_per_group, len(seen))) + rng.sample(unseen, min(max_per_group, len(unseen)))
    schema = output_json_schema(state_format, domain.output_limits)  # type: ignore[arg-type]
    return examples, schema, domain.max_output_tokens


def evaluate_model(
    backend: Any,
    *,
    card: dict[str, Any],
    max_per_group: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    data: Sequence[str] | None = None,
    endings: str | None = None,
) -> EvalResult:
    """Rebuild the model's test split from its card (or from ``data``, see :func:`test_examples`)
    and score the backend on it (at most ``max_per_group`` examples of seen families and as many
    of held-out families)."""
    from dreamgym_env.sft.train import SFTConfig

    held = set(SFTConfig(**card["config"]).held_out_families)
    examples, schema, max_tokens = test_examples(card, max_per_group=max_per_group, seed=seed, progress=progress,
                                                 data=data, endings=endings)
    texts, seconds, tokens = generate_answers(backend, examples, schema, max_tokens, batch_size, progress)
    scored = [score(e, t) for e, t in zip(examples, texts)]
    per_family: dict[str, dict[str, Any]] = {}
    for family in sorted({s.task_id for s in scored}):
        per_family[family] = summarize([s for s in scored if s.task_id == family])
    return EvalResult(
        seen=summarize([s for s in scored if s.task_id not in held]),
        held_out_families=summarize([s for s in scored if s.task_id in held]),
        per_family=per_family,
        tokens_per_s=tokens / seconds if seconds else 0.0,
        requests_per_s=len(examples) / seconds if seconds else 0.0,
        model=getattr(backend, "name", ""),
        answers=[{"task_id": e.transition.task_id, "trajectory_id": e.transition.trajectory_id,
                  "step": e.transition.step, "reward": e.transition.reward, "done": e.transition.done, "answer": t}
                 for e, t in zip(examples, texts)],
    )


def format_table(result: EvalResult) -> str:
    """Markdown table of the two test sets."""
    keys = ["transitions", "valid_output", "reward_done_acc", "reward_acc", "done_acc", "exact_non_terminal",
            "copy_exact_non_terminal", "exact_state_changing", "element_f1_non_terminal",
            "reward_acc_failed_endings", "reward_acc_successful_endings"]
    lines = ["| test set | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, row in (("held-out episodes, seen families", result.seen), ("held-out families", result.held_out_families)):
        cells = [f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_eval_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``dreamgym eval-model``."""
    parser = sub.add_parser("eval-model", help="fidelity of an experience model on held-out real transitions")
    parser.add_argument("--model", default=None, help="a model directory written by dreamgym sft (with "
                        "dreamgym_model.json; default: the embedded MiniWoB model)")
    parser.add_argument("--backend", default=None, help="serve the model through this backend instead "
                        "(http://host:port/v1 of dreamgym serve); default: TransformersBackend on --model")
    parser.add_argument("--max-per-group", type=int, default=None, help="score a random sample of at most this many "
                        "examples of seen families and as many of held-out families (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", nargs="+", default=None, help="score on the test split of these trajectory "
                        "files instead of the model's own training data (same stable split by episode id), "
                        "e.g. to compare a model trained on more data with the shipped one")
    parser.add_argument("--endings", choices=ENDINGS, default=None, help="score only the last step of the test "
                        "episodes that end this way (by their real reward), e.g. failed: does the model reward "
                        "wrong final clicks?")
    parser.add_argument("--output", default=None, help="also write the figures and every raw answer as JSON here")
    parser.set_defaults(func=_cmd_eval)
    return parser


def load_model_card(model: str | Path | None) -> tuple[Path, dict[str, Any]]:
    """The model directory (default: the embedded MiniWoB model) and its ``dreamgym sft`` card.

    Raises:
        ModelNotFoundError: the directory has no card.
    """
    from dreamgym_env.sft.train import MODEL_CARD

    if model is None:
        from dreamgym_env.backends.default_model import miniwob_model_dir

        model_dir = miniwob_model_dir()
    else:
        model_dir = Path(model)
    card_path = model_dir / MODEL_CARD
    if not card_path.is_file():
        from dreamgym_env.errors import ModelNotFoundError

        raise ModelNotFoundError(f"{model_dir} has no {MODEL_CARD}: scoring needs a model written by dreamgym sft")
    return model_dir, json.loads(card_path.read_text())


def _cmd_eval(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from dreamgym_env.backends import make_backend
    from dreamgym_env.backends.default_model import data_file

    model_dir, card = load_model_card(args.model)
    missing = [f for f in args.data or [] if not Path(data_file(f)).is_file()]
    if missing:
        from dreamgym_env.errors import DataNotFoundError

        raise DataNotFoundError(f"--data: no such trajectory file(s): {', '.join(missing)}")
    backend = make_backend(args.backend or f"transformers:{model_dir}", shared=False)
    result = evaluate_model(backend, card=card, max_per_group=args.max_per_group, seed=args.seed,
                            batch_size=args.batch_size, progress=True, data=args.data, endings=args.endings)
    print(format_table(result))
    print(f"\n{result.tokens_per_s:.1f} completion tokens/s, {result.requests_per_s:.2f} transitions/s ({result.model})")
    if args.output:
        Path(args.output).write_text(json.dumps(asdict(result), indent=2))
    return 0
