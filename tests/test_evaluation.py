import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec.data import Catalog, PreparedData
from llmrec.evaluation import evaluate, metrics_from_ranks, metrics_from_scores, pessimistic_ranks
from llmrec.inference import mask_items, rank, top_k
from llmrec.selection import evaluate_grid, select_on_grid


def _data(sequences: list[list[int]], num_items: int) -> PreparedData:
    catalog = Catalog(raw_ids=[str(i) for i in range(num_items)], titles=[""] * num_items)
    return PreparedData(catalog=catalog, users=[str(u) for u in range(len(sequences))], sequences=sequences)


def test_ties_are_pessimistic():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.5], [0.1, 0.5, 0.3, 0.5], [1.0, 1.0, 1.0, 1.0]])
    # target 3 ties with item 1 -> placed after it; target 1 likewise; all-equal scores -> last place.
    assert pessimistic_ranks(scores, torch.tensor([3, 1, 0])).tolist() == [1, 1, 3]


def test_metrics_from_ranks_match_hand_computation():
    m = metrics_from_ranks([0, 2, 15], ks=(1, 5, 10))
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["hr@5"] == pytest.approx(2 / 3)
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert m["precision@5"] == pytest.approx(2 / 3 / 5)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 16) / 3)
    # one target per user: P@K = hit / K, R@K = hit, F1 = 2PR / (P + R) = 2 / (K + 1) on a hit
    assert m["f1@1"] == pytest.approx((2 / 2) / 3)
    assert m["f1@5"] == pytest.approx((2 / 6 + 2 / 6) / 3)
    assert m["f1@10"] == pytest.approx(2 * m["hr@10"] / 11)
    assert "auc" not in m  # needs the number of candidates
    auc = metrics_from_ranks([0, 2, 15, 40], ks=(1,), num_candidates=[20, 20, 20, 20])["auc"]
    assert auc == pytest.approx((1 + 17 / 19 + 4 / 19 + 0) / 4)  # rank 40 > 19 candidates: the last of them
    assert metrics_from_ranks([0, 2], ks=(1,), num_candidates=[1, 3])["auc"] == pytest.approx((1 + 0) / 2)


def test_metrics_from_scores_auc_counts_minus_inf_as_masked_by_default():
    scores = torch.tensor([[0.9, 0.1, -math.inf, 0.2, 0.2], [0.0, 0.0, 0.0, -math.inf, 0.0]])
    m = metrics_from_scores(scores, [3, 3], ks=(1,))
    # user 0: 4 candidates, negatives 0 (above), 1 (below), 4 (tie: above) -> 1/3; user 1: its target is masked -> 0
    assert m["auc"] == pytest.approx((1 / 3 + 0) / 2)
    # told all 5 items are candidates, item 2 (-inf) is one more negative below user 0's target
    assert metrics_from_scores(scores, [3, 3], ks=(1,), num_candidates=[5, 5])["auc"] == pytest.approx((2 / 4) / 2)


def test_metrics_from_scores_coverage_and_popularity():
    scores = torch.tensor([[0.9, 0.1, 0.0, 0.2], [0.1, 0.9, 0.0, 0.2]])
    pop = torch.tensor([10.0, 2.0, 0.0, 4.0])
    m = metrics_from_scores(scores, [0, 3], ks=(1, 2), popularity=pop)
    assert m["hr@1"] == pytest.approx(0.5)  # user 0 hits at rank 0, user 1's target is at rank 1
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert m["coverage@1"] == pytest.approx(2 / 4)  # items 0 and 1
    assert m["coverage@2"] == pytest.approx(3 / 4)  # items 0, 1, 3
    assert m["avg_pop@1"] == pytest.approx((10 + 2) / 2)
    assert m["avg_pop@2"] == pytest.approx(((10 + 4) / 2 + (2 + 4) / 2) / 2)


def test_mask_items_keeps_the_target():
    scores = torch.zeros(1, 5)
    mask_items(scores, [[1, 2, 3]], keep=torch.tensor([2]), everyone=torch.tensor([4]))
    assert scores[0].tolist() == [0.0, -math.inf, 0.0, -math.inf, -math.inf]


