"""WebArenaRealEnv: the real WebArena sites through BrowserGym, with DreamGym's text interface."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import urllib.error
import urllib.request
from typing import Any, Mapping, Sequence

import gymnasium as gym

from dreamgym_env.domains.actions import InvalidActionError
from dreamgym_env.domains.base import Task
from dreamgym_env.domains.webarena.axtree import (
    SCROLL_PIXELS,
    state_from_observation,
    to_browsergym_action,
)
from dreamgym_env.domains.webarena.domain import WebArenaDomain
from dreamgym_env.errors import DreamGymError, MissingDependencyError, UnknownTaskError
from dreamgym_env.spaces import UnicodeText
from dreamgym_env.text_env import TextWebEnv

logger = logging.getLogger(__name__)

#: The variables ``browsergym.webarena.instance.WebArenaInstance`` reads, each prefixed ``WA_``.
WEBARENA_ENV_VARS = ("SHOPPING", "SHOPPING_ADMIN", "REDDIT", "GITLAB", "WIKIPEDIA", "MAP", "HOMEPAGE")
#: Our site names -> the variable holding that site's base URL.
SITE_VARIABLES = {
    "shopping": "WA_SHOPPING", "shopping_admin": "WA_SHOPPING_ADMIN", "reddit": "WA_REDDIT",
    "gitlab": "WA_GITLAB", "wikipedia": "WA_WIKIPEDIA", "map": "WA_MAP",
}
#: Chromium flags added to every launch (Debian's Chromium in a container: no sandbox, no GPU).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage")
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class WebArenaConfigError(DreamGymError):
    """The WebArena sites are not configured or not reachable."""


def is_browsergym_available() -> bool:
    """True when browsergym-core (and with it Playwright) is installed."""
    return importlib.util.find_spec("browsergym") is not None and (
        importlib.util.find_spec("browsergym.core") is not None
        and importlib.util.find_spec("playwright") is not None
    )


def find_chromium() -> str | None:
    """The Chromium to launch: ``DREAMGYM_CHROMIUM``, else None when Playwright's own build is
    installed (``playwright install chromium``), else the first Chromium on ``PATH``."""
    explicit = os.environ.get("DREAMGYM_CHROMIUM")
    if explicit:
        return explicit
    if _playwright_chromium_installed():
        return None
    return next((p for p in map(shutil.which, _CHROMIUM_NAMES) if p), None)


def _playwright_chromium_installed() -> bool:
    """True when ``playwright install chromium`` has put a Chromium build in Playwright's cache."""
    root = os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or os.path.expanduser("~/.cache/ms-playwright")
    try:
        return any(name.startswith("chromium-") for name in os.listdir(root))
    except OSError:
        return False


