"""Import real trajectories that users already have into :class:`~dreamgym_env.schema.Trajectory`
records (``source="real"``), ready for ``ExperienceBuffer.add_trajectories`` and SFT data.

Two formats:

* **BrowserGym / AgentLab experiment logs** (:func:`import_browsergym_experiment`,
  :func:`import_browsergym`): the directories that ``browsergym.experiments.ExpArgs.run`` and
  AgentLab write, one per episode, holding ``step_0.pkl.gz``, ``step_1.pkl.gz``… (gzipped
  pickles of ``StepInfo``: ``obs``, ``action``, ``reward``, ``terminated``…), ``exp_args.pkl``
  (the task name, e.g. ``webarena.70``), ``summary_info.json`` and ``goal_object.pkl.gz``. A
  study directory (many experiments) is searched recursively. States are the observation's
  accessibility tree in the WebArena line format (:mod:`dreamgym_env.domains.webarena.axtree`),
  the same text ``DreamGym-WebArena-Real-v0`` shows (logs whose agent dropped
  ``axtree_object``, like BrowserGym's default preprocessor, keep BrowserGym's ``axtree_txt``
  and say so in ``extra["state_format"]``); actions are converted from BrowserGym's
  ``click('12')`` to our ``click [12]`` where the grammar has an equivalent.
* **Episode JSONL** (:func:`import_jsonl_episodes`), one episode per line::

    {"task_id": "70", "goal": "What is the zip code of CMU?", "domain": "webarena",
     "steps": [{"state": "[1] RootWebArea 'Map'", "action": "click [4]", "reward": 0, "done": false},
               {"state": "...", "action": "stop [15213]", "reward": 1, "done": true}]}

  Each step's ``next_state`` is the following step's ``state``. The last step takes its
  ``next_state`` from itself (``"next_state"``), else from the episode's ``"final_state"``,
  else, when it ended the episode (``done``), its own state (a final ``stop`` leaves the page
  as it is); a last step with none of these is dropped (logged). Optional step keys:
  ``next_state``, ``reasoning``, ``valid_action`` (default true), ``extra`` (an object).
  Optional episode keys: ``trajectory_id``, ``final_state``, ``source`` ("real" by default).

BrowserGym logs are pickles. They are read with a restricted unpickler: only plain data,
numpy arrays and classes of browsergym/agentlab are built; anything else (and any class that
is not installed, e.g. AgentLab's when only BrowserGym is) becomes an inert stand-in object,
so a log never runs code on import and AgentLab need not be installed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib
import json
import logging
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from dreamgym_env.errors import DreamGymError
from dreamgym_env.schema import Trajectory, Transition

logger = logging.getLogger(__name__)

FORMATS = ("browsergym", "jsonl")


class ImportFormatError(DreamGymError, ValueError):
    """A file to import is malformed; the message names the file and the line or step."""


# --------------------------------------------------------------------------- JSONL episodes
def import_jsonl_episodes(
    path: str | os.PathLike[str], domain: str | None = None, *, source: str = "real"
) -> list[Trajectory]:
    """Read a JSONL file of episodes (format in the module docstring).

    Args:
        path: the file (gzip-compressed when its name ends in ``.gz``).
        domain: the domain of episodes whose line has no ``"domain"`` key.
        source: provenance of episodes whose line has no ``"source"`` key.

    Returns:
        One trajectory per non-blank line, in file order.

    Raises:
        ImportFormatError: naming the file, line and step of the first malformed episode.
    """
    trajectories = []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImportFormatError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from exc
            trajectories.append(_episode(data, where, domain, source))
    return trajectories


def _episode(data: Any, where: str, domain: str | None, source: str) -> Trajectory:
    if not isinstance(data, dict):
        raise ImportFormatError(f"{where}: an episode must be a JSON object, got {type(data).__name__}")
    for key in ("task_id", "goal", "steps"):
        if key not in data:
            raise ImportFormatError(f"{where}: missing {key!r} (an episode needs task_id, goal, steps)")
    dom = data.get("domain", domain)
    if not isinstance(dom, str) or not dom:
        raise ImportFormatError(f"{where}: missing 'domain' (add it to the line or pass domain=/--domain)")
    goal, steps = data["goal"], data["steps"]
    if not isinstance(goal, str):
        raise ImportFormatError(f"{where}: 'goal' must be a string")
    if not isinstance(steps, list) or not steps:
        raise ImportFormatError(f"{where}: 'steps' must be a non-empty list")
    src = data.get("source", source)
    if src not in ("real", "synthetic"):
        raise ImportFormatError(f"{where}: 'source' must be 'real' or 'synthetic', got {src!r}")
    task_id = str(data["task_id"])
    trajectory_id = str(data.get("trajectory_id") or f"jsonl-{task_id}-{_digest(json.dumps(data, sort_keys=True))}")
    final_state = data.get("final_state")
    if final_state is not None and not isinstance(final_state, str):
        raise ImportFormatError(f"{where}: 'final_state' must be a string")
    parsed = [_step(step, f"{where}: step {i}") for i, step in enumerate(steps)]
    transitions = []
    for i, step in enumerate(parsed):
        if step["next_state"] is not None:
            next_state = step["next_state"]
        elif i + 1 < len(parsed):
            next_state = parsed[i + 1]["state"]
        elif final_state is not None:
            next_state = final_state
        elif step["done"]:
            next_state = step["state"]
        else:
            logger.info("%s: last step %d has no next state and is not done; dropped", where, i)
            continue
        transitions.append(Transition(
            domain=dom, task_id=task_id, trajectory_id=trajectory_id, step=i, state=step["state"],
            action=step["action"], next_state=next_state, reward=step["reward"], done=step["done"],
            goal=goal, reasoning=step["reasoning"], valid_action=step["valid_action"], source=src,
            extra=step["extra"],
        ))
    return Trajectory(trajectory_id, dom, task_id, goal, transitions, source=src)


def _step(step: Any, where: str) -> dict[str, Any]:
    if not isinstance(step, dict):
        raise ImportFormatError(f"{where}: a step must be a JSON object, got {type(step).__name__}")
    missing = [k for k in ("state", "action") if k not in step]
    if missing:
        raise ImportFormatError(f"{where}: missing {', '.join(map(repr, missing))}")
    for key in ("state", "action"):
        if not isinstance(step[key], str):
            raise ImportFormatError(f"{where}: {key!r} must be a string, got {type(step[key]).__name__}")
    reward = step.get("reward", 0.0)
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        raise ImportFormatError(f"{where}: 'reward' must be a number, got {reward!r}")
    done = step.get("done", False)
    if not isinstance(done, bool):
        raise ImportFormatError(f"{where}: 'done' must be true or false, got {done!r}")
    next_state = step.get("next_state")
    if next_state is not None and not isinstance(next_state, str):
        raise ImportFormatError(f"{where}: 'next_state' must be a string")
    valid = step.get("valid_action", True)
    if not isinstance(valid, bool):
        raise ImportFormatError(f"{where}: 'valid_action' must be true or false")
    extra = step.get("extra", {})
    if not isinstance(extra, dict):
        raise ImportFormatError(f"{where}: 'extra' must be an object")
    reasoning = step.get("reasoning", "")
    if not isinstance(reasoning, str):
        raise ImportFormatError(f"{where}: 'reasoning' must be a string")
    return {"state": step["state"], "action": step["action"], "reward": float(reward), "done": done,
            "next_state": next_state, "valid_action": valid, "extra": extra, "reasoning": reasoning}


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


# ------------------------------------------------------------------ BrowserGym / AgentLab logs
class _StandIn(dict):
    """An inert object standing for a class the unpickler would not (or could not) build.

    Pickle fills it like the original: attributes (``__dict__``), dict items or list items.
    """

    _pickle_name = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            for part in state:
                if isinstance(part, dict):
                    self.__dict__.update(part)
        elif isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def append(self, item: Any) -> None:
        self.__dict__.setdefault("_items", []).append(item)

    def extend(self, items: Iterable[Any]) -> None:
        self.__dict__.setdefault("_items", []).extend(items)

    def __repr__(self) -> str:
        return f"<stand-in for {self._pickle_name}>"


_STAND_INS: dict[tuple[str, str], type] = {}
_SAFE_BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "complex", "bytearray", "bytes", "slice",
                  "range", "object", "int", "float", "str", "bool"}
_SAFE_GLOBALS = {
    ("copyreg", "_reconstructor"), ("copyreg", "__newobj__"), ("copyreg", "__newobj_ex__"),
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("collections", "deque"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "timedelta"), ("datetime", "timezone"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"), ("pathlib", "Path"),
    ("_codecs", "encode"),
}
_NUMPY_NAMES = {"_reconstruct", "scalar", "dtype", "ndarray", "_frombuffer"}
_TRUSTED_PACKAGES = ("browsergym", "agentlab")


class _LogUnpickler(pickle.Unpickler):
    """Builds plain data, numpy arrays and browsergym/agentlab classes; stand-ins otherwise."""

    def find_class(self, module: str, name: str) -> Any:
        root = module.split(".", 1)[0]
        allowed = (
            (module == "builtins" and name in _SAFE_BUILTINS)
            or (module, name) in _SAFE_GLOBALS
            or (root == "numpy" and name in _NUMPY_NAMES)
        )
        if allowed:
            return super().find_class(module, name)
        if root in _TRUSTED_PACKAGES:
            try:
                obj = getattr(importlib.import_module(module), name)
            except Exception:  # noqa: BLE001 - not installed, renamed, or failing on import
                obj = None
            # Their own classes only (not what their modules import, e.g. subprocess.Popen):
            # building those runs no code of the log.
            if isinstance(obj, type) and str(obj.__module__).split(".", 1)[0] in _TRUSTED_PACKAGES:
                return obj
        return _stand_in(module, name)


def _stand_in(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STAND_INS:
        _STAND_INS[key] = type(name, (_StandIn,), {"_pickle_name": f"{module}.{name}", "__module__": module})
    return _STAND_INS[key]


def load_pickle(path: str | os.PathLike[str]) -> Any:
    """Load a (gzipped when ``.gz``) BrowserGym/AgentLab pickle with the restricted unpickler.

    Raises:
        ImportFormatError: naming the file when it is not a readable pickle.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            return _LogUnpickler(fh).load()
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError, TypeError, IndexError) as exc:
        raise ImportFormatError(f"{path}: not a readable BrowserGym pickle ({type(exc).__name__}: {exc})") from exc


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, _StandIn):
        return obj.__dict__.get(name, default)
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


