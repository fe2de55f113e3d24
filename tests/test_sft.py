"""SFT pipeline: reasoning annotation, examples rendered as the env renders them, loss masks,
and a tiny training run that checkpoints, resumes and exports a model a backend can load."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import pytest
import torch

from dreamgym_env import prompts
from dreamgym_env.collect import read_trajectories, write_trajectories
from dreamgym_env.domains.miniwob.domain import MiniWoBDomain, real_dataset_path
from dreamgym_env.domains.miniwob.serialize import goal_targets
from dreamgym_env.patch import apply_patch
from dreamgym_env.schema import Transition, parse_model_output
from dreamgym_env.sft.annotate import LLMAnnotator, annotate_trajectories, rule_reasoning
from dreamgym_env.sft.data import IGNORE, JUDGEMENT, REASONING, STATE, judgement_spans, tokenize_example, train_buffer
from dreamgym_env.sft.examples import build_examples
from dreamgym_env.sft.train import SFTConfig


def _transition(**kw) -> Transition:
    base = dict(domain="miniwob", task_id="click-test", trajectory_id="t0", step=0,
                state='[4] button "Submit"\n[5] input_text id="tt"', action="click [4]",
                next_state='[4] button "Submit" focused\n[5] input_text id="tt"', reward=0.0, done=False,
                goal='Enter "Kasie" into the text field and press Submit.')
    base.update(kw)
    return Transition(**base)


@pytest.fixture(scope="module")
def trajectories():
    families = {"click-test", "enter-text", "click-checkboxes"}
    picked = (t for t in read_trajectories(real_dataset_path()) if t.task_id in families)
    return list(itertools.islice(picked, 36))


def test_rule_reasoning_names_element_change_and_outcome():
    text = rule_reasoning(_transition())
    assert 'button "Submit"' in text and "[4] gets focus" in text and "not met yet" in text
    typed = rule_reasoning(_transition(action='type [5] "Kasie"', next_state='[4] button "Submit"\n[5] input_text value="Kasie" id="tt"'))
    assert 'matches the goal\'s "Kasie"' in typed and 'value becomes "Kasie"' in typed
    assert "reward 1" in rule_reasoning(_transition(reward=1.0, done=True))
    assert "without meeting the goal" in rule_reasoning(_transition(done=True))
    invalid = rule_reasoning(_transition(action="click [9]", next_state=_transition().state, valid_action=False))
    assert "[9] is not on the page" in invalid and "Nothing changes" in invalid
    removed = rule_reasoning(_transition(next_state='[4] button "Submit"\n[7] div "Done"'))
    assert "[7] appears" in removed and "[5] disappears" in removed


def test_rule_v2_also_says_when_the_element_matches_none_of_the_goal():
    wrong = _transition(goal='Click on the "Cancel" button.', done=True)
    assert "matches none" not in rule_reasoning(wrong)
    assert 'The element matches none of the goal\'s "Cancel".' in rule_reasoning(wrong, "v2")
    right = _transition(goal='Click on the "Submit" button.', reward=1.0, done=True)
    assert rule_reasoning(right, "v2") == rule_reasoning(right)  # a match reads the same in both
    typed = _transition(action='type [5] "Kasia"', next_state='[4] button "Submit"\n[5] input_text value="Kasia" id="tt"')
    assert 'The text matches none of the goal\'s "Kasie".' in rule_reasoning(typed, "v2")
    no_terms = _transition(goal="Click the button.")
    assert rule_reasoning(no_terms, "v2") == rule_reasoning(no_terms)
    # v3 names the goal's words before the element and leaves the changes to the patch
    v3 = rule_reasoning(wrong, "v3")
    assert v3.startswith('The goal asks for "Cancel". Click acts on [4] button "Submit".')
    assert v3.endswith('The element matches none. On the page, "Cancel" is nowhere. '
                       "The episode ends without meeting the goal: reward 0.")
    assert "[4] gets focus" in rule_reasoning(wrong, "v2") and "gets focus" not in v3
    submit = _transition(state='[4] button "Submit"\n[5] input_text value="Kasie" id="tt"\n[6] span "Kasie?"',
                         next_state='[4] button "Submit" focused\n[5] input_text value="Kasie" id="tt"\n[6] span "Kasie?"')
    assert 'On the page, "Kasie" is in [5] value, [6].' in rule_reasoning(submit, "v3")
    assert "On the page" not in rule_reasoning(_transition(goal='Click on the "Submit" button.'), "v3")
    boxes = '[5] label "Nck"\n[6] input_radio id="ch0"\n[7] label "oAJ"\n[8] input_radio id="ch1" checked\n[9] button "Submit"'
    radio = _transition(goal="Select Nck and click Submit.", state=boxes, next_state=boxes, action="click [9]", done=True)
    assert 'On the page, "Nck" is by [6] unchecked; other boxes checked: [8].' in rule_reasoning(radio, "v3")
    assert rule_reasoning(no_terms, "v3") == rule_reasoning(no_terms, "v2").replace(" [4] gets focus.", "")
    many = "\n".join(f'[{i}] input_text value="{"a" * 40}" id="c{i}"' for i in range(4, 12))
    crowded = _transition(state=many, next_state=many.replace("a" * 40, "b" * 40), reward=1.0, done=True, action="click [4]")
    assert len(rule_reasoning(crowded, "v2")) == 280 and "reward 1" not in rule_reasoning(crowded, "v2")
    assert rule_reasoning(crowded, "v3").endswith("The goal is met: reward 1, the episode ends.")
    assert len(rule_reasoning(crowded, "v3")) <= 280
    with pytest.raises(ValueError, match="unknown rule version 'v9'"):
        rule_reasoning(wrong, "v9")


def test_rule_v3_reads_every_target_of_the_goal_and_keeps_the_page_whole():
    """v3 compares with the goal's targets whole (a lower-case checkbox label, one with digits, a
    tab's name), which v1/v2's typing candidates miss; with many changes on the page its trace
    keeps the page sentence that decides a Submit whole (the changes are the patch's to say)."""
    assert goal_targets("Select hYtWpy, GK, REe589N and click Submit.") == ["hYtWpy", "GK", "REe589N"]
    assert goal_targets("Select vJc and click Submit.") == ["vJc"]
    assert goal_targets("Select Tanzania from the list and click Submit.") == ["Tanzania"]
    assert goal_targets("Select nothing and click Submit.") == []
    assert goal_targets("Click on Tab #2.") == ["Tab #2"]
    assert goal_targets('Enter the username "vanda" and the password "97xWl" into the text fields and press login.') \
        == ["vanda", "97xWl"]
    names = ["hYtWpy", "GK", "REe589N"]
    boxes = "\n".join(f'[{2 * i + 5}] label "{n}"\n[{2 * i + 6}] input_checkbox id="ch{i}"{" checked" * (i % 2)}'
                      for i, n in enumerate(names)) + '\n[15] button "Submit"'
    changed = "\n".join(f'[{i}] p "{"z" * 20}"' for i in range(16, 26))
    submit = _transition(task_id="click-checkboxes", goal=f"Select {', '.join(names)} and click Submit.", state=boxes,
                         next_state=boxes + "\n" + changed, action="click [15]", done=True)
    text = rule_reasoning(submit, "v3")
    assert text.startswith('The goal asks for "hYtWpy", "GK", "REe589N". Click acts on [15] button "Submit".')
    assert 'On the page, "hYtWpy" is by [6] unchecked; "GK" is by [8] checked; "REe589N" is by [10] unchecked.' in text
    assert text.endswith('unchecked. The episode ends without meeting the goal: reward 0.') and len(text) <= 280
    assert "REe589N" not in rule_reasoning(submit, "v2")  # v1/v2 traces are unchanged
    # a box checked that the goal does not name fails a Submit too; "Select nothing" wants none
    extra = boxes.replace('[15] button "Submit"', '[15] label "GKx"\n[16] input_checkbox id="ch9" checked\n[17] button "Submit"')
    text = rule_reasoning(_transition(goal="Select GK and click Submit.", state=extra, next_state=extra,
                                      action="click [17]", done=True), "v3")
    assert 'On the page, "GK" is by [8] checked; other boxes checked: [16].' in text
    nothing = rule_reasoning(_transition(goal="Select nothing and click Submit.", state=extra, next_state=extra,
                                         action="click [17]", done=True), "v3")
    assert nothing.startswith('Click acts on [17] button "Submit". On the page, boxes checked: [8], [16].')
    tab = _transition(goal="Click on Tab #1.", state='[6] a "Tab #1"\n[7] a "Tab #2"', action="click [7]", done=True,
                      next_state='[6] a "Tab #1"\n[7] a "Tab #2" focused')
    assert 'The goal asks for "Tab #1". Click acts on [7] a "Tab #2". The element matches none.' \
        in rule_reasoning(tab, "v3")
    # v3 compares case-sensitively, as MiniWoB's checks do, and knows the dialog's "x" reads "Close"
    buttons = '[7] button "Close"\n[8] button "previous"\n[9] button "Previous"'
    for goal, action, says in [('Click on the "Previous" button.', "click [8]", "The element matches none."),
                               ('Click the button in the dialog box labeled "x".', "click [7]",
                                'The element matches the goal\'s "x".')]:
        text = rule_reasoning(_transition(goal=goal, state=buttons, next_state=buttons, action=action, done=True), "v3")
        assert says in text, text
    # a field whose id the goal names is named, so swapped username and password read as such
    form = ('[6] label "Username"\n[7] input_text value="dy6" id="username"\n[9] label "Password"\n'
            '[10] input_password value="tora" id="password"\n[11] button "Login"')
    login = _transition(goal='Enter the username "tora" and the password "dy6" into the text fields and press login.',
                        state=form, next_state=form, action="click [11]", done=True)
    assert 'On the page, "tora" is in [10] value (password); "dy6" is in [7] value (username).' \
        in rule_reasoning(login, "v3")
    # a value that only holds the word (a near miss: one character typed too many) is quoted, so
    # the trace tells it from the word itself
    for value, where in [("Myron4", '"Myron" is in [5] value "Myron4".'), ("Myron", '"Myron" is in [5] value.')]:
        field = f'[5] input_text value="{value}" id="tt"\n[6] button "Submit"'
        typed = _transition(goal='Enter "Myron" into the text field and press Submit.', state=field,
                            next_state=field, action="click [6]", done=True)
        assert f"On the page, {where}" in rule_reasoning(typed, "v3")
    # a click-widget goal names a kind of element: v3 compares tags (a label stands for its box)
    page = '[5] button "bfLev"\n[9] label "jP"\n[10] input_checkbox\n[12] input_text value="XEOJE"'
    def widget(action):
        return _transition(goal='Click on a "checkbox" widget.', state=page, next_state=page, done=True, action=action)

    assert 'The element labels [10], a "checkbox" widget.' in rule_reasoning(widget("click [9]"), "v3")
    assert 'The element is a "checkbox" widget.' in rule_reasoning(widget("click [10]"), "v3")
    assert 'The element is not a "checkbox" widget; on the page, [10] is.' \
        in rule_reasoning(widget("click [5]"), "v3")
    assert "a \"checkbox\" widget" not in rule_reasoning(widget("click [5]"), "v2")
    with pytest.raises(ValueError, match="unknown rule version"):
        SFTConfig(reasoning_rule="v9")


def test_rule_v4_copies_the_fields_before_the_judgement():
    """v4 is v3 plus the page's fields and what they hold, written before the sentence that
    judges them, where the element matches none of the goal's words (a Submit, a wrong click)."""
    form = ('[6] label "Username"\n[7] input_text value="tula" id="username"\n[9] label "Password"\n'
            '[10] input_password value="A" id="password"\n[11] button "Login"')
    login = _transition(goal='Enter the username "tula" and the password "AkJz" into the text fields and press login.',
                        state=form, next_state=form, action="click [11]", done=True)
    v3, v4 = rule_reasoning(login, "v3"), rule_reasoning(login, "v4")
    assert v4 == v3.replace('matches none. On the page,',
                            'matches none. Fields: [7] (username) "tula", [10] (password) "A". On the page,')
    assert '"AkJz" is nowhere' in v4 and v4.endswith("The episode ends without meeting the goal: reward 0.")
    empty = _transition(goal='Enter "Riley" into the text field and press Submit.',
                        state='[5] input_text id="tt"\n[6] button "Submit"',
                        next_state='[5] input_text id="tt"\n[6] button "Submit" focused', action="click [6]", done=True)
    assert 'The element matches none. Fields: [5] empty. On the page, "Riley" is nowhere.' in rule_reasoning(empty, "v4")
    typed = _transition(action='type [5] "Kasie"', next_state='[4] button "Submit"\n[5] input_text value="Kasie" id="tt"')
    assert rule_reasoning(typed, "v4") == rule_reasoning(typed, "v3")  # a match needs no fields
    many = "\n".join(f'[{i}] input_text value="{"a" * 40}" id="c{i}"' for i in range(4, 12)) + '\n[12] button "Go"'
    crowded = _transition(state=many, next_state=many, action="click [12]", done=True)
    text = rule_reasoning(crowded, "v4")
    assert f'Fields: [4] "{"a" * 29}…", [5]' in text and "and more." in text and len(text) <= 400


def test_rule_v5_judges_the_order_of_clicks_from_the_earlier_steps():
    """v5 is v4 plus, for a goal that orders its clicks, the buttons clicked so far and whether
    that is the goal's order (click-button-sequence ends at the second button click)."""
    from dreamgym_env.schema import Trajectory

    page = '[4] button "ONE"\n[5] button "TWO"'
    goal = "Click button ONE, then click button TWO."

    def step(k, ref, done=False, reward=0.0):
        return _transition(goal=goal, state=page, next_state=page, action=f"click [{ref}]", step=k, done=done, reward=reward)

    first, right, wrong = step(0, 4), step(1, 5, done=True, reward=1.0), step(1, 4, done=True)
    assert rule_reasoning(first, "v5", []).endswith('matches the goal\'s "ONE". Buttons clicked: "ONE". The goal is not met yet.')
    assert 'Buttons clicked: "ONE", then "TWO": the goal\'s order. The goal is met' in rule_reasoning(right, "v5", [first])
    assert 'Buttons clicked: "ONE", then "ONE": not the goal\'s order. The episode ends' in rule_reasoning(wrong, "v5", [first])
    assert rule_reasoning(wrong, "v4") == rule_reasoning(wrong, "v5", [first]).replace(
        ' Buttons clicked: "ONE", then "ONE": not the goal\'s order.', "")
    assert "Buttons clicked" not in rule_reasoning(_transition(), "v5")  # an unordered goal: v4's trace
    episode = Trajectory(trajectory_id="t0", domain="miniwob", task_id="click-button-sequence", goal=goal, transitions=[first, wrong])
    (annotated,) = annotate_trajectories([episode], "rule", rule_version="v5")
    assert 'then "ONE": not the goal\'s order.' in annotated.transitions[1].reasoning  # annotate passes the earlier steps
    target = annotated.transitions[1].reasoning
    assert [target[a:b] for a, b in judgement_spans(target, len(target))][1:3] == ["not the goal's", "episode ends without meeting the goal"]


def test_rule_v5_judges_an_email_by_its_sender():
    """email-inbox: a star or trash click names its row's sender, a reply's Send its recipient,
    each against the goal's sender; another action than the goal's is said to be one."""
    inbox = ('[6] h2 "Primary"\n[10] div "Ivett"\n[11] div "Diam."\n[12] div "Urna.."\n[15] span class="trash"\n'
             '[16] span class="star"\n[19] div "Silvia"\n[20] div "Et."\n[21] div "Pel.."\n[24] span class="trash"\n'
             '[25] span class="star"')
    star_goal = "Find the email by Silvia and click the star icon to mark it as important."

    def click(ref, goal=star_goal, state=inbox, done=True, reward=0.0):
        return _transition(task_id="email-inbox", goal=goal, state=state, next_state=state, action=f"click [{ref}]",
                           done=done, reward=reward)

    assert 'Its row is by "Silvia": the goal\'s sender. The goal is met' in rule_reasoning(click(25, reward=1.0), "v5")
    assert 'Its row is by "Ivett": not the goal\'s sender. The episode ends' in rule_reasoning(click(16), "v5")
    trash = rule_reasoning(click(24, done=False), "v5")
    assert 'Its row is by "Silvia", but the goal asks for the star icon: not the goal\'s action.' in trash
    reply_page = ('[66] span id="close-reply"\n[67] span id="send-reply"\n[70] label "to:"\n[71] span "Hesther"\n'
                  '[75] textarea value="Arcu." id="reply-text"')
    reply_goal = 'Find the email by Dorita and reply to them with the text "Arcu.".'
    sent = rule_reasoning(click(67, goal=reply_goal, state=reply_page), "v5")
    assert sent.endswith('The reply goes to "Hesther": not the goal\'s sender. The episode ends without meeting the goal: reward 0.')
    assert [sent[a:b] for a, b in judgement_spans(sent, len(sent))][1] == "not the goal's"
    assert rule_reasoning(click(67, goal=reply_goal, state=reply_page), "v4") == sent.replace(
        ' The reply goes to "Hesther": not the goal\'s sender.', "")


def test_annotate_keeps_existing_reasoning_unless_overwrite(trajectories, tmp_path):
    tr = trajectories[:2]
    tr[0].transitions[0].reasoning = "kept"
    done = annotate_trajectories(tr, "rule")
    assert done[0].transitions[0].reasoning == "kept"
    assert all(t.reasoning for traj in done for t in traj.transitions)
    assert annotate_trajectories(tr, "rule", overwrite=True)[0].transitions[0].reasoning != "kept"
    tr[0].transitions[0].reasoning = ""
    with pytest.raises(ValueError, match="needs a backend"):
        annotate_trajectories(tr, "llm")


def test_annotate_cli_writes_annotated_file(trajectories, tmp_path):
    from dreamgym_env.cli import main

    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl.gz"
    write_trajectories(src, trajectories[:3])
    assert main(["annotate", str(src), "-o", str(dst)]) == 0
    out = list(read_trajectories(dst))
    assert len(out) == 3 and all(t.reasoning for traj in out for t in traj.transitions)


def test_llm_annotator_uses_backend_and_falls_back_on_malformed_output(caplog):
    from dreamgym_env.backends.scripted import ScriptedBackend

    answers = iter(['{"reasoning":"The click focuses the button."}', "not json"])
    backend = ScriptedBackend(lambda request: next(answers), latency_s=0.0)
    with caplog.at_level(logging.WARNING):
        texts = LLMAnnotator(backend, batch_size=2)([_transition(), _transition(step=1)])
    assert texts[0] == "The click focuses the button."
    assert texts[1] == rule_reasoning(_transition(step=1))
    assert "using the rule" in caplog.text


def test_examples_render_like_the_env_and_exclude_own_trajectory(trajectories):
    domain = MiniWoBDomain()
    annotated = annotate_trajectories(trajectories, "rule")
    buffer = train_buffer(annotated)
    examples = build_examples(annotated, domain, buffer=buffer, top_k=2, history_length=2)
    assert len(examples) == sum(len(t.transitions) for t in annotated)
    for ex in examples:
        t = ex.transition
        assert all(d.trajectory_id != t.trajectory_id for d in ex.demos)
        assert len(ex.demos) == 2
        out = parse_model_output(ex.target, "patch")
        assert apply_patch(t.state, out.patch) == t.next_state
        assert out.reward == t.reward and out.done == t.done and out.reasoning == t.reasoning
        assert json.loads(ex.target[: ex.reasoning_end] + "}")["reasoning"] == t.reasoning
    # The messages are the env's prompt for the same inputs (one template for SFT and serving).
    ex = next(e for e in examples if e.transition.step == 2)
    traj = next(tr for tr in annotated if tr.trajectory_id == ex.transition.trajectory_id)
    history = [prompts.HistoryStep(s.action, s.reward, s.valid_action) for s in traj.transitions[:2]]
    assert ex.messages == prompts.render_transition(
        domain="miniwob", goal=traj.goal, state=ex.transition.state, action=ex.transition.action,
        history=history, demos=ex.demos, action_help=domain.prompt_action_help(), state_format="patch",
    )
    buffer.close()


def test_tokenized_example_masks_reasoning_then_state(trajectories):
    from transformers import AutoTokenizer

    from dreamgym_env.backends.default_model import build_default_model

    tokenizer = AutoTokenizer.from_pretrained(build_default_model())
    example = build_examples(annotate_trajectories(trajectories[:1], "rule"), MiniWoBDomain())[0]
    row = tokenize_example(tokenizer, example, max_length=4096)
    mask = row["loss_mask"]
    n_prompt = row["prompt_length"]
    assert set(mask[:n_prompt]) == {IGNORE} and IGNORE not in mask[n_prompt:]
    first_state = mask.index(STATE)
    assert set(mask[n_prompt:first_state]) == {REASONING, JUDGEMENT} and set(mask[first_state:]) == {STATE}
    judged = tokenizer.decode([i for i, m in zip(row["input_ids"], mask) if m == JUDGEMENT])
    assert judged.strip() in ("goal is met", "goal is not met yet", "episode ends without meeting the goal"), judged
    assert row["input_ids"][-1] == tokenizer.eos_token_id
    reasoning = tokenizer.decode(row["input_ids"][n_prompt:first_state])
    assert reasoning.startswith('{"reasoning":"') and example.transition.reasoning[:20] in reasoning
    assert tokenize_example(tokenizer, example, max_length=n_prompt) is None


def test_judgement_words_are_found_in_every_rule_v3_trace_and_weighed_in_the_reasoning_term():
    from dreamgym_env.sft.distributed import target_counts

    matched = ('{"reasoning":"The goal asks for \\"Yes\\". Click acts on [4] button \\"Yes\\". The element matches '
               'the goal\'s \\"Yes\\". The goal is met: reward 1, the episode ends.","patch":[]}')
    end = matched.index('","patch"') + 1
    assert [matched[a:b] for a, b in judgement_spans(matched, end)] == ["the goal's", "goal is met"]
    missed = matched.replace("matches the goal's \\\"Yes\\\". The goal is met", "matches none. The episode ends without meeting the goal")
    assert [missed[a:b] for a, b in judgement_spans(missed, len(missed))] == ["none", "episode ends without meeting the goal"]
    assert judgement_spans(matched, matched.index("The element")) == []  # only inside the reasoning
    rows = [{"loss_mask": [IGNORE, REASONING, REASONING, JUDGEMENT, STATE]}, {"loss_mask": [REASONING, JUDGEMENT, STATE]}]
    assert target_counts(rows) == (4.0, 2) and target_counts(rows, judgement_weight=10.0) == (22.0, 2)
    with pytest.raises(ValueError, match="judgement_weight"):
        SFTConfig(judgement_weight=0)


def test_ending_repeats_give_terminal_rows_more_passes_never_twice_in_one_batch():
    from collections import Counter

    from dreamgym_env.sft.train import make_batches

    rows = [{"input_ids": [0] * (10 + i % 7), "terminal": i % 3 == 0} for i in range(300)]
    once = make_batches(rows, batch_tokens=64, seed=0)
    assert sorted(i for b in once for i in b) == list(range(300))
    thrice = make_batches(rows, batch_tokens=64, seed=0, ending_repeats=3)
    counts = Counter(i for b in thrice for i in b)
    assert all(counts[i] == (3 if rows[i]["terminal"] else 1) for i in range(300))
    assert all(len(set(b)) == len(b) and max(len(rows[i]["input_ids"]) for i in b) * len(b) <= 64 for b in thrice)
    with pytest.raises(ValueError, match="ending_repeats"):
        SFTConfig(ending_repeats=0)


def test_sft_trains_resumes_and_exports_a_loadable_model(trajectories, tmp_path):
    from tests.helpers.tiny_model import build_tiny_llama

    from dreamgym_env.backends.base import GenerationRequest
    from dreamgym_env.backends.transformers_backend import TransformersBackend
    from dreamgym_env.schema import OutputLimits, output_json_schema
    from dreamgym_env.sft.train import SFTConfig, train

    data = tmp_path / "data.jsonl"
    write_trajectories(data, trajectories)
    base = build_tiny_llama(tmp_path / "base")
    common = dict(data=[str(data)], output_dir=str(tmp_path / "run"), base_model=str(base), epochs=3,
                  learning_rate=3e-3, warmup_steps=1, batch_tokens=2048, max_length=2048, lora_rank=8,
                  lora_alpha=16, lora_layers=1, eval_examples=8, eval_every=1000, test_fraction=0.2)
    first = train(SFTConfig(**common, max_hours=1e-9))  # stops after one step, with a checkpoint
    assert first["finished"] is False and first["step"] == 1
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    with (tmp_path / "run" / "log.jsonl").open("a") as log:  # a step logged after the checkpoint, then a crash
        log.write(json.dumps({"step": 2, "losses/state": 9.0}) + "\n" + json.dumps({"eval": {"step": 2}}) + "\n")
    result = train(SFTConfig(**common))
    assert result["finished"] and result["steps"] > 1
    log = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "step" in r and "losses/state" in r]
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1))  # resumed, not restarted
    assert steps[-1]["losses/state"] < steps[0]["losses/state"]
    assert {"losses/reasoning", "losses/state"} <= set(steps[0])
    model_dir = tmp_path / "run" / "model"
    card = json.loads((model_dir / "dreamgym_model.json").read_text())
    assert card["prompt_version"] == prompts.PROMPT_VERSION and card["state_format"] == "patch"
    backend = TransformersBackend(model_dir, max_batch_size=2)
    example = build_examples(trajectories[:1], MiniWoBDomain())[0]
    out = backend.generate([GenerationRequest(example.messages, max_tokens=64,
                                              json_schema=output_json_schema("patch", OutputLimits(20, None, 1, 20)))])
    assert out[0].error is None
    parse_model_output(out[0].text, "patch")
    # What `dreamgym serve` hands vLLM: the adapter merged into its base, same greedy answers.
    from dreamgym_env.serving import servable_model_dir

    merged = servable_model_dir(model_dir)
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    assert servable_model_dir(model_dir) == merged  # built once
    from dreamgym_env.backends.default_model import resolve_model

    assert resolve_model(merged).prompt_version == card["prompt_version"]  # the card travels with it
    from safetensors.torch import load_file

    trained = load_file(merged / "model.safetensors")
    original = load_file(base / "model.safetensors")
    top = "model.layers.1.self_attn.q_proj.weight"  # lora_layers=1 adapts only the top layer
    assert not torch.equal(trained[top], original[top])  # the trained adapter was loaded and merged
    assert torch.equal(trained["model.layers.0.self_attn.q_proj.weight"], original["model.layers.0.self_attn.q_proj.weight"])
    again = TransformersBackend(merged, max_batch_size=2).generate([GenerationRequest(
        example.messages, max_tokens=64, json_schema=output_json_schema("patch", OutputLimits(20, None, 1, 20)))])
    assert again[0].text == out[0].text