class _ChromiumLauncher:
    """Stands in for ``playwright.chromium``: every ``launch`` gets our executable and flags.

    BrowserGym launches two browsers per episode (the page's and the chat's) from one global
    Playwright instance, and only the first takes ``pw_chromium_kwargs``; wrapping the global
    instance is the one place that reaches both.
    """

    def __init__(self, real: Any, executable_path: str | None, args: Sequence[str]):
        self._real = real
        self.executable_path = executable_path
        self.args = tuple(args)

    def launch(self, **kwargs: Any) -> Any:
        if self.executable_path and not kwargs.get("executable_path"):
            kwargs["executable_path"] = self.executable_path
        kwargs["args"] = list(kwargs.get("args") or []) + [a for a in self.args if a not in (kwargs.get("args") or [])]
        return self._real.launch(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _PlaywrightWithLauncher:
    """A Playwright instance whose ``chromium`` is a :class:`_ChromiumLauncher`.

    ``owned``: we started it (so we may stop it once our last env is closed).
    """

    def __init__(self, real: Any, executable_path: str | None, args: Sequence[str], owned: bool):
        self._real = real
        self.chromium = _ChromiumLauncher(real.chromium, executable_path, args)
        self.owned = owned
        self.users = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def configure_browsergym_chromium(executable_path: str | None = None, args: Sequence[str] = CHROMIUM_ARGS) -> None:
    """Make every browser BrowserGym launches in this process use ``executable_path`` (default:
    :func:`find_chromium`) and the extra flags ``args``.

    Installs a wrapper around BrowserGym's global Playwright instance
    (``browsergym.core._set_global_playwright``); calling it again updates the settings.
    """
    _configured_playwright(executable_path, args)


def _configured_playwright(executable_path: str | None, args: Sequence[str]) -> _PlaywrightWithLauncher:
    import browsergym.core

    executable_path = executable_path or find_chromium()
    owned = browsergym.core._PLAYWRIGHT is None
    current = browsergym.core._get_global_playwright()
    if isinstance(current, _PlaywrightWithLauncher):
        current.chromium.executable_path = executable_path
        current.chromium.args = tuple(args)
        return current
    wrapped = _PlaywrightWithLauncher(current, executable_path, args, owned=owned)
    browsergym.core._set_global_playwright(wrapped)
    logger.debug("BrowserGym launches Chromium from %s with %s", executable_path or "Playwright's cache", list(args))
    return wrapped


def release_browsergym_playwright() -> None:
    """Stop BrowserGym's global Playwright instance when this package started it.

    Playwright's sync API keeps an asyncio loop marked as running in its thread while it is
    started, so ``asyncio.run()`` fails there until it is stopped. :meth:`WebArenaRealEnv.close`
    calls this once no env of this module uses it; call it yourself after running BrowserGym
    code (e.g. its experiment loop) through :func:`configure_browsergym_chromium`.
    """
    import browsergym.core

    current = browsergym.core._PLAYWRIGHT
    if not isinstance(current, _PlaywrightWithLauncher) or not current.owned:
        return
    browsergym.core._set_global_playwright(None)
    try:
        current._real.stop()
    except Exception as exc:  # noqa: BLE001 - the driver may already be gone
        logger.debug("stopping Playwright: %s", exc)


def webarena_urls(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The WebArena base URLs BrowserGym will use (``WA_*`` variables).

    Raises:
        WebArenaConfigError: naming every missing variable and how to set them.
    """
    environ = os.environ if environ is None else environ
    names = [f"WA_{key}" for key in WEBARENA_ENV_VARS]
    missing = [name for name in names if not environ.get(name)]
    if missing:
        example = "\n".join(f"  export {name}=http://<host>:<port>" for name in missing)
        raise WebArenaConfigError(
            f"The real WebArena env needs the URLs of the WebArena sites; missing: {', '.join(missing)}.\n"
            f"Start the WebArena servers (see https://github.com/web-arena-x/webarena/tree/main/environment_docker) "
            f"and set, e.g.:\n{example}\n(BrowserGym reads these WA_* variables; the map and wikipedia "
            f"sites may point at any URL when no task of yours uses them.)"
        )
    return {name: environ[name] for name in names}


def check_sites_reachable(urls: Mapping[str, str], timeout_s: float = 10.0) -> None:
    """Raise :class:`WebArenaConfigError` naming the first site URL that does not answer."""
    for name, url in urls.items():
        try:
            with urllib.request.urlopen(url, timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            continue  # it answered (a login redirect or 4xx still means the server is up)
        except (urllib.error.URLError, OSError) as exc:
            raise WebArenaConfigError(
                f"WebArena site {name}={url} is not reachable ({exc}). Start its server or fix {name}."
            ) from exc


class WebArenaRealEnv(TextWebEnv):
    """Real WebArena tasks, seen and played through DreamGym's text interface (via BrowserGym).

    ## Description
    The real twin of ``DreamGym-WebArena-v0``: each episode is one of the 812 WebArena tasks
    (``webarena-verified`` ids), played in a headless Chromium on the WebArena sites through
    BrowserGym (``browsergym-webarena``): it logs in, opens the start URL, and grades the
    episode with WebArena's evaluator. The page is shown as accessibility-tree lines; the
    agent answers with one text action. ``DreamGym-WebArenaLite-Real-v0`` (``subset="lite"``) is
    the twin of ``DreamGym-WebArenaLite-v0``: WebArena-Lite's 165 tasks, graded by
    ``browsergym-webarenalite``.

    ## Action Space
    ``UnicodeText(max_action_length)``, one action of ``WebArenaDomain.grammar``: ``click [bid]``,
    ``type [bid] "text"`` (`` enter`` suffix presses Enter), ``hover [bid]``, ``press [keys]``,
    ``scroll [up|down]``, ``goto [url]``, ``go_back``, ``go_forward``, ``new_tab``,
    ``tab_focus [i]``, ``close_tab``, ``stop [answer]``. Each maps to BrowserGym's high-level
    actions (``click``, ``fill``, ``hover``, ``keyboard_press``, ``scroll``, ``goto``...;
    ``stop`` sends the answer to the chat, where WebArena's evaluator reads it). A string the
    grammar rejects, or an action the page refuses (no such element, timeout), is no
    exception: reward 0, ``info["valid_action"]`` False and ``info["last_action_error"]`` (also
    a ``Last action error:`` line of the observation) says why.

    ## Observation Space
    ``UnicodeText(max_observation_length)``: ``Domain.format_observation(goal, state, error)``
    where ``state`` is the page's accessibility tree, one element per line
    (``[bid] role 'name' value='…' focused``, tab-indented; see
    :mod:`dreamgym_env.domains.webarena.axtree`), with ``url='…'`` on the root line.

    ## Rewards
    WebArena's evaluator (``browsergym.webarena``, the original WebArena checks: string match on
    the ``stop`` answer, URL match, page content), checked after every step: 1.0 on success,
    else 0.0.

    ## Starting State
    The task's start page, logged in (``reset(options={"task_id": 27})``, the env's fixed
    ``task_id``, or one drawn with the env's generator). ``options={"task": {"goal": …,
    "start_url": …}}`` plays any page with BrowserGym's open-ended task instead (reward 0).

    ## Episode End
    Terminated on ``stop`` or when the evaluator reports success. Truncated by the step limit of
    the registration, or when the browser fails (``info["error"]``; raised with ``strict=True``).

    ## Arguments
    | name | default | meaning |
    |---|---|---|
    | task_id | None | fix the task of every episode |
    | sites | all | draw only tasks whose sites are among these |
    | subset | "full" | "full": webarena-verified's 812 tasks graded by ``browsergym-webarena``; "lite": WebArena-Lite's 165 (``DreamGym-WebArenaLite-Real-v0``) graded by ``browsergym-webarenalite`` |
    | goal_source | "verified" | the goal shown: the domain's intent, as in the synthetic env (webarena-verified's; Lite's own for ``subset="lite"``, which its grader grades) or "browsergym" (the intent BrowserGym's task gives) |
    | executable_path | found | Chromium to launch (``DREAMGYM_CHROMIUM``, Playwright's own, or ``chromium`` on PATH) |
    | chromium_args | no sandbox/GPU | extra Chromium flags |
    | headless, slow_mo, timeout, viewport | BrowserGym/task defaults | browser settings (WebArena tasks use slow_mo=1000 ms) |
    | pre_observation_delay | 0.5 | seconds to wait before reading the page after an action |
    | check_sites | True | check that the task's sites answer before starting an episode |
    | strict | False | raise browser failures instead of truncating |
    | backend, buffer | None | ignored: one ``gym.make`` call serves the synthetic and the real twin |

    ``gym.make("DreamGym-WebArena-Real-v0", task_id=27)`` with ``WA_SHOPPING`` …
    ``WA_HOMEPAGE`` set (see :func:`webarena_urls`).

    ## Experience Model
    None: this env is the ground truth the experience model learns from (``info["source"]`` is
    ``"real"``, ``reasoning`` empty, ``model_latency_s`` 0).

    Playwright's sync API runs the browser from the calling thread and, while started, marks an
    asyncio loop as running there: ``asyncio.run()`` in that thread fails until ``close()``
    (DreamGym's OpenAI backend runs its own loop thread and is not affected). Use one thread
    per real env; ``close()`` stops Playwright once the last env of the process is closed.

    ## Real Twin
    This is the real twin of ``DreamGym-WebArena-v0``: same task ids, observation format,
    action grammar and info keys.

    ## Version History
    * v0: first release (browsergym-webarena 0.14, accessibility-tree lines).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        task_id: str | int | None = None,
        *,
        sites: Sequence[str] | None = None,
        subset: str = "full",
        goal_source: str = "verified",
        executable_path: str | None = None,
        chromium_args: Sequence[str] = CHROMIUM_ARGS,
        headless: bool = True,
        slow_mo: int | None = None,
        timeout: int | None = None,
        viewport: Mapping[str, int] | None = None,
        pre_observation_delay: float = 0.5,
        scroll_pixels: int = SCROLL_PIXELS,
        visible_only: bool = False,
        check_sites: bool = True,
        strict: bool = False,
        backend: Any = None,
        buffer: Any = None,
        render_mode: str | None = None,
        max_observation_length: int = 100_000,
        max_action_length: int = 1_000,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not one of {self.metadata['render_modes']}")
        if goal_source not in ("verified", "browsergym"):
            raise ValueError(f"goal_source must be 'verified' or 'browsergym', got {goal_source!r}")
        if not is_browsergym_available():
            raise MissingDependencyError("browsergym-webarena", "webarena", "the real WebArena env")
        self.subset = subset
        if backend is not None or buffer not in (None, False):
            logger.debug("WebArenaRealEnv ignores backend and buffer (the sites are the dynamics)")
        self.domain = WebArenaDomain(sites, subset)
        if task_id is not None:
            self.domain.get_task(task_id)  # fail early, with suggestions
        self.fixed_task_id = None if task_id is None else str(task_id)
        self.goal_source = goal_source
        self.executable_path = executable_path
        self.chromium_args = tuple(chromium_args)
        self.browser_kwargs: dict[str, Any] = {
            "headless": headless, "slow_mo": slow_mo, "timeout": timeout,
            "viewport": dict(viewport) if viewport else None,
            "pre_observation_delay": pre_observation_delay,
        }
        self.scroll_pixels = scroll_pixels
        self.visible_only = visible_only
        self.check_sites = check_sites
        self.strict = strict
        self.render_mode = render_mode
        self.action_space = UnicodeText(max_action_length, examples=self.domain.grammar.examples())
        self.observation_space = UnicodeText(max_observation_length)
        self.browser_env: Any = None  # the BrowserGym BrowserEnv of the current episode
        self._playwright: _PlaywrightWithLauncher | None = None
        self._reachable: set[str] = set()
        self._task: Task | None = None
        self._goal = ""
        self._state = ""
        self._url = ""
        self._trajectory_id = ""
        self._step = 0
        self._done = False
        self._last_reward = 0.0
        self._last_error = ""

    # ------------------------------------------------------------------- reset
    def reset(
        self, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        task = self._choose_task(options)
        entrypoint, task_kwargs = self._browsergym_task(task)
        bg_seed = int(self.np_random.integers(2**31 - 1))
        self._trajectory_id = str(options.get("trajectory_id") or f"real-{task.task_id}-{self.np_random.bytes(6).hex()}")
        self._close_browser()
        if self._playwright is None:
            self._playwright = _configured_playwright(self.executable_path, self.chromium_args)
            self._playwright.users += 1
        else:
            configure_browsergym_chromium(self.executable_path, self.chromium_args)
        from browsergym.core.env import BrowserEnv

        self.browser_env = BrowserEnv(
            task_entrypoint=entrypoint, task_kwargs=task_kwargs, action_mapping=_action_mapping(),
            **self.browser_kwargs,
        )
        try:
            obs, _ = self.browser_env.reset(seed=bg_seed)
        except Exception as exc:
            self._close_browser()
            raise DreamGymError(f"could not start WebArena task {task.task_id} in BrowserGym: {type(exc).__name__}: {exc}") from exc
        self._task = task
        self._goal = task.goal if self.goal_source == "verified" or not obs.get("goal") else obs["goal"]
        self._step, self._done, self._last_reward, self._last_error = 0, False, 0.0, ""
        self._observe(obs)
        return self._observation(), self._info()

    def _choose_task(self, options: dict[str, Any]) -> Task:
        if "task" in options:
            task = options["task"]
            return task if isinstance(task, Task) else Task.from_dict(task)
        if options.get("task_id") is not None:
            return self.domain.get_task(options["task_id"])
        if self.fixed_task_id is not None:
            return self.domain.get_task(self.fixed_task_id)
        return self.domain.tasks[int(self.np_random.integers(len(self.domain.tasks)))]

    def _browsergym_task(self, task: Task) -> tuple[type, dict[str, Any]]:
        """BrowserGym's task class and arguments for ``task``: an open-ended task on its
        ``start_url``, or the WebArena task of the same id (after checking the WA_* setup)."""
        start_url = task.metadata.get("start_url")
        if start_url:
            from browsergym.core.task import OpenEndedTask

            return OpenEndedTask, {"start_url": str(start_url), "goal": task.goal}
        try:
            webarena_task = self.domain.get_task(task.task_id)
        except UnknownTaskError:
            raise DreamGymError(
                f"task {task.task_id!r} is neither a WebArena task id nor an inline task with a "
                "'start_url' (e.g. options={'task': {'goal': ..., 'start_url': 'http://...'}})"
            ) from None
        urls = webarena_urls()
        if self.check_sites:
            needed = {SITE_VARIABLES[s]: urls[SITE_VARIABLES[s]] for s in webarena_task.metadata.get("sites", []) if s in SITE_VARIABLES}
            todo = {k: v for k, v in needed.items() if v not in self._reachable}
            check_sites_reachable(todo)
            self._reachable.update(todo.values())
        task_class = _webarena_lite_task_class() if self.subset == "lite" else _webarena_task_class()
        return task_class, {"task_id": int(task.task_id)}

    # -------------------------------------------------------------------- step
    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._task is None or self.browser_env is None:
            raise gym.error.ResetNeeded("Call reset() before step().")
        self._step += 1
        if self._done:
            info = self._info()
            info.update(valid_action=False, error="the episode is over; call reset()")
            return self._observation(), 0.0, True, False, info
        try:
            parsed = self.domain.grammar.parse(action)
            code = to_browsergym_action(parsed, scroll_pixels=self.scroll_pixels)
        except (InvalidActionError, ValueError) as exc:
            return self._invalid(str(exc))
        try:
            obs, reward, terminated, truncated, bg_info = self.browser_env.step(code)
        except Exception as exc:  # the browser or the evaluator failed, not the agent
            message = f"BrowserGym step failed, episode truncated: {type(exc).__name__}: {exc}"
            if self.strict:
                raise DreamGymError(message) from exc
            logger.warning(message)
            self._done, self._last_reward = True, 0.0
            info = self._info()
            info.update(error=message, browsergym_action=code)
            return self._observation(), 0.0, False, True, info
        self._observe(obs)
        error = str(obs.get("last_action_error") or "")
        reward = 1.0 if float(reward) >= 1.0 else 0.0
        terminated = bool(terminated or parsed.verb in self.domain.terminal_verbs or reward > 0)
        self._done = terminated
        self._last_reward, self._last_error = reward, error
        info = self._info()
        task_info = bg_info.get("task_info") or {}
        info.update(valid_action=not error, last_action_error=error, browsergym_action=code,
                    task_info=task_info)
        return self._observation(error), reward, terminated, bool(truncated), info

    def _invalid(self, message: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._last_reward, self._last_error = 0.0, message
        info = self._info()
        info.update(valid_action=False, last_action_error=message)
        return self._observation(message), 0.0, False, False, info

    # ----------------------------------------------------------------- helpers
    def _observe(self, obs: Mapping[str, Any]) -> None:
        self._state = state_from_observation(obs, visible_only=self.visible_only)
        self._url = str(obs.get("url") or "")

    def _observation(self, last_action_error: str = "") -> str:
        obs = self.domain.format_observation(self._goal, self._state, last_action_error)
        return obs[: self.observation_space.max_length]

    def _info(self) -> dict[str, Any]:
        assert self._task is not None
        info: dict[str, Any] = {
            "task_id": self._task.task_id,
            "goal": self._goal,
            "model": "real WebArena-Lite" if self.subset == "lite" else "real WebArena",  # what made the dynamics (the synthetic twin names its experience model)
            "trajectory_id": self._trajectory_id,
            "step": self._step,
            "source": "real",
            "reasoning": "",
            "retrieved": [],
            "model_latency_s": 0.0,
            "valid_action": True,
            "last_action_error": "",
            "error": None,
            "url": self._url,
        }
        admissible = self.domain.admissible_actions(self._state)
        if admissible is not None:
            info["admissible_actions"] = admissible
        return info

    def _render_tags(self) -> list[str]:
        return [self._url]

    def _render_details(self) -> list[str]:
        return [f"Last action error: {self._last_error}"] if self._last_error else []

    def _close_browser(self) -> None:
        browser_env, self.browser_env = self.browser_env, None
        if browser_env is not None:
            try:
                browser_env.close()
            except Exception as exc:
                logger.debug("closing BrowserGym env: %s", exc)

    def close(self) -> None:
        self._close_browser()
        playwright, self._playwright = self._playwright, None
        if playwright is not None:
            playwright.users -= 1
            if playwright.users <= 0:
                release_browsergym_playwright()
        super().close()


def _action_mapping() -> Any:
    """BrowserGym's converter of high-level actions to Python code, with the actions that
    our grammar maps to (``keyboard_press`` for ``press [keys]``)."""
    from browsergym.core.action.functions import keyboard_press
    from browsergym.core.action.highlevel import HighLevelActionSet

    action_set = HighLevelActionSet(
        subsets=["chat", "infeas", "bid", "nav", "tab", "custom"], custom_actions=[keyboard_press],
        multiaction=True, strict=True,
    )
    return action_set.to_python_code


def _webarena_lite_task_class() -> type:
    """``browsergym.webarenalite.task.WebArenaLiteTask`` (task ids: WebArena's), with clear errors."""
    if importlib.util.find_spec("browsergym.webarenalite") is None:
        raise MissingDependencyError("browsergym-webarenalite", "webarena", "the real WebArena-Lite env")
    _webarena_task_class()  # Lite's task subclasses WebArena's: same checks, same NLTK note
    from browsergym.webarenalite.task import WebArenaLiteTask

    return WebArenaLiteTask


def _webarena_task_class() -> type:
    """``browsergym.webarena.task.GenericWebArenaTask``, with clear errors when it cannot load."""
    if importlib.util.find_spec("browsergym.webarena") is None:
        raise MissingDependencyError("browsergym-webarena", "webarena", "the real WebArena env")
    try:
        from browsergym.webarena.task import GenericWebArenaTask
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(exc.name or "browsergym-webarena", "webarena", "the real WebArena env") from exc
    except Exception as exc:  # its __init__ downloads NLTK's punkt_tab on first import
        raise DreamGymError(
            f"importing browsergym.webarena failed ({type(exc).__name__}: {exc}). It needs NLTK's "
            "punkt_tab data; without internet access install it with: python -m nltk.downloader punkt_tab "
            "(or copy an nltk_data folder and set NLTK_DATA)."
        ) from exc
    return GenericWebArenaTask


__all__ = [
    "WebArenaRealEnv", "WebArenaConfigError", "webarena_urls", "check_sites_reachable",
    "configure_browsergym_chromium", "release_browsergym_playwright", "find_chromium",
    "is_browsergym_available", "WEBARENA_ENV_VARS",
]
