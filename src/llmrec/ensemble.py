"""Ensemble runs (``llmrec ensemble``): a run directory whose scores are a weighted sum of other runs' scores.

    score[b, i] = sum over members m of  w_m * score_m[b, i]        # [B, N], members with w_m = 0 are not run

Every member is a finished run directory (an LLM, a baseline, another ensemble) trained on the same prepared data
(same fingerprint, same catalog); the ensemble loads them with ``llmrec.recommenders.load_recommender`` and is a
``llmrec.inference.Recommender`` itself, so ``evaluate``, ``compare``, ``recommend`` and ``serve`` take it like any
run. The typical use: an atomic LLM plus a ``texttower`` run, which adds a text model's opinion of every item (new
ones included) to the LLM's logits (docs/llm.md, "Cold-start items"). One member alone is that run with other
inference options (``member_options``, e.g. ``cold_neighbors``), servable as it is.

Selection protocol: a weight given as -1 is chosen on the FULL validation split (every user) among
``weight_grid``: the highest NDCG@10, ties to the smaller weight; the test split is evaluated once, afterwards. The
other members' weights are fixed. The ranking of a user does not change when a per-user constant is added, so the
sum of logits ranks as the sum of log-softmaxes.

Selection and writing the run: ``llmrec.ensemble_run``. Run directory (the shared schema of ``llmrec.runs``): ``run.json`` (kind "ensemble", ``members``: each member's
path relative to the ensemble directory, its weight and its inference options), ``config.yaml``,
``catalog.parquet``, ``metrics.json`` (``valid`` with ``selection``: the grid's validation table; ``test``) and
``test_ranks.npy``. No weights are copied: the member directories must stay where they are relative to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.config import ConfigError
from llmrec.errors import DataError

DEFAULT_GRID = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0]
# member option -> (recommender attribute, type, which runs have it)
MEMBER_OPTIONS: dict[str, tuple[str, type, str]] = {
    "cold_neighbors": ("cold_neighbors", int, "atomic LLM"),
    "cold_gap": ("cold_gap", float, "atomic LLM"),
    "text_fusion": ("fusion", float, "LLM with item texts"),
    "beam_width": ("beam_width", int, "semantic-ID LLM"),
}


@dataclass
class EnsembleConfig:
    """Options of ``llmrec ensemble``; YAML configs mirror these keys."""

    runs: list[str] = field(
        default_factory=list,
        metadata={"help": "Member run directories (one run alone: that run with other --member_options)."},
    )
    weights: list[float] = field(
        default_factory=list,
        metadata={
            "help": "One weight per run (default: 1 each); -1 (at most one member): select it on the full "
            "validation split among --weight_grid."
        },
    )
    weight_grid: list[float] = field(
        default_factory=lambda: list(DEFAULT_GRID), metadata={"help": "Candidate values of a -1 weight."}
    )
    member_options: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Per run, inference options as 'key=value,key=value' ('' for none), e.g. "
            f"'cold_neighbors=5,cold_gap=10'; keys: {', '.join(MEMBER_OPTIONS)}."
        },
    )
    data: str = field(
        default="",
        metadata={"help": "Prepared data (default: where the first run recorded it); checked by fingerprint."},
    )
    output_dir: str = field(default="", metadata={"help": "The ensemble's run directory.", "aliases": ["--out"]})
    test: bool = field(default=True, metadata={"help": "Evaluate the selected ensemble on the test split (once)."})
    batch_size: int = field(default=256, metadata={"help": "Users per scoring batch."})
    device: str = field(default="cpu", metadata={"help": "Device the members score on."})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing ensemble run in --output_dir."})

    def __post_init__(self):
        if not self.runs:
            raise ConfigError("runs: one or more run directories are required (--runs A B ...)")
        for run in self.runs:
            if not (Path(run) / "run.json").is_file():
                raise ConfigError(f"runs: {run} has no run.json (not a run directory)")
        if not self.weights:
            self.weights = [1.0] * len(self.runs)
        if len(self.weights) != len(self.runs):
            raise ConfigError(f"weights: one per run ({len(self.runs)}), got {len(self.weights)}")
        if any(w < 0 and w != -1 for w in self.weights) or self.weights.count(-1) > 1:
            raise ConfigError(f"weights: each >= 0, or -1 for at most one run (selected), got {self.weights}")
        if not any(w != 0 for w in self.weights):
            raise ConfigError("weights: at least one weight must be non-zero")
        if not self.weight_grid or min(self.weight_grid) < 0:
            raise ConfigError(f"weight_grid: needs one or more values >= 0, got {self.weight_grid}")
        if self.member_options and len(self.member_options) != len(self.runs):
            raise ConfigError(
                f"member_options: one entry per run ({len(self.runs)}; '' for none), got {len(self.member_options)}"
            )
        for text in self.member_options:
            parse_member_options(text)
        if not self.output_dir:
            raise ConfigError("output_dir: the ensemble's run directory is required (--output_dir DIR)")
        if self.data and not Path(self.data).is_dir():
            raise ConfigError(f"data: {self.data} is not a directory (a prepared data set from `llmrec prepare`)")
        if self.batch_size < 1 or self.num_threads < 0:
            raise ConfigError(
                f"batch_size, num_threads: need >= 1 and >= 0, got {self.batch_size}, {self.num_threads}"
            )


def parse_member_options(text: str) -> dict[str, int | float]:
    """``'cold_neighbors=5,cold_gap=10'`` -> ``{"cold_neighbors": 5, "cold_gap": 10.0}`` ('' -> ``{}``).

    Raises:
        ConfigError: an unknown key, a value of the wrong type or a negative one (the message names it).
    """
    out: dict[str, int | float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in MEMBER_OPTIONS:
            raise ConfigError(f"member_options: {part!r} is not key=value with a key in {', '.join(MEMBER_OPTIONS)}")
        kind = MEMBER_OPTIONS[key][1]
        try:
            out[key] = kind(value.strip())
        except ValueError:
            raise ConfigError(f"member_options: {key} needs an {kind.__name__}, got {value.strip()!r}") from None
        if out[key] < 0:
            raise ConfigError(f"member_options: {key} must be >= 0, got {out[key]}")
    return out


def apply_member_options(rec, options: dict, where: str) -> None:
    """Set a loaded member's inference options (``MEMBER_OPTIONS``) on the recommender ``rec`` of run ``where``.

    Raises:
        ConfigError: the run has no such option (e.g. ``cold_neighbors`` on a SASRec run).
    """
    semantic = hasattr(rec, "beam_width")
    for key, value in options.items():
        attr, _, runs = MEMBER_OPTIONS[key]
        if not hasattr(rec, attr) or (key.startswith("cold_") and semantic):
            raise ConfigError(f"member_options: {key} needs an {runs} run; {where} is not one")
        if key == "text_fusion" and getattr(rec, "texts", None) is None:
            raise ConfigError(f"member_options: text_fusion needs a run with item texts; {where} has none")
        setattr(rec, attr, value)


class EnsembleRecommender:
    """Weighted sum of member recommenders over one catalog (the module docstring); a ``Recommender``.

    Args:
        members: loaded recommenders whose catalogs are equal (same raw ids, same order).
        weights: one float per member; a member with weight 0 is not run.
        name: display name.
    """

    def __init__(self, members: Sequence, weights: Sequence[float], name: str = "ensemble"):
        if len(members) != len(weights) or len(members) < 1:
            raise ValueError("EnsembleRecommender: one weight per member, one member or more")
        first = members[0].catalog
        for m in members[1:]:
            if list(m.catalog.raw_ids) != list(first.raw_ids):
                raise DataError(f"ensemble: {m.name} and {members[0].name} have different catalogs")
        self.members, self.weights, self.name = list(members), [float(w) for w in weights], name

    @property
    def catalog(self):
        return self.members[0].catalog

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    @property
    def protocol_note(self) -> str:
        notes = [
            f"{m.name}: {getattr(m, 'protocol_note', '')}" for m in self.members if getattr(m, "protocol_note", "")
        ]
        terms = " + ".join(f"{w:g} x {m.name}" for m, w in zip(self.members, self.weights) if w)
        return "; ".join([f"ensemble {terms}", *notes])

    def member_scores(self, histories: Sequence[Sequence[int]], weights: Sequence[float] | None = None) -> list:
        """Each member's scores ``[B, N]`` float32 on CPU (``None`` for a member whose weight, in ``weights`` or
        else the ensemble's own, is 0)."""
        import torch

        return [
            m.score(histories).detach().to("cpu", torch.float32) if w else None
            for m, w in zip(self.members, self.weights if weights is None else weights)
        ]

    def score(self, histories: Sequence[Sequence[int]]):
        """``[B, N]`` float32 on CPU: the weighted sum of the members' scores (no masking)."""
        return combine(self.member_scores(histories), self.weights)

    def add_items(self, raw_ids, titles, texts) -> list[int]:
        """Add the items to every member (each scores them its own way, ``llmrec.inference``); returns their ids.

        Raises:
            DataError: an empty, repeated or known raw id (checked before any member changes).
            NotImplementedError: a member cannot add items (nothing is changed).
        """
        self.catalog.extended(raw_ids, titles, texts)  # validates the raw ids for every member at once
        for m in self.members:
            if not callable(getattr(m, "add_items", None)):
                raise NotImplementedError(f"ensemble: member {m.name} cannot add items")
        got = [m.add_items(raw_ids, titles, texts) for m in self.members]
        if any(list(g) != list(got[0]) for g in got[1:]):
            raise RuntimeError(f"ensemble: the members gave the added items different ids: {got}")
        return list(got[0])