_STEP_FILE = re.compile(r"step_(\d+)\.pkl\.gz$")


def find_browsergym_experiments(path: str | os.PathLike[str]) -> list[Path]:
    """The experiment directories at or under ``path`` (those holding ``step_0.pkl.gz``), sorted."""
    root = Path(path)
    if (root / "step_0.pkl.gz").is_file():
        return [root]
    return sorted(p.parent for p in root.rglob("step_0.pkl.gz"))


def import_browsergym(
    path: str | os.PathLike[str], *, domain: str | None = None, convert_actions: bool = True
) -> list[Trajectory]:
    """Every experiment at or under ``path`` (an experiment or a study directory).

    Experiments that crashed before their first action give no trajectory (logged).

    Raises:
        ImportFormatError: when ``path`` holds no experiment, or an experiment is malformed.
    """
    dirs = find_browsergym_experiments(path)
    if not dirs:
        raise ImportFormatError(
            f"{path}: no BrowserGym/AgentLab experiment here (looked for step_0.pkl.gz in it and below)"
        )
    out = []
    for exp_dir in dirs:
        traj = import_browsergym_experiment(exp_dir, domain=domain, convert_actions=convert_actions)
        if traj.transitions:
            out.append(traj)
        else:
            logger.info("%s: no complete step (the episode ended before its first action)", exp_dir)
    return out