def test_eval_model_scores_an_oracle_perfect_and_copying_at_the_copy_baseline(trajectories, tmp_path):
    from dataclasses import asdict

    from dreamgym_env.backends.scripted import ScriptedBackend
    from dreamgym_env.sft.data import load_split
    from dreamgym_env.sft.evaluate import evaluate_model, format_table
    from dreamgym_env.sft.train import SFTConfig

    data = tmp_path / "data.jsonl"
    write_trajectories(data, trajectories)
    cfg = SFTConfig(data=[str(data)], test_fraction=0.3, held_out_families=["click-test"])
    card = {"config": asdict(cfg)}
    split = load_split([str(data)], test_fraction=0.3, held_out_families=["click-test"])
    # families= keeps some families' episodes, split as they would be in a file of theirs alone
    only = load_split([str(data)], test_fraction=0.3, families=["enter-text", "click-test"]).manifest()
    alone = tmp_path / "alone.jsonl"
    write_trajectories(alone, [t for t in trajectories if t.task_id in ("enter-text", "click-test")])
    assert only == load_split([str(alone)], test_fraction=0.3).manifest() and only["test"]
    with pytest.raises(ValueError, match="not in the data"):
        load_split([str(data)], families=["click-tset"])
    buffer = train_buffer(split.train)
    truth = {e.messages[1]["content"]: e.target
             for e in build_examples(split.test, MiniWoBDomain(), buffer=buffer, top_k=2, history_length=2)}
    buffer.close()
    oracle = evaluate_model(ScriptedBackend(lambda r: truth[r.messages[1]["content"]]), card=card)
    for row in (oracle.seen, oracle.held_out_families):
        assert row["transitions"] > 0
        assert row["valid_output"] == row["reward_done_acc"] == row["exact_non_terminal"] == 1.0
        assert row["element_f1_non_terminal"] == 1.0
    assert oracle.seen["copy_exact_non_terminal"] < 1.0

    def copy(request):
        return '{"reasoning":"","patch":[],"reward":0,"done":false,"valid_action":true}'

    copying = evaluate_model(ScriptedBackend(copy), card=card)
    assert copying.seen["exact_non_terminal"] == copying.seen["copy_exact_non_terminal"]
    assert copying.seen["exact_state_changing"] == 0.0
    broken = evaluate_model(ScriptedBackend(lambda r: "not json"), card=card)
    assert broken.seen["valid_output"] == 0.0 and broken.seen["reward_done_acc"] == 0.0
    assert "held-out families" in format_table(oracle)
    elsewhere = {"config": asdict(SFTConfig(data=[str(tmp_path / "gone.jsonl")], test_fraction=0.3,
                                            held_out_families=["click-test"]))}
    overridden = evaluate_model(ScriptedBackend(lambda r: truth[r.messages[1]["content"]]), card=elsewhere,
                                data=[str(data)])  # --data: the same split, from another file list
    for mine, theirs in ((overridden.seen, oracle.seen), (overridden.held_out_families, oracle.held_out_families)):
        assert json.dumps(mine, sort_keys=True) == json.dumps(theirs, sort_keys=True)  # NaN-safe equality
    sample = evaluate_model(ScriptedBackend(lambda r: truth[r.messages[1]["content"]]), card=card, max_per_group=2)
    assert sample.seen["transitions"] == sample.held_out_families["transitions"] == 2
    assert sample.seen["valid_output"] == sample.held_out_families["reward_done_acc"] == 1.0
    assert len(sample.answers) == 4 and all(a["answer"] in truth.values() for a in sample.answers)
    failed = evaluate_model(ScriptedBackend(lambda r: truth[r.messages[1]["content"]]), card=card, endings="failed")
    real_failures = [t for t in split.test if t.transitions[-1].done and t.transitions[-1].reward <= 0]
    assert real_failures, "the fixture needs failed episodes in the test split"
    assert failed.seen["transitions"] + failed.held_out_families["transitions"] == len(real_failures)
    assert failed.seen["failed_endings"] == failed.seen["transitions"] and failed.seen["successful_endings"] == 0
    assert {(a["trajectory_id"], a["step"]) for a in failed.answers} == {
        (t.trajectory_id, t.transitions[-1].step) for t in real_failures}
    with pytest.raises(ValueError, match="endings must be one of"):
        evaluate_model(ScriptedBackend(copy), card=card, endings="lost")


