"""Two experience models on the same test examples: the share each gets right, and their paired
difference with its 95 % interval, so that a difference inside the noise reads as such.

Reads two ``dreamgym eval-model --output`` files scored on the same examples (same data, split,
``--endings`` and ``--max-per-group``/``--seed``), pairs their answers by (episode, step) and
prints, per group (seen families, held-out families, both): n, each model's share of answers
whose reward equals the real one (Wilson 95 % interval), the difference B - A with a paired
bootstrap 95 % interval, and the discordant pairs with McNemar's exact two-sided p.

Or two ``dreamgym closed-loop --output`` files run with the same seed and episodes per family
(paired starts: episode i of a family starts from the same real page in both): per policy, the
share of episodes whose synthetic outcome (success or not) equals the real one, and the share
whose replay (the real episode's actions replayed in the synthetic env) ends with the real reward.

    python benchmarks/paired_eval.py results/fidelity/eval-shipped-failed-v012.json \\
        results/fidelity/eval-pilot-failed-v012.json --names shipped pilot
    python benchmarks/paired_eval.py results/fidelity/closed-loop-shipped-paired.json \\
        results/fidelity/closed-loop-pilot-paired.json --names shipped pilot
"""

from __future__ import annotations

import argparse
import json
import math
import random

HELD_OUT = ("click-option", "click-tab", "enter-password")


def answer_reward(text: str) -> float | None:
    """The reward an answer gives, or None when it is not a JSON object with one."""
    try:
        value = json.loads(text).get("reward")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def correct_by_example(data: dict) -> dict[tuple[str, str], tuple[str, bool]]:
    out = {}
    for a in data["answers"]:
        given = answer_reward(a["answer"])
        out[(a["trajectory_id"], str(a["step"]))] = (a["task_id"], given is not None and given == float(a["reward"]))
    return out


def closed_loop_agreement(data: dict, key: str) -> dict[tuple[str, str, str], tuple[str, bool]]:
    """(policy, family, episode) -> (policy, whether the synthetic ``key`` outcome equals the real
    success). A synthetic episode the env gave up on (``synthetic_error``) counts as disagreeing,
    as a replay without an outcome does."""
    out = {}
    for p in data["pairs"]:
        failed = key == "synthetic_success" and p.get("synthetic_error") is not None
        agrees = not failed and p.get(key) is not None and bool(p[key]) == bool(p["real_success"])
        out[(p["policy"], p["family"], str(p["episode"]))] = (p["policy"], agrees)
    return out


def load(path: str) -> dict:
    with open(path) as f:
        data = json.load(f)
    if "answers" not in data and "pairs" not in data:
        raise SystemExit(f"{path}: neither a dreamgym eval-model output (no 'answers') "
                         "nor a dreamgym closed-loop output (no 'pairs')")
    return data


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact p of b vs c discordant pairs (binomial, p = 0.5)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(pairs: list[tuple[bool, bool]], rounds: int = 10_000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(pairs)
    diffs = []
    for _ in range(rounds):
        sample = [pairs[rng.randrange(n)] for _ in range(n)]
        diffs.append(sum(b - a for a, b in sample) / n)
    diffs.sort()
    return diffs[int(0.025 * rounds)], diffs[int(0.975 * rounds) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--names", nargs=2, default=["A", "B"])
    parser.add_argument("--held-out-families", nargs="*", default=list(HELD_OUT))
    args = parser.parse_args()
    data_a, data_b = load(args.a), load(args.b)
    if ("pairs" in data_a) != ("pairs" in data_b):
        raise SystemExit("one file is a closed-loop output and the other an eval-model output; compare like with like")
    if "pairs" in data_a:
        for key, what in (("synthetic_success", "synthetic episode's outcome equals the real one"),
                          ("replay_success", "replayed real actions end with the real outcome")):
            print(f"\n{what}:\n")
            a, b = closed_loop_agreement(data_a, key), closed_loop_agreement(data_b, key)
            keys = sorted(set(a) & set(b))
            groups = {policy: [k for k in keys if k[0] == policy] for policy in sorted({k[0] for k in keys})}
            print_table(a, b, keys, {**groups, "all": keys}, args.names, "policy")
        return
    a, b = correct_by_example(data_a), correct_by_example(data_b)
    keys = sorted(set(a) & set(b))
    held = set(args.held_out_families)
    groups = {"seen families": [k for k in keys if a[k][0] not in held],
              "held-out families": [k for k in keys if a[k][0] in held], "all": keys}
    print_table(a, b, keys, groups, args.names, "group")


def print_table(a: dict, b: dict, keys: list, groups: dict[str, list], names: list[str], label: str) -> None:
    if len(keys) < max(len(a), len(b)):
        print(f"note: {len(a)} and {len(b)} examples; {len(keys)} are in both and compared")
    na, nb = names
    print(f"| {label} | n | {na} | {nb} | {nb} - {na} (paired 95 % CI) | only {na} right / only {nb} right | McNemar p |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, ks in groups.items():
        if not ks:
            continue
        pairs = [(a[k][1], b[k][1]) for k in ks]
        ka, kb = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        only_a = sum(1 for x, y in pairs if x and not y)
        only_b = sum(1 for x, y in pairs if y and not x)
        lo, hi = paired_bootstrap(pairs)
        la, ha = wilson(ka, len(ks))
        lb, hb = wilson(kb, len(ks))
        print(f"| {name} | {len(ks)} | {ka / len(ks):.3f} ({la:.3f}-{ha:.3f}) | {kb / len(ks):.3f} ({lb:.3f}-{hb:.3f}) | "
              f"{(kb - ka) / len(ks):+.3f} ({lo:+.3f} to {hi:+.3f}) | {only_a} / {only_b} | {mcnemar_exact(only_a, only_b):.2g} |")


if __name__ == "__main__":
    main()
