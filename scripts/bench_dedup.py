#!/usr/bin/env python
"""Dedup's decision over many pHashes: the old per-item index walk vs images.near_groups.

    .venv/bin/python scripts/bench_dedup.py [--sizes 10000,100000,300000] [--distance 4]
                                            [--old-limit-s 60] [--crossover]

Synthetic inputs, the same for both: 80% random 64-bit hashes, 20% near copies of them (0-3
bits flipped), ranks from random sizes, sharpness and byte counts. ``old`` is the decide() this
replaced (kernels.phash.NearDuplicateIndex, one Python lookup per input against every kept
input of its buckets); ``new`` is images.dedup.decide (sort + NumPy banding). Both run in this
process, one after the other, and must give the same plan. When ``old`` took longer than
``--old-limit-s`` at one size, larger sizes run ``new`` only (and 1M is added for it).

``--crossover``: banding vs the pairwise path of near_groups on random hashes, per distance,
to show where banding stops paying (node_winners switches on the candidate-pair count).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from curastream.images.dedup import DedupFacts, DedupPlan, decide
from curastream.images.near_groups import (
    _greedy,
    _near_pairs,
    _pairwise,
    band_layout,
    node_winners,
)
from curastream.kernels.phash import NearDuplicateIndex


def old_decide(facts, distance: int) -> DedupPlan:
    plan = DedupPlan(distance)
    kept = NearDuplicateIndex(distance)
    for f in sorted(facts, key=lambda f: f.rank):
        plan.planned += 1
        winner = kept.find(f.phash)
        if winner is None:
            kept.add(f.phash, f.key)
        else:
            plan.duplicate_of[f.key] = winner
    return plan


def synthetic(n: int, seed: int = 0) -> list[DedupFacts]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, n, dtype=np.uint64)
    copies = rng.random(n) < 0.2
    src = rng.integers(0, n, n)
    h = np.where(copies, base[src], base)
    for _ in range(3):
        flip = copies & (rng.random(n) < 0.5)
        h[flip] ^= np.left_shift(np.uint64(1), rng.integers(0, 64, n).astype(np.uint64))[flip]
    pixels = rng.choice([640 * 480, 1024 * 768, 1920 * 1080], n)
    sharp = rng.random(n) * 100
    nbytes = rng.integers(10_000, 2_000_000, n)
    return [DedupFacts(f"img{i:08d}", int(h[i]), int(pixels[i]), float(sharp[i]), int(nbytes[i])) for i in range(n)]


def timed(fn, *a):
    t = time.perf_counter()
    r = fn(*a)
    return r, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,300000")
    ap.add_argument("--distance", type=int, default=4)
    ap.add_argument("--old-limit-s", type=float, default=60.0)
    ap.add_argument("--crossover", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    old_too_slow = False
    print(f"distance {args.distance}")
    print(f"{'n':>9} {'old s':>9} {'new s':>9} {'ratio':>7} {'near-dups':>10}")
    for n in sizes + ([1_000_000] if 1_000_000 not in sizes else []):
        if n == 1_000_000 and n not in sizes and not old_too_slow:
            break
        facts = synthetic(n)
        new, t_new = timed(decide, facts, args.distance)
        if old_too_slow:
            print(f"{n:>9} {'skipped':>9} {t_new:>9.2f} {'':>7} {len(new.duplicate_of):>10}  (old too slow)")
            continue
        old, t_old = timed(old_decide, facts, args.distance)
        if old.duplicate_of != new.duplicate_of:
            print(f"MISMATCH at n={n}", file=sys.stderr)
            return 1
        print(f"{n:>9} {t_old:>9.2f} {t_new:>9.2f} {t_old / t_new:>6.1f}x {len(new.duplicate_of):>10}")
        old_too_slow = t_old > args.old_limit_s
    if args.crossover:
        print("\nrandom hashes, banding vs pairwise (seconds)")
        print(f"{'n':>7} {'d':>3} {'banding':>8} {'pairwise':>9} {'chosen':>7}")
        rng = np.random.default_rng(1)
        for n in (10_000, 30_000):
            u = np.unique(rng.integers(0, 2**64, n, dtype=np.uint64))
            for d in (8, 10, 12, 14, 16, 20):
                band, t_band = timed(lambda u, d: _greedy(u.size, _near_pairs(u, d, band_layout(d))), u, d)
                pair, t_pair = timed(_pairwise, u, d)
                chosen, t_chosen = timed(node_winners, u, d)
                assert (band == pair).all() and (chosen == pair).all()
                print(f"{u.size:>7} {d:>3} {t_band:>8.2f} {t_pair:>9.2f} {t_chosen:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
