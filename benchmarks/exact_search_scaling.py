"""Exact search cost by index size, without Chroma: where exact retrieval stops paying.

Builds an :class:`~dreamgym_env.buffer.exact_index.ExactIndex` of ``size`` entries from the
hashing embeddings of the step-overhead benchmark's web-like states (``--distinct`` of them,
repeated under new ids up to the size: same kind of vectors, the matrix product costs the
same), then times ``search`` for a batch of queries, and the same queries as one-query calls.
Filling a Chroma buffer to 10^6 entries takes hours on a 2-core machine (its HNSW insertion),
so this is how 10^6 is measured for exact search. Prints figures; asserts nothing. Example:

    python benchmarks/exact_search_scaling.py --sizes 100000 200000 400000 1000000
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from dreamgym_env.buffer.embedders import HashingEmbeddingFunction
from dreamgym_env.buffer.entries import key_text
from dreamgym_env.buffer.exact_index import ExactIndex, unit_rows
from step_overhead import machine, synthetic_real_transitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 200_000, 400_000, 1_000_000])
    parser.add_argument("--distinct", type=int, default=50_000, help="distinct embedded states")
    parser.add_argument("--batch", type=int, default=32, help="queries per search (the vector env's N)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rng = np.random.default_rng(args.seed)
    embedder = HashingEmbeddingFunction()
    entries = synthetic_real_transitions(args.distinct, 0, ["t"], rng)
    vectors = embedder.embed([key_text(t.state, t.action) for t in entries])
    queries = synthetic_real_transitions(args.batch, 0, ["t"], np.random.default_rng(args.seed + 1))
    q = unit_rows(embedder.embed([key_text(t.state, t.action) for t in queries]))
    exclude = [None] * args.batch
    print(f"\n| entries | batch | ms per search (median of {args.repeats}) | ms per query in the batch | "
          "ms per one-query search |")
    print("|---:|---:|---:|---:|---:|")
    index = ExactIndex("webarena", vectors.shape[1])
    for size in sorted(args.sizes):
        while len(index) < size:
            n = min(len(vectors), size - len(index))
            start = len(index)
            index.append([f"webarena:bench-{(start + i) // 10}:{(start + i) % 10}" for i in range(n)], vectors[:n])
        batch_ms, single_ms = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            index.search(q, args.top_k, exclude)
            batch_ms.append((time.perf_counter() - started) * 1000)
        for j in range(min(args.repeats, args.batch)):
            started = time.perf_counter()
            index.search(q[j : j + 1], args.top_k, [None])
            single_ms.append((time.perf_counter() - started) * 1000)
        b, s = statistics.median(batch_ms), statistics.median(single_ms)
        print(f"| {size:,} | {args.batch} | {b:.1f} | {b / args.batch:.2f} | {s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
