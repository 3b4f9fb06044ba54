"""Sequence-recommendation baselines: Pop, GRU4Rec, SASRec, BERT4Rec, and the content models TextKNN and TextTower.

``MODELS`` maps a model name to its class; every class is built from a ``ModelArgs`` and exposes
``score(histories) -> [B, num_items]`` for the shared evaluator. Neural models also expose
``loss(seqs, loss_type, generator)``; Pop has ``fit(train_sequences)`` instead, TextKNN ``fit_data(data, cfg)``
(TextTower both: ``fit_data`` embeds the texts before training).
"""

from llmrec.baselines.base import ModelArgs, SequenceModel
from llmrec.baselines.bert4rec import BERT4Rec
from llmrec.baselines.gru4rec import GRU4Rec
from llmrec.baselines.pop import Pop
from llmrec.baselines.sasrec import SASRec
from llmrec.baselines.textknn import TextKNN
from llmrec.baselines.texttower import TextTower

MODELS = {
    "pop": Pop,
    "gru4rec": GRU4Rec,
    "sasrec": SASRec,
    "bert4rec": BERT4Rec,
    "textknn": TextKNN,
    "texttower": TextTower,
}

__all__ = ["MODELS", "BERT4Rec", "GRU4Rec", "ModelArgs", "Pop", "SASRec", "SequenceModel", "TextKNN", "TextTower"]
