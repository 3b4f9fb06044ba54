"""From a raw interaction log to a ``PreparedData``: ordering, k-core, minimum length, id mapping, split.

Protocol (all pure functions of their inputs):
1. Group interactions by user; within a user, a *stable* sort by timestamp (ties keep file order; logs
   without timestamps keep file order, which is chronological by contract of those formats).
2. Optional de-duplication (keep a user's first interaction with each item), then optional iterative k-core: repeatedly drop users and items with fewer than ``k`` interactions until none remain.
3. Minimum sequence length: drop users with fewer than ``min_seq_len`` interactions (>= 3 so that the
   leave-one-out split leaves at least one training item). Items left with no interactions vanish.
4. Contiguous internal item ids ``0..N-1`` in natural order of raw ids (numeric order when all raw ids are
   integers), users in the same natural order of raw user ids.
5. Optional cold-start items (``cold_items`` FRAC > 0, ``mark_cold_items``): ``max(1, round(FRAC * N))`` items
   (at most ``N - 1``) drawn uniformly without replacement by ``numpy.random.default_rng(cold_seed)``; they leave
   every training part and history but stay in the catalog and as targets (``llmrec.data.dataset``). Uniform over
   items, not interactions: most cold items are tail items, and ``stats["cold_items"]`` says how many valid and
   test targets are cold.

``stats`` records how many kept items the titles file matched (``titles_matched``, with ``titles_file``) and a
``warnings`` list (e.g. a titles file that matches no item); ``meta`` records how the text inputs were decoded
(``encoding``: ``"utf-8"``, ``"latin-1 (fallback)"``..., ``"mixed"`` when files differ; ``encodings`` per file).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from llmrec.data.dataset import Catalog, DataError, PreparedData
from llmrec.data.readers import RawLog


def natural_order(ids) -> list[str]:
    """Sorted ids: numerically when every id is an integer string, else lexicographically."""
    ids = list(ids)
    if all(i.lstrip("-").isdigit() for i in ids):
        return sorted(ids, key=int)
    return sorted(ids)


def group_sequences(log: RawLog) -> dict[str, list[str]]:
    """user -> chronologically ordered raw item ids (stable: ties keep file order)."""
    if len(log) == 0:
        raise DataError(f"{log.source}: no interactions found")
    by_user: dict[str, list[int]] = defaultdict(list)
    for idx, u in enumerate(log.users):
        by_user[u].append(idx)
    out = {}
    for u, idxs in by_user.items():
        if log.times is not None:
            idxs = sorted(idxs, key=lambda i: log.times[i])  # sorted() is stable
        out[u] = [log.items[i] for i in idxs]
    return out


def kcore(seqs: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    """Iterative k-core on users and items: every kept user and item has >= ``k`` interactions."""
    if k <= 1:
        return dict(seqs)
    seqs = dict(seqs)
    while True:
        counts = Counter(i for s in seqs.values() for i in s)
        bad_items = {i for i, c in counts.items() if c < k}
        changed = False
        if bad_items:
            seqs = {u: [i for i in s if i not in bad_items] for u, s in seqs.items()}
            changed = True
        short = [u for u, s in seqs.items() if len(s) < k]
        if short:
            for u in short:
                del seqs[u]
            changed = True
        if not changed:
            return seqs


def _summary(seqs: dict[str, list[str]]) -> dict[str, int]:
    return {
        "users": len(seqs),
        "items": len({i for s in seqs.values() for i in s}),
        "interactions": sum(len(s) for s in seqs.values()),
    }


def _removed(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: before[k] - after[k] for k in before}


def dedup_first(seqs: dict[str, list[str]]) -> dict[str, list[str]]:
    """Keep only each user's first interaction with an item (repeat purchases/views dropped)."""
    return {u: list(dict.fromkeys(s)) for u, s in seqs.items()}


def apply_filters(
    log: RawLog, kcore_k: int = 0, min_seq_len: int = 3, dedup: bool = False
) -> tuple[dict[str, list[str]], dict[str, int], dict[str, dict[str, int]]]:
    """Steps 1-3 of the protocol: ``(user -> raw item ids, raw counts, what each filter removed)``.

    Raises:
        DataError: if a filter leaves no users, naming the filter.
    """
    if min_seq_len < 3:
        raise DataError(f"min_seq_len must be >= 3 for the leave-one-out split (train/valid/test), got {min_seq_len}")
    seqs = group_sequences(log)
    raw = _summary(seqs)
    filters: dict[str, dict[str, int]] = {}
    if dedup:
        after = dedup_first(seqs)
        filters["dedup"] = _removed(_summary(seqs), _summary(after))
        seqs = after
    if kcore_k > 1:
        after = kcore(seqs, kcore_k)
        filters[f"kcore_{kcore_k}"] = _removed(_summary(seqs), _summary(after))
        if not after:
            raise DataError(
                f"{log.source}: the {kcore_k}-core filter removed every user ({raw['users']} users before)"
            )
        seqs = after
    before = _summary(seqs)
    seqs = {u: s for u, s in seqs.items() if len(s) >= min_seq_len}
    filters["min_seq_len"] = _removed(before, _summary(seqs))
    if not seqs:
        raise DataError(
            f"{log.source}: the min_seq_len={min_seq_len} filter removed every user ({before['users']} users before)"
        )
    return seqs, raw, filters


