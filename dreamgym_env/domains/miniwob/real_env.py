"""MiniWoBRealEnv: real MiniWoB++ tasks in a headless Chromium, with DreamGym's text interface."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence, TypeVar

import gymnasium as gym

from dreamgym_env.domains.actions import InvalidActionError, ParsedAction
from dreamgym_env.domains.base import Task
from dreamgym_env.domains.miniwob.browser import CHROME_ARGS, BrowserError, MiniWoBBrowser, Snapshot
from dreamgym_env.domains.miniwob.domain import MiniWoBDomain
from dreamgym_env.domains.miniwob.serialize import dom_elements
from dreamgym_env.domains.miniwob.tasks import FAMILY_BY_ID
from dreamgym_env.spaces import UnicodeText
from dreamgym_env.text_env import TextWebEnv

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: MiniWoB's reward of a solved task (before its time discount); anything less is a failure.
SUCCESS_RAW_REWARD = 1.0


class MiniWoBRealEnv(TextWebEnv):
    """Real MiniWoB++ tasks, seen and played through DreamGym's text interface.

    ## Description
    The real twin of ``DreamGym-MiniWoB-v0``: each episode is a MiniWoB++ task page in a headless
    Chromium (through Selenium). The agent reads the task utterance and the page as element
    lines and answers with one text action; rewards come from the page itself. Trajectories
    collected here seed the experience model's replay buffer and SFT data
    (``dreamgym collect``).

    ## Action Space
    ``UnicodeText(max_action_length)``, one action of the MiniWoB grammar:
    ``click [ref]``, ``type [ref] "text"`` (replaces the field's text; append `` enter`` to press
    Enter after), ``select [ref] "option"`` and ``press [Enter]`` (keys joined by ``+``). A
    malformed action, or one on an element that is not on the page, is no exception: the page
    stays, the reward is 0, ``info["valid_action"]`` is False and ``info["last_action_error"]``
    (and a ``Last action error:`` line of the observation) says what was wrong.

    ## Observation Space
    ``UnicodeText(max_observation_length)``: ``Domain.format_observation(goal, state, error)``,
    i.e. ``"Goal: <utterance>\\nState:\\n<element lines>"`` where each line is
    ``[ref] tag "text" value="…" options=[…] id="…" checked focused`` (see
    :mod:`dreamgym_env.domains.miniwob.serialize`). Refs are MiniWoB's element refs: stable
    within an episode and the same for the same page.

    ## Rewards
    1.0 on the step that solves the task, else 0.0. MiniWoB's own reward (−1 … 1, partial for some
    tasks) is in ``info["raw_reward"]`` once the page ends the episode.

    ## Starting State
    A family drawn with the env's generator among ``task_ids`` (or
    ``options={"task_id": "click-button"}``), and a MiniWoB seed drawn from the same generator:
    ``reset(seed=s)`` always gives the same page. ``options={"trajectory_id": …}`` names the
    episode (default: drawn from the generator too).

    ## Episode End
    Terminated when the page ends the episode (success or failure). Truncated by the step limit
    of the registration (``max_episode_steps``), or when the browser crashes or hangs: the browser
    is restarted, the step ends with ``truncated=True`` and ``info["error"]``, and the next
    ``reset`` starts a fresh episode. MiniWoB's own timer is lifted unless ``time_limit_ms`` is set.

    ## Arguments
    | name | default | meaning |
    |---|---|---|
    | task_id | None | play only this family |
    | task_ids | all families | draw families from these |
    | data_mode | "train" | MiniWoB's data mode ("train"/"test") |
    | time_limit_ms | None | MiniWoB's episode timer (None: no limit, for slow agents) |
    | chrome_binary, chromedriver | found on PATH | or ``MINIWOB_CHROME_BINARY`` / ``MINIWOB_CHROMEDRIVER`` |
    | chrome_args | headless flags | Chromium command-line flags |
    | command_timeout_s | 30 | the longest one browser call may take |
    | max_tabs | 20 | families kept open, one tab each (switching tabs is faster than loading) |
    | max_restarts | 2 | browser restarts tried per reset before giving up |
    | backend, buffer | None | ignored: accepted so that one ``gym.make`` call serves the synthetic and the real twin |

    ``gym.make("DreamGym-MiniWoB-Real-v0", task_ids=["click-button", "enter-text"])``

    ## Experience Model
    None: this env is the ground truth the experience model learns from (``info["source"]`` is
    ``"real"``, ``reasoning`` is empty, ``model_latency_s`` 0).

    ## Real Twin
    This is the real twin of ``DreamGym-MiniWoB-v0``: same observation format, action grammar,
    info keys and ``admissible_actions``.

    ## Version History
    * v0: first release (19 families, element-line states, click/type/select/press).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        task_id: str | None = None,
        task_ids: Sequence[str] | None = None,
        *,
        data_mode: str = "train",
        time_limit_ms: int | None = None,
        chrome_binary: str | None = None,
        chromedriver: str | None = None,
        chrome_args: Sequence[str] = CHROME_ARGS,
        command_timeout_s: float = 30.0,
        max_tabs: int = 20,
        max_restarts: int = 2,
        backend: Any = None,
        buffer: Any = None,
        render_mode: str | None = None,
        max_observation_length: int = 100_000,
        max_action_length: int = 1_000,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not one of {self.metadata['render_modes']}")
        if task_id is not None and task_ids is not None:
            raise ValueError("Pass task_id (one family) or task_ids (several), not both.")
        if backend is not None or buffer not in (None, False):
            logger.debug("MiniWoBRealEnv ignores backend and buffer (the page is the dynamics)")
        self.domain = MiniWoBDomain([task_id] if task_id is not None else task_ids)
        self.task_ids = self.domain.task_ids
        self.data_mode = data_mode
        self.time_limit_ms = time_limit_ms
        self.max_restarts = max_restarts
        self.render_mode = render_mode
        self._browser_kwargs = dict(
            chrome_binary=chrome_binary, chromedriver=chromedriver, chrome_args=chrome_args,
            command_timeout_s=command_timeout_s, max_tabs=max_tabs,
        )
        self.browser: MiniWoBBrowser | None = None
        self.action_space = UnicodeText(max_action_length, examples=self.domain.grammar.examples(("4", "5", "6", "7")))
        self.observation_space = UnicodeText(max_observation_length)
        self._task: Task | None = None
        self._goal = ""
        self._state = ""
        self._refs: set[int] = set()
        self._trajectory_id = ""
        self._miniwob_seed = 0
        self._step = 0
        self._done = False
        self._last_reward = 0.0
        self._last_error = ""

    # ----------------------------------------------------------------- browser
    def _ensure_browser(self) -> MiniWoBBrowser:
        if self.browser is None:
            self.browser = MiniWoBBrowser(**self._browser_kwargs)
        return self.browser

    def _with_restarts(self, what: str, fn: Callable[[MiniWoBBrowser], T]) -> T:
        """Run ``fn`` on the browser, restarting it after a crash (up to ``max_restarts``)."""
        browser = self._ensure_browser()
        error: BrowserError | None = None
        for attempt in range(self.max_restarts + 1):
            try:
                if attempt:
                    browser.restart()
                else:
                    browser.start()
                return fn(browser)
            except BrowserError as exc:
                error = exc
                logger.warning("%s failed (%s)%s", what, exc, "; restarting the browser" if attempt < self.max_restarts else "")
        raise BrowserError(f"{what} failed after {self.max_restarts} browser restart(s): {error}") from error

    # ------------------------------------------------------------------- reset
    def reset(
        self, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        self._task = self._choose_task(options)
        family = self._task.task_id
        self._miniwob_seed = int(self.np_random.integers(2**31 - 1))
        self._trajectory_id = str(options.get("trajectory_id") or f"real-{family}-{self.np_random.bytes(6).hex()}")
        self._step, self._done, self._last_reward, self._last_error = 0, False, 0.0, ""

        def begin(browser: MiniWoBBrowser) -> Snapshot:
            browser.open_task(family)
            browser.begin_episode(self._miniwob_seed, data_mode=self.data_mode, time_limit_ms=self.time_limit_ms)
            return browser.snapshot()

        snap = self._with_restarts(f"reset of {family}", begin)
        self._goal = snap.utterance
        self._observe(snap)
        return self._observation(), self._info(raw_reward=0.0)

    def _choose_task(self, options: dict[str, Any]) -> Task:
        if options.get("task_id") is not None:
            return self.domain.get_task(options["task_id"])
        return self.domain.tasks[int(self.np_random.integers(len(self.domain.tasks)))]

    def _observe(self, snap: Snapshot) -> None:
        elements = dom_elements(snap.dom, snap.selects)
        self._state = "\n".join(e.line() for e in elements)
        self._refs = set()
        stack = [snap.dom]
        while stack:
            node = stack.pop()
            ref = node.get("ref")
            if isinstance(ref, int) and ref > 0:
                self._refs.add(ref)
            stack.extend(node.get("children") or [])

    # -------------------------------------------------------------------- step
    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._task is None:
            raise gym.error.ResetNeeded("Call reset() before step().")
        self._step += 1
        if self._done:
            info = self._info(raw_reward=0.0)
            info.update(valid_action=False, error="the episode is over; call reset()")
            return self._observation(), 0.0, True, False, info
        try:
            parsed = self.domain.grammar.parse(action)
            target = self._target(parsed)
        except InvalidActionError as exc:
            return self._invalid(str(exc))
        browser = self._ensure_browser()
        try:
            try:
                self._execute(browser, parsed, target)
            except ValueError as exc:  # the page refused it (no such option, unknown key...)
                return self._invalid(str(exc))
            settle = FAMILY_BY_ID[self._task.task_id].settle_ms
            if settle and parsed.verb in ("type", "press"):
                browser.settle(settle)
            snap = browser.snapshot()
        except BrowserError as exc:
            return self._crashed(exc)
        self._observe(snap)
        success = snap.done and snap.raw_reward >= SUCCESS_RAW_REWARD - 1e-9
        reward = 1.0 if success else 0.0
        self._done = snap.done
        self._last_reward, self._last_error = reward, ""
        return self._observation(), reward, snap.done, False, self._info(raw_reward=snap.raw_reward if snap.done else 0.0)

    def _target(self, parsed: ParsedAction) -> int | None:
        """The element ref an action names, checked against the page (None: no element)."""
        if "ref" not in parsed.args:
            return None
        raw = parsed.args["ref"]
        try:
            ref = int(raw)
        except ValueError:
            raise InvalidActionError(f"ref must be a number, got [{raw}]") from None
        if ref not in self._refs:
            raise InvalidActionError(f"no element [{raw}] on the page")
        return ref

    @staticmethod
    def _execute(browser: MiniWoBBrowser, parsed: ParsedAction, ref: int | None) -> None:
        if parsed.verb == "click":
            browser.click(ref)
        elif parsed.verb == "type":
            browser.type_text(ref, parsed.args["text"], enter=parsed.args.get("enter") == "true")
        elif parsed.verb == "select":
            browser.select(ref, parsed.args["text"])
        elif parsed.verb == "press":
            browser.press(parsed.args["value"])
        else:  # the grammar only has the verbs above
            raise ValueError(f"unsupported action {parsed.verb!r}")

    def _invalid(self, message: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._last_reward, self._last_error = 0.0, message
        info = self._info(raw_reward=0.0)
        info.update(valid_action=False, last_action_error=message)
        return self._observation(message), 0.0, False, False, info

    def _crashed(self, exc: BrowserError) -> tuple[str, float, bool, bool, dict[str, Any]]:
        message = f"browser failure, episode truncated (browser restarted): {exc}"
        logger.warning(message)
        try:
            self._ensure_browser().restart()
        except BrowserError as restart_exc:  # the next reset tries again
            message += f"; restart failed: {restart_exc}"
        self._done = True
        self._last_reward, self._last_error = 0.0, ""
        info = self._info(raw_reward=0.0)
        info.update(error=message)
        return self._observation(), 0.0, False, True, info

    # ----------------------------------------------------------------- helpers
    def _observation(self, last_action_error: str = "") -> str:
        obs = self.domain.format_observation(self._goal, self._state, last_action_error)
        return obs[: self.observation_space.max_length]

    def _info(self, *, raw_reward: float) -> dict[str, Any]:
        assert self._task is not None
        return {
            "task_id": self._task.task_id,
            "goal": self._goal,
            "model": "real MiniWoB++",  # what made the dynamics (the synthetic twin names its experience model)
            "trajectory_id": self._trajectory_id,
            "step": self._step,
            "source": "real",
            "reasoning": "",
            "retrieved": [],
            "model_latency_s": 0.0,
            "valid_action": True,
            "last_action_error": "",
            "error": None,
            "admissible_actions": self.domain.admissible_actions(self._state, self._goal),
            "raw_reward": float(raw_reward),
            "miniwob_seed": self._miniwob_seed,
        }

    def _render_details(self) -> list[str]:
        return [f"Last action error: {self._last_error}"] if self._last_error else []

    def close(self) -> None:
        browser, self.browser = self.browser, None
        if browser is not None:
            browser.close()
        super().close()
