"""Item identity: atomic item tokens (``atomic``), their initial rows (``init``), co-occurrence factors."""