def test_top_k_never_returns_masked_items_and_rank_excludes_history():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    items, values = top_k(mask_items(scores.clone(), [[1], [0, 1, 2]]), 3)
    assert items == [[3, 2, 0], [3]] and values[1] == [pytest.approx(0.1)]
    assert [i for i, _ in rank(scores, [[1], []], 2)[0]] == [3, 2]
    assert [i for i, _ in rank(scores, [[1], []], 2, exclude_seen=False)[0]] == [1, 3]


def _history_lover(num_items: int):
    """Scores the user's history items highest, the target of the test split next (item 9), the rest 0."""

    def score(histories):
        s = torch.zeros(len(histories), num_items)
        s[:, 9] = 1.0
        for i, h in enumerate(histories):
            s[i, h] = 2.0
        return s

    return score


def test_history_masking_changes_the_rank():
    data = _data([[0, 1, 2, 3, 9], [4, 5, 6, 9]], num_items=10)
    masked = evaluate(_history_lover(10), data, "test", ks=(1, 5))
    assert masked["metrics"]["hr@1"] == 1.0
    kept = evaluate(_history_lover(10), data, "test", ks=(1, 5), mask_history=False)
    assert kept["metrics"]["hr@1"] == 0.0
    assert kept["metrics"]["mrr"] == pytest.approx((1 / 5 + 1 / 4) / 2)  # ranks 4 and 3
    assert masked["num_users"] == 2 and masked["split"] == "test" and "pessimistic" in masked["protocol"]


def test_valid_split_uses_second_to_last_item():
    data = _data([[0, 1, 9, 3]], num_items=10)  # valid: history [0, 1], target 9
    assert evaluate(_history_lover(10), data, "valid", ks=(1,))["metrics"]["hr@1"] == 1.0


def test_exclude_and_batching():
    data = _data([[0, 1, 9], [2, 3, 9], [4, 5, 9]], num_items=10)
    one = evaluate(_history_lover(10), data, "test", ks=(1, 5), batch_size=1)
    many = evaluate(_history_lover(10), data, "test", ks=(1, 5), batch_size=64)
    assert one["metrics"] == pytest.approx(many["metrics"])
    excluded = evaluate(_history_lover(10), data, "test", ks=(1, 5), exclude=[9])
    assert excluded["metrics"]["hr@5"] == 0.0  # the target itself is excluded -> ranked last


@pytest.mark.parametrize("replay", [True, False])
def test_evaluate_grid_runs_the_model_once_with_replay_and_equals_direct_evaluation(replay):
    data = _data([[0, 1, 9], [2, 3, 8], [4, 5, 7], [1, 6, 2], [3, 0, 5]], num_items=10)
    model, calls = _history_lover(10), []
    prior = torch.linspace(1.0, 0.0, 10)  # a per-item bias the grid value weighs against the model

    def compute(histories, g):
        calls.append(g)
        return model(histories)

    grid = [0.0, 0.5, 3.0]
    got = evaluate_grid(compute, lambda s, g: s + g * prior, grid, data, "test", replay=replay, batch_size=2)
    assert len(calls) == (3 if replay else 9)  # 3 batches of <= 2 users, once or once per grid value
    for g, result in zip(grid, got):
        direct = evaluate(lambda h, g=g: model(h) + g * prior, data, "test", batch_size=2)
        assert result["metrics"] == pytest.approx(direct["metrics"])
    assert got[0]["metrics"] != got[2]["metrics"]  # the grid value matters here, so the check above has teeth


def test_select_on_grid_takes_the_best_validation_value_and_the_smaller_one_on_ties():
    data = _data([[0, 1, 9, 3], [2, 3, 9, 4]], num_items=10)  # valid targets: 9 for both users
    bias = torch.zeros(10)
    bias[5] = 10.0  # a weight >= 0.5 puts item 5 above everything, the valid target included

    def model(histories):
        return torch.zeros(len(histories), 10).index_fill_(1, torch.tensor([9]), 1.0)

    best, result, table = select_on_grid(lambda h, g: model(h), lambda s, g: s - g * bias, [2.0, 1.0, 3.0], data)
    assert best == 1.0 and result["metrics"]["hr@1"] == 1.0  # pushing item 5 down keeps 9 first: a 3-way tie
    assert [r["value"] for r in table] == [2.0, 1.0, 3.0]
    best, _, _ = select_on_grid(lambda h, g: model(h), lambda s, g: s + g * bias, [0.5, 0.0, 1.0], data)
    assert best == 0.0  # only weight 0 keeps the target first


