"""Sequence-recommendation baselines: Pop, GRU4Rec, SASRec, BERT4Rec, and the content baseline TextKNN.

``MODELS`` maps a model name to its class; every class is built from a ``ModelArgs`` and exposes
``score(histories) -> [B, num_items]`` for the shared evaluator. Neural models also expose
``loss(seqs, loss_type, generator)``; Pop has ``fit(train_sequences)`` instead, TextKNN ``fit_data(data, cfg)``.
"""

from llmrec.baselines.base import ModelArgs, SequenceModel
from llmrec.baselines.bert4rec import BERT4Rec
from llmrec.baselines.gru4rec import GRU4Rec
from llmrec.baselines.pop import Pop
from llmrec.baselines.sasrec import SASRec
from llmrec.baselines.textknn import TextKNN

MODELS = {"pop": Pop, "gru4rec": GRU4Rec, "sasrec": SASRec, "bert4rec": BERT4Rec, "textknn": TextKNN}

__all__ = ["MODELS", "BERT4Rec", "GRU4Rec", "ModelArgs", "Pop", "SASRec", "SequenceModel", "TextKNN"]
