"""Reading raw formats, filtering, leave-one-out split, and the prepared data set."""

from llmrec.data.dataset import (
    SPLITS,
    AmbiguousItemError,
    Catalog,
    DataError,
    PreparedData,
    load_catalog,
    load_prepared,
    save_catalog,
    save_prepared,
)

__all__ = [
    "AmbiguousItemError",
    "SPLITS",
    "Catalog",
    "DataError",
    "PreparedData",
    "load_catalog",
    "load_prepared",
    "save_catalog",
    "save_prepared",
]
