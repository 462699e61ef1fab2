"""Dedup's grouping over whole arrays of pHashes: exact, and fast enough for millions of inputs.

The rule (images.dedup): hashes come best first; an item within ``distance`` bits of an already
kept item is a duplicate of the best (earliest) such item, else it is kept. :func:`winners`
returns, per item, the index of the kept item it loses to, or -1 when it is kept.

How, in three steps:

1. Identical hashes collapse to one node, its best item: every later item with the same hash
   gets the node's answer (the node itself when it is kept, else its winner), because whatever
   was kept before the node within ``distance`` is still the earliest such item later on.
2. Near pairs between nodes by multi-index hashing: cut the 64 bits into ``distance + 1`` bands;
   a pair within ``distance`` bits cannot differ in every band, so it shares a bucket in at
   least one. Buckets are runs of a sorted band; the pairs of a run are made a whole offset at
   a time (element t with element t + k of its run) and verified by popcount at once, so
   memory stays at one offset's pairs and only true pairs are kept.
3. The greedy pass walks only the nodes that have an earlier neighbour; the rest are kept.

Banding pays while buckets are small. Its work, about two array cells per candidate pair, is
known exactly from the bucket sizes before any pair is made. :func:`_pairwise` (each node
against every kept one, in blocks of NumPy comparisons) costs nodes x kept, which only shows as
it goes: it runs first and gives up as soon as it is sure to cost more than banding. It wins
where few are kept: large distances (a random hash then covers many others; about distance 12
and up, see ``scripts/bench_dedup.py --crossover``) and dense clusters of distinct hashes. On
inputs where it gives up it does so after one block, having spent a few milliseconds.
"""

from __future__ import annotations

import numpy as np

from curastream.kernels.phash import band_layout as phash_band_layout

_BLOCK_CELLS = 1 << 22  # cells of one (block x kept) comparison in the pairwise path


def _popcount(x: np.ndarray) -> np.ndarray:
    count = getattr(np, "bitwise_count", None)  # NumPy >= 2
    if count is not None:
        return count(x)
    from curastream.kernels.phash import hamming

    return hamming(x, np.uint64(0))


def band_layout(distance: int) -> list[tuple[int, int]]:
    """(shift, mask) per band: ``distance + 1`` bands of near-equal widths summing to 64."""
    return phash_band_layout(distance + 1)


def winners(hashes, distance: int) -> np.ndarray:
    """``hashes`` best first (uint64-convertible); per item the index of the kept item it is a
    near-duplicate of, or -1 for a kept item."""
    h = np.asarray(hashes, dtype=np.uint64).ravel()
    n = h.size
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    if distance >= 64:  # every pair is within 64 bits: the best item takes all
        out[1:] = 0
        return out
    uniq, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # nodes best first
    node_of_uniq = np.empty_like(order)
    node_of_uniq[order] = np.arange(order.size)
    rep = first[order]  # each node's best item
    node_win = node_winners(uniq[order], distance)  # node index or -1
    # a node's answer, in item indices: its winner's best item, or itself when kept
    answer = np.where(node_win >= 0, rep[np.maximum(node_win, 0)], rep)
    node = node_of_uniq[inverse.ravel()]
    out = answer[node]
    out[rep] = np.where(node_win >= 0, rep[np.maximum(node_win, 0)], -1)
    return out


def node_winners(u: np.ndarray, distance: int) -> np.ndarray:
    """:func:`winners` for distinct hashes."""
    n = u.size
    layout = band_layout(distance)
    candidates = sum(_pairs_in_runs(_bucket_sizes(u, s, m)) for s, m in layout)
    # Banding's work is about two array cells per candidate pair; the pairwise path gives up
    # as soon as its own (nodes x kept so far) is sure to cost more.
    win = _pairwise(u, distance, budget=2 * candidates + 64 * n)
    if win is None:
        win = _greedy(n, _near_pairs(u, distance, layout))
    return win


def _band(u: np.ndarray, shift: int, mask: int) -> np.ndarray:
    return (u >> np.uint64(shift)) & np.uint64(mask)


def _bucket_sizes(u: np.ndarray, shift: int, mask: int) -> np.ndarray:
    band = _band(u, shift, mask)
    if mask < 1 << 24:  # a count per value beats a sort
        return np.bincount(band.astype(np.int64), minlength=0)
    return np.unique(band, return_counts=True)[1]


