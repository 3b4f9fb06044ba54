"""`llmrec recommend --run DIR --history "id1,id2,..." -k 10`: next-item recommendations from a trained run.

Histories are raw item ids or exact titles (comma-separated), or a JSONL file (``--input``) with one object per
line: ``{"history": [...]}`` (raw ids / titles) or, for LLM runs, ``{"prompt": "..."}`` (a ready prompt).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from llmrec.config import ConfigError, parse_config

HELP = "Recommend the next items for a history (raw ids or titles), or for each line of a JSONL file."


@dataclass
class RecommendConfig:
    run: str = field(default="", metadata={"help": "Run directory (LLM or baseline)."})
    history: str = field(default="", metadata={"help": "Comma-separated raw item ids or exact titles, oldest first."})
    input: str = field(default="", metadata={"help": "JSONL file: {'history': [...]} or {'prompt': '...'} per line."})
    k: int = field(default=10, metadata={"help": "How many items to recommend.", "aliases": ["-k"]})
    exclude_seen: bool = field(default=True, metadata={"help": "Never recommend items already in the history."})
    json: bool = field(default=False, metadata={"help": "Print JSON lines instead of a table."})
    device: str = field(default="cpu", metadata={"help": "Device (cpu, cuda)."})

    def __post_init__(self):
        if not self.run:
            raise ConfigError("run: a run directory is required (--run DIR)")
        if bool(self.history) == bool(self.input):
            raise ConfigError("give exactly one of --history and --input")
        if self.k < 1:
            raise ConfigError(f"k: expected >= 1, got {self.k}")


def _requests(cfg: RecommendConfig) -> list[dict]:
    if cfg.history:
        return [{"history": [h.strip() for h in cfg.history.split(",") if h.strip()]}]
    from llmrec.data.readers import open_text

    out = []
    with open_text(cfg.input) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{cfg.input}:{n}: expected a JSON object per line ({e})") from None
            if not isinstance(obj, dict) or not ({"history", "prompt"} & set(obj)):
                raise ConfigError(f"{cfg.input}:{n}: expected an object with 'history' (list) or 'prompt' (string)")
            obj["_line"] = n
            out.append(obj)
    return out


def main(argv: list[str]) -> int:
    cfg = parse_config(RecommendConfig, argv, prog="llmrec recommend", description=HELP)
    from llmrec.runs import load_run, top_k

    run = load_run(cfg.run, device=cfg.device)
    cat = run.catalog
    for req in _requests(cfg):
        where = f"{cfg.input}:{req['_line']}" if "_line" in req else "--history"
        if "prompt" in req:
            if not hasattr(run.model, "score_prompts"):
                raise ConfigError(f"{where}: ready prompts need an LLM run; {cfg.run} is a {run.kind} run")
            hist, scores = [], run.model.score_prompts([req["prompt"]])[0]
        else:
            hist = []
            for ref in req["history"]:
                try:
                    hist.append(cat.resolve(str(ref)))
                except KeyError as e:
                    raise ConfigError(f"{where}: {e.args[0]}") from None
            if not hist:
                raise ConfigError(f"{where}: empty history")
            scores = run.score([hist])[0]
        ranked = top_k(scores, hist, cfg.k, cfg.exclude_seen)
        items = [
            {"rank": r + 1, "id": cat.raw_ids[i], "title": cat.titles[i], "score": round(s, 5)}
            for r, (i, s) in enumerate(ranked)
        ]
        if cfg.json:
            print(json.dumps({"history": [cat.raw_ids[i] for i in hist], "model": run.name, "items": items}))
        else:
            shown = ", ".join(
                f"{cat.raw_ids[i]}" + (f" ({cat.titles[i][:40]})" if cat.titles[i] else "") for i in hist[-5:]
            )
            print(f"history ({len(hist)} items, last 5): {shown}" if hist else "prompt: " + req["prompt"][:80])
            print(f"{'rank':>4}  {'item id':<12} {'score':>9}  title")
            for it in items:
                print(f"{it['rank']:>4}  {it['id']:<12} {it['score']:>9.4f}  {it['title']}")
            sys.stdout.flush()
    return 0
