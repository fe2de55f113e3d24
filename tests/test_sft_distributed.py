"""``dreamgym sft`` under Accelerate: two data-parallel CPU processes (gloo) and gradient
accumulation (with gradient checkpointing) give the losses and weights of one process at the
same global batch."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dreamgym_env.domains.miniwob.domain import real_dataset_path
from dreamgym_env.collect import read_trajectories, write_trajectories
from dreamgym_env.sft.distributed import micro_batches, micro_steps, shard, target_counts


def test_a_global_batch_splits_into_like_shares_and_micro_batches():
    lengths = [10, 20, 30, 40, 50, 60, 70]
    batch = list(range(7))
    assert shard(batch, 0, 2) == [0, 2, 4, 6] and shard(batch, 1, 2) == [1, 3, 5]
    assert micro_batches([0, 2, 4, 6], lengths, 100) == [[0, 2], [4], [6]]  # 2 x 30 = 60; 50 + 70 > 100
    assert micro_batches([6], lengths, 10) == [[6]]  # one long row still gets its micro-batch
    assert micro_steps(batch, lengths, 2, 100) == 3  # rank 0 needs 3, rank 1 ([1, 3, 5]: 40+40 <= 100, 60) needs 2
    rows = [{"loss_mask": [-100, -100, 1, 1, 2]}, {"loss_mask": [1, 2, 2]}]  # the first token is never a target
    assert target_counts(rows) == (2, 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run: Path) -> list[tuple[float, float]]:
    rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    return [(r["losses/reasoning"], r["losses/state"]) for r in rows if "losses/state" in r]


def test_two_processes_and_micro_batches_give_the_losses_of_one_process(tmp_path):
    from tests.helpers.tiny_model import build_tiny_llama

    families = {"click-test", "enter-text", "click-checkboxes"}
    picked = (t for t in read_trajectories(real_dataset_path()) if t.task_id in families)
    data = tmp_path / "data.jsonl"
    write_trajectories(data, list(itertools.islice(picked, 24)))
    base = build_tiny_llama(tmp_path / "base")
    args = ["sft", "--data", str(data), "--base-model", str(base), "--epochs", "1", "--learning-rate", "3e-3",
            "--warmup-steps", "1", "--batch-tokens", "4096", "--max-length", "1024", "--lora-rank", "8",
            "--lora-alpha", "16", "--lora-layers", "1", "--eval-examples", "8", "--eval-every", "3",
            "--test-fraction", "0.2", "--threads", "1",
            # fp32: under bf16 autocast (what "auto" picks on AVX-512 BF16 / AMX CPUs) a product's
            # rounding depends on how the batch is split, so the losses agree to ~1e-5, not 1e-6
            "--precision", "fp32"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "dreamgym_env.cli", *args, "--output-dir", str(one)], check=True, env=env,
                   cwd=Path(__file__).resolve().parents[1])
    accum = tmp_path / "accum"  # one process, the global batch in micro-batches of at most 1024 padded tokens
    subprocess.run([sys.executable, "-m", "dreamgym_env.cli", *args, "--micro-batch-tokens", "1024", "--gradient-checkpointing",
                    "--output-dir", str(accum)], check=True, env=env, cwd=Path(__file__).resolve().parents[1])
    two = tmp_path / "two"
    (two).mkdir()
    shutil.copy(one / "dataset.pt", two / "dataset.pt")  # same examples, built once
    # accelerate launch --multi_gpu uses torchrun; on CPUs torchrun itself starts the processes
    # (accelerate launch --cpu would need mpirun) and Accelerate picks the group up from its env.
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(_free_port()),
                    "-m", "dreamgym_env.cli", *args, "--micro-batch-tokens", "1024", "--output-dir", str(two)],
                   check=True, env=env, cwd=Path(__file__).resolve().parents[1], timeout=600)
    reference = _losses(one)
    assert len(reference) >= 3
    for run in (accum, two):
        got = _losses(run)
        assert len(got) == len(reference)
        for (r1, s1), (r2, s2) in zip(reference, got):
            assert r2 == pytest.approx(r1, rel=1e-6) and s2 == pytest.approx(s1, rel=1e-6)
    # and the same trained weights (fp32, from the last checkpoint): the gradients were synced
    import torch

    weights = {run: torch.load(run / "checkpoint.pt", weights_only=False)["weights"] for run in (one, accum, two)}
    for run in (accum, two):
        for name, value in weights[one].items():
            torch.testing.assert_close(weights[run][name], value, rtol=1e-4, atol=1e-6)
    # both export the same model card budget; the two-process card says so
    card = json.loads((two / "model" / "dreamgym_model.json").read_text())
    assert card["processes"] == 2 and card["steps"] == len(reference)
    evals = [json.loads(l)["eval"] for l in (two / "log.jsonl").read_text().splitlines() if '"eval"' in l]
    ref_evals = [json.loads(l)["eval"] for l in (one / "log.jsonl").read_text().splitlines() if '"eval"' in l]
    assert [e["exact_state"] for e in evals] == [e["exact_state"] for e in ref_evals]
    assert [e["loss_state"] for e in evals] == pytest.approx([e["loss_state"] for e in ref_evals], rel=1e-4)
