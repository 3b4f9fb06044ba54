"""Co-occurrence (collaborative) factors added to the title-initialised item rows."""

from __future__ import annotations

import pytest
import torch

from llmrec.config import ConfigError, parse_config
from llmrec.items.cooccurrence import cf_rows, cooccurrence_factors, cooccurrence_matrix
from llmrec.llm.config import TrainConfig
from test_llm_helpers import make_tiny_model_dir, make_toy_data


def test_cooccurrence_counts_pairs_within_the_window_symmetrically():
    seqs = [[0, 1, 2], [1, 0], [3, 3]]
    c1 = cooccurrence_matrix(seqs, 5, window=1).to_dense()
    assert c1[0, 1] == c1[1, 0] == 2  # 0-1 in the first sequence, 1-0 in the second
    assert c1[1, 2] == c1[2, 1] == 1 and c1[0, 2] == 0
    assert c1.diagonal().sum() == 0  # an item repeated next to itself is not a pair
    c2 = cooccurrence_matrix(seqs, 5, window=2).to_dense()
    assert c2[0, 2] == c2[2, 0] == 1 and torch.equal(c2, c2.T)
    with pytest.raises(ValueError, match="item ids"):
        cooccurrence_matrix([[0, 7]], 5)
    with pytest.raises(ValueError, match="window"):
        cooccurrence_matrix(seqs, 5, window=0)


def test_factors_put_items_bought_together_close():
    # two groups that never mix, item 8 never co-occurs with anything
    g = torch.Generator().manual_seed(0)
    seqs = []
    for _ in range(200):
        group = [0, 1, 2, 3] if torch.rand(1, generator=g) < 0.5 else [4, 5, 6, 7]
        seqs.append([group[int(i)] for i in torch.randint(0, 4, (6,), generator=g)])
    seqs.append([8])
    f = cooccurrence_factors(seqs, 9, dim=4, window=2, seed=0)
    assert f.shape == (9, 4) and torch.all(f[8] == 0)
    unit = torch.nn.functional.normalize(f[:8], dim=1)
    sim = unit @ unit.T
    same = torch.tensor([[(i < 4) == (j < 4) for j in range(8)] for i in range(8)])
    off_diag = ~torch.eye(8, dtype=torch.bool)
    assert sim[same & off_diag].min() > sim[~same].max() + 0.2
    torch.testing.assert_close(f, cooccurrence_factors(seqs, 9, dim=4, window=2, seed=0))  # deterministic
    with pytest.raises(ValueError, match="dim"):
        cooccurrence_factors(seqs, 9, dim=9)


def test_cf_rows_scale_to_a_share_of_the_row_norm():
    rows = torch.randn(6, 16) * 3.0
    factors = torch.randn(6, 4)
    factors[5] = 0
    add = cf_rows(factors, rows, scale=0.5, seed=1)
    assert add.shape == rows.shape and torch.all(add[5] == 0)
    assert add[:5].norm(dim=1).mean() == pytest.approx(0.5 * rows.norm(dim=1).mean().item(), rel=1e-5)
    # orthonormal map: inner products between items are kept up to the common scale
    gram_in, gram_out = factors[:5] @ factors[:5].T, add[:5] @ add[:5].T
    ratio = gram_out[0, 0] / gram_in[0, 0]
    torch.testing.assert_close(gram_out, gram_in * ratio, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="do not fit"):
        cf_rows(torch.randn(6, 32), rows, 1.0)


def test_build_model_adds_the_cf_part_to_the_title_rows(tmp_path):
    from llmrec.data.dataset import load_prepared
    from llmrec.items.init import add_cooccurrence_rows
    from llmrec.llm.build import build_model

    model, data_dir = make_tiny_model_dir(tmp_path / "model"), make_toy_data(tmp_path / "data")
    data = load_prepared(data_dir)

    def rows(**kw):
        argv = [
            "--data",
            str(data_dir),
            "--model",
            str(model),
            "--output_dir",
            str(tmp_path / "run"),
            "--num_layers",
            "2",
        ]
        for k, v in kw.items():
            argv += [f"--{k}", str(v)]
        return build_model(parse_config(TrainConfig, argv), data).item_lm.item_weights().detach()

    title = rows(item_cf_dim=0)
    mixed = rows(item_cf_dim=4, item_cf_scale=0.5)
    f = cooccurrence_factors(data.train_sequences(), data.num_items, 4, 3, 0)
    torch.testing.assert_close(mixed, title + cf_rows(f, title, 0.5, 0))
    assert not torch.allclose(mixed, title)
    # more factors than the catalog has: lowered to num_items - 1 (the default, 512, on a 12-item toy catalog)
    torch.testing.assert_close(rows(item_cf_dim=10_000), rows(item_cf_dim=data.num_items - 1))
    built = build_model(parse_config(TrainConfig, ["--data", str(data_dir), "--model", str(model), "--output_dir",
                                                   str(tmp_path / "r"), "--num_layers", "2"]), data)  # fmt: skip
    assert built.item_cf_dim == data.num_items - 1
    lm = built.item_lm.lm.get_base_model()
    with pytest.raises(ValueError, match="hidden size"):
        add_cooccurrence_rows(lm, built.item_lm.vocab, data.train_sequences(), 10_000, 1.0, 3, 0)
    with pytest.raises(ConfigError, match="item_cf_dim"):
        rows(item_cf_dim=-1)
