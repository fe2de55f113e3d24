"""DreamGym envs as TRL ``environment_factory`` classes: the action verbs become tool methods.

TRL's ``GRPOTrainer(environment_factory=Cls)`` builds one instance per rollout, calls
``reset(**row)`` with the dataset row (its string is appended to the prompt), exposes every
public method except ``reset`` and ``get_reward`` as a tool the policy calls with its chat
template's tool-call syntax, and scores the finished rollout with ``get_reward()``.

>>> from trl import GRPOConfig, GRPOTrainer                                  # doctest: +SKIP
>>> from dreamgym_env.integrations.trl_env import DreamGymToolEnv, make_tool_env
>>> trainer = GRPOTrainer(model=..., train_dataset=rows_with_a_seed_column,
...                       environment_factory=DreamGymToolEnv, args=GRPOConfig(...))
>>> MiniWoB = make_tool_env("DreamGym-MiniWoB-v0", backend="http://127.0.0.1:8000/v1")

Each tool formats one action string of the grammar (``click(ref="12")`` -> ``click [12]``),
steps the env and returns the next observation text; a rejected action returns the observation
with its ``Last action error:`` line, as in the Gymnasium env. After the episode has ended every
tool raises :class:`EpisodeOverError` (TRL hands the message back to the policy as the tool's
error). The reward is the episode's return: 1.0 when the task was completed, else 0.0.

GRPO groups need identical starts: give every dataset row a ``seed`` (or ``task_id``) column;
the ``num_generations`` copies of a row then reset to the same task and first state.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import gymnasium as gym

import dreamgym_env  # noqa: F401 - registers the env ids
from dreamgym_env.errors import DreamGymError

logger = logging.getLogger(__name__)

__all__ = ["TOOLS", "DreamGymToolEnv", "EpisodeOverError", "make_tool_env"]

DEFAULT_INSTRUCTIONS = (
    "You are a web agent. Act on the page with the tools, one action per call, and call stop "
    "(with the answer, if the task asks for one) when the task is done.\n\n"
)
#: The instructions of grammars without ``stop`` (MiniWoB: the page ends the episode).
NO_STOP_INSTRUCTIONS = (
    "You are a web agent. Act on the page with the tools, one action per call, until the task is done.\n\n"
)


_URL_SCHEMES = ("http://", "https://", "ws://", "wss://")


class EpisodeOverError(DreamGymError, RuntimeError):
    """A tool was called after the episode had ended (or before ``reset``)."""


def _ref(ref: Any) -> str:
    """``12``, ``"12"`` or ``"[12]"`` -> ``"12"``."""
    return str(ref).strip().strip("[]").strip()


class _Tools:
    """The tool methods, one per verb of the action grammar (see ``domains/actions.py``).

    Their docstrings and type hints are what the policy sees as tool schemas (transformers'
    ``get_json_schema``): keep the Google style and a description for every argument.
    """

    def click(self, ref: str) -> str:
        """Click an element of the page.

        Args:
            ref: The element's reference, the number in brackets before it in the state, e.g. "12".

        Returns:
            The page after the click.
        """
        return self._act(f"click [{_ref(ref)}]")

    def type_text(self, ref: str, text: str, press_enter: bool = False) -> str:
        """Replace the text of a text field.

        Args:
            ref: The field's reference, the number in brackets before it in the state.
            text: The text to type into the field.
            press_enter: Whether to press Enter after typing.

        Returns:
            The page after typing.
        """
        return self._act(f"type [{_ref(ref)}] {json.dumps(str(text), ensure_ascii=False)}{' enter' if press_enter else ''}")

    def hover(self, ref: str) -> str:
        """Move the mouse over an element.

        Args:
            ref: The element's reference, the number in brackets before it in the state.

        Returns:
            The page after hovering.
        """
        return self._act(f"hover [{_ref(ref)}]")

    def select_option(self, ref: str, option: str) -> str:
        """Choose an option of a drop-down list.

        Args:
            ref: The list's reference, the number in brackets before it in the state.
            option: The text of the option to choose.

        Returns:
            The page after choosing.
        """
        return self._act(f"select [{_ref(ref)}] {json.dumps(str(option), ensure_ascii=False)}")

    def press(self, keys: str) -> str:
        """Press a key or a key combination.

        Args:
            keys: The keys, e.g. "Enter" or "Control+a".

        Returns:
            The page after the key press.
        """
        return self._act(f"press [{keys}]")

    def scroll(self, direction: str) -> str:
        """Scroll the page.

        Args:
            direction: "up" or "down".

        Returns:
            The page after scrolling.
        """
        return self._act(f"scroll [{str(direction).strip().lower()}]")

    def goto(self, url: str) -> str:
        """Open a URL in the current tab.

        Args:
            url: The URL to open.

        Returns:
            The page at the URL.
        """
        return self._act(f"goto [{url}]")

    def go_back(self) -> str:
        """Go back to the previous page.

        Returns:
            The previous page.
        """
        return self._act("go_back")

    def go_forward(self) -> str:
        """Go forward to the next page.

        Returns:
            The next page.
        """
        return self._act("go_forward")

    def new_tab(self) -> str:
        """Open a new browser tab.

        Returns:
            The page of the new tab.
        """
        return self._act("new_tab")

    def tab_focus(self, index: int) -> str:
        """Switch to a browser tab.

        Args:
            index: The tab's index, starting at 0.

        Returns:
            The page of that tab.
        """
        return self._act(f"tab_focus [{int(index)}]")

    def close_tab(self) -> str:
        """Close the current browser tab.

        Returns:
            The page of the tab that is current afterwards.
        """
        return self._act("close_tab")

    def stop(self, answer: str = "") -> str:
        """End the task. Call it when the task is done, with the answer if the task asks for one.

        Args:
            answer: The answer to the task's question, or an empty string.

        Returns:
            How the episode ended.
        """
        answer = str(answer).strip()
        return self._act(f"stop [{answer}]" if answer else "stop")


#: Grammar verb -> tool method.
TOOLS: dict[str, Callable[..., str]] = {
    "click": _Tools.click,
    "type": _Tools.type_text,
    "hover": _Tools.hover,
    "select": _Tools.select_option,
    "press": _Tools.press,
    "scroll": _Tools.scroll,
    "goto": _Tools.goto,
    "go_back": _Tools.go_back,
    "go_forward": _Tools.go_forward,
    "new_tab": _Tools.new_tab,
    "tab_focus": _Tools.tab_focus,
    "close_tab": _Tools.close_tab,
    "stop": _Tools.stop,
}


class _ToolEnvBase:
    """Episode logic shared by every tool-env class; the tool methods are added by subclasses.

    Class attributes (set by :func:`make_tool_env` or a subclass): ``env_id``, ``env_kwargs``
    (``gym.make`` keyword arguments), ``instructions`` (text put before the first observation).
    Only ``reset``, ``get_reward`` and the tools are public functions: TRL turns every other
    public method into a tool.
    """

    env_id: str = "DreamGym-WebArena-v0"
    env_kwargs: ClassVar[dict[str, Any]] = {}
    instructions: str = DEFAULT_INSTRUCTIONS
    _warned_unseeded = False

    def __init__(self, env_id: str | None = None, **env_kwargs: Any):
        self.env_id = env_id or type(self).env_id
        kwargs = {**type(self).env_kwargs, **env_kwargs}
        if self.env_id.startswith(_URL_SCHEMES):  # a DreamGym OpenEnv server: one session per instance
            from dreamgym_env.integrations.openenv_client import RemoteDreamGymEnv

            self.env = RemoteDreamGymEnv(self.env_id, **kwargs)
        else:
            self.env = gym.make(self.env_id, **kwargs)
        self.actions: list[str] = []  # the actions of the current episode, as sent to the env
        self.total_steps = 0  # env steps over every episode of this instance
        self.reward = 0.0
        self.done = True
        self.started = False
        self.last_info: dict[str, Any] = {}
        self._end_reason = "no episode yet: reset() was not called"

    def reset(self, **row: Any) -> str:
        """Start an episode for one dataset row; returns the text appended to the prompt.

        Args:
            row: the dataset row. Read: ``seed`` (same seed, same start), ``task_id``, ``task``
                (``{"goal": ..., ...}``) and ``options``; other columns (``prompt``...) are ignored.

        Returns:
            ``instructions`` followed by the first observation (goal and page).
        """
        options = dict(row.get("options") or {})
        for key in ("task_id", "task"):
            if row.get(key) is not None:
                options[key] = row[key]
        seed = row.get("seed")
        if seed is None and "task_id" not in options and "task" not in options and not _ToolEnvBase._warned_unseeded:
            _ToolEnvBase._warned_unseeded = True
            warnings.warn(
                "DreamGym tool env reset without a 'seed' or 'task_id' column: the rollouts of a GRPO group "
                "start from different tasks. Add a seed column to the dataset.",
                stacklevel=2,
            )
        obs, info = self.env.reset(seed=None if seed is None else int(seed), options=options or None)
        self.actions, self.reward, self.done, self.started = [], 0.0, False, True
        self.last_info = info
        self._end_reason = ""
        return f"{self.instructions}{obs}"

    def get_reward(self) -> float:
        """The episode's return: 1.0 when the task was completed, else 0.0."""
        return float(self.reward)

    def _act(self, action: str) -> str:
        if not self.started or self.done:
            raise EpisodeOverError(
                f"The episode is over ({self._end_reason}); no more actions can be taken."
                if self.started else "No episode is running: reset() was not called."
            )
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.actions.append(action)
        self.total_steps += 1
        self.reward += float(reward)
        self.last_info = info
        if terminated or truncated:
            self.done = True
            if truncated:
                why = info.get("error") or "step limit reached"
                self._end_reason = f"truncated: {why}"
            else:
                self._end_reason = "task completed" if self.reward > 0 else "ended without success"
            return f"{obs}\n\nEpisode over ({self._end_reason}), reward {self.reward:g}."
        return obs

    def __del__(self) -> None:
        env = getattr(self, "env", None)
        if env is not None:
            try:
                env.close()
            except Exception:
                logger.debug("closing the env failed", exc_info=True)


