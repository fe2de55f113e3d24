"""A headless Chromium driving MiniWoB++ pages through Selenium, with crash recovery.

The ``miniwob`` package ships the task pages (``miniwob/html/miniwob/<task>.html``) and their
JavaScript core; this module loads them itself rather than through ``miniwob``'s own
``SeleniumInstance``, to control Chromium's flags, time-outs and process lifetime:

- ChromeDriver starts in its own session (process group), and :meth:`MiniWoBBrowser.close`
  ends that group, so no Chromium process outlives the browser, even one whose driver was
  killed;
- every WebDriver call has a time-out (``command_timeout_s``), so a hung page raises
  :class:`BrowserError` instead of blocking;
- jQuery animations are switched off and MiniWoB's episode timer is lifted (by default), so a
  page is in its final state as soon as an action returns, and an agent may think as long as
  it likes.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from dreamgym_env.errors import DreamGymError, MissingDependencyError

logger = logging.getLogger(__name__)

#: Chromium flags for a headless, sandbox-free machine (containers, CI).
CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-crash-reporter",
    "--no-first-run",
    "--mute-audio",
    "--window-size=500,500",
)
#: MiniWoB's timer is a JS setTimeout; values above 2**31 - 1 ms fire at once.
NO_TIME_LIMIT_MS = 2_000_000_000

_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class BrowserError(DreamGymError):
    """The browser died, hung or answered nonsense (the env restarts it)."""


def find_chrome() -> tuple[str | None, str | None]:
    """Paths of Chromium and ChromeDriver: ``MINIWOB_CHROME_BINARY`` and ``MINIWOB_CHROMEDRIVER``
    (the variables the ``miniwob`` package reads) or the first ones on ``PATH``."""
    binary = os.environ.get("MINIWOB_CHROME_BINARY") or next(
        (p for p in map(shutil.which, _CHROME_NAMES) if p), None
    )
    driver = os.environ.get("MINIWOB_CHROMEDRIVER") or shutil.which("chromedriver")
    return binary, driver


@lru_cache(maxsize=1)
def miniwob_html_dir() -> Path:
    """The directory of the MiniWoB++ task pages shipped by the ``miniwob`` package."""
    import importlib.util

    spec = importlib.util.find_spec("miniwob")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("miniwob", "miniwob", "the real MiniWoB++ environment")
    return Path(list(spec.submodule_search_locations)[0]) / "html" / "miniwob"


def is_miniwob_available() -> bool:
    """True when ``miniwob``, ``selenium``, Chromium and ChromeDriver are all installed."""
    import importlib.util

    if importlib.util.find_spec("miniwob") is None or importlib.util.find_spec("selenium") is None:
        return False
    binary, driver = find_chrome()
    return bool(binary and driver and os.path.exists(binary) and os.path.exists(driver))


@dataclass
class Snapshot:
    """What one look at the page returns."""

    utterance: str
    dom: dict[str, Any]
    selects: dict[str, dict[str, Any]]
    done: bool
    raw_reward: float
    env_reward: float
    reason: Any


# One round trip: utterance, DOM dump, the options of every <select>, and the episode status.
_SNAPSHOT_JS = """
// After the page ended the episode, MiniWoB's episode counter has moved on, which would give
// every element a new ref: look at the final page with the ended episode's refs.
var done = WOB_DONE_GLOBAL;
if (done) { WOB_EPISODE_ID--; }
var dom;
try { dom = core.getDOMInfo(); } finally { if (done) { WOB_EPISODE_ID++; } }
var selects = {};
Object.keys(core.previousDOMInfo).forEach(function (ref) {
  var e = core.previousDOMInfo[ref];
  if (e instanceof HTMLSelectElement) {
    var opts = Array.prototype.map.call(e.options, function (o) { return o.text.trim(); });
    selects[ref] = {value: e.selectedIndex >= 0 ? e.options[e.selectedIndex].text.trim() : "",
                    options: opts};
  }
});
return {utterance: core.getUtterance(), dom: dom, selects: selects,
        done: WOB_DONE_GLOBAL, raw: WOB_RAW_REWARD_GLOBAL, reward: WOB_REWARD_GLOBAL,
        reason: WOB_REWARD_REASON};
