"""How a transition is stored: its id, its retrieval key, its Chroma metadata, and back.

Every buffer entry is one :class:`~dreamgym_env.schema.Transition`:

- id: :func:`transition_id` (``"{domain}:{trajectory_id}:{step}"``), unique in the buffer, so
  the same step is never stored twice;
- document: :func:`key_text` of its state and action, the text that is embedded and the same
  text a query is built from;
- metadata: provenance and filter fields (``source``, ``domain``, ``task_id``,
  ``trajectory_id``, ``step``, ``reward``, ``done``, ``valid_action``, ``policy_version``,
  ``created_at``, ``utility``, and ``initial_task_id`` on first steps only) plus ``payload``,
  the transition's JSON, from which :func:`entry_transition` rebuilds it exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dreamgym_env.errors import ReplayBufferError
from dreamgym_env.schema import SCHEMA_VERSION, Transition

__all__ = [
    "SOURCES", "AddResult", "Retrieved", "entry_metadata", "entry_transition", "key_text", "transition_id",
]

SOURCES = ("real", "synthetic")


def transition_id(t: Transition) -> str:
    """The buffer id of a transition: ``"{domain}:{trajectory_id}:{step}"`` (deterministic)."""
    return f"{t.domain}:{t.trajectory_id}:{int(t.step)}"


def key_text(state: str, action: str) -> str:
    """The retrieval key of a (state, action) pair: what is stored as document and queried."""
    return f"{action}\n{state}"


@dataclass
class AddResult:
    """Outcome of an insert: ids stored now, and ids skipped because they already existed."""

    added: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


@dataclass
class Retrieved:
    """One retrieved neighbour: its id, cosine distance to the query key and the transition."""

    id: str
    distance: float
    transition: Transition


def entry_metadata(t: Transition) -> dict[str, Any]:
    """The Chroma metadata stored with ``t``.

    Raises:
        ReplayBufferError: When ``t.source`` is not one of :data:`SOURCES`.
    """
    if t.source not in SOURCES:
        raise ReplayBufferError(
            f"Transition {transition_id(t)!r} has source {t.source!r}; expected one of {SOURCES}."
        )
    meta = {
        "source": t.source,
        "domain": t.domain,
        "task_id": str(t.task_id),
        "trajectory_id": str(t.trajectory_id),
        "step": int(t.step),
        "reward": float(t.reward),
        "done": bool(t.done),
        "valid_action": bool(t.valid_action),
        "policy_version": t.policy_version or "",
        "created_at": float(t.created_at),
        "utility": 0.0,
        "schema_version": SCHEMA_VERSION,
        "payload": json.dumps(t.to_dict(), ensure_ascii=False),
    }
    if int(t.step) == 0:
        # One selective key for initial_states: Chroma's filter cost grows with the rows each
        # condition matches, so {"task_id": x} AND {"step": 0} would scan every first step.
        meta["initial_task_id"] = str(t.task_id)
    return meta


def entry_transition(meta: dict[str, Any]) -> Transition:
    """The transition stored with Chroma metadata ``meta`` (its ``payload``)."""
    return Transition.from_dict(json.loads(meta["payload"]))