def test_card_data_named_inside_the_package_resolves_from_any_directory(tmp_path, monkeypatch):
    """A shipped model's card names its data as ``dreamgym_env/data/...``: that resolves from any
    working directory; a path that exists is kept as given, and an unknown one is left to fail."""
    from dreamgym_env.backends.default_model import data_file

    monkeypatch.chdir(tmp_path)
    named = "dreamgym_env/data/miniwob/miniwob_real_v0.jsonl.gz"
    assert data_file(named) == str(real_dataset_path().resolve())
    (tmp_path / "mine.jsonl").write_text("")
    assert data_file("mine.jsonl") == "mine.jsonl"
    assert data_file("dreamgym_env/data/miniwob/nope.jsonl.gz") == "dreamgym_env/data/miniwob/nope.jsonl.gz"


def test_env_retrieves_from_the_data_its_model_was_trained_on(tmp_path, monkeypatch):
    """The MiniWoB default buffer holds the shipped model card's data (the demos of its training
    prompts came from there); a card naming none gives the package's v0 collection."""
    import dreamgym_env.backends.default_model as default_model
    import dreamgym_env.buffer.defaults as defaults
    from dreamgym_env.backends.default_model import MODEL_CARD, card_data_files
    from dreamgym_env.domains.miniwob.domain import MiniWoBDomain

    v1 = "dreamgym_env/data/miniwob/miniwob_real_random_v1.jsonl.gz"
    model = tmp_path / "model"
    model.mkdir()
    assert card_data_files(model) is None  # no card
    (model / MODEL_CARD).write_text(json.dumps({"config": {"data": []}}))
    assert card_data_files(model) is None  # the domain's own data
    (model / MODEL_CARD).write_text(json.dumps({"config": {"data": [v1]}}))
    monkeypatch.chdir(tmp_path)  # the card's package path resolves from anywhere
    assert card_data_files(model) == [default_model.data_file(v1)]
    assert Path(card_data_files(model)[0]).is_file()

    seeded = {}
    monkeypatch.setattr(defaults, "seeded_buffer", lambda name, files, root=None: seeded.setdefault(name, list(files)))
    domain = MiniWoBDomain()
    monkeypatch.setattr(domain, "default_model", lambda: str(model))
    domain.default_buffer()
    assert seeded["miniwob"] == card_data_files(model)
    seeded.clear()
    (model / MODEL_CARD).write_text(json.dumps({"config": {"data": []}}))
    domain.default_buffer()
    assert seeded["miniwob"] == [str(real_dataset_path())]


