"""The verl agent loop: real token ids kept, observation tokens masked, the return as reward.

verl's own classes run here (``AgentLoopBase``, its Continuous Token builder, ``register``,
``AgentLoopOutput.as_dict``); the rollout server is a scripted stand-in that answers fixed
actions as token ids (verl's real servers need vLLM/SGLang on a GPU, and Ray). The env is
DreamGym-WebArena-v0 on the scripted backend.

verl pins transformers 5.10 (the main environment has 5.23), so the test runs in process when
verl imports, else in the Python named by ``DREAMGYM_VERL_PYTHON`` (a venv made with
``scripts/install_overlay_venv.sh`` over the main one plus ``pip install "verl==0.9.1"``), else it is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from importlib.util import find_spec
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ACTIONS = ["click [2]", 'I will type now.\n```\ntype [3] "blue mug"\n```', "clik [9]", "stop [done]"]


def run_agent_loop() -> dict:
    """One trajectory of DreamGymAgentLoop against a scripted rollout server; facts for the asserts."""
    import asyncio

    import hydra
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.experimental.agent_loop.agent_loop import (
        DictConfigWrap,
        ToolListWrap,
        _agent_loop_registry,
    )
    from verl.workers.rollout.replica import TokenOutput

    from dreamgym_env.backends.default_model import build_default_model
    from dreamgym_env.integrations.verl_loop import DreamGymAgentLoop, extract_action

    tokenizer = AutoTokenizer.from_pretrained(build_default_model())
    generated: list[list[int]] = []
    seen_prompts: list[list[int]] = []

    class ScriptedServer:
        async def generate(self, request_id, prompt_ids, sampling_params, **kwargs):
            seen_prompts.append(list(prompt_ids))
            text = ACTIONS[len(generated)] + "<|im_end|>"
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            generated.append(ids)
            return TokenOutput(token_ids=ids, log_probs=[-0.5] * len(ids))

    config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 2048, "response_length": 1024}},
                               "data": {}})

    # What an agent-loop config file (rollout.agent.agent_loop_config_path) holds for it.
    entry = OmegaConf.create({
        "name": "dreamgym", "_target_": "dreamgym_env.integrations.verl_loop.DreamGymAgentLoop",
        "env_id": "DreamGym-WebArena-v0", "env_kwargs": {"backend": "scripted", "buffer": False}, "max_turns": 8,
    })

    async def main():  # as AgentLoopWorker._run_agent_loop does, inside the worker's event loop
        loop = hydra.utils.instantiate(
            config={k: v for k, v in entry.items() if k != "name"},
            trainer_config=DictConfigWrap(config), server_manager=ScriptedServer(), tokenizer=tokenizer,
            processor=None, hf_model_type=None, dataset_cls=None, data_config=DictConfigWrap(config.data),
            tools=ToolListWrap([]),
        )
        assert isinstance(loop, DreamGymAgentLoop)
        return await loop.run({"temperature": 1.0}, raw_prompt=[{"role": "user", "content": "Act on the page.\n"}],
                              extra_info={"seed": 3})

    out = asyncio.run(main())
    mask = out.response_mask
    as_dict = out.as_dict()
    spans, current = [], None  # (mask value, token ids) runs
    for token, m in zip(out.response_ids, mask):
        if current is None or current[0] != m:
            current = (m, [])
            spans.append(current)
        current[1].append(token)
    return {
        "registered": "dreamgym" in _agent_loop_registry,
        "prompt": tokenizer.decode(out.prompt_ids),
        "prompt_ids": out.prompt_ids,
        "response_ids": out.response_ids,
        "mask": mask,
        "logprobs": out.response_logprobs,
        "generated": generated,
        "seen_prompts": seen_prompts,
        "spans": [(m, tokenizer.decode(ids)) for m, ids in spans],
        "reward_score": out.reward_score,
        "rm_last": float(as_dict["rm_scores"][-1]),
        "num_turns": out.num_turns,
        "extra": out.extra_fields["dreamgym"],
        "turn_scores": out.extra_fields["turn_scores"],
        "extracted": [extract_action(t) for t in ("I think.\n\nclick [3]\n", "```\nstop [42]\n```", "`scroll [down]`", "  \n")],
    }


def _result() -> dict:
    if find_spec("verl") is not None:
        return run_agent_loop()
    python = os.environ.get("DREAMGYM_VERL_PYTHON")
    if not python:
        pytest.skip("verl is not installed here (it pins transformers 5.10); set DREAMGYM_VERL_PYTHON to a Python "
                    "with verl==0.9.1 (docs/integrations.md)")
    code = (f"import json, sys; sys.path[:0] = [{str(HERE)!r}]; "
            "import test_verl_loop as t; print('RESULT ' + json.dumps(t.run_agent_loop()))")
    proc = subprocess.run([python, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def result() -> dict:
    return _result()


def test_registered_and_the_prompt_holds_the_first_observation(result):
    assert result["registered"]
    assert "Act on the page.\nGoal: " in result["prompt"] and "State:\n" in result["prompt"]
    assert result["prompt"].rstrip().endswith("assistant")  # ends with the generation prompt


def test_policy_tokens_are_kept_exactly_and_observations_masked(result):
    mask, response = result["mask"], result["response_ids"]
    assert len(mask) == len(response) == len(result["logprobs"])
    policy_tokens = [t for t, m in zip(response, mask) if m == 1]
    assert policy_tokens == [t for ids in result["generated"] for t in ids]  # the server's own ids, in order
    assert all(lp == -0.5 for lp, m in zip(result["logprobs"], mask) if m == 1)
    # Each turn the policy saw exactly prompt + everything so far (its tokens and the observations).
    for seen in result["seen_prompts"]:
        assert seen == (result["prompt_ids"] + response)[: len(seen)]
    spans = result["spans"]
    assert [m for m, _ in spans] == [1, 0, 1, 0, 1, 0, 1]  # 4 actions, 3 observations between them
    observations = [text for m, text in spans if m == 0]
    assert repr("after click [2]") in observations[0]
    assert repr('after type [3] "blue mug"') in observations[1]  # the fenced last line was the action
    assert "Last action error: unknown action 'clik'" in observations[2]


def test_the_return_is_the_reward_score(result):
    assert result["extra"]["actions"] == ["click [2]", 'type [3] "blue mug"', "clik [9]", "stop [done]"]
    assert result["extra"]["terminated"] and not result["extra"]["truncated"]
    assert result["turn_scores"] == [0.0, 0.0, 0.0, 1.0]
    assert result["reward_score"] == 1.0 and result["rm_last"] == 1.0
    assert result["num_turns"] == 1 + 4 + 3


def test_extract_action(result):
    assert result["extracted"] == ["click [3]", "stop [42]", "scroll [down]", ""]
