"""The single full-ranking evaluator shared by every model (LLM, SASRec, GRU4Rec, BERT4Rec, Pop).

Protocol (stated again in ``evaluate``'s docstring and in every result's ``protocol`` field):
    leave-one-out; for split "valid" the history is ``s[:-2]`` and the target ``s[-2]``, for "test" the history is
    ``s[:-1]`` and the target ``s[-1]``; the target is ranked against the whole catalog; by default the items of the
    user's input history (other than the target itself) are removed from the candidates; ties are broken
    pessimistically (the target is placed after every other item with the same score). On a cold-start data set
    (``llmrec prepare --cold_items``) the histories hold no cold item, the targets may be cold, and ``targets``
    "warm" / "cold" restricts the users to those whose target is warm / cold (the two partition "all").

Ranks are 0-based here: rank 0 is the top of the list. Metric keys: ``hr@K`` (hit rate, equal to recall@K with
one target per user), ``ndcg@K``, ``precision@K`` (= hr@K / K), ``f1@K`` (the harmonic mean of precision@K and
recall@K per user: with one target, 2 / (K + 1) for a hit and 0 for a miss, so f1@K = 2 * hr@K / (K + 1)), ``mrr``
(over the full ranking), ``auc`` (per user, the fraction of the candidate negatives ranked below the target, averaged
over users), ``coverage@K`` (fraction of the catalog appearing in at least one user's top-K) and ``avg_pop@K`` (mean
training-split interaction count of the recommended top-K items).

AUC: a user's candidates are the whole catalog less the items masked for that user (history items with
``mask_history``, ``exclude``), the target always counted among them, ``C`` items in all; with ``r`` the target's
pessimistic 0-based rank among them, ``auc_u = (C - 1 - r) / (C - 1)``: ties count as ranked above the target, a
model scoring everything equally gets 0, and a user without candidate negatives (``C = 1``) counts 1.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from llmrec.data import PreparedData
from llmrec.inference import mask_items

ScoreFn = Callable[[list[list[int]]], torch.Tensor]

DEFAULT_KS = (1, 5, 10, 20)
TARGET_SETS = ("all", "warm", "cold")  # evaluate(targets=...): every user, or those whose target is warm / cold


def pessimistic_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target under pessimistic tie-breaking.

    ``rank = #{items with score > target score} + #{other items with score == target score}``, i.e. the worst
    position the target could take among its ties. A model that scores everything equally gets rank N-1.

    Args:
        scores: ``[B, N]`` float scores; masked items should hold ``-inf``.
        targets: ``[B]`` item ids.

    Returns:
        ``[B]`` int64 ranks.
    """
    target_scores = scores.gather(1, targets.view(-1, 1))  # [B, 1]
    # >= counts the target itself once, so subtract it.
    return (scores >= target_scores).sum(dim=1) - 1


def metrics_from_ranks(
    ranks: torch.Tensor | np.ndarray | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    num_candidates: torch.Tensor | np.ndarray | Sequence[int] | int | None = None,
) -> dict[str, float]:
    """Rank-based metrics averaged over users (one target per user).

    Args:
        ranks: 0-based rank of each user's target.
        ks: cut-offs.
        num_candidates: each user's number of candidate items, the target included (or one count for all);
            adds ``auc`` (module doc). A rank beyond the candidates (a target scored ``-inf`` ties with its
            masked items) counts as the last candidate.

    Returns:
        ``{"hr@K", "ndcg@K", "precision@K", "f1@K" for K in ks, "mrr"}`` (and ``"auc"``); ``ndcg@K =
        1/log2(rank+2)`` and ``f1@K = 2/(K+1)`` when ``rank < K``, else 0.
    """
    ranks = torch.as_tensor(ranks, dtype=torch.int64)
    cands = None if num_candidates is None else torch.as_tensor(num_candidates, dtype=torch.int64).expand(ranks.shape)
    sums = _rank_sums(ranks, ks, cands)
    n = max(len(ranks), 1)
    return {name: value / n for name, value in sums.items()}


