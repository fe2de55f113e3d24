"""Versioned records: transitions, trajectories and the experience model's output.

Everything that is stored (replay buffer, JSONL files) or exchanged with a model goes through
the dataclasses and the JSON schema here, so that SFT, serving and evaluation agree.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dreamgym_env.errors import ModelOutputError

SCHEMA_VERSION = 1

Source = Literal["real", "synthetic"]
StateFormat = Literal["patch", "whole"]


@dataclass
class Transition:
    """One step (s_t, a_t) -> (R_t, s_{t+1}, r_t, done) with its provenance."""

    domain: str
    task_id: str
    trajectory_id: str
    step: int
    state: str
    action: str
    next_state: str
    reward: float
    done: bool
    goal: str = ""
    reasoning: str = ""
    valid_action: bool = True
    source: Source = "real"
    policy_version: str = ""
    created_at: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Transition":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known - {"schema_version"}
        if unknown:
            raise ValueError(f"Unknown Transition fields: {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Trajectory:
    """A whole episode: its task and transitions, in order."""

    trajectory_id: str
    domain: str
    task_id: str
    goal: str
    transitions: list[Transition] = field(default_factory=list)
    source: Source = "real"

    @property
    def total_reward(self) -> float:
        return float(sum(t.reward for t in self.transitions))

    def to_json(self) -> str:
        data = asdict(self)
        data["schema_version"] = SCHEMA_VERSION
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> "Trajectory":
        data = json.loads(line)
        version = data.pop("schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise ValueError(f"Trajectory schema version {version} is newer than {SCHEMA_VERSION}")
        transitions = [Transition.from_dict(t) for t in data.pop("transitions", [])]
        return cls(transitions=transitions, **data)


@dataclass
class ModelOutput:
    """The experience model's prediction for one step, already validated."""

    reasoning: str
    reward: float
    done: bool
    valid_action: bool
    next_state: str | None = None
    patch: list[str] | None = None


@dataclass(frozen=True)
class OutputLimits:
    """Length caps written into the output schema, so that constrained decoding always closes
    the JSON object within the token budget, even for an untrained model. None: no cap.

    Character caps (``maxLength``) are for models whose strings need no escapes: xgrammar (0.2.8,
    used by vLLM and TransformersBackend) then rejects every escape sequence inside the string,
    so a model could never write the ``\"`` of ``button \"OK\"``. The domains cap only the
    number of patch lines and bound the rest by ``max_tokens``."""

    reasoning_chars: int | None = None
    state_chars: int | None = None
    patch_lines: int | None = None
    line_chars: int | None = None


def _string(max_chars: int | None) -> dict[str, Any]:
    return {"type": "string", **({"maxLength": max_chars} if max_chars else {})}


def output_json_schema(state_format: StateFormat, limits: OutputLimits | None = None) -> dict[str, Any]:
    """JSON schema of a model output, for structured outputs and validation.

    The key order (reasoning first) is the order the model writes: it reasons, then predicts.
    """
    limits = limits or OutputLimits()
    properties: dict[str, Any] = {"reasoning": _string(limits.reasoning_chars)}
    if state_format == "patch":
        patch: dict[str, Any] = {"type": "array", "items": _string(limits.line_chars)}
        if limits.patch_lines:
            patch["maxItems"] = limits.patch_lines
        properties["patch"] = patch
    else:
        properties["next_state"] = _string(limits.state_chars)
    properties.update(
        {
            "reward": {"type": "integer", "enum": [0, 1]},
            "done": {"type": "boolean"},
            "valid_action": {"type": "boolean"},
        }
    )
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def initial_state_json_schema(limits: OutputLimits | None = None) -> dict[str, Any]:
    """JSON schema of the answer to an initial-state request: ``{"state": str}``."""
    max_chars = (limits or OutputLimits()).state_chars or 2000
    return {
        "type": "object",
        "properties": {"state": _string(max_chars)},
        "required": ["state"],
        "additionalProperties": False,
    }

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def _load_json_object(raw: str) -> dict[str, Any]:
    """Parse the first JSON object in ``raw`` (tolerates code fences and trailing text)."""
    text = raw.strip()
    if text.startswith("```"):
        text = _FENCE.sub("", text)
    start = text.find("{")
    if start < 0:
        raise ModelOutputError("no JSON object in model output", raw)
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ModelOutputError(f"model output is not valid JSON: {exc.msg} at {exc.pos}", raw) from exc
    if not isinstance(obj, dict):
        raise ModelOutputError("model output is not a JSON object", raw)
    return obj


def _as_bool(value: Any, key: str, raw: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise ModelOutputError(f"{key!r} must be a boolean, got {value!r}", raw)


def parse_model_output(raw: str, state_format: StateFormat) -> ModelOutput:
    """Parse and validate a transition prediction.

    Raises:
        ModelOutputError: with an excerpt of ``raw`` when it is not valid.
    """
    obj = _load_json_object(raw)
    state_key = "patch" if state_format == "patch" else "next_state"
    missing = [k for k in ("reasoning", state_key, "reward", "done") if k not in obj]
    if missing:
        raise ModelOutputError(f"model output misses keys {missing}", raw)
    reasoning = obj["reasoning"]
    if not isinstance(reasoning, str):
        raise ModelOutputError("'reasoning' must be a string", raw)
    reward = obj["reward"]
    if isinstance(reward, bool) or reward not in (0, 1, 0.0, 1.0):
        raise ModelOutputError(f"'reward' must be 0 or 1, got {reward!r}", raw)
    done = _as_bool(obj["done"], "done", raw)
    valid_action = _as_bool(obj.get("valid_action", True), "valid_action", raw)
    if state_format == "patch":
        patch = obj["patch"]
        if not isinstance(patch, list) or not all(isinstance(p, str) for p in patch):
            raise ModelOutputError("'patch' must be a list of strings", raw)
        return ModelOutput(reasoning, float(reward), done, valid_action, patch=patch)
    next_state = obj["next_state"]
    if not isinstance(next_state, str):
        raise ModelOutputError("'next_state' must be a string", raw)
    return ModelOutput(reasoning, float(reward), done, valid_action, next_state=next_state)


def parse_initial_state(raw: str) -> str:
    """Parse the model's answer to an initial-state request."""
    obj = _load_json_object(raw)
    state = obj.get("state")
    if not isinstance(state, str) or not state.strip():
        raise ModelOutputError("initial state output needs a non-empty 'state' string", raw)
    return state
