"""`llmrec recommend --run DIR --history ITEM [ITEM ...] -k 10`: next-item recommendations from a trained run.

Items are raw ids, alternate ids (e.g. an ASIN) or exact titles, oldest first. ``--history`` takes one value per
item (quote titles: ``--history "Misérables, Les (1995)" "Toy Story (1995)"``); a single value that names no item
is also read as a comma-separated list of ids. ``--history_json '["a", "b"]'`` takes a JSON list. ``--input``
reads a JSONL file with one object per line: ``{"history": [...]}`` or, for LLM runs, ``{"prompt": "..."}`` (a
ready prompt, as the run's prompt.txt renders it). Needs only the run directory.

``--add_items items.jsonl`` adds items to the catalog first, as ``POST /items`` does on a server (nothing is
written): one ``{"raw_id": "...", "title": "...", "text": "..."}`` object per line, checked (``file:line: field``)
against the run's catalog before the model loads; histories may then name them and they can be recommended. The
model must be able to add items (``add_items``); the error names it when it cannot.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from llmrec.config import ConfigError, parse_config

HELP = "Recommend the next items for a history (raw ids, alternate ids or titles), or for each line of a JSONL file."


@dataclass
class RecommendConfig:
    run: str = field(default="", metadata={"help": "Run directory (LLM or baseline)."})
    history: list[str] = field(
        default_factory=list,
        metadata={"help": "History items (raw ids, alternate ids or exact titles), oldest first."},
    )
    history_json: str = field(default="", metadata={"help": "History as a JSON list of items, oldest first."})
    input: str = field(default="", metadata={"help": "JSONL file: {'history': [...]} or {'prompt': '...'} per line."})
    add_items: str = field(
        default="",
        metadata={"help": "JSONL file of items to add first: {'raw_id': ..., 'title': ..., 'text': ...} per line."},
    )
    k: int = field(default=10, metadata={"help": "How many items to recommend.", "aliases": ["-k"]})
    exclude_seen: bool = field(default=True, metadata={"help": "Never recommend items already in the history."})
    json: bool = field(default=False, metadata={"help": "Print JSON lines instead of a table."})
    device: str = field(default="cpu", metadata={"help": "Device (cpu, cuda)."})

    def __post_init__(self):
        if not self.run:
            raise ConfigError("run: a run directory is required (--run DIR)")
        if sum(map(bool, (self.history, self.history_json, self.input))) != 1:
            raise ConfigError("give exactly one of --history, --history_json and --input")
        if self.k < 1:
            raise ConfigError(f"k: expected >= 1, got {self.k}")


def _json_history(text: str, where: str) -> list:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: expected a JSON list of items ({e})") from None
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: expected a JSON list of item ids or titles (strings or integers)")
    return value


def _requests(cfg: RecommendConfig) -> list[dict]:
    if cfg.history:
        return [{"history": cfg.history, "_where": "--history", "_split": len(cfg.history) == 1}]
    if cfg.history_json:
        return [{"history": _json_history(cfg.history_json, "--history_json"), "_where": "--history_json"}]
    from llmrec.data.readers import open_text

    out = []
    with open_text(cfg.input) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{cfg.input}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: expected a JSON object per line ({e})") from None
            if not isinstance(obj, dict) or not ({"history", "prompt"} & set(obj)):
                raise ConfigError(f"{where}: expected an object with 'history' (list) or 'prompt' (string)")
            if "history" in obj:
                obj["history"] = _json_history(json.dumps(obj["history"]), f"{where}: history")
            elif not isinstance(obj["prompt"], str):
                raise ConfigError(f"{where}: prompt: expected a string")
            out.append({**obj, "_where": f"{where}: history" if "history" in obj else where})
    return out


def read_new_items(path: str, catalog) -> list:
    """The items of a ``--add_items`` file (``NewItem``), each checked as ``POST /items`` checks it.

    Raises:
        ConfigError: ``FILE:LINE: field: what was expected`` (a raw id already in the catalog or repeated, too).
    """
    from llmrec.data.readers import open_text
    from llmrec.serving.overlay import ItemFieldError, check_new_item

    items, seen = [], {}
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                item = check_new_item(json.loads(line))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{where}: expected a JSON object per line ({e})") from None
            except ItemFieldError as e:
                raise ConfigError(f"{where}: {e}") from None
            if item.raw_id in seen:
                raise ConfigError(f"{where}: raw_id: {item.raw_id[:200]!r} repeats line {seen[item.raw_id]}")
            try:
                catalog.index_of_raw(item.raw_id)
            except KeyError:
                pass
            else:
                raise ConfigError(f"{where}: raw_id: {item.raw_id[:200]!r} is already in the run's catalog")
            seen[item.raw_id] = n
            items.append(item)
    if not items:
        raise ConfigError(f"{path}: no items (expected one JSON object per line)")
    return items


def _add_items(rec, items: list, path: str, run: str) -> None:
    """``rec.add_items(items)``, a model that cannot add items as a ``ConfigError`` naming it."""
    if not callable(getattr(rec, "add_items", None)):
        raise ConfigError(f"add_items: the {rec.name} model of {run} cannot add items; retrain it with them")
    try:
        rec.add_items([i.raw_id for i in items], [i.title for i in items], [i.text for i in items])
    except NotImplementedError as e:
        raise ConfigError(f"add_items: the {rec.name} model of {run} cannot add items ({e})") from None


def resolve_history(catalog, refs: list, where: str, split_commas: bool = False) -> list[int]:
    """Internal ids of ``refs``; with ``split_commas``, a lone value naming no item is read as ``a,b,c``."""
    if split_commas and len(refs) == 1 and "," in str(refs[0]):
        try:
            return [catalog.resolve(str(refs[0]))]
        except KeyError:
            refs = [r.strip() for r in str(refs[0]).split(",") if r.strip()]
    hist = []
    for n, ref in enumerate(refs):
        try:
            hist.append(catalog.resolve(str(ref)))
        except KeyError as e:
            raise ConfigError(f"{where}[{n}]: {e.args[0]}") from None
    if not hist:
        raise ConfigError(f"{where}: empty history")
    return hist


def _print_table(cat, hist: list[int], req: dict, items: list[dict]) -> None:
    shown = ", ".join(f"{cat.raw_ids[i]}" + (f" ({cat.titles[i][:40]})" if cat.titles[i] else "") for i in hist[-5:])
    print(f"history ({len(hist)} items, last 5): {shown}" if hist else "prompt: " + req["prompt"][:80])
    print(f"{'rank':>4}  {'item id':<12} {'score':>9}  title")
    for it in items:
        print(f"{it['rank']:>4}  {it['id']:<12} {it['score']:>9.4f}  {it['title']}")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    cfg = parse_config(RecommendConfig, argv, prog="llmrec recommend", description=HELP)
    from llmrec.runs import read_run_info, run_catalog

    # every input is checked against the run's own catalog before the model loads
    requests = _requests(cfg)
    info = read_run_info(cfg.run)
    catalog = run_catalog(cfg.run)
    new_items = read_new_items(cfg.add_items, catalog) if cfg.add_items else []
    if new_items:  # the model appends them in this order, so the extended catalog has the model's ids
        catalog = catalog.extended([i.raw_id for i in new_items], [i.title for i in new_items],
                                   [i.text for i in new_items])  # fmt: skip
    for req in requests:
        if "prompt" in req:
            if info["kind"] != "llm":
                raise ConfigError(f"{req['_where']}: ready prompts need an LLM run; {cfg.run} is a {info['kind']} run")
        else:
            req["_items"] = resolve_history(catalog, req["history"], req["_where"], req.get("_split", False))
    import torch

    from llmrec.inference import rank
    from llmrec.recommenders import load_recommender

    rec = load_recommender(cfg.run, device=cfg.device)
    if new_items:
        _add_items(rec, new_items, cfg.add_items, cfg.run)
    cat = rec.catalog
    for req in requests:
        with torch.inference_mode():
            if "prompt" in req:
                hist, scores = [], rec.score_text([req["prompt"]])
            else:
                hist = req["_items"]
                scores = rec.score([hist])
        ranked = rank(scores, [hist], cfg.k, cfg.exclude_seen)[0]
        items = [
            {
                "rank": r + 1,
                "id": cat.raw_ids[i],
                "alt_id": cat.alt_ids[i],
                "title": cat.titles[i],
                "score": round(s, 5),
            }
            for r, (i, s) in enumerate(ranked)
        ]
        if cfg.json:
            print(json.dumps({"history": [cat.raw_ids[i] for i in hist], "model": rec.name, "items": items}))
        else:
            _print_table(cat, hist, req, items)
    return 0
