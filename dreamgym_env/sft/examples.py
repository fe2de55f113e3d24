"""SFT examples: (task, H_t, s_t, a_t, D_k) -> (R_t, next state, reward, done), rendered with the
same chat template and the same retrieval the env uses at serving time.

Demos come from a replay buffer holding the *training* trajectories only, queried exactly as
:func:`dreamgym_env.env.run_plans` does (same query text, same ``where``), and never from the
transition's own trajectory. The search is exact with ties broken by id (``exact=True``) where
the env's is Chroma's approximate HNSW: the same data then always gives the same examples
(HNSW picks among the many identical keys of real data differently at each build).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from tqdm.auto import tqdm

from dreamgym_env import prompts
from dreamgym_env.domains.base import Domain
from dreamgym_env.patch import make_patch
from dreamgym_env.schema import ModelOutput, Trajectory, Transition

logger = logging.getLogger(__name__)


@dataclass
class SFTExample:
    """One training or evaluation example.

    Attributes:
        messages: the prompt, as the env renders it.
        target: the answer text (reasoning first, then the next state, reward, done).
        reasoning_end: characters of ``target`` that belong to the reasoning term of the loss
            (the JSON up to the end of the reasoning string); the rest is the state term.
        transition: the real transition it was made from.
        state_format: "patch" or "whole" (a patch that cannot express the change falls back to
            the whole next state only in "whole" mode; in "patch" mode such steps are skipped).
    """

    messages: list[dict[str, str]]
    target: str
    reasoning_end: int
    transition: Transition
    state_format: str
    demos: list[Transition] = field(default_factory=list)

    @property
    def state_changed(self) -> bool:
        return self.transition.next_state != self.transition.state

    @property
    def terminal(self) -> bool:
        return bool(self.transition.done)


def target_output(transition: Transition, state_format: str) -> ModelOutput | None:
    """What the model should answer for a real transition, or None when a patch cannot express it."""
    t = transition
    if state_format == "patch":
        patch = make_patch(t.state, t.next_state)
        if patch is None:
            return None
        return ModelOutput(t.reasoning, float(t.reward), bool(t.done), bool(t.valid_action), patch=patch)
    return ModelOutput(t.reasoning, float(t.reward), bool(t.done), bool(t.valid_action), next_state=t.next_state)


def reasoning_span(target: str) -> int:
    """End (exclusive) of the reasoning part of a rendered target: the JSON through the closing
    quote of the reasoning string."""
    import json

    prefix = '{"reasoning":'
    if not target.startswith(prefix):
        raise ValueError(f"target does not start with {prefix!r}: {target[:40]!r}")
    _, end = json.JSONDecoder().raw_decode(target, len(prefix))
    return end


def build_examples(
    trajectories: Sequence[Trajectory],
    domain: Domain,
    *,
    buffer: Any = None,
    top_k: int = 2,
    history_length: int = 2,
    state_format: str | None = None,
    prompt_version: str = prompts.PROMPT_VERSION,
    progress: bool = False,
) -> list[SFTExample]:
    """Render every transition of ``trajectories`` as an SFT example.

    Args:
        trajectories: annotated trajectories (empty reasoning is allowed, but trains nothing).
        domain: gives the action help and the default state format.
        buffer: an :class:`~dreamgym_env.buffer.store.ExperienceBuffer` of training trajectories
            to retrieve demos from (None or ``top_k=0``: no demos).
        top_k, history_length: as the env's arguments of the same names.
        state_format: overrides the domain's ("patch" or "whole").
        prompt_version: the chat template's version (``prompts.PROMPT_VERSIONS``).
    """
    state_format = state_format or domain.state_format
    action_help = domain.prompt_action_help()
    rows: list[tuple[Transition, list[prompts.HistoryStep]]] = []
    for trajectory in trajectories:
        history: list[prompts.HistoryStep] = []
        for t in trajectory.transitions:
            rows.append((t, history[-history_length:] if history_length else []))
            history = history + [prompts.HistoryStep(t.action, float(t.reward), bool(t.valid_action))]
    demos: list[list[Transition]] = [[] for _ in rows]
    if buffer is not None and top_k > 0:
        where = {"$and": [{"domain": domain.name}, {"source": "real"}]}
        chunk = 256
        for start in tqdm(range(0, len(rows), chunk), desc="retrieve demos", disable=not progress):
            part = rows[start : start + chunk]
            found = buffer.query(
                [t.state for t, _ in part], [t.action for t, _ in part], n_results=top_k, where=where,
                exclude_trajectory_ids=[t.trajectory_id for t, _ in part], exact=True,
            )
            for i, hits in enumerate(found):
                demos[start + i] = [h.transition for h in hits[:top_k]]
    examples = []
    skipped = 0
    for (t, history), shown in zip(rows, demos):
        output = target_output(t, state_format)
        if output is None:
            skipped += 1
            continue
        messages = prompts.render_transition(
            domain=domain.name, goal=t.goal, state=t.state, action=t.action, history=history,
            demos=shown, action_help=action_help, state_format=state_format,  # type: ignore[arg-type]
            version=prompt_version,
        )
        target = prompts.render_target(output, state_format)  # type: ignore[arg-type]
        examples.append(SFTExample(messages, target, reasoning_span(target), t, state_format, shown))
    if skipped:
        logger.warning("%d transitions skipped: a patch cannot express their next state", skipped)
    return examples
