import math

import pytest
import torch

from llmrec.data import Catalog, PreparedData
from llmrec.evaluation import evaluate, metrics_from_ranks, metrics_from_scores, pessimistic_ranks
from llmrec.inference import mask_items, rank, top_k


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