def combine(parts: Sequence, weights: Sequence[float]):
    """``sum_m weights[m] * parts[m]`` over the members with a non-zero weight (``[B, N]``), with beams kept.

    A semantic-ID member scores only its beam items and gives every other item ``BEAM_FLOOR``
    (``llmrec.decoding.beam_score_matrix``). Summed as it is, that floor would swamp the other members, so every item
    outside the beams would tie. Instead, an item's tier is the number of such members whose beam holds it: items
    rank by tier first, then by the weighted sum in which a floor entry counts 0. So the beam items stay first,
    re-ranked by the sum, and the other items follow in the other members' order. Without a floor entry the result
    is the plain weighted sum.
    """
    import torch

    from llmrec.decoding import BEAM_FLOOR

    out, tier = None, None
    for part, w in zip(parts, weights):
        if not w:
            continue
        outside = (part <= BEAM_FLOOR) & part.isfinite()
        if outside.any():
            part = part.masked_fill(outside, 0.0)
            inside = (~outside).to(part.dtype)
            tier = inside if tier is None else tier + inside
        out = w * part if out is None else out.add(part, alpha=w)
    if out is None:
        raise ValueError("combine: every weight is zero")
    if tier is None:
        return out
    finite = out.isfinite()
    hi = out.masked_fill(~finite, float("-inf")).amax(dim=1, keepdim=True)
    lo = out.masked_fill(~finite, float("inf")).amin(dim=1, keepdim=True)
    span = torch.nan_to_num(hi - lo, nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0.0) + 1.0  # [B, 1]
    return out + tier * span  # one tier step outweighs the row's whole range of sums


