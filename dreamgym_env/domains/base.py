"""What a domain gives an environment: tasks, action grammar, state format, observations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dreamgym_env.domains.actions import ActionGrammar
from dreamgym_env.errors import UnknownTaskError
from dreamgym_env.schema import OutputLimits, StateFormat


@dataclass(frozen=True)
class Task:
    """One task: an id, the goal the agent reads, and domain data (sites, start URL, eval)."""

    task_id: str
    goal: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Task":
        """A task given inline, e.g. ``reset(options={"task": {"task_id": ..., "goal": ...}})``."""
        if "goal" not in data or not isinstance(data["goal"], str) or not data["goal"].strip():
            raise ValueError(f"A task needs a non-empty 'goal' string, got keys {sorted(data)}")
        meta = {k: v for k, v in data.items() if k not in ("task_id", "goal")}
        return cls(str(data.get("task_id", f"custom-{abs(hash(data['goal'])) % 10**8}")), data["goal"], meta)


def half_prompt_characters(messages: Sequence[Mapping[str, Any]]) -> int:
    """Half the characters of a chat prompt's messages, rounded up: the part of a transition's
    answer budget that follows the prompt (:meth:`Domain.answer_token_budget`)."""
    return (sum(len(str(m.get("content", ""))) for m in messages) + 1) // 2


class Domain:
    """Base class of a domain; subclasses set the class attributes and load ``tasks``.

    Attributes:
        name: domain name used in prompts and buffer metadata.
        state_format: "patch" or "whole", how the experience model writes next states.
        grammar: the action grammar agents use.
        max_episode_steps: the step limit the env ids register with.
    """

    name: str = "base"
    state_format: StateFormat = "patch"
    max_episode_steps: int = 30
    max_output_tokens: int = 384
    #: When set, a transition request may use at most this many answer tokens beyond half the
    #: prompt's characters (about its token count or more: MiniWoB prompts run 1.9-3+ characters a
    #: token), and never more than
    #: ``max_output_tokens``: a degenerate answer then stops sooner (see ``answer_token_budget``).
    answer_tokens_beyond_prompt: int | None = None
    output_limits: OutputLimits = OutputLimits(patch_lines=24)
    terminal_verbs: tuple[str, ...] = ("stop",)
    #: Demos retrieved and past actions shown per step, unless the env is told otherwise.
    default_top_k: int = 4
    default_history_length: int = 4
    #: Whether prompts spell out the action grammar (a model trained on the domain knows it).
    describe_actions: bool = True
    grammar: ActionGrammar

    def __init__(self, tasks: Sequence[Task]):
        if not tasks:
            raise ValueError(f"Domain {self.name!r} has no tasks (check the filters you passed)")
        self.tasks: list[Task] = list(tasks)
        self._by_id = {t.task_id: t for t in self.tasks}

    @property
    def task_ids(self) -> list[str]:
        return [t.task_id for t in self.tasks]

    def get_task(self, task_id: Any) -> Task:
        """The task with this id (ints and strings both work).

        Raises:
            UnknownTaskError: suggesting the closest ids.
        """
        task = self._by_id.get(str(task_id))
        if task is None:
            raise UnknownTaskError(task_id, self._by_id, self.name)
        return task

    def prompt_action_help(self) -> str:
        """The action grammar as prompts show it ("" when :attr:`describe_actions` is off)."""
        return self.grammar.describe() if self.describe_actions else ""

    def answer_token_budget(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """``max_tokens`` of a transition request for ``messages``: ``max_output_tokens``, or with
        ``answer_tokens_beyond_prompt`` set, at most that many tokens plus half the prompt's
        characters. A real answer rewrites part of the page the prompt shows, so its length
        follows the prompt's; an answer far longer is a degenerate one (a loop that only the
        cap stops), and every token of it delays the whole batch it is in."""
        if self.answer_tokens_beyond_prompt is None:
            return self.max_output_tokens
        return min(self.max_output_tokens, self.answer_tokens_beyond_prompt + half_prompt_characters(messages))

    def default_model(self) -> str | None:
        """The model directory used when the user names none; None: the embedded base model."""
        return None

    def default_buffer(self) -> Any:
        """The replay buffer used when the user names none; None: no retrieval."""
        return None

    def admissible_actions(self, state: str, goal: str = "") -> list[str] | None:
        """Every action that makes sense on ``state`` for ``goal``, or None when they cannot be
        listed. Computed from text alone, so predicted and real states get the same lists."""
        return None

    def initial_state_context(self, task: Task) -> str:
        """Extra lines for the prompt that generates a task's first state."""
        return ""

    def fallback_initial_state(self, task: Task) -> str:
        """A minimal first state used when the model cannot produce one (reported in info)."""
        return "[1] RootWebArea ''"

    @staticmethod
    def format_observation(goal: str, state: str, last_action_error: str = "") -> str:
        """The agent's text observation; real twins use the same function."""
        error = f"Last action error: {last_action_error}\n" if last_action_error else ""
        return f"Goal: {goal}\n{error}State:\n{state}"
