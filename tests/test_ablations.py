"""The ablation study: each variant changes exactly its one SFT field, trains, is scored greedily,
is skipped when rerun, and lands as a row of the report."""

from __future__ import annotations

import itertools
import json

import pytest

from dreamgym_env.collect import read_trajectories, write_trajectories
from dreamgym_env.domains.miniwob.domain import real_dataset_path
from dreamgym_env.experiments.ablations import VARIANTS, AblationConfig, main, sft_config


def test_each_variant_changes_only_its_field():
    cfg = AblationConfig()
    full = vars(sft_config(cfg, "full"))
    for name, (changes, _) in VARIANTS.items():
        variant = vars(sft_config(cfg, name))
        differing = {k for k in full if full[k] != variant[k]} - {"output_dir"}
        assert differing == set(changes), name
    # the recipe is pinned: the shipped model's data, prompt and rule, whatever sft's defaults
    assert full["data"] == [str(real_dataset_path())]
    assert (full["prompt_version"], full["reasoning_rule"], full["precision"]) == ("v3", "v1", "fp32")
    with pytest.raises(ValueError, match="unknown variants"):
        AblationConfig(variants=["no-demos"])


def test_ablation_study_trains_scores_resumes_and_reports(tmp_path):
    from tests.helpers.tiny_model import build_tiny_llama

    families = {"click-test", "enter-text", "click-checkboxes"}
    picked = (t for t in read_trajectories(real_dataset_path()) if t.task_id in families)
    data = tmp_path / "data.jsonl"
    write_trajectories(data, list(itertools.islice(picked, 30)))
    base = build_tiny_llama(tmp_path / "base")
    overrides = {"data": [str(data)], "base_model": str(base), "warmup_steps": 1, "batch_tokens": 2048,
                 "max_length": 2048, "eval_examples": 4, "test_fraction": 0.2, "lora_rank": 8, "lora_layers": 1}
    argv = ["--variants", "full", "no-history", "--epochs", "1", "--held-out-families", "click-checkboxes",
            "--max-per-group", "2", "--eval-batch-size", "2", "--sft-overrides", json.dumps(overrides),
            "--output-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "ablations.md")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "runs" / "no-history" / "result.json").read_text())
    assert result["sft_config"]["history_length"] == 0 and result["steps"] >= 1
    assert 0 < result["greedy"]["seen"]["transitions"] <= 2
    report = (tmp_path / "ablations.md").read_text()
    assert "| full |" in report and "| no-history |" in report and "python -m dreamgym_env.experiments.ablations" in report
    stamp = (tmp_path / "runs" / "full" / "result.json").stat().st_mtime_ns
    assert main(argv) == 0  # finished variants are read, not retrained
    assert (tmp_path / "runs" / "full" / "result.json").stat().st_mtime_ns == stamp


def test_report_lists_the_variants_not_run_yet(tmp_path):
    from dreamgym_env.experiments.ablations import AblationConfig, format_report

    scores = {"valid_output": 1.0, "reward_done_acc": 0.9, "exact_non_terminal": 0.8, "exact_state_changing": 0.7}
    done = {"variant": "full", "steps": 10, "train_tokens": 5000, "train_hours": 1.0, "teacher_forced": {"exact_state_non_terminal": 0.85},
            "greedy": {"seen": scores, "held_out_families": scores}}
    # a step paused for an hour moves the summed clock, not the median speed
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "log.jsonl").write_text("\n".join(json.dumps({"step": i, "perf/tokens_per_s": s})
                                                           for i, s in enumerate([200.0, 0.1, 210.0])))
    cfg = AblationConfig(variants=["full", "no-retrieval", "no-history"], output_dir=str(tmp_path))
    report = format_report(cfg, [done], "python -m dreamgym_env.experiments.ablations")
    assert "| full |" in report and "| 0.850 |" in report and "| no-retrieval |" not in report
    assert "| 10 | 5k | 1.00 | 200 |" in report
    assert "**Not run yet**: no-retrieval, no-history" in report
    assert "Not run yet" not in format_report(AblationConfig(variants=["full"]), [done], "cmd")


def test_report_names_the_machine_of_each_variant():
    from dreamgym_env.experiments.ablations import machines_line
    from dreamgym_env.experiments.machine import describe_machine

    one = machines_line([{"variant": "full", "machine": "CPU A"}, {"variant": "no-history", "machine": "CPU A"}])
    assert one == "Machine: CPU A."
    two = machines_line([{"variant": "full", "machine": "CPU A"}, {"variant": "whole-state", "machine": "CPU B"},
                         {"variant": "no-history"}])
    assert "full on CPU A" in two and "whole-state on CPU B" in two and "no-history on not recorded" in two
    assert "(" in describe_machine() and "cores" in describe_machine()  # the vector ISA is named