def _pairs_in_runs(lengths: np.ndarray) -> int:
    lengths = lengths.astype(np.int64)
    return int((lengths * (lengths - 1) // 2).sum())


def _near_pairs(u: np.ndarray, distance: int, layout) -> tuple[np.ndarray, np.ndarray]:
    """Every node pair (a < b) within ``distance`` bits, each once."""
    found_a, found_b = [], []
    for shift, mask in layout:
        band = _band(u, shift, mask)
        idx = np.argsort(band, kind="stable")  # a bucket's nodes stay ascending
        sb = band[idx]
        starts = np.flatnonzero(np.concatenate(([True], sb[1:] != sb[:-1])))
        lengths = np.diff(np.append(starts, sb.size))
        if lengths.max(initial=0) < 2:
            continue
        # Buckets laid out longest first: the members with a partner k places on then lie in
        # one prefix, and each offset is a few contiguous array passes (a random gather per
        # pair was 20x slower).
        by_length = np.argsort(-lengths, kind="stable")
        by_length = by_length[lengths[by_length] > 1]
        lengths = lengths[by_length]
        ends = np.cumsum(lengths)
        within = np.arange(ends[-1]) - np.repeat(ends - lengths, lengths)
        layout_idx = idx[np.repeat(starts[by_length], lengths) + within]
        sh = u[layout_idx]
        left = np.repeat(ends, lengths) - np.arange(ends[-1])  # members from here to bucket end
        neg_lengths = -lengths  # ascending
        for k in range(1, int(lengths[0])):
            stop = int(ends[np.searchsorted(neg_lengths, -k, side="left") - 1])  # buckets longer than k
            near = _popcount(sh[: stop - k] ^ sh[k:stop]) <= distance
            near &= left[: stop - k] > k
            hit = np.flatnonzero(near)
            if hit.size:
                found_a.append(layout_idx[hit])
                found_b.append(layout_idx[hit + k])
    if not found_a:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    # a pair sharing several bands was found once per band
    code = np.unique(np.concatenate(found_b).astype(np.int64) * u.size + np.concatenate(found_a))
    return code % u.size, code // u.size


def _greedy(n: int, pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The rule over the near pairs: nodes with no earlier neighbour are kept outright; the rest
    are walked in order, each taking its earliest kept neighbour."""
    win = np.full(n, -1, dtype=np.int64)
    a, b = pairs  # sorted by b, then a (from the unique codes)
    if a.size == 0:
        return win
    starts = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
    ends = np.append(starts[1:], b.size)
    kept = [True] * n
    a_list = a.tolist()
    for node, s, e in zip(b[starts].tolist(), starts.tolist(), ends.tolist()):
        for i in range(s, e):
            if kept[a_list[i]]:
                kept[node] = False
                win[node] = a_list[i]
                break
    return win


def _pairwise(u: np.ndarray, distance: int, budget: float = float("inf")) -> np.ndarray | None:
    """The rule by comparing each node with every kept one, a block of nodes at a time; None
    once the comparisons made plus those still due (each node left against at least the
    current kept ones) exceed ``budget``."""
    n = u.size
    spent = 0
    win = np.full(n, -1, dtype=np.int64)
    kept = np.empty(n, dtype=np.uint64)  # kept hashes, in order
    kept_at = np.empty(n, dtype=np.int64)  # their node indices
    k = 0
    start = 0
    while start < n:
        if spent + (n - start) * k > budget:
            return None
        block = max(1, min(1024, _BLOCK_CELLS // max(k, 1)))
        stop = min(n, start + block)
        x = u[start:stop]
        spent += x.size * (k + x.size)
        outer = _popcount(x[:, None] ^ kept[None, :k]) <= distance
        hit = outer.any(axis=1)
        if hit.any():  # argmax: the first, i.e. earliest kept
            win[start:stop][hit] = kept_at[outer[hit].argmax(axis=1)]
        # the rest: within the block, in order
        inner = _popcount(x[:, None] ^ x[None, :]) <= distance
        inner &= np.tri(x.size, k=-1, dtype=bool)  # earlier rows only
        block_kept = np.zeros(x.size, dtype=bool)
        for j in np.flatnonzero(~hit).tolist():
            earlier = np.flatnonzero(inner[j] & block_kept)
            if earlier.size:
                win[start + j] = start + earlier[0]
            else:
                block_kept[j] = True
        new = np.flatnonzero(block_kept)
        kept[k:k + new.size] = x[new]
        kept_at[k:k + new.size] = start + new
        k += new.size
        start = stop
    return win