def build_prepared(
    log: RawLog,
    kcore_k: int = 0,
    min_seq_len: int = 3,
    dataset: str = "custom",
    options: dict | None = None,
    dedup: bool = False,
    cold_items: float = 0.0,
    cold_seed: int = 0,
) -> PreparedData:
    """Apply the protocol above and return a ``PreparedData`` with stats (what each filter removed).

    Raises:
        DataError: if a filter leaves no users, naming the filter; ``cold_items`` outside [0, 1).
    """
    seqs, raw, filters = apply_filters(log, kcore_k=kcore_k, min_seq_len=min_seq_len, dedup=dedup)
    raw_items = natural_order({i for s in seqs.values() for i in s})
    index = {r: n for n, r in enumerate(raw_items)}
    users = natural_order(seqs)
    sequences = [[index[i] for i in seqs[u]] for u in users]
    catalog = Catalog(
        raw_ids=raw_items,
        titles=[log.titles.get(r, "") for r in raw_items],
        texts=[log.texts.get(r, "") for r in raw_items],
        alt_ids=[log.alt_ids.get(r, "") for r in raw_items],
    )
    lengths = np.array([len(s) for s in sequences])
    titles_stats, warnings = titles_report(log, raw_items)
    stats = {
        "dataset": dataset,
        "users": len(users),
        "items": len(raw_items),
        "interactions": int(lengths.sum()),
        "density": float(lengths.sum() / (len(users) * len(raw_items))),
        "seq_len": {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 4), "max": int(lengths.max())},
        "items_with_title": sum(1 for t in catalog.titles if t),
        **titles_stats,
        "raw": raw,
        "removed_by_filter": filters,
        "split": "leave-one-out: train = s[:-2], valid = s[-2], test = s[-1] (chronological per user)",
        "warnings": warnings,
    }
    meta = {"dataset": dataset, "source": log.source, "options": dict(options or {}), **encoding_report(log)}
    data = PreparedData(catalog=catalog, users=users, sequences=sequences, stats=stats, meta=meta)
    return mark_cold_items(data, cold_items, cold_seed) if cold_items else data


def mark_cold_items(data: PreparedData, fraction: float, seed: int = 0) -> PreparedData:
    """``data`` with a seeded random ``fraction`` of its items made cold (step 5 of the protocol), and
    ``stats["cold_items"]``: ``fraction``, ``seed``, ``count``, ``item_ids`` (internal), ``raw_ids``, the cold
    ``valid_targets`` / ``test_targets``, ``training_interactions_removed`` and ``users_without_training_items``.

    Raises:
        DataError: ``fraction`` outside [0, 1) (naming ``cold_items``).
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"cold_items: expected a fraction in [0, 1), got {fraction}")
    if fraction == 0:
        return data
    n = data.num_items
    count = min(max(1, round(fraction * n)), n - 1)
    cold = sorted(np.random.default_rng(seed).choice(n, count, replace=False).tolist())
    out = PreparedData(catalog=data.catalog, users=data.users, sequences=data.sequences, stats=dict(data.stats),
                       meta=data.meta, cold_items=frozenset(cold))  # fmt: skip
    before = sum(len(s) - 2 for s in data.sequences)
    train = out.train_sequences()
    out.stats["cold_items"] = {
        "fraction": fraction,
        "seed": seed,
        "count": count,
        "item_ids": cold,
        "raw_ids": [data.catalog.raw_ids[i] for i in cold],
        "valid_targets": sum(s[-2] in out.cold_items for s in data.sequences),
        "test_targets": sum(s[-1] in out.cold_items for s in data.sequences),
        "training_interactions_removed": before - sum(len(s) for s in train),
        "users_without_training_items": sum(not s for s in train),
        "protocol": "cold items are left out of every training part and history; they stay in the catalog and as "
        "validation/test targets",
    }
    return out


def titles_report(log: RawLog, raw_items: list[str]) -> tuple[dict, list[str]]:
    """``({"titles_file", "titles_entries", "titles_matched"}, warnings)``: how many kept items the titles matched."""
    if not log.titles_source:
        return {}, []
    matched = sum(1 for r in raw_items if r in log.titles)
    report = {"titles_file": log.titles_source, "titles_entries": len(log.titles), "titles_matched": matched}
    warnings = []
    if not log.titles:
        warnings.append(f"titles file {log.titles_source} has no entries; the items have no titles")
    elif matched == 0:
        ours, theirs = ", ".join(raw_items[:3]), ", ".join(list(log.titles)[:3])
        warnings.append(
            f"titles file {log.titles_source} matches none of the {len(raw_items)} items: its {len(log.titles)} ids "
            f"({theirs}, ...) are not item ids ({ours}, ...); check that it belongs to this data set and its id column"
        )
    return report, warnings


def encoding_report(log: RawLog) -> dict:
    """``{"encoding": ..., "encodings": {file: how decoded}}`` for the text files read; ``{}`` for binary inputs."""
    if not log.encodings:
        return {}
    kinds = set(log.encodings.values())
    return {"encoding": kinds.pop() if len(kinds) == 1 else "mixed", "encodings": dict(log.encodings)}