def test_bad_score_shape_raises():
    data = _data([[0, 1, 2]], num_items=4)
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda h: torch.zeros(len(h), 3), data, "test")


def test_paired_bootstrap_interval_and_p_value():
    import numpy as np

    from llmrec.evaluation import metrics_from_ranks, paired_bootstrap

    rng = np.random.default_rng(1)
    a = rng.integers(0, 50, size=4000)
    better = np.where(rng.random(4000) < 0.3, 0, a)  # B puts 30% of the targets first
    res = paired_bootstrap(a, better, num_samples=300)
    exact = metrics_from_ranks(better, ks=(10,))["ndcg@10"] - metrics_from_ranks(a, ks=(10,))["ndcg@10"]
    assert res["ndcg@10"]["diff"] == pytest.approx(exact)
    assert 0 < res["ndcg@10"]["low"] < exact < res["ndcg@10"]["high"] and res["ndcg@10"]["p_b_not_better"] == 0
    same = paired_bootstrap(a, a, num_samples=50)  # no difference at all: a zero-width interval at 0
    assert same["hr@10"] == {"diff": 0.0, "low": 0.0, "high": 0.0, "p_b_not_better": 1.0}
    noisy = paired_bootstrap(a, rng.permutation(a), num_samples=300)  # same distribution: the interval spans 0
    assert noisy["hr@10"]["low"] < 0 < noisy["hr@10"]["high"]
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap(a, a[:-1])


def _brute_force(sequences, raw, num_items, exclude, mask_history, k):
    """Mean AUC and F1@k from the definitions: candidates, pessimistic ties, precision and recall of the top k."""
    aucs, f1s = [], []
    for seq, row in zip(sequences, raw):
        hist, t = seq[:-1], seq[-1]
        masked = ((set(hist) if mask_history else set()) | set(exclude)) - {t}
        score = [-math.inf if j in masked or (j == t and t in exclude) else row[j] for j in range(num_items)]
        negatives = [j for j in range(num_items) if j != t and j not in masked]
        aucs.append(sum(score[j] < score[t] for j in negatives) / len(negatives) if negatives else 1.0)
        hit = sum(score[j] >= score[t] for j in range(num_items) if j != t) < k  # pessimistic rank < k
        precision, recall = hit / k, float(hit)
        f1s.append(2 * precision * recall / (precision + recall) if hit else 0.0)
    return sum(aucs) / len(aucs), sum(f1s) / len(f1s)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_auc_and_f1_match_brute_force_with_ties_masks_and_minus_inf(draw):
    num_items = draw.draw(st.integers(2, 9), "num_items")
    item = st.integers(0, num_items - 1)
    sequences = draw.draw(st.lists(st.lists(item, min_size=2, max_size=7), min_size=1, max_size=6), "sequences")
    # few distinct values -> many ties; -inf from the model itself must keep the item a candidate
    value = st.sampled_from([0.0, 0.5, 1.0, -math.inf])
    raw = [draw.draw(st.lists(value, min_size=num_items, max_size=num_items)) for _ in sequences]
    exclude = draw.draw(st.lists(item, max_size=3, unique=True), "exclude")
    mask_history = draw.draw(st.booleans(), "mask_history")
    batch_size = draw.draw(st.integers(1, 4), "batch_size")
    rows = iter(raw)

    def score_fn(histories):
        return torch.tensor([next(rows) for _ in histories], dtype=torch.float32)

    data = _data(sequences, num_items)
    res = evaluate(score_fn, data, "test", ks=(1, 2), mask_history=mask_history, batch_size=batch_size,
                   exclude=exclude)  # fmt: skip
    auc, f1 = _brute_force(sequences, raw, num_items, exclude, mask_history, k=2)
    assert res["metrics"]["auc"] == pytest.approx(auc)
    assert res["metrics"]["f1@2"] == pytest.approx(f1) == pytest.approx(2 * res["metrics"]["hr@2"] / 3)