def import_browsergym_experiment(
    path: str | os.PathLike[str], *, domain: str | None = None, convert_actions: bool = True
) -> Trajectory:
    """One BrowserGym/AgentLab experiment directory as a trajectory.

    Transition ``t`` is (``obs`` of step ``t``, its ``action``) -> (``obs``, ``reward`` and
    ``terminated`` of step ``t+1``). The reward is 1.0 when BrowserGym's reward is positive
    (WebArena's evaluator gives 0 or 1; MiniWoB's raw reward is kept in ``extra``).

    Args:
        path: the experiment directory.
        domain: override the domain read from the task name (``webarena.70`` -> ``webarena``).
        convert_actions: write actions in our grammar (``click [12]``) where one exists; the
            others keep BrowserGym's text, and ``extra["browsergym_action"]`` always has it.

    Raises:
        ImportFormatError: naming the file or step that is missing or malformed.
    """
    from dreamgym_env.domains.webarena.axtree import from_browsergym_action

    exp_dir = Path(path)
    numbers = sorted(int(m.group(1)) for p in exp_dir.glob("step_*.pkl.gz") if (m := _STEP_FILE.search(p.name)))
    if not numbers:
        raise ImportFormatError(f"{exp_dir}: no step_*.pkl.gz files (not a BrowserGym experiment directory)")
    gaps = sorted(set(range(numbers[-1] + 1)) - set(numbers))
    if gaps:
        raise ImportFormatError(f"{exp_dir}: step file(s) missing: {', '.join(f'step_{g}.pkl.gz' for g in gaps)}")
    steps = [load_pickle(exp_dir / f"step_{n}.pkl.gz") for n in numbers]
    for n, step in zip(numbers, steps):
        if _get(step, "step", n) != n:
            raise ImportFormatError(f"{exp_dir / f'step_{n}.pkl.gz'}: holds step {_get(step, 'step')!r}, expected {n}")
    task_name = _task_name(exp_dir)
    dom, task_id = _split_task_name(task_name)
    dom = domain or dom
    goal = _goal(exp_dir, steps)
    trajectory_id = f"bgym-{exp_dir.name}" if len(exp_dir.name) <= 120 else f"bgym-{_digest(str(exp_dir.resolve()))}"
    transitions = []
    for i in range(len(steps) - 1):
        step, after = steps[i], steps[i + 1]
        raw_action = _get(step, "action")
        obs, next_obs = _get(step, "obs"), _get(after, "obs")
        if raw_action is None or not isinstance(obs, Mapping) or not isinstance(next_obs, Mapping):
            continue
        if not isinstance(raw_action, str):
            raise ImportFormatError(f"{exp_dir / f'step_{i}.pkl.gz'}: action is {type(raw_action).__name__}, not a string")
        action = (from_browsergym_action(raw_action) if convert_actions else None) or raw_action
        raw_reward = float(_get(after, "reward", 0.0) or 0.0)
        error = str(next_obs.get("last_action_error") or "")
        extra: dict[str, Any] = {"browsergym_action": raw_action, "raw_reward": raw_reward}
        if next_obs.get("url"):
            extra["url"] = str(next_obs["url"])
        if error:
            extra["last_action_error"] = error
        state_key = _state_key(obs)
        if state_key != "axtree_object":
            extra["state_format"] = f"browsergym:{state_key}"
        transitions.append(Transition(
            domain=dom, task_id=task_id, trajectory_id=trajectory_id, step=i,
            state=_state(obs, exp_dir, i), action=action, next_state=_state(next_obs, exp_dir, i + 1),
            reward=1.0 if raw_reward > 0 else 0.0, done=bool(_get(after, "terminated")),
            goal=goal, valid_action=not error, source="real", extra=extra,
        ))
    return Trajectory(trajectory_id, dom, task_id, goal, transitions, source="real")