"""

_BEGIN_JS = """
if (window.jQuery) {
  jQuery.fx.off = true;
  // leftovers of the last episode that would shift refs: screen-reader messages, open menus
  jQuery('.ui-helper-hidden-accessible').empty();
  jQuery('.ui-autocomplete').hide().empty();
}
if (core.EP_TIMER !== null) { core.endEpisode(0); }
if (document.activeElement && document.activeElement !== document.body) { document.activeElement.blur(); }
Math.seedrandom(arguments[0]);
core.setDataMode(arguments[1]);
core.EPISODE_MAX_TIME = arguments[2];
core.startEpisodeReal();
if (window.jQuery && jQuery.ui && jQuery.ui.autocomplete) {
  jQuery(':data(ui-autocomplete)').autocomplete('option', 'delay', 0);
}
return WOB_TASK_READY;
"""

_ELEMENT_JS = "return core.previousDOMInfo[arguments[0]] || null;"

_CLEAR_JS = """
var e = core.previousDOMInfo[arguments[0]];
if (!e) return false;
core.elementClick(arguments[0]);
if ('value' in e && typeof e.value === 'string' && e.value !== '') {
  e.value = '';
  e.dispatchEvent(new Event('input', {bubbles: true}));
}
return true;
"""

_SELECT_JS = """
var e = core.previousDOMInfo[arguments[0]];
if (!(e instanceof HTMLSelectElement)) return 'not a select';
var want = arguments[1];
for (var i = 0; i < e.options.length; i++) {
  if (e.options[i].text.trim() === want || e.options[i].value === want) {
    e.focus();
    e.selectedIndex = i;
    e.dispatchEvent(new Event('input', {bubbles: true}));
    e.dispatchEvent(new Event('change', {bubbles: true}));
    return true;
  }
}
return 'no option ' + JSON.stringify(want);
"""


class MiniWoBBrowser:
    """One headless Chromium tab that plays MiniWoB++ tasks.

    Args:
        chrome_binary: Chromium executable (default: :func:`find_chrome`).
        chromedriver: ChromeDriver executable (default: :func:`find_chrome`).
        chrome_args: Chromium command-line flags.
        command_timeout_s: the longest a single WebDriver call may take.
        base_url: where the task pages are (default: the ``miniwob`` package's own files).
        max_tabs: tasks kept open at once, one tab each.
    """

    def __init__(
        self,
        *,
        chrome_binary: str | None = None,
        chromedriver: str | None = None,
        chrome_args: Sequence[str] = CHROME_ARGS,
        command_timeout_s: float = 30.0,
        base_url: str | None = None,
        max_tabs: int = 20,
    ):
        found_binary, found_driver = find_chrome()
        self.chrome_binary = chrome_binary or found_binary
        self.chromedriver = chromedriver or found_driver
        if not self.chrome_binary or not self.chromedriver:
            raise BrowserError(
                "Chromium and ChromeDriver are needed for the real MiniWoB++ env: install them "
                "(Debian/Ubuntu: apt-get install chromium chromium-driver) or set "
                "MINIWOB_CHROME_BINARY and MINIWOB_CHROMEDRIVER."
            )
        self.chrome_args = tuple(chrome_args)
        self.command_timeout_s = command_timeout_s
        self.base_url = base_url or f"file://{miniwob_html_dir()}/"
        self.driver: Any = None
        self.driver_pid: int | None = None
        self.task: str | None = None
        self.restarts = 0
        self.max_tabs = max(1, int(max_tabs))
        self._tabs: OrderedDict[str, str] = OrderedDict()  # task -> window handle

    # -------------------------------------------------------------- lifetime
    def start(self) -> None:
        """Start ChromeDriver and Chromium (a no-op when already running)."""
        if self.driver is not None:
            return
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError as exc:
            raise MissingDependencyError("selenium", "miniwob", "the real MiniWoB++ environment") from exc
        options = webdriver.ChromeOptions()
        for arg in self.chrome_args:
            options.add_argument(arg)
        options.binary_location = self.chrome_binary
        # Its own session: close() ends the whole process group, Chromium included.
        service = Service(self.chromedriver, popen_kw={"start_new_session": True})
        started = time.perf_counter()
        try:
            driver = webdriver.Chrome(service=service, options=options)
        except Exception as exc:
            process = getattr(service, "process", None)
            if process is not None:
                _kill_group(process.pid)
                _reap(process)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BrowserError(f"could not start Chromium ({self.chrome_binary}): {first}") from exc
        self.driver = driver
        self.driver_pid = service.process.pid
        self._tabs.clear()
        config = getattr(driver.command_executor, "_client_config", None)  # selenium >= 4.26
        if config is not None:
            config.timeout = self.command_timeout_s
        elif hasattr(driver.command_executor, "set_timeout"):
            driver.command_executor.set_timeout(self.command_timeout_s)
        driver.set_page_load_timeout(self.command_timeout_s)
        driver.set_script_timeout(self.command_timeout_s)
        self.task = None
        logger.debug("Chromium started in %.2f s (driver pid %s)", time.perf_counter() - started, self.driver_pid)

    def close(self) -> None:
        """Quit Chromium and ChromeDriver; what survives ``quit`` is killed with its group."""
        driver, self.driver = self.driver, None
        self.task = None
        self._tabs.clear()
        if driver is None:
            return
        try:
            driver.quit()
        except Exception as exc:  # a dead driver: nothing to quit politely
            logger.debug("driver.quit() failed: %s", exc)
        pid, self.driver_pid = self.driver_pid, None
        if pid is not None:
            _kill_group(pid)
        process = getattr(getattr(driver, "service", None), "process", None)
        if process is not None:
            _reap(process)

    def restart(self) -> None:
        """Close whatever is left of the browser and start a fresh one."""
        self.restarts += 1
        logger.warning("restarting the MiniWoB browser (restart #%d)", self.restarts)
        self.close()
        self.start()

    @property
    def alive(self) -> bool:
        """True when ChromeDriver runs and the page answers."""
        if self.driver is None:
            return False
        process = getattr(self.driver.service, "process", None)
        if process is not None and process.poll() is not None:
            return False
        try:
            self.driver.execute_script("return 1;")
            return True
        except Exception:
            return False

    def __enter__(self) -> "MiniWoBBrowser":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; env.close() is the normal path
        try:
            self.close()
        except Exception:
            pass

    # -------------------------------------------------------------- episodes
    def _run(self, script: str, *args: Any) -> Any:
        if self.driver is None:
            raise BrowserError("the browser is not running")
        try:
            return self.driver.execute_script(script, *args)
        except Exception as exc:
            raise BrowserError(f"{type(exc).__name__}: {_first_line(exc)}") from exc

    def open_task(self, task: str) -> None:
        """Show the page of MiniWoB task ``task`` (e.g. ``"click-button"``).

        Each task keeps its own tab (up to ``max_tabs``, least recently used reloaded), so going
        back to a task is a tab switch (~20 ms) rather than a page load (~130-300 ms).
        """
        self.start()
        if self.task == task:
            return
        handle = self._tabs.get(task)
        try:
            if handle is not None:
                self.driver.switch_to.window(handle)
                self._tabs.move_to_end(task)
                self.task = task
                return
            if len(self._tabs) >= self.max_tabs:  # reuse the least recently used tab
                old_task, handle = self._tabs.popitem(last=False)
                self.driver.switch_to.window(handle)
            elif self._tabs:
                self.driver.switch_to.new_window("tab")
            url = f"{self.base_url}{task}.html"
            self.task = None
            self.driver.get(url)
        except Exception as exc:
            raise BrowserError(f"could not open task {task}: {type(exc).__name__}: {_first_line(exc)}") from exc
        if not self._run("return typeof core !== 'undefined' && typeof genProblem === 'function';"):
            raise BrowserError(f"{url} is not a MiniWoB task page")
        try:  # only one tab has the system focus: let every tab get focus events (focus-text)
            self.driver.execute_cdp_cmd("Emulation.setFocusEmulationEnabled", {"enabled": True})
        except Exception as exc:
            logger.debug("focus emulation unavailable: %s", exc)
        self._tabs[task] = self.driver.current_window_handle
        self.task = task

    def begin_episode(self, seed: int, *, data_mode: str = "train", time_limit_ms: int | None = None) -> None:
        """Start a new episode of the loaded task; the same ``seed`` gives the same page."""
        ready = self._run(_BEGIN_JS, int(seed), data_mode, int(time_limit_ms or NO_TIME_LIMIT_MS))
        for _ in range(40):  # a few tasks load assets before they are ready
            if ready:
                return
            time.sleep(0.05)
            ready = self._run("return WOB_TASK_READY;")
        raise BrowserError(f"task {self.task} did not get ready in 2 s")

    def snapshot(self) -> Snapshot:
        """Utterance, DOM, select options and episode status, in one round trip."""
        data = self._run(_SNAPSHOT_JS)
        if not isinstance(data, dict) or not isinstance(data.get("dom"), dict):
            raise BrowserError(f"unexpected page snapshot: {str(data)[:200]}")
        return Snapshot(
            utterance=str(data.get("utterance") or ""),
            dom=data["dom"],
            selects={str(k): v for k, v in (data.get("selects") or {}).items()},
            done=bool(data.get("done")),
            raw_reward=float(data.get("raw") or 0.0),
            env_reward=float(data.get("reward") or 0.0),
            reason=data.get("reason"),
        )

    def settle(self, ms: int) -> None:
        """Let the page run its timers for ``ms`` milliseconds (e.g. an autocomplete search)."""
        if self.driver is None:
            raise BrowserError("the browser is not running")
        try:
            self.driver.execute_async_script("setTimeout(arguments[arguments.length - 1], arguments[0]);", int(ms))
        except Exception as exc:
            raise BrowserError(f"{type(exc).__name__}: {_first_line(exc)}") from exc

    # --------------------------------------------------------------- actions
    def has_element(self, ref: int) -> bool:
        return self._run(_ELEMENT_JS, int(ref)) is not None

    def click(self, ref: int) -> None:
        result = self._run("return core.elementClick(arguments[0]);", int(ref))
        if result is not True:
            raise ValueError(f"cannot click [{ref}]: {result}")

    def type_text(self, ref: int, text: str, *, enter: bool = False) -> None:
        """Focus ``ref``, clear its value, and type ``text`` as key presses (and Enter)."""
        if not self._run(_CLEAR_JS, int(ref)):
            raise ValueError(f"no element [{ref}]")
        keys = text + ("\n" if enter else "")
        if keys:
            self._keys(keys)

    def select(self, ref: int, option: str) -> None:
        result = self._run(_SELECT_JS, int(ref), option)
        if result is not True:
            raise ValueError(f"cannot select in [{ref}]: {result}")

    def press(self, keys: str) -> None:
        """Press a key or combination: ``Enter``, ``Tab``, ``ArrowDown``, ``Control+a``..."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        names = [k for k in keys.replace(" ", "").split("+") if k]
        if not names:
            raise ValueError("press needs a key, e.g. press [Enter]")
        resolved = []
        for name in names:
            special = _KEY_ALIASES.get(name.lower())
            if special is not None:
                resolved.append(getattr(Keys, special))
            elif len(name) == 1:
                resolved.append(name)
            else:
                raise ValueError(f"unknown key {name!r}; use one character or one of {sorted(set(_KEY_ALIASES))}")
        try:
            chain = ActionChains(self.driver, duration=0)
            for key in resolved[:-1]:
                chain.key_down(key)
            chain.send_keys(resolved[-1])
            for key in reversed(resolved[:-1]):
                chain.key_up(key)
            chain.perform()
        except Exception as exc:
            raise BrowserError(f"{type(exc).__name__}: {_first_line(exc)}") from exc

    def _keys(self, text: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        try:
            chain = ActionChains(self.driver, duration=0)
            for char in text:
                chain.w3c_actions.key_action.key_down(char)
                chain.w3c_actions.key_action.key_up(char)
            chain.perform()
        except Exception as exc:
            raise BrowserError(f"{type(exc).__name__}: {_first_line(exc)}") from exc


_KEY_ALIASES = {
    "enter": "ENTER", "return": "ENTER", "tab": "TAB", "escape": "ESCAPE", "esc": "ESCAPE",
    "backspace": "BACKSPACE", "delete": "DELETE", "space": "SPACE", "arrowup": "ARROW_UP",
    "arrowdown": "ARROW_DOWN", "arrowleft": "ARROW_LEFT", "arrowright": "ARROW_RIGHT",
    "up": "ARROW_UP", "down": "ARROW_DOWN", "left": "ARROW_LEFT", "right": "ARROW_RIGHT",
    "home": "HOME", "end": "END", "pageup": "PAGE_UP", "pagedown": "PAGE_DOWN",
    "control": "CONTROL", "ctrl": "CONTROL", "shift": "SHIFT", "alt": "ALT", "meta": "META",
}


def _first_line(exc: BaseException) -> str:
    """The gist of a WebDriver error (their messages carry whole stack traces)."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else "")[:300]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(process: Any) -> None:
    try:
        process.wait(timeout=5)
    except Exception:
        pass


def live_processes_in_group(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes of process group ``pgid`` (Linux ``/proc``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            pids.append(int(entry))
    return pids
