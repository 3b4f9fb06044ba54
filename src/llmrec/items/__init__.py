"""Item identity: atomic item tokens (``atomic``), their initial rows (``init``), co-occurrence factors
(``cooccurrence``), item text embeddings (``text``, ``text_models``), and semantic IDs: RQ-KMeans code paths
(``semantic``) written as shared ``<|sid_l_c|>`` code tokens (``semantic_vocab``)."""