def _task_name(exp_dir: Path) -> str:
    """The BrowserGym task name, from exp_args.pkl, else from AgentLab's directory name."""
    args_file = exp_dir / "exp_args.pkl"
    if args_file.is_file():
        try:
            name = _get(_get(load_pickle(args_file), "env_args"), "task_name")
        except ImportFormatError as exc:
            logger.warning("%s", exc)
            name = None
        if isinstance(name, str) and name:
            return name
    match = re.search(r"_on_(.+?)(?:_\d+)?$", exp_dir.name)  # AgentLab: <date>_<agent>_on_<task>_<seed>
    if match:
        return match.group(1)
    raise ImportFormatError(f"{exp_dir}: cannot tell the task (no readable exp_args.pkl, and the directory name has no '_on_<task>')")


def _split_task_name(task_name: str) -> tuple[str, str]:
    name = task_name.removeprefix("browsergym/")
    if "." not in name:
        return "browsergym", name
    dom, task_id = name.split(".", 1)
    return dom, task_id


def _goal(exp_dir: Path, steps: Sequence[Any]) -> str:
    obs = next((o for o in (_get(s, "obs") for s in steps) if isinstance(o, Mapping)), {})
    if isinstance(obs.get("goal"), str) and obs["goal"]:
        return obs["goal"]
    goal_object = obs.get("goal_object")
    if not goal_object and (exp_dir / "goal_object.pkl.gz").is_file():
        goal_object = load_pickle(exp_dir / "goal_object.pkl.gz")
    texts = [str(_get(m, "text")) for m in goal_object or () if _get(m, "type") == "text"]
    return "\n".join(texts)