def _per_user(ranks: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Each user's ``hr@k`` and ``ndcg@k`` (``1/log2(rank+2)`` when ``rank < k``), float64 ``[U]``, of 0-based ranks."""
    ranks = ranks.to(torch.float64)
    hit = (ranks < k).to(torch.float64)
    return {f"hr@{k}": hit, f"ndcg@{k}": hit / torch.log2(ranks + 2.0)}


def _rank_sums(ranks: torch.Tensor, ks: Sequence[int], num_candidates: torch.Tensor | None = None) -> dict[str, float]:
    """Sums over users of every rank metric; ``auc`` only with ``num_candidates`` ``[U]``."""
    out: dict[str, float] = {}
    for k in ks:
        per_user = _per_user(ranks, k)
        out[f"hr@{k}"] = per_user[f"hr@{k}"].sum().item()
        out[f"ndcg@{k}"] = per_user[f"ndcg@{k}"].sum().item()
        out[f"precision@{k}"] = out[f"hr@{k}"] / k
        out[f"f1@{k}"] = 2.0 * out[f"hr@{k}"] / (k + 1)  # one target: precision = hr / K, recall = hr
    out["mrr"] = (1.0 / (ranks.to(torch.float64) + 1.0)).sum().item()
    if num_candidates is not None:
        negatives = (num_candidates.to(torch.float64) - 1.0).clamp(min=0.0)  # [U]
        above = torch.minimum(ranks.to(torch.float64), negatives)  # candidate negatives ranked above (or tied)
        out["auc"] = (1.0 - above / negatives.clamp(min=1.0)).sum().item()
    return out


def paired_bootstrap(
    ranks_a: np.ndarray | Sequence[int],
    ranks_b: np.ndarray | Sequence[int],
    k: int = 10,
    num_samples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Paired bootstrap over users of the difference ``B - A`` in NDCG@k and HR@k.

    Both rank arrays are 0-based ranks of the same users' targets, in the same order (e.g. two models scored on one
    split). Users are resampled with replacement ``num_samples`` times; the interval is the 2.5th-97.5th percentile
    of the resampled mean differences.

    Returns:
        ``{"ndcg@k": {"diff", "low", "high", "p_b_not_better"}, "hr@k": {...}}``; ``p_b_not_better`` is the share of
        resamples where B's mean is <= A's (a one-sided bootstrap p-value for "B is better").

    Raises:
        ValueError: the arrays differ in length or are empty.
    """
    a = torch.as_tensor(np.asarray(ranks_a), dtype=torch.int64)
    b = torch.as_tensor(np.asarray(ranks_b), dtype=torch.int64)
    if a.shape != b.shape or a.dim() != 1 or not len(a):
        raise ValueError(
            f"paired_bootstrap needs two equally long, non-empty rank arrays; got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    per_a, per_b = _per_user(a, k), _per_user(b, k)
    rng = np.random.default_rng(seed)
    diffs = {name: (per_b[name] - per_a[name]).numpy() for name in (f"ndcg@{k}", f"hr@{k}")}  # [users] each
    means = {name: [] for name in diffs}
    for start in range(0, num_samples, 100):  # 100 resamples at a time bounds the memory
        idx = rng.integers(0, len(a), size=(min(100, num_samples - start), len(a)))
        for name, d in diffs.items():
            means[name].append(d[idx].mean(axis=1))
    out = {}
    for name, d in diffs.items():
        m = np.concatenate(means[name])  # [num_samples]
        out[name] = {
            "diff": float(d.mean()),
            "low": float(np.percentile(m, 2.5)),
            "high": float(np.percentile(m, 97.5)),
            "p_b_not_better": float((m <= 0).mean()),
        }
    return out


class _Accumulator:
    """Running sums over batches so memory stays bounded by one ``[batch, N]`` score block."""

    def __init__(self, num_items: int, ks: Sequence[int], popularity: torch.Tensor | None):
        self.ks = tuple(ks)
        self.num_items = num_items
        self.popularity = popularity.to(torch.float64) if popularity is not None else None
        self.sums: dict[str, float] = {}
        self.count = 0
        self.covered = {k: torch.zeros(num_items, dtype=torch.bool) for k in self.ks}
        self.pop_sums = dict.fromkeys(self.ks, 0.0)

    def add(self, scores: torch.Tensor, targets: torch.Tensor, num_candidates: torch.Tensor) -> torch.Tensor:
        ranks = pessimistic_ranks(scores, targets)
        for name, value in _rank_sums(ranks, self.ks, num_candidates).items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        kmax = min(max(self.ks), self.num_items)
        top = scores.topk(kmax, dim=1).indices  # [B, kmax]
        for k in self.ks:
            top_k = top[:, :k]
            self.covered[k][top_k.reshape(-1)] = True
            if self.popularity is not None:
                self.pop_sums[k] += self.popularity[top_k].mean(dim=1).sum().item()
        self.count += len(targets)
        return ranks

    def result(self) -> dict[str, float]:
        n = max(self.count, 1)
        out = {name: value / n for name, value in self.sums.items()}
        for k in self.ks:
            out[f"coverage@{k}"] = self.covered[k].sum().item() / self.num_items
            if self.popularity is not None:
                out[f"avg_pop@{k}"] = self.pop_sums[k] / n
        return dict(sorted(out.items(), key=lambda kv: _metric_order(kv[0])))


def _metric_order(name: str) -> tuple[int, int]:
    base, _, k = name.partition("@")
    order = ["hr", "ndcg", "mrr", "auc", "precision", "f1", "coverage", "avg_pop"]
    return order.index(base) if base in order else len(order), int(k) if k else 0


def metrics_from_scores(
    scores: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    popularity: torch.Tensor | np.ndarray | None = None,
    num_candidates: torch.Tensor | np.ndarray | Sequence[int] | None = None,
) -> dict[str, float]:
    """All metrics from one score matrix (pure; masking must already be applied as ``-inf``).

    Args:
        scores: ``[B, N]`` scores over the whole catalog.
        targets: ``[B]`` target item ids.
        ks: cut-offs.
        popularity: optional ``[N]`` interaction counts; adds ``avg_pop@K``.
        num_candidates: optional ``[B]`` candidates per user, the target included, for ``auc``. Default: the
            items not scored ``-inf``, plus the target (``evaluate`` counts its masks instead: see ``_num_candidates``).

    Returns:
        The metrics of ``metrics_from_ranks`` (``auc`` included) plus ``coverage@K`` (and ``avg_pop@K``).
    """
    pop = torch.as_tensor(popularity) if popularity is not None else None
    scores = scores.float()
    targets = torch.as_tensor(targets, dtype=torch.int64)
    if num_candidates is None:
        target_masked = scores.gather(1, targets.view(-1, 1)).squeeze(1) == -torch.inf
        num_candidates = (scores > -torch.inf).sum(dim=1) + target_masked
    acc = _Accumulator(scores.shape[1], ks, pop)
    acc.add(scores, targets, torch.as_tensor(num_candidates, dtype=torch.int64))
    return acc.result()


def users_digest(users: Sequence[str]) -> str:
    """Short SHA-256 of the evaluated users' ids, in order: two results with equal digests ranked the same users."""
    return hashlib.sha256("\n".join(users).encode("utf-8")).hexdigest()[:16]


def protocol_description(
    split: str, mask_history: bool, num_items: int, exclude_count: int = 0, cold_count: int = 0
) -> str:
    hist = "s[:-2]" if split == "valid" else "s[:-1]"
    target = "s[-2]" if split == "valid" else "s[-1]"
    masked = (
        "items of the input history (other than the target) removed from the candidates"
        if mask_history
        else "history items kept as candidates"
    )
    extra = f"; {exclude_count} item(s) excluded for every user" if exclude_count else ""
    if cold_count:
        hist += " without cold items"
        extra += (
            f"; cold-start: {cold_count:,} cold items, absent from every history and training part, kept as targets"
        )
    return (
        f"leave-one-out, split={split} (history {hist}, target {target}); full ranking over all {num_items} items; "
        f"{masked}{extra}; ties broken pessimistically"
    )


@torch.no_grad()
def evaluate(
    score_fn: ScoreFn,
    data: PreparedData,
    split: str,
    ks: Sequence[int] = DEFAULT_KS,
    mask_history: bool = True,
    batch_size: int = 1024,
    exclude: Sequence[int] | None = None,
    max_users: int | None = None,
    progress: bool = False,
    return_ranks: bool = False,
    protocol_note: str = "",
    targets: str = "all",
) -> dict:
    """Full-ranking leave-one-out evaluation of any model that scores the whole catalog.

    Protocol: for every user with sequence ``s``, split "valid" uses history ``s[:-2]`` and target ``s[-2]``;
    split "test" uses history ``s[:-1]`` and target ``s[-1]`` (on a cold-start data set the histories without the
    cold items, ``PreparedData.split``). ``score_fn`` scores all ``num_items`` items; the target is ranked against
    the whole catalog (no sampled negatives): cold items are candidates like any other (training never saw them:
    an ID model scores them with the mean warm row, the LLMs from their text, see ``llmrec.llm.coldrows``). With
    ``mask_history`` (default) every item of the user's input history except the target itself gets score ``-inf``. Items in ``exclude`` get ``-inf``
    for every user. Ties are broken pessimistically: ``rank = #{score > target} + #{other items with score ==
    target}`` (worst case), so constant or degenerate scores cannot look good. Users are processed in batches of
    ``batch_size``, so memory is bounded by one ``[batch_size, num_items]`` block.

    Args:
        score_fn: ``histories (list of lists of internal item ids) -> [B, num_items]`` float tensor. It must not
            modify its input.
        data: the prepared data set.
        split: "valid" or "test".
        ks: cut-offs for the @K metrics.
        mask_history: remove history items from the candidates (see above).
        batch_size: users per ``score_fn`` call.
        exclude: item ids never recommended to anyone (e.g. items a model cannot produce).
        max_users: evaluate only the first ``max_users`` users of the ``targets`` set (for quick checks; the
            result says so).
        progress: show a tqdm bar.
        return_ranks: also return each user's 0-based target rank (``"ranks"``: int64 numpy array ``[num_users]``,
            in the order of ``data.users``, evaluated users only), e.g. for a paired bootstrap; not JSON-serialisable as it is.
        protocol_note: how the model's scores cover the catalog, appended to ``protocol`` (and stored as
            ``"scoring"``) when not empty, e.g. a beam search that scores only its beam items (pass the
            recommender's ``protocol_note``, see ``llmrec.inference``).
        targets: ``TARGET_SETS``: "all" users (default), or only those whose ``split`` target is a "warm" or a
            "cold" item; anything but "all" adds ``"targets"`` to the result and ``targets=... (N users)`` to the
            protocol. Warm and cold partition the users, so their user-weighted rank metrics recombine to "all".

    Returns:
        ``{"split", "num_users", "num_items", "ks", "protocol", "metrics": {...}, "targets_in_history",
        "users_digest", "wall_time_s"}`` where the metric keys are ``hr@K``, ``ndcg@K``, ``mrr``, ``auc``,
        ``precision@K``, ``f1@K``, ``coverage@K``, ``avg_pop@K`` (see module doc); ``targets_in_history`` counts
        users whose target also occurs in their input history, ``users_digest`` identifies the evaluated users
        (``users_digest``); a cold-start data set adds ``"cold_items"`` (their count).

    Raises:
        ValueError: ``targets`` is not in ``TARGET_SETS``, or is "cold" on data without cold items.
    """
    start = time.perf_counter()
    histories, target_ids, users = _selected_users(data, split, targets)
    if max_users is not None:
        histories, target_ids, users = histories[:max_users], target_ids[:max_users], users[:max_users]
    num_items = data.num_items
    pop = torch.as_tensor(data.item_popularity())
    excl_set = {int(i) for i in exclude} if exclude else set()
    excl = torch.as_tensor(sorted(excl_set), dtype=torch.int64) if excl_set else None
    acc = _Accumulator(num_items, ks, pop)
    repeats = 0
    ranks: list[torch.Tensor] = []
    batches = range(0, len(histories), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"evaluate {split}", unit="batch")
    for lo in batches:
        hist = histories[lo : lo + batch_size]
        tgt = torch.as_tensor(target_ids[lo : lo + batch_size], dtype=torch.int64)
        scores = score_fn([list(h) for h in hist])
        if scores.shape != (len(hist), num_items):
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected {(len(hist), num_items)}")
        scores = scores.detach().to("cpu", torch.float32).clone()
        if torch.isnan(scores).any():
            raise ValueError("score_fn returned NaN scores")
        mask_items(scores, hist if mask_history else None, keep=tgt, everyone=excl)
        repeats += sum(int(t) in set(h) for h, t in zip(hist, tgt.tolist()))
        candidates = _num_candidates(hist if mask_history else None, tgt.tolist(), num_items, excl_set)
        ranks.append(acc.add(scores, tgt, candidates))
    metrics = acc.result()
    protocol = protocol_description(
        split, mask_history, num_items, 0 if excl is None else len(excl), len(data.cold_items)
    )
    if targets != "all":
        protocol += f"; targets={targets} ({len(histories):,} users whose target is a {targets} item)"
    result = {
        "split": split,
        "num_users": len(histories),
        "num_items": num_items,
        "ks": list(ks),
        "protocol": f"{protocol}; {protocol_note}" if protocol_note else protocol,
        "metrics": metrics,
        "targets_in_history": repeats,
        "users_digest": users_digest(users),
        "wall_time_s": round(time.perf_counter() - start, 3),
    }
    if targets != "all":
        result["targets"] = targets
    if data.cold_items:
        result["cold_items"] = len(data.cold_items)
    if protocol_note:
        result["scoring"] = protocol_note
    if return_ranks:
        result["ranks"] = torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)
    return result


