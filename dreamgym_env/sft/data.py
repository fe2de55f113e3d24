"""From trajectory files to tokenized SFT splits: annotate, split by episode and family, retrieve
demos from a train-only buffer, render with the shared chat template, tokenize with loss masks."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Sequence

from dreamgym_env.schema import Trajectory
from dreamgym_env.sft.annotate import DEFAULT_RULE_VERSION, annotate_trajectories

logger = logging.getLogger(__name__)

#: Loss-mask values of a token: not trained, reasoning term, next-state term, and the reasoning
#: tokens that state the judgement (part of the reasoning term; ``--judgement-weight`` weighs them).
IGNORE, REASONING, STATE, JUDGEMENT = 0, 1, 2, 3

#: Where a rule trace (v2-v5) states its judgement: whether the acted element or typed text
#: matches the goal's words, whether the element is the widget the goal names, whether the
#: buttons were clicked in the goal's order and an email is the goal's sender's (v5), and the
#: outcome. Under teacher forcing everything after them follows from them; the decision is
#: these words.
_JUDGEMENT = re.compile(r"matches (the goal's|none)|The element (is a|is not a|labels)"
                        r"|: (the goal's|not the goal's) (?:order|sender|action)\."
                        r"|The (goal is met|episode ends without meeting the goal|goal is not met yet)")


def judgement_spans(target: str, reasoning_end: int) -> list[tuple[int, int]]:
    """Character spans of ``target``'s reasoning that state its judgement (see :data:`_JUDGEMENT`)."""
    return [m.span(m.lastindex) for m in _JUDGEMENT.finditer(target, 0, reasoning_end)]


@dataclass
class Split:
    """Train and test trajectories, and which test episodes come from families never trained on."""

    train: list[Trajectory]
    test: list[Trajectory]
    held_out_families: list[str]

    def manifest(self) -> dict[str, Any]:
        return {
            "train": sorted(t.trajectory_id for t in self.train),
            "test": sorted(t.trajectory_id for t in self.test),
            "held_out_families": sorted(self.held_out_families),
        }


def load_split(
    files: Sequence[str],
    *,
    test_fraction: float = 0.1,
    held_out_families: Sequence[str] = (),
    seed: int = 0,
    families: Sequence[str] = (),
    annotate: bool = True,
    reasoning: bool = True,
    rule_version: str = DEFAULT_RULE_VERSION,
) -> Split:
    """Read trajectory files and split them: whole episodes go to test with ``test_fraction``,
    and every episode of ``held_out_families`` goes to test. ``families``: keep only these task
    families' episodes (all when empty), e.g. a quick check on one family.

    Transitions without reasoning are annotated by rule when ``annotate`` is set (element-line
    states); otherwise they train with an empty reasoning. ``reasoning=False`` empties every
    transition's reasoning (the ablation without reasoning). ``rule_version`` picks the rule
    annotation (:data:`~dreamgym_env.sft.annotate.RULE_VERSIONS`).
    """
    import dataclasses

    from dreamgym_env.collect import read_trajectories, split_trajectories

    trajectories = [t for f in files for t in read_trajectories(f)]
    if not trajectories:
        raise ValueError(f"no trajectories in {list(files)}")
    if families:
        present, wanted = {t.task_id for t in trajectories}, set(families)
        if wanted - present:
            raise ValueError(f"families {sorted(wanted - present)} are not in the data (families: {sorted(present)})")
        trajectories = [t for t in trajectories if t.task_id in wanted]
    if not reasoning:
        trajectories = [dataclasses.replace(tr, transitions=[dataclasses.replace(t, reasoning="") for t in tr.transitions])
                        for tr in trajectories]
    missing = sum(1 for tr in trajectories for t in tr.transitions if not t.reasoning)
    if missing and annotate and reasoning:
        logger.info("annotating %d transitions without reasoning (rule)", missing)
        trajectories = annotate_trajectories(trajectories, "rule", rule_version=rule_version)
    known = {t.task_id for t in trajectories}
    unknown = sorted(set(held_out_families) - known)
    if unknown:
        raise ValueError(f"held-out families {unknown} are not in the data (families: {sorted(known)})")
    train, test = split_trajectories(
        trajectories, by="episode", test_fraction=test_fraction,
        held_out_families=list(held_out_families), seed=seed,
    )
    return Split(train, test, list(held_out_families))


def train_buffer(trajectories: Sequence[Trajectory]):
    """An in-memory replay buffer of the training trajectories (the only demos SFT and
    evaluation may retrieve)."""
    from dreamgym_env.buffer.store import ExperienceBuffer

    buffer = ExperienceBuffer()
    buffer.add_trajectories(list(trajectories))
    return buffer


def prompt_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt exactly as the backends send it (chat template plus generation prompt)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenize_example(tokenizer: Any, example: Any, max_length: int) -> dict[str, Any] | None:
    """Token ids and loss mask (IGNORE / REASONING / JUDGEMENT / STATE) of one example, or None
    when it exceeds ``max_length`` tokens. The answer ends with the end-of-turn token."""
    prompt_ids = tokenizer(prompt_text(tokenizer, example.messages), add_special_tokens=False)["input_ids"]
    answer = tokenizer(example.target, add_special_tokens=False, return_offsets_mapping=True)
    answer_ids = list(answer["input_ids"]) + [tokenizer.eos_token_id]
    spans = judgement_spans(example.target, example.reasoning_end)
    mask = [(JUDGEMENT if any(start < span_end and span_start < end for span_start, span_end in spans) else REASONING)
            if start < example.reasoning_end else STATE for start, end in answer["offset_mapping"]]
    mask.append(STATE)
    ids = list(prompt_ids) + answer_ids
    if len(ids) > max_length:
        return None
    return {
        "input_ids": ids,
        "loss_mask": [IGNORE] * len(prompt_ids) + mask,
        "prompt_length": len(prompt_ids),
        "state_changed": example.state_changed,
        "terminal": example.terminal,
        "task_id": example.transition.task_id,
    }