def _state_key(obs: Mapping[str, Any]) -> str:
    if isinstance(obs.get("axtree_object"), Mapping) and obs["axtree_object"].get("nodes"):
        return "axtree_object"
    return next((k for k in ("axtree_txt", "pruned_html", "dom_txt") if isinstance(obs.get(k), str) and obs[k]), "")


def _state(obs: Mapping[str, Any], exp_dir: Path, step: int) -> str:
    """The state text of one logged observation: its accessibility tree in our line format,
    else the text AgentLab stored (``axtree_txt``, ``pruned_html``)."""
    from dreamgym_env.domains.webarena.axtree import state_from_observation

    if isinstance(obs.get("axtree_object"), Mapping) and obs["axtree_object"].get("nodes"):
        return state_from_observation(obs)
    for key in ("axtree_txt", "pruned_html", "dom_txt"):
        if isinstance(obs.get(key), str) and obs[key]:
            return obs[key]  # BrowserGym's own text (the transition's extra says which)
    raise ImportFormatError(
        f"{exp_dir / f'step_{step}.pkl.gz'}: the observation has no accessibility tree "
        f"(axtree_object/axtree_txt); keys: {sorted(obs)[:12]}"
    )


# --------------------------------------------------------------------------------- CLI
def add_import_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``dreamgym import`` to a subparsers object; its ``func`` default is :func:`run_import`
    (which returns a summary dict: the CLI prints it)."""
    parser = subparsers.add_parser(
        "import", help="import real trajectories (BrowserGym/AgentLab logs, episode JSONL) into a buffer or JSONL",
        description=(
            "Read trajectories from files you already have and add them to a replay buffer "
            "(--buffer) and/or write them as trajectory JSONL (--out), as source 'real'. "
            "browsergym: an experiment or study directory (step_*.pkl.gz, exp_args.pkl). "
            "jsonl: one episode per line, {task_id, goal, domain, steps: [{state, action, reward, done}]}."
        ),
    )
    parser.add_argument("path", nargs="+", help="experiment/study directories, or JSONL files")
    parser.add_argument("--format", choices=FORMATS, required=True, dest="import_format")
    parser.add_argument("--buffer", default=None, help="buffer directory or http://host:port of a Chroma server")
    parser.add_argument("--collection", default=None, help="buffer collection (default: the buffer's default)")
    parser.add_argument("--out", default=None, help="also write the trajectories to this JSONL file")
    parser.add_argument("--domain", default=None,
                        help="jsonl: domain of lines without one; browsergym: override the domain of the task name")
    parser.add_argument("--raw-actions", action="store_true",
                        help="browsergym: keep BrowserGym's action text instead of converting to click [12]...")
    parser.set_defaults(func=run_import)
    return parser


def run_import(args: argparse.Namespace) -> dict[str, Any]:
    """Carry out ``dreamgym import``; returns what was read and written.

    Raises:
        DreamGymError: when neither --buffer nor --out is given, or an input is malformed.
    """
    if not args.buffer and not args.out:
        raise DreamGymError("dreamgym import needs --buffer PATH and/or --out FILE.jsonl")
    trajectories: list[Trajectory] = []
    for path in args.path:
        if not os.path.exists(path):
            raise ImportFormatError(f"{path}: no such file or directory")
        if args.import_format == "jsonl":
            trajectories += import_jsonl_episodes(path, args.domain)
        else:
            trajectories += import_browsergym(path, domain=args.domain, convert_actions=not args.raw_actions)
    summary: dict[str, Any] = {
        "trajectories": len(trajectories),
        "transitions": sum(len(t.transitions) for t in trajectories),
        "domains": sorted({t.domain for t in trajectories}),
    }
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for traj in trajectories:
                fh.write(traj.to_json() + "\n")
        summary["out"] = args.out
    if args.buffer:
        from dreamgym_env.buffer import ExperienceBuffer

        kwargs = {"collection": args.collection} if args.collection else {}
        buffer = ExperienceBuffer.from_uri(args.buffer, **kwargs)
        try:
            result = buffer.add_trajectories(trajectories)
        finally:
            buffer.close()
        summary.update(added=len(result.added), duplicates=len(result.duplicates), buffer=args.buffer)
    logger.info("imported %d trajectories (%d transitions)", summary["trajectories"], summary["transitions"])
    return summary


__all__ = [
    "ImportFormatError", "import_jsonl_episodes", "import_browsergym_experiment", "import_browsergym",
    "find_browsergym_experiments", "load_pickle", "add_import_parser", "run_import",
]
