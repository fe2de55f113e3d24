"""The view shared by every text web env, synthetic and real: the current task, goal and state,
and the ANSI render. One base so that a policy or script written against one env reads the
other unchanged (sim-to-real)."""

from __future__ import annotations

import gymnasium as gym

from dreamgym_env.domains.base import Task


class TextWebEnv(gym.Env[str, str]):
    """Base of the text web envs: ``task``, ``goal`` and ``state`` properties and ``render``.

    Subclasses set ``_task``, ``_goal``, ``_state``, ``_step``, ``_last_reward`` and ``_done``
    in ``reset``/``step``, and may add to the render through ``_render_tags`` (after the header's
    step and reward) and ``_render_details`` (lines between the goal and the state).
    """

    _task: Task | None
    _goal: str
    _state: str
    _step: int
    _last_reward: float
    _done: bool

    @property
    def task(self) -> Task | None:
        """The task of the current episode (None before the first ``reset``)."""
        return self._task

    @property
    def goal(self) -> str:
        """The current task's goal text."""
        return self._goal

    @property
    def state(self) -> str:
        """The current state text (without the goal header)."""
        return self._state

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._task is None:
            return "(reset() not called yet)"
        tags = "".join(f" | {tag}" for tag in self._render_tags())
        header = (f"Task {self._task.task_id} | step {self._step} | reward {self._last_reward:.1f}"
                  f"{' | done' if self._done else ''}{tags}")
        lines = [header, f"Goal: {self._goal}", *self._render_details(), "State:", self._state]
        return "\n".join(lines) + "\n"

    def _render_tags(self) -> list[str]:
        """Extra header fields (e.g. the page URL)."""
        return []

    def _render_details(self) -> list[str]:
        """Extra lines between the goal and the state (e.g. the last action error)."""
        return []