def _num_candidates(
    histories: Sequence[Sequence[int]] | None, targets: Sequence[int], num_items: int, excluded: set[int]
) -> torch.Tensor:
    """``[B]`` candidates per user, the target included: ``num_items`` less the items ``mask_items`` set to ``-inf``
    for that user other than its target (its history if given, and ``excluded``). Counted from the masks, not from
    ``-inf`` scores: an item the model itself scores ``-inf`` is still a candidate."""
    out = []
    for b, t in enumerate(targets):
        masked = len(excluded) - (t in excluded)
        if histories is not None:
            masked += len({int(i) for i in histories[b]} - excluded - {t})
        out.append(num_items - masked)
    return torch.tensor(out, dtype=torch.int64)


def _selected_users(data: PreparedData, split: str, targets: str) -> tuple[list[list[int]], list[int], list[str]]:
    """``(histories, target ids, user ids)`` of ``split`` for the users of the ``targets`` set, in data order."""
    if targets not in TARGET_SETS:
        raise ValueError(f"targets must be one of {TARGET_SETS}, got {targets!r}")
    histories, target_ids = data.split(split)
    if targets == "all":
        return histories, target_ids, list(data.users)
    if targets == "cold" and not data.cold_items:
        raise ValueError("targets=cold: the data set has no cold items (prepare it with --cold_items FRAC)")
    want_cold = targets == "cold"
    keep = [i for i, t in enumerate(target_ids) if (t in data.cold_items) == want_cold]
    return [histories[i] for i in keep], [target_ids[i] for i in keep], [data.users[i] for i in keep]
