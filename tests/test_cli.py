"""The dreamgym command line."""

from __future__ import annotations

import json

import pytest

from dreamgym_env.cli import build_parser, main

SUBCOMMANDS = ["rollout", "collect", "data-stats", "buffer", "import", "serve", "serve-env", "annotate", "sft", "eval-model", "closed-loop", "fidelity", "train", "env"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: dreamgym" in capsys.readouterr().out


def test_every_subcommand_is_tested():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(SUBCOMMANDS)


def test_rollout_json(capsys):
    assert main(["rollout", "--env", "DreamGym-WebArena-v0", "--backend", "scripted", "--buffer", "", "--episodes", "2",
                 "--max-steps", "3", "--json", "--task-id", "27"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["event"] for r in records].count("reset") == 2
    steps = [r for r in records if r["event"] == "step"]
    assert steps and all("reasoning" in r and "reward" in r for r in steps)
    assert records[-1]["event"] == "summary" and records[-1]["episodes"] == 2


def test_rollout_oracle_on_miniwob(capsys):
    assert main(["rollout", "--backend", "scripted", "--buffer", "", "--policy", "oracle", "--episodes", "1",
                 "--max-steps", "2", "--json", "--task-id", "click-button"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[0]["task_id"] == "click-button"
    assert [r["action"] for r in records if r["event"] == "step"][0].startswith("click [")
    assert main(["rollout", "--env", "DreamGym-WebArena-v0", "--backend", "scripted", "--buffer", "",
                 "--policy", "oracle"]) == 2
    assert "--policy oracle needs a MiniWoB env" in capsys.readouterr().err


def test_env_lists_ids(capsys):
    assert main(["env"]) == 0
    assert "DreamGym-WebArena-v0" in json.loads(capsys.readouterr().out)["env_ids"]


def test_serve_dry_run_has_the_flags_dreamgym_needs(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path), "--port", "8123", "--dry-run", "--", "--seed", "1"]) == 0
    command = capsys.readouterr().out
    assert "vllm.entrypoints.openai.api_server" in command and "--port 8123" in command
    assert "disable_any_whitespace" in command and "--dtype" in command and command.strip().endswith("--seed 1")


def test_buffer_import_stats_export(tmp_path, capsys):
    from dreamgym_env.schema import Trajectory, Transition

    steps = [Transition("webarena", "5", "t-1", i, f"[1] s{i}", "click [1]", f"[1] s{i + 1}", 0.0, i == 1,
                        source="synthetic") for i in range(2)]
    source_file = tmp_path / "in.jsonl"
    source_file.write_text(Trajectory("t-1", "webarena", "5", "g", steps).to_json() + "\n")
    path = str(tmp_path / "buffer")
    assert main(["buffer", "import", "--path", path, "--file", str(source_file), "--source", "real"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"added": 2, "duplicates": 0}
    assert main(["buffer", "stats", "--path", path]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"entries": 2, "real": 2, "synthetic": 0}
    out_file = tmp_path / "out.jsonl"
    assert main(["buffer", "export", "--path", path, "--file", str(out_file)]) == 0
    (line,) = out_file.read_text().splitlines()
    assert Trajectory.from_json(line).source == "real"


def test_user_errors_are_one_clear_line_and_exit_2(tmp_path, capsys):
    code = main(["eval-model", "--model", str(tmp_path / "nowhere")])
    assert code == 2
    err = capsys.readouterr().err
    assert "dreamgym eval-model: error:" in err and "dreamgym_model.json" in err and "Traceback" not in err
    code = main(["eval-model", "--data", str(tmp_path / "missing.jsonl.gz")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no such trajectory file(s)" in err and "missing.jsonl.gz" in err and "Traceback" not in err
