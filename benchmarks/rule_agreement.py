"""Does a reasoning rule (v3 by default) say enough to decide the reward? Reads the final step
of every real episode and checks, per family, whether the trace's judgement (before its outcome
sentence) agrees with the real reward:

- click-checkboxes / click-option Submits: the page sentence has every goal word checked and no
  other box checked;
- click-widget: "The element is a ... widget" or "labels [N], a ... widget";
- login-user: the username and password are the whole values of the fields of those ids;
- enter-text, enter-password, choose-list Submits: every goal word is a field's whole value (both
  fields for enter-password); use-autocomplete Submits: every goal word is in a field's value;
- click-button-sequence (rule v5): "Buttons clicked: ...: the goal's order.";
- email-inbox (rule v5): a star or trash click: "Its row is by ...: the goal's sender."; a
  reply's Send: "The reply goes to ...: the goal's sender." and the goal's text the whole value
  of a field ("...: not the goal's action." when the goal asks for another action); other
  endings (a forward's Send: its original sender is not on the page): "matches the goal's";
- other families: "The element/text matches the goal's ...".

    python benchmarks/rule_agreement.py [DATA.jsonl.gz ...] [--rule-version v3]

Prints, per family, agree / endings. The rule has no judgement where the goal names no words
(click-test, focus-text, click-collapsible: printed "-"), and cannot judge from one step the
order of click-button-sequence or whose email an email-inbox click acts on (v5 reads both: the
episode's earlier clicks, the inbox row or the reply's recipient); those read low before v5.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections import Counter

from dreamgym_env.collect import read_trajectories
from dreamgym_env.domains.miniwob.serialize import goal_targets
from dreamgym_env.schema import Transition
from dreamgym_env.sft.annotate import RULE_VERSIONS, rule_reasoning

logger = logging.getLogger(__name__)

#: Families whose goal names no words to compare with.
NO_JUDGEMENT = ("click-test", "focus-text", "click-collapsible")

DEFAULT_DATA = ["dreamgym_env/data/miniwob/miniwob_real_v0.jsonl.gz",
                "dreamgym_env/data/miniwob/miniwob_real_random_v1.jsonl.gz"]


def _where(page: str, term: str) -> str:
    """What the page sentence says of ``term`` ("in [7] value (username)", "by [6] checked", ...)."""
    quoted = f"{json.dumps(term, ensure_ascii=False)} is "
    return page.split(quoted, 1)[1].split(";")[0] if quoted in page else ""


def _exact_values(where: str) -> int:
    """Fields whose value is the word itself ("[7] value", "[7] value (password)"); a value that
    only holds the word is quoted after it ("[7] value "rex6"") and does not count."""
    return len(re.findall(r'value(?: \([^)]*\))?(?! ")', where))


def judged_success(family: str, transition: Transition, trace: str) -> bool:
    """What the trace's judgement says of the episode's last step (see the module docstring)."""
    judgement = trace.rsplit(" The ", 1)[0]  # drop the outcome sentence
    if family in ("click-checkboxes", "click-option") and 'button "Submit"' in judgement:
        page = judgement.split("On the page, ", 1)[-1]
        return "unchecked" not in page and "boxes checked" not in page and "nowhere" not in page
    if family == "click-widget":
        return " widget." in judgement and "is not a" not in judgement
    if family in ("enter-text", "enter-password", "choose-list", "use-autocomplete") and "Submit" in judgement:
        page = judgement.split("On the page, ", 1)[-1]
        need = 2 if family == "enter-password" else 1  # both fields
        if family == "use-autocomplete":  # the goal names a prefix (and suffix) of the entry
            return all(_where(page, term).count("value") >= need for term in goal_targets(transition.goal))
        return all(_exact_values(_where(page, term)) >= need for term in goal_targets(transition.goal))
    if family == "click-button-sequence" and "Buttons clicked: " in judgement:
        return judgement.endswith(": the goal's order.")
    if family == "email-inbox" and "the goal's sender." in judgement:
        if "not the goal's sender." in judgement:
            return False
        if "Its row is by " in judgement:  # a star or trash click of the goal's kind
            return True
        text = re.search(r'with the text "(.*)"\.$', transition.goal)
        page = judgement.split("On the page, ", 1)[-1]
        return text is not None and _exact_values(_where(page, text.group(1))) >= 1
    if family == "email-inbox" and "not the goal's action." in judgement:
        return False
    if family == "login-user":
        user, password = (goal_targets(transition.goal) + ["", ""])[:2]
        page = judgement.split("On the page, ", 1)[-1]
        return (re.search(r'value \(username\)(?! ")', _where(page, user)) is not None
                and re.search(r'value \(password\)(?! ")', _where(page, password)) is not None)
    return "matches the goal's" in judgement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*", default=DEFAULT_DATA)
    parser.add_argument("--rule-version", default="v3", choices=RULE_VERSIONS,
                        help="score another version's traces the same way (v1/v2 have no page sentence)")
    args = parser.parse_args()
    counts: dict[str, Counter] = {}
    for path in args.data:
        for trajectory in read_trajectories(path):
            last = trajectory.transitions[-1]
            if not last.done:
                continue
            trace = rule_reasoning(last, args.rule_version, trajectory.transitions[:-1])
            agree = judged_success(trajectory.task_id, last, trace) == (last.reward > 0)
            counts.setdefault(trajectory.task_id, Counter())[agree] += 1
    print(f"{'family':24s} agree / endings")
    total = Counter()
    for family, count in sorted(counts.items()):
        if family in NO_JUDGEMENT:
            print(f"{family:24s} {'-':>4s} / {count[True] + count[False]}")
            continue
        total.update(count)
        print(f"{family:24s} {count[True]:4d} / {count[True] + count[False]}")
    print(f"{'judged families':24s} {total[True]:4d} / {total[True] + total[False]}")


if __name__ == "__main__":
    main()