def test_summary_splits_episode_endings_by_real_outcome():
    """A model that rewards every ending is right on every success and wrong on every failure;
    the outcome split shows it where the overall reward accuracy reads 0.875."""
    from dreamgym_env.sft.evaluate import Scored, summarize

    def ending(succeeded: bool, predicted_reward: float) -> Scored:
        return Scored(valid=True, reward_ok=predicted_reward == float(succeeded), done_ok=True, exact=True,
                      copy_exact=False, terminal=True, changed=True, f1=1.0, task_id="click-button",
                      succeeded=succeeded)

    generous = [ending(True, 1.0), ending(True, 1.0), ending(False, 1.0), ending(False, 0.0)]
    row = summarize(generous + [Scored(True, True, True, True, True, False, False, 1.0, "click-button", False)] * 4)
    assert row["reward_acc"] == 0.875
    assert (row["successful_endings"], row["reward_acc_successful_endings"]) == (2, 1.0)
    assert (row["failed_endings"], row["reward_acc_failed_endings"]) == (2, 0.5)


def test_ablation_switches_no_reasoning_and_from_scratch(trajectories, tmp_path):
    """--no-reasoning trains answers with an empty reasoning; --init scratch starts from random
    weights of the base's architecture (and refuses LoRA)."""
    from tests.helpers.tiny_model import build_tiny_llama

    from dreamgym_env.sft.data import load_split
    from dreamgym_env.sft.train import SFTConfig, load_model, prepare_dataset, train

    data = tmp_path / "data.jsonl"
    write_trajectories(data, trajectories)
    split = load_split([str(data)], test_fraction=0.2, reasoning=False)
    assert all(t.reasoning == "" for tr in split.train + split.test for t in tr.transitions)
    assert any(t.reasoning for tr in load_split([str(data)], test_fraction=0.2).train for t in tr.transitions)

    base = build_tiny_llama(tmp_path / "base")
    common = dict(data=[str(data)], base_model=str(base), epochs=1, warmup_steps=1, batch_tokens=2048,
                  max_length=2048, eval_examples=4, eval_every=1000, test_fraction=0.2)
    cfg = SFTConfig(**common, output_dir=str(tmp_path / "no-reasoning"), reasoning=False, lora_rank=8, lora_layers=1)
    tokenizer, _, _ = load_model(cfg, "cpu")
    rows = prepare_dataset(cfg, tokenizer)["train"]
    reasoning_tokens = [sum(1 for m in r["loss_mask"] if m == REASONING) for r in rows]
    assert max(reasoning_tokens) <= 8  # only '{"reasoning":""' is left of the reasoning term

    with pytest.raises(ValueError, match="lora-rank 0"):
        SFTConfig(**common, init="scratch")
    scratch = SFTConfig(**common, output_dir=str(tmp_path / "scratch"), init="scratch", lora_rank=0)
    _, model, _ = load_model(scratch, "cpu")
    from safetensors.torch import load_file

    pretrained = load_file(base / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(model.state_dict()["model.layers.0.self_attn.q_proj.weight"], pretrained)
    assert train(scratch)["finished"]


def test_precision_picks_bf16_autocast_from_the_hardware_and_trains_under_it(trajectories, tmp_path):
    from tests.helpers.tiny_model import build_tiny_llama

    from dreamgym_env.device import cpu_has_fast_bf16
    from dreamgym_env.sft.train import SFTConfig, bf16_autocast, train

    assert bf16_autocast("cpu", "auto") == cpu_has_fast_bf16()  # fp32 on AVX2-only CPUs
    assert bf16_autocast("cuda", "auto") and bf16_autocast("cpu", "bf16")
    assert not bf16_autocast("cuda", "fp32")
    with pytest.raises(ValueError, match="precision must be"):
        SFTConfig(precision="fp16")
    data = tmp_path / "data.jsonl"
    write_trajectories(data, trajectories)
    cfg = SFTConfig(data=[str(data)], output_dir=str(tmp_path / "run"), base_model=str(build_tiny_llama(tmp_path / "base")),
                    epochs=3, learning_rate=3e-3, warmup_steps=1, batch_tokens=2048, max_length=2048, lora_rank=8,
                    lora_alpha=16, lora_layers=1, eval_examples=4, eval_every=1000, test_fraction=0.2, precision="bf16")
    result = train(cfg)
    assert result["finished"] and result["precision"] == "bf16 autocast"
    steps = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["losses/state"] for r in steps if "losses/state" in r]
    assert losses[-1] < losses[0]  # it learns under autocast too