def member_record(run: str | os.PathLike, ensemble_dir: str | os.PathLike, weight: float, options: dict) -> dict:
    """One ``run.json`` ``members`` entry: the member's path relative to the ensemble directory."""
    rel = os.path.relpath(Path(run).resolve(), Path(ensemble_dir).resolve())
    return {"run": rel, "weight": float(weight), "options": dict(options)}


def load_ensemble_run(run_dir: str | os.PathLike, device: str, load_member: Callable) -> EnsembleRecommender:
    """The ``EnsembleRecommender`` of an ensemble run directory; ``load_member(path, device)`` loads a member
    (``llmrec.recommenders.load_recommender``, passed in so that module stays the only registry of loaders).

    Raises:
        DataError: a member directory is missing (the message names it and the run.json that refers to it).
    """
    from llmrec.runs import read_run_info

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    members, weights = [], []
    for entry in info.get("members") or []:
        path = (run_dir / entry["run"]).resolve()
        if not (path / "run.json").is_file():
            raise DataError(f"{run_dir / 'run.json'}: member run {entry['run']} ({path}) is missing or not a run")
        if entry["weight"] == -1:
            raise DataError(
                f"{run_dir / 'run.json'}: its weight selection never finished; run `llmrec ensemble` again"
            )
        rec = load_member(path, device)
        apply_member_options(rec, entry.get("options") or {}, str(path))
        members.append(rec)
        weights.append(entry["weight"])
    if not members:
        raise DataError(f"{run_dir / 'run.json'}: field 'members' needs one or more entries")
    return EnsembleRecommender(members, weights, name=f"ensemble:{run_dir.name}")
