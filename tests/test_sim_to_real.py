"""The sim-to-real experiment runs end to end on a tiny budget (scripted synthetic model, real
MiniWoB in Chromium), resumes from finished arms, and writes the report with its table."""

from __future__ import annotations

import json

import pytest

from dreamgym_env.domains.miniwob.browser import is_miniwob_available
from dreamgym_env.experiments.sim_to_real import NOTES_MARKER, SimToRealConfig, run_experiment, summarise, write_report


def _scripted_backend():
    from dreamgym_env.backends.scripted import ScriptedBackend

    def respond(request):
        if request.metadata.get("kind") == "initial_state":
            return json.dumps({"state": '[1] button "ONE"\n[2] button "TWO"'})
        return json.dumps({"reasoning": "", "patch": [], "reward": 1, "done": True, "valid_action": True})

    return ScriptedBackend(respond)


def test_config_rejects_unknown_arms_and_s2r_without_synthetic():
    with pytest.raises(ValueError, match="unknown arms"):
        SimToRealConfig(arms=["real", "sim"])
    with pytest.raises(ValueError, match="include 'synthetic'"):
        SimToRealConfig(arms=["real", "s2r"])


@pytest.mark.skipif(not is_miniwob_available(), reason='pip install "dreamgym-env[miniwob]"; apt-get install chromium chromium-driver')
def test_tiny_experiment_runs_resumes_and_reports(tmp_path):
    cfg = SimToRealConfig(families=["click-test-2"], seeds=[0], real_steps=20, synthetic_iterations=1, groups=1,
                          num_generations=2, max_steps=2, eval_episodes=2, eval_points=1,
                          output_dir=str(tmp_path / "runs"), out=str(tmp_path / "results.md"))
    backend = _scripted_backend()
    results = run_experiment(cfg, env_kwargs={"backend": backend, "buffer": False})
    assert set(results) == {"untrained", "real", "synthetic", "s2r", "synthetic-no-curriculum", "synthetic-equal-steps"}
    untrained = results["untrained"][0]
    assert untrained["real_steps_used"] == 0 == untrained["synthetic_steps_used"] and len(untrained["curve"]) == 1
    assert "success/click-test-2" in untrained["final"]
    real, s2r, synthetic = results["real"][0], results["s2r"][0], results["synthetic"][0]
    assert real["real_steps_used"] >= 20 and synthetic["real_steps_used"] == 0 and synthetic["synthetic_steps_used"] > 0
    assert 2 <= s2r["real_steps_used"] < real["real_steps_used"]
    assert s2r["curve"][0]["real_steps"] == 0 and s2r["curve"][0]["success_rate"] == synthetic["final"]["success_rate"]
    assert "success/click-test-2" in real["final"]
    equal = results["synthetic-equal-steps"][0]  # real-only's budget, in synthetic steps
    assert equal["real_steps_used"] == 0 and 20 <= equal["synthetic_steps_used"] < 20 + 2 * 2 and len(equal["curve"]) == 1
    calls = len(backend.calls)
    assert run_experiment(cfg, env_kwargs={"backend": backend, "buffer": False}) == results  # finished arms are read back
    assert len(backend.calls) == calls
    report = write_report(cfg, results, "python -m dreamgym_env.experiments.sim_to_real ...").read_text()
    assert "| (c) S2R: synthetic + N/10 real |" in report and "Seeds: 0" in report
    assert (tmp_path / "results_s2r_curve.png").stat().st_size > 1000 and "results_s2r_curve.png" in report
    assert "- (a) real only: seed 0: " in report
    (tmp_path / "results.md").write_text(report + "Hand-written reading of the table.\n")
    again = write_report(cfg, results, "python -m dreamgym_env.experiments.sim_to_real ...").read_text()
    assert again.endswith(NOTES_MARKER + "\nHand-written reading of the table.\n") and again.count(NOTES_MARKER) == 1
    assert set(summarise(cfg, results)["goals"]) == {
        "(c) S2R >= (a) real-only with 10x fewer real steps", "(b) synthetic-only >= 0.8 x (a) real-only",
        "curriculum helps: (b) > (d)", "(e) synthetic-only with N synthetic steps >= 0.8 x (a) real-only with N real steps"}


def test_s2r_without_its_synthetic_policy_names_the_fix(tmp_path):
    from dreamgym_env.experiments.sim_to_real import run_arm

    cfg = SimToRealConfig(families=["click-test-2"], seeds=[0], output_dir=str(tmp_path))
    (tmp_path / "synthetic-seed0").mkdir()
    (tmp_path / "synthetic-seed0" / "result.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="delete .*synthetic-seed0/result.json"):
        run_arm(cfg, "s2r", 0)