def test_init_adapter_continues_a_trained_adapter_on_a_new_prompt_version(trajectories, tmp_path):
    """A model moves to a new prompt version by continuing its adapter: the new run starts from
    the exported weights, trains on v3 prompts (the action line names its element) and its card
    says v3; an adapter of another rank is refused with a short error."""
    from safetensors.torch import load_file

    from tests.helpers.tiny_model import build_tiny_llama

    from dreamgym_env.sft.train import SFTConfig, load_model, prepare_dataset, train

    data = tmp_path / "data.jsonl"
    write_trajectories(data, trajectories)
    base = build_tiny_llama(tmp_path / "base")
    common = dict(data=[str(data)], base_model=str(base), epochs=1, warmup_steps=1, batch_tokens=2048,
                  max_length=2048, eval_examples=4, eval_every=1000, test_fraction=0.2, lora_rank=8,
                  lora_alpha=16, lora_layers=1)
    train(SFTConfig(**common, output_dir=str(tmp_path / "v2"), prompt_version="v2"))
    adapter = tmp_path / "v2" / "model"
    cfg = SFTConfig(**{**common, "epochs": 0.5}, output_dir=str(tmp_path / "v3"), init_adapter=str(adapter),
                    prompt_version="v3")
    tokenizer, model, _ = load_model(cfg, "cpu")
    saved = load_file(adapter / "adapter_model.safetensors")
    ours = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    assert ours.keys() == saved.keys()
    assert all(torch.equal(ours[k], saved[k].float()) for k in saved)  # bf16 export, copied exactly
    rows = prepare_dataset(cfg, tokenizer)["train"]
    prompt = tokenizer.decode(rows[0]["input_ids"][: rows[0]["prompt_length"]])
    action = next(l for l in prompt.splitlines() if l.startswith("Action: "))
    assert " on " in action, action
    result = train(cfg)
    assert result["finished"]
    card = json.loads((tmp_path / "v3" / "model" / "dreamgym_model.json").read_text())
    assert card["prompt_version"] == "v3"
    parent = json.loads((adapter / "dreamgym_model.json").read_text())
    assert card["continued_from"]["steps"] == parent["steps"] and card["continued_from"]["prompt_version"] == "v2"
    log = [json.loads(l) for l in (tmp_path / "v3" / "log.jsonl").read_text().splitlines()]
    assert abs([r for r in log if "epoch" in r][-1]["epoch"] - 0.5) < 0.2  # in whole epochs, not of the 0.5
    from dreamgym_env.backends.default_model import resolve_model

    assert resolve_model(tmp_path / "v3" / "model").prompt_version == "v3"
    with pytest.raises(ValueError, match="does not match the LoRA configured here"):
        load_model(SFTConfig(**{**common, "lora_rank": 4}, output_dir=str(tmp_path / "x"), init_adapter=str(adapter)), "cpu")
    with pytest.raises(ValueError, match="unknown prompt version"):
        SFTConfig(prompt_version="v0")


