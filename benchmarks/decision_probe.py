"""Where a trained experience model decides a reward, does it compare the goal with the element,
or copy something else? A teacher-forced probe of the judgement in rule v2-v4 traces.

Those traces judge the acted element in one word: "The element matches the goal's ..." or
"The element matches none." (then the outcome). Given the real prompt and the real answer up to
"matches", the model's next-token logits of " the" and " none" say which judgement it would
write; no sampling, one forward pass an example. Printed per task family: how often it judges
right when the element does match the goal (gold "match", mostly successful endings) and when it
does not (gold "none", failed endings), and, where the prompt's demos show a reward (prompt v2-v4),
how often the judgement follows the *first demo's* reward instead: a model that learnt the
comparison follows the gold answer; one that learnt a shortcut follows the demo.

A second table covers every judgement a trace states (rule v5's order of clicks and email
sender too, and the outcome sentence): per family and gold outcome of the ending, the share whose
judgement words (the tokens ``sft.data.judgement_spans`` marks; dataset caches built since the
judgement mask) are all the model's greedy choice under teacher forcing.

The examples are an SFT dataset cache as ``dreamgym sft`` writes it (``OUTPUT_DIR/dataset.pt``:
same split, retrieval, prompt and rule as that run); the model is a directory ``dreamgym sft``
exported (LoRA adapter and card) or a training checkpoint of the same run.

    python benchmarks/decision_probe.py --dataset runs/diag/dataset.pt --model runs/miniwob-v1/model
    python benchmarks/decision_probe.py --dataset runs/diag/dataset.pt --checkpoint runs/diag/checkpoint.pt \\
        --lora-layers 12 --lora-rank 64 --split train --limit 200

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
from collections import defaultdict
from pathlib import Path

_DEMO_REWARD = re.compile(r"=> reward (\d)")


def load_probe_model(model_dir: str | None, checkpoint: str | None, lora_layers: int, lora_rank: int,
                     lora_alpha: int):
    """(tokenizer, model) with the adapter of ``model_dir`` or the trained weights of ``checkpoint``."""
    from dreamgym_env.sft.train import (
        SFTConfig,
        load_adapter_weights,
        load_checkpoint_weights,
        load_model,
    )

    if model_dir is not None:
        config = json.loads((Path(model_dir) / "adapter_config.json").read_text())
        layers = config.get("layers_to_transform")
        lora_rank, lora_alpha = int(config["r"]), int(config["lora_alpha"])
        lora_layers = len(layers) if layers else 0
    tokenizer, model, _ = load_model(SFTConfig(output_dir="/tmp/decision-probe", lora_layers=lora_layers,
                                               lora_rank=lora_rank, lora_alpha=lora_alpha), "cpu")
    if model_dir is not None:
        load_adapter_weights(model, Path(model_dir))
    else:
        load_checkpoint_weights(Path(checkpoint), model)
    return tokenizer, model.eval()


def judgement_position(tokenizer, ids: list[int], prompt_length: int, choices: tuple[int, int]) -> int | None:
    """Index of the token after which the answer writes " the"/" none" right after "matches"."""
    for i in range(prompt_length, len(ids) - 1):
        if ids[i + 1] in choices and tokenizer.decode(ids[prompt_length : i + 1]).endswith("The element matches"):
            return i
    return None


def print_family_table(counts: dict[str, dict[str, list[int]]], columns: dict[str, str]) -> None:
    """A markdown table of ``counts`` (family -> column key -> [right, n]): a row per family, one
    "right / n" column per key of ``columns`` (key -> heading), and a bold total row."""
    print("| family | " + " | ".join(f"{heading}: right / n" for heading in columns.values()) + " |")
    print("|---|" + "---:|" * len(columns))
    total = {key: [0, 0] for key in columns}
    for family, cells in sorted(counts.items()):
        for key in columns:
            total[key][0] += cells[key][0]
            total[key][1] += cells[key][1]
        print(f"| {family} | " + " | ".join(f"{cells[k][0]} / {cells[k][1]}" for k in columns) + " |")
    print("| **all** | " + " | ".join(f"**{total[k][0]} / {total[k][1]}**" for k in columns) + " |")


def main() -> None:
    import torch

    from dreamgym_env.device import cpu_description
    from dreamgym_env.sft.data import JUDGEMENT

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="OUTPUT_DIR/dataset.pt of a dreamgym sft run")
    parser.add_argument("--split", choices=["test", "train"], default="test")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="a model directory written by dreamgym sft (LoRA adapter)")
    who.add_argument("--checkpoint", help="OUTPUT_DIR/checkpoint.pt of a dreamgym sft run")
    parser.add_argument("--lora-layers", type=int, default=12, help="with --checkpoint: the run's --lora-layers")
    parser.add_argument("--lora-rank", type=int, default=64, help="with --checkpoint: the run's --lora-rank")
    parser.add_argument("--lora-alpha", type=int, default=128, help="with --checkpoint: the run's --lora-alpha")
    parser.add_argument("--limit", type=int, default=None, help="first N terminal examples only")
    parser.add_argument("--per-family", type=int, default=None, help="first N terminal examples of each family only")
    parser.add_argument("--shuffle-seed", type=int, default=None,
                        help="shuffle the terminal examples with this seed before --limit / --per-family (default: "
                        "file order, where the first endings of a family are mostly v0's successes)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = torch.load(args.dataset, weights_only=False)
    rows = [r for r in data[args.split] if r["terminal"]]
    if args.shuffle_seed is not None:
        random.Random(args.shuffle_seed).shuffle(rows)
    rows = rows[: args.limit]
    if args.per_family is not None:
        kept, seen = [], defaultdict(int)
        for row in rows:
            seen[row["task_id"]] += 1
            if seen[row["task_id"]] <= args.per_family:
                kept.append(row)
        rows = kept
    tokenizer, model = load_probe_model(args.model, args.checkpoint, args.lora_layers, args.lora_rank,
                                       args.lora_alpha)
    the, none = (tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" the", " none"))
    # family -> gold -> [right, n]; (gold, first demo's reward) -> [followed demo, right, n]
    by_family: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"match": [0, 0], "none": [0, 0]})
    by_demo: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    # family -> gold outcome -> [every judgement word right, n] (rows with a judgement mask)
    by_outcome: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"success": [0, 0], "failure": [0, 0]})
    skipped = 0
    for row in rows:
        ids, start = row["input_ids"], row["prompt_length"]
        with torch.no_grad():
            all_logits = model(torch.tensor([ids])).logits[0]
        marked = [t for t, kind in enumerate(row.get("loss_mask", [])) if kind == JUDGEMENT and t > 0]
        if marked:
            outcome = "success" if '"reward":1' in tokenizer.decode(ids[start:]) else "failure"
            cell = by_outcome[row["task_id"]][outcome]
            cell[0] += all(int(all_logits[t - 1].argmax()) == ids[t] for t in marked)
            cell[1] += 1
        at = judgement_position(tokenizer, ids, start, (the, none))
        if at is None:  # no element judgement (a widget goal, an invalid action, rule v1)
            skipped += 1
            continue
        logits = all_logits[at]  # causal: the same as a forward pass up to "matches"
        gold = "match" if ids[at + 1] == the else "none"
        judged = "match" if logits[the] > logits[none] else "none"
        cell = by_family[row["task_id"]][gold]
        cell[0] += judged == gold
        cell[1] += 1
        demo_rewards = _DEMO_REWARD.findall(tokenizer.decode(ids[:start]))
        if demo_rewards:
            first = int(demo_rewards[0])
            d = by_demo[(gold, first)]
            d[0] += judged == ("match" if first else "none")
            d[1] += judged == gold
            d[2] += 1

    print(f"# Decision probe: {args.model or args.checkpoint} on {args.dataset} ({args.split}, "
          f"{len(rows)} terminal examples, {skipped} without an element judgement)")
    print(f"Machine: {cpu_description()}; {platform.python_version()}\n")
    print_family_table(by_family, {"match": "gold match", "none": "gold none"})
    if by_demo:
        print("\n| gold | first demo's reward | judgement follows the demo | judgement right | n |")
        print("|---|---:|---:|---:|---:|")
        followed = right = n = 0
        for (gold, first), (f, r, k) in sorted(by_demo.items()):
            followed, right, n = followed + f, right + r, n + k
            print(f"| {gold} | {first} | {f} | {r} | {k} |")
        print(f"| **all** | | **{followed} ({followed / n:.0%})** | **{right} ({right / n:.0%})** | **{n}** |")
    else:
        print("\n(The prompts' demos show no reward: prompt v5.)")
    if by_outcome:
        print("\nEvery judgement word right (teacher-forced greedy), by the ending's real outcome:\n")
        print_family_table(by_outcome, {"success": "successful endings", "failure": "failed endings"})


if __name__ == "__main__":
    main()
