"""The WebArena recipe of docs/scale.md end to end on CPU, every hand-off real: WebArena-format
episodes imported, annotated by a model served by vLLM, an SFT run in two data-parallel
processes, the trained model served by ``dreamgym serve``, the real transitions in a ``chroma
run`` server, ``gym.make("DreamGym-WebArenaLite-v0", backend=URL, buffer=URL)`` stepping on
both, and one GRPO iteration of ``dreamgym train`` on it. The model is tiny and random: this
tests the plumbing, not fidelity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import dreamgym_env  # noqa: F401  (registers the ids)
from dreamgym_env.collect import read_trajectories
from dreamgym_env.serving import vllm_server_command
from helpers.fake_openai_server import free_port
from helpers.servers import VLLM_PYTHON, chroma_server, requires_vllm, running, vllm_env
from helpers.tiny_model import build_tiny_llama

REPO_ROOT = Path(__file__).resolve().parents[1]
#: WebArena-Lite tasks (WebArena ids) the episodes are of.
TASKS = {"4": "What are the top-3 best-selling product in Jan 2023",
         "15": 'Tell me the the number of reviews that our store received by far that mention term "best"'}


def _episode(task_id: str, goal: str, variant: int) -> dict:
    home = (f"[1] RootWebArea 'Dashboard / Magento Admin'\n[5] link 'Reports'\n[6] link 'Catalog'\n"
            f"[7] StaticText 'Welcome, admin {variant}'")
    reports = home.replace("[5] link 'Reports'", "[5] link 'Reports' focused") + "\n[9] link 'Bestsellers'\n[10] link 'Reviews'"
    table = "[1] RootWebArea 'Bestsellers Report'\n[12] table ''\n[13] row 'Sprite Stasis Ball 55 cm 6'"
    return {"task_id": task_id, "goal": goal, "domain": "webarena", "steps": [
        {"state": home, "action": "click [5]", "reward": 0, "done": False},
        {"state": reports, "action": "click [9]", "reward": 0, "done": False},
        {"state": table, "action": "stop [Sprite Stasis Ball 55 cm]", "reward": variant % 2, "done": True},
    ]}


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dreamgym_env.cli", *args], check=True, cwd=REPO_ROOT,
                          env=vllm_env(), timeout=timeout, capture_output=True, text=True)


@pytest.mark.slow
@requires_vllm
def test_webarena_recipe_end_to_end(tmp_path):
    # 1. real trajectories: WebArena-format episode JSONL, imported
    episodes = tmp_path / "episodes.jsonl"
    episodes.write_text("".join(json.dumps(_episode(t, g, v)) + "\n" for t, g in TASKS.items() for v in range(4)))
    real = tmp_path / "real.jsonl"
    _cli("import", "--format", "jsonl", str(episodes), "--out", str(real))
    assert len(list(read_trajectories(real))) == 8

    # 2. reasoning written by a served model (here the tiny base, served by vLLM)
    base = build_tiny_llama(tmp_path / "base")
    port = free_port()
    teacher = vllm_server_command(base, port=port, max_model_len=2048, enforce_eager=True, python=VLLM_PYTHON,
                                  extra_args=["--dtype", "float32"])
    annotated = tmp_path / "annotated.jsonl"
    with running(teacher, f"http://127.0.0.1:{port}/health", tmp_path / "teacher.log", env=vllm_env()):
        _cli("annotate", str(real), "-o", str(annotated), "--method", "llm", "--backend", f"http://127.0.0.1:{port}/v1")
    transitions = [t for traj in read_trajectories(annotated) for t in traj.transitions]
    assert len(transitions) == 24 and all(t.reasoning for t in transitions)

    # 3. SFT in two data-parallel processes (torchrun; accelerate launch --multi_gpu on GPUs)
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(free_port()), "-m", "dreamgym_env.cli", "sft", "--domain", "webarena", "--data", str(annotated),
                    "--base-model", str(base), "--output-dir", str(run), "--epochs", "1", "--lora-rank", "8",
                    "--lora-alpha", "16", "--lora-layers", "1", "--max-length", "2048", "--batch-tokens", "4096",
                    "--test-fraction", "0.25", "--eval-every", "1000", "--threads", "1"],
                   check=True, cwd=REPO_ROOT, env=vllm_env(), timeout=600)
    card = json.loads((run / "model" / "dreamgym_model.json").read_text())
    assert card["processes"] == 2 and card["domain"] == "webarena"

    # 4-5. the trained model served by `dreamgym serve`; the real transitions in a chroma server
    port = free_port()
    serve = [sys.executable, "-m", "dreamgym_env.cli", "serve", "--model", str(run / "model"), "--port", str(port),
             "--device", "cpu", "--enforce-eager", "--max-model-len", "2048", "--python", VLLM_PYTHON]
    url = f"http://127.0.0.1:{port}/v1"
    with chroma_server(tmp_path / "chroma", tmp_path / "chroma.log") as chroma, \
            running(serve, f"http://127.0.0.1:{port}/health", tmp_path / "serve.log", env=vllm_env()):
        _cli("buffer", "import", "--path", chroma, "--file", str(real))

        # 6. the env on both
        env = gym.make("DreamGym-WebArenaLite-v0", backend=url, buffer=chroma, prompt_version=card["prompt_version"],
                       task_id="4", max_retries=1)
        obs, info = env.reset(seed=0)
        assert "[5] link 'Reports'" in obs  # a real initial state of task 4, from the chroma buffer
        assert info["model"] == "model"  # dreamgym serve names the model after its directory
        buffer = env.unwrapped.buffer
        assert len(buffer) == 24  # the imported real transitions, in the chroma server
        demos = buffer.query([obs], ["click [5]"], n_results=2)[0]
        assert len(demos) == 2 and all(d.transition.source == "real" for d in demos)
        obs, reward, terminated, truncated, info = env.step("click [5]")
        # a random model may write JSON that does not close within the token limit: the env
        # then truncates the episode and says why; otherwise the step shows its demos
        assert (info["error"] is None and info["retrieved"]) or (truncated and "experience model failed" in info["error"])
        env.close()

        # 7. one GRPO iteration of the bundled trainer on it (WebArena lists no admissible actions:
        #    the policy writes its actions)
        kwargs = json.dumps({"backend": url, "buffer": chroma, "prompt_version": card["prompt_version"], "max_retries": 1})
        _cli("train", "--algo", "grpo", "--env", "DreamGym-WebArenaLite-v0", "--env-kwargs", kwargs, "--policy", "generate",
             "--max-new-tokens", "12", "--task-ids", "4", "15", "--iterations", "1", "--max-steps", "2", "--groups", "1",
             "--num-generations", "2", "--no-curriculum", "--output-dir", str(tmp_path / "grpo"), timeout=900)
        assert len((tmp_path / "grpo" / "metrics.csv").read_text().splitlines()) >= 2  # a header and the iteration