def _tool_class(name: str, verbs: Sequence[str], attrs: dict[str, Any], doc: str) -> type:
    unknown = [v for v in verbs if v not in TOOLS]
    if unknown:
        raise ValueError(f"No tool for verbs {unknown}; known: {sorted(TOOLS)}")
    body: dict[str, Any] = {"__doc__": doc, "__module__": __name__, **attrs}
    for verb in verbs:
        body[TOOLS[verb].__name__] = TOOLS[verb]
    return type(name, (_ToolEnvBase,), body)


def make_tool_env(env_id: str, *, verbs: Sequence[str] | None = None, name: str | None = None,
                  instructions: str | None = None, **env_kwargs: Any) -> type:
    """A TRL ``environment_factory`` class for ``env_id``, with one tool per verb of its grammar.

    Args:
        env_id: a registered id, synthetic or real twin (sim-to-real is a change of this id), or
            the URL of a DreamGym OpenEnv server (``dreamgym serve-env``): each instance then
            plays one WebSocket session of that server.
        verbs: the verbs to expose; None reads them from the env's domain grammar (one env is
            built to find out), falling back to every verb (always, for a URL).
        name: the class name (TRL logs the env reward under it); default from the id.
        instructions: text before the first observation; None: :data:`DEFAULT_INSTRUCTIONS`, or
            :data:`NO_STOP_INSTRUCTIONS` when the grammar has no ``stop``.
        env_kwargs: ``gym.make`` keyword arguments (``backend``, ``buffer``, ``max_episode_steps``...).

    Returns:
        A class; pass it (not an instance) as ``environment_factory``.
    """
    if verbs is None and env_id.startswith(_URL_SCHEMES):
        verbs = list(TOOLS)
    if verbs is None:
        probe = gym.make(env_id, **env_kwargs)
        try:
            grammar = getattr(getattr(probe.unwrapped, "domain", None), "grammar", None)
            verbs = [v.name for v in grammar.verbs] if grammar is not None else list(TOOLS)
        finally:
            probe.close()
    unknown = [v for v in verbs if v not in TOOLS]
    if unknown:
        raise ValueError(f"No tool for verbs {unknown}; known: {sorted(TOOLS)}")
    if name is None:
        base = "DreamGymRemote" if env_id.startswith(_URL_SCHEMES) else env_id.replace("DreamGym-", "DreamGym")
        name = "".join(ch for ch in base if ch.isalnum()) + "ToolEnv"
    if instructions is None:
        instructions = DEFAULT_INSTRUCTIONS if "stop" in verbs else NO_STOP_INSTRUCTIONS
    attrs: dict[str, Any] = {"env_id": env_id, "env_kwargs": dict(env_kwargs), "instructions": instructions}
    doc = f"TRL environment_factory class for {env_id}; tools: {', '.join(TOOLS[v].__name__ for v in verbs)}."
    return _tool_class(name, list(verbs), attrs, doc)


#: The WebArena verbs (``domains/webarena``): every verb but ``select``.
_WEBARENA_VERBS = ("click", "type", "hover", "press", "scroll", "new_tab", "tab_focus", "close_tab",
                   "goto", "go_back", "go_forward", "stop")

DreamGymToolEnv = _tool_class(
    "DreamGymToolEnv",
    _WEBARENA_VERBS,
    {"env_id": "DreamGym-WebArena-v0", "env_kwargs": {}},
    """DreamGym-WebArena-v0 as a TRL ``environment_factory`` class (tools: the WebArena verbs).

    ``DreamGymToolEnv()`` uses the env's defaults (``DREAMGYM_*`` variables, else the embedded
    model); ``DreamGymToolEnv(backend="http://...", buffer=...)`` or
    ``functools.partial(DreamGymToolEnv, backend=...)`` pass ``gym.make`` arguments; for
    another id use :func:`make_tool_env`.

    Tools: ``click(ref)``, ``type_text(ref, text, press_enter=False)``, ``hover(ref)``,
    ``press(keys)``, ``scroll(direction)``, ``goto(url)``, ``go_back()``, ``go_forward()``,
    ``new_tab()``, ``tab_focus(index)``, ``close_tab()``, ``stop(answer="")``.
    """,
)
