"""The data sets of a suite: prepared once into ``DIR/data/<name>`` (registered names) or used where they are.

A registered data set is prepared exactly as ``llmrec prepare NAME --data_dir D`` does with no extra options
(stable time sort, no dedup, no k-core beyond the source's, ``min_seq_len`` 3), so its fingerprint matches a
``prepared/NAME`` made by hand. It is prepared once, before any trial; later calls reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmrec.benchmark.suite import DataSpec, Suite
from llmrec.data import PreparedData, load_prepared
from llmrec.data.outdir import prepared_meta


@dataclass(frozen=True)
class Dataset:
    """A suite data set, loaded: where it is and what it holds."""

    name: str
    path: Path
    data: PreparedData

    @property
    def num_users(self) -> int:
        return self.data.num_users

    @property
    def fingerprint(self) -> str:
        return self.data.fingerprint


def _prepare(spec: DataSpec, target: Path, log) -> None:
    from llmrec.data.dataset import save_prepared
    from llmrec.data.processing import build_prepared
    from llmrec.data.registry import default_data_dir, read_registered

    data_dir = spec.data_dir or default_data_dir()
    log(f"preparing {spec.dataset} from {data_dir} into {target}")
    raw = read_registered(spec.dataset, data_dir)
    options = {"dataset": spec.dataset, "data_dir": data_dir, "kcore": 0, "dedup": False, "min_seq_len": 3}
    data = build_prepared(raw, dataset=spec.dataset, options=options)
    save_prepared(data, target)


def load_datasets(suite: Suite, root: Path, log=print) -> dict[str, Dataset]:
    """``name -> Dataset`` for every data set of ``suite``, preparing registered ones under ``root/data``.

    Raises:
        DataError: a registered data set's files are missing (the message lists them), or a directory is not a
            prepared data set.
    """
    out = {}
    for spec in suite.data:
        if spec.prepared:
            path = Path(spec.prepared)
        else:
            path = root / "data" / spec.name
            if prepared_meta(path) is None:
                _prepare(spec, path, log)
        out[spec.name] = Dataset(spec.name, path.resolve(), load_prepared(path))
    return out