def test_v4_heads_each_demo_with_its_goal_and_keeps_the_system_text_to_one_line():
    from dreamgym_env.schema import Transition as T

    state = '[4] button "Submit"\n[6] button "Cancel"'
    demo = T(trajectory_id="d", step=0, domain="miniwob", task_id="click-button", goal='Click on the "Cancel" button.',
             state=state, action="click [6]", next_state=state.replace('"Cancel"', '"Cancel" focused'), reward=1.0, done=True)
    kwargs = dict(domain="miniwob", goal='Click on the "submit" button.', state=state, action="click [6]", history=[],
                  demos=[demo], action_help="", state_format="patch")
    system, user = (m["content"] for m in prompts.render_transition(version="v4", **kwargs))
    assert '- goal Click on the "Cancel" button. | click [6] on button "Cancel" => reward 1, done' in user
    assert system == "You simulate a miniwob web environment. Answer JSON: reasoning, patch, reward, done, valid_action."
    system3, user3 = (m["content"] for m in prompts.render_transition(version="v3", **kwargs))
    assert "goal Click" not in user3 and '- click [6] on button "Cancel" => reward 1, done' in user3
    assert "reward: 1 only if the action completes the goal" in system3  # what the shipped model reads
    long_goal = T(**{**demo.__dict__, "goal": "x " * 200})
    assert len(prompts.render_demo(long_goal, "patch", "v4").split(" | ")[0]) <= len("- goal ") + prompts.DEMO_GOAL_CHARS
    # v5: the demo shows what the click does to the page, not another goal's reward.
    system5, user5 = (m["content"] for m in prompts.render_transition(version="v5", **kwargs))
    assert system5 == system
    assert '- click [6] on button "Cancel" => episode ends\n  [6] button "Cancel" focused' in user5
    assert "reward" not in user5 and "goal Click" not in user5
    going_on = T(**{**demo.__dict__, "done": False, "reward": 0.0})
    assert prompts.render_demo(going_on, "patch", "v5").startswith('- click [6] on button "Cancel" => episode goes on\n')


def test_v3_action_line_names_the_element_and_v2_does_not():
    state = '[4] button "Submit"\n[5] input_text id="tt"'
    kwargs = dict(domain="miniwob", goal="g", state=state, history=[], demos=[], action_help="", state_format="patch")
    v3 = prompts.render_transition(action="click [4]", version="v3", **kwargs)[-1]["content"]
    assert v3.endswith('Action: click [4] on button "Submit"')
    assert prompts.render_transition(action="click [4]", version="v2", **kwargs)[-1]["content"].endswith("Action: click [4]")
    # No such element (or no ref at all): the action as it is.
    assert prompts.render_transition(action="click [9]", version="v3", **kwargs)[-1]["content"].endswith("Action: click [9]")
    assert prompts.describe_action(state, 'type [5] "hi"') == 'type [5] "hi" on input_text id="tt"'
