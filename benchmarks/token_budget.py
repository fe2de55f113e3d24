"""Where the tokens of an experience-model step go, and what cutting each part would save.

Training and serving both pay per token (training: forward and backward over the whole example;
serving: prefill of the prompt, decoding of the answer), so the format decides the budget. This
builds SFT examples exactly as ``dreamgym sft`` does (same split, retrieval, chat template,
reasoning rule) for a sample of training transitions and counts the SmolLM2 tokens of each part:

- prompt: chat template and system instructions (the same in every prompt), goal, retrieved
  demos, previous actions, state, action line;
- answer: the reasoning's sentences (goal words, acted element, match, page, *changes*, outcome),
  the patch, and the reward/done/valid_action tail.

The reasoning's "changes" sentence restates what the patch then lists; the system text is
fixed. Also checks the env's per-request answer budget (``Domain.answer_token_budget``) against
every answer. Prints the mean per part, its share, tokens per epoch of the whole training split, and
the tokens a step would cost without each cuttable part. Fidelity effects need a retrain and
are not measured here.

    python benchmarks/token_budget.py --sample 600
    python benchmarks/token_budget.py --data dreamgym_env/data/miniwob/*.jsonl.gz
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import statistics
from collections import defaultdict
from pathlib import Path

from dreamgym_env.domains import make_domain
from dreamgym_env.domains.base import half_prompt_characters
from dreamgym_env.sft.data import load_split, prompt_text, train_buffer
from dreamgym_env.sft.examples import build_examples

SECTIONS = (("goal", "Goal: "), ("demos", "Similar real transitions:"), ("history", "Previous actions:"),
            ("state", "State:"), ("action", "Action: "))
SENTENCES = (("goal words", r"^The goal asks"), ("acted element", r"acts on \["), ("match", r"^The element"),
             ("page", r"^On the page"), ("outcome", r"^The goal is|^The episode|reward 1"))


def user_sections(content: str) -> dict[str, str]:
    """The user message cut at its section headers."""
    starts = sorted((content.find(h), name) for name, h in SECTIONS if content.find(h) >= 0)
    out = {}
    for (start, name), nxt in zip(starts, starts[1:] + [(len(content), "")]):
        out[name] = content[start:nxt[0]]
    return out


def reasoning_sentences(reasoning: str) -> dict[str, str]:
    """The reasoning cut into sentences, each named by what it says (else 'changes')."""
    out: dict[str, str] = defaultdict(str)
    for sentence in re.split(r"(?<=\.) (?=[A-Z\[\"])", reasoning):
        name = next((n for n, pattern in SENTENCES if re.search(pattern, sentence)), "changes")
        out[name] += sentence + " "
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=None, help="trajectory files (default: every shipped MiniWoB file)")
    parser.add_argument("--sample", type=int, default=600, help="training transitions to count")
    parser.add_argument("--prompt-version", default="v4")
    parser.add_argument("--reasoning-rule", default="v3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from dreamgym_env.backends.default_model import build_default_model

    files = args.data or sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "dreamgym_env" / "data" / "miniwob").glob("*.jsonl.gz"))
    tok = AutoTokenizer.from_pretrained(build_default_model())
    n = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    domain = make_domain("miniwob")
    split = load_split(files, test_fraction=0.1, held_out_families=["click-option", "click-tab", "enter-password"],
                       seed=0, reasoning=True, rule_version=args.reasoning_rule)
    train_steps = sum(len(t.transitions) for t in split.train)
    rng = random.Random(args.seed)
    trajectories = list(split.train)
    rng.shuffle(trajectories)
    sample, count = [], 0
    for t in trajectories:
        if count >= args.sample:
            break
        sample.append(t)
        count += len(t.transitions)
    buffer = train_buffer(split.train)
    examples = build_examples(sample, domain, buffer=buffer, top_k=domain.default_top_k,
                              history_length=domain.default_history_length, state_format="patch",
                              prompt_version=args.prompt_version)
    buffer.close()

    parts: dict[str, list[int]] = defaultdict(list)
    totals, prompts, answers = [], [], []
    beyond, over_budget = [], 0  # answer tokens beyond half the prompt's characters; answers over the env's budget
    for e in examples:
        prompt = n(prompt_text(tok, e.messages))
        answer = n(e.target) + 1  # and the end-of-turn token
        system = next(m["content"] for m in e.messages if m["role"] == "system")
        user = next(m["content"] for m in e.messages if m["role"] == "user")
        sections = user_sections(user)
        counted = {name: n(text) for name, text in sections.items()}
        parts["prompt: system instructions + template"].append(prompt - sum(counted.values()))
        for name, _ in SECTIONS:
            parts[f"prompt: {name}"].append(counted.get(name, 0))
        target = json.loads(e.target)
        sentences = reasoning_sentences(target["reasoning"])
        said = {name: n(json.dumps(text.strip())[1:-1]) for name, text in sentences.items()}
        for name in [s for s, _ in SENTENCES] + ["changes"]:
            parts[f"answer: reasoning, {name}"].append(said.get(name, 0))
        patch = n(json.dumps(target["patch"], ensure_ascii=False, separators=(",", ":")))
        parts["answer: patch"].append(patch)
        parts["answer: JSON keys, reward, done, valid, end"].append(answer - sum(said.values()) - patch)
        beyond.append(answer - half_prompt_characters(e.messages))
        over_budget += answer > domain.answer_token_budget(e.messages)
        totals.append(prompt + answer)
        prompts.append(prompt)
        answers.append(answer)
        parts["_system_only"].append(n(system))

    mean_total = statistics.mean(totals)
    print(f"token budget: {len(examples)} training examples of {len(sample)} episodes (seed {args.seed}), prompt "
          f"{args.prompt_version}, rule {args.reasoning_rule}, top_k {domain.default_top_k}, history "
          f"{domain.default_history_length}; data {', '.join(Path(f).name for f in files)}; python {platform.python_version()}")
    print(f"mean tokens a step: {mean_total:.0f} (prompt {statistics.mean(prompts):.0f}, answer {statistics.mean(answers):.0f}); "
          f"median {statistics.median(totals):.0f}, p90 {sorted(totals)[int(0.9 * len(totals))]}")
    print(f"training split: {train_steps:,} transitions, ~{train_steps * mean_total / 1e6:.2f}M tokens an epoch")
    print(f"answer budget (the env's max_tokens a request): at most {domain.answer_tokens_beyond_prompt} tokens beyond "
          f"half the prompt's characters, at most {domain.max_output_tokens}; the longest real answer is "
          f"{max(beyond)} tokens beyond half its prompt's characters; {over_budget} of {len(examples)} answers over "
          f"the budget\n")
    print("| part | mean tokens | share of a step |")
    print("|---|---:|---:|")
    for name, values in parts.items():
        if name.startswith("_"):
            continue
        print(f"| {name} | {statistics.mean(values):.1f} | {statistics.mean(values) / mean_total:.1%} |")
    cut = {
        "no 'changes' sentence in the reasoning": statistics.mean(parts["answer: reasoning, changes"]),
        "no system instructions (template kept)": statistics.mean(parts["_system_only"]),
        "one demo instead of two": statistics.mean(parts["prompt: demos"]) / 2,
        "no previous actions": statistics.mean(parts["prompt: history"]),
    }
    print("\n| cut | tokens saved a step | share | tokens an epoch |")
    print("|---|---:|---:|---:|")
    for name, saved in cut.items():
        print(f"| {name} | {saved:.1f} | {saved / mean_total:.1%} | {train_steps * (mean_total - saved) / 1e6:.2f}M |")


if __name__ == "__main__":
    main()
