"""ScriptedBackend: a fake experience model for contract tests and overhead benchmarks.

It answers from the request's metadata without any model. It is never a default, and nothing
it produces says anything about fidelity, learning or speed of a real model.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Sequence

from dreamgym_env.backends.base import GenerationRequest, GenerationResult

Responder = Callable[[GenerationRequest], str]


def default_scripted_response(request: GenerationRequest) -> str:
    """A schema-valid answer: a fixed initial state; ``stop`` ends the episode with reward 1
    when its answer is non-empty; every other action adds one line naming the action."""
    meta = request.metadata
    if meta.get("kind") == "initial_state":
        goal = meta.get("goal", "")
        return json.dumps(
            {"state": f"[1] RootWebArea {goal[:40]!r}\n[2] link 'Home'\n[3] textbox 'Search'"}
        )
    action = str(meta.get("action", ""))
    step = int(meta.get("step", 0))
    done = action.startswith("stop")
    reward = 1 if done and action.strip() not in ("stop", "stop []") else 0
    line = f"[{100 + step}] StaticText {('after ' + action)!r}"
    body = {"reasoning": f"scripted: {action}", "reward": reward, "done": done, "valid_action": True}
    if meta.get("state_format", "patch") == "patch":
        body["patch"] = [line]
    else:
        body["next_state"] = f"{meta.get('state', '')}\n{line}".strip()
    return json.dumps({"reasoning": body.pop("reasoning"), **body})


class ScriptedBackend:
    """Answers each request with ``responder(request)`` after a fixed simulated latency.

    Args:
        responder: maps a request to the raw text answer; defaults to
            :func:`default_scripted_response`. May raise to simulate a failing request.
        latency_s: seconds slept once per ``generate`` call (one batched forward pass),
            whatever the batch size.
    """

    name = "scripted"

    def __init__(self, responder: Responder | None = None, latency_s: float = 0.0):
        self.responder = responder or default_scripted_response
        self.latency_s = latency_s
        self.calls: list[int] = []  # batch size of every generate() call

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(len(requests))
        if self.latency_s:
            time.sleep(self.latency_s)
        results = []
        for request in requests:
            try:
                text = self.responder(request)
            except Exception as exc:  # noqa: BLE001 - a scripted failure becomes a result error
                results.append(GenerationResult(error=f"{type(exc).__name__}: {exc}"))
                continue
            # The simulated latency is reported as is, so scripted rollouts stay reproducible.
            results.append(GenerationResult(text=text, latency_s=self.latency_s))
        return results

    def close(self) -> None:
        pass
