"""Users/s of scoring: semantic-ID beam search (one prompt pass, ``llmrec.llm.beam``) vs ``model.generate`` with the
trie processor, and the atomic fast path (``ItemLM.score``), on real validation histories of a prepared data set.

    python scripts/beam_speed.py --semantic runs/llm_sid --atomic runs/llm_beauty --users 256 --widths 20 50

Each method scores the same ``--users`` validation histories (the first ones by user order) after a warm-up batch,
one torch thread unless ``--threads``; prints a Markdown table (users/s and the ratio to the one-pass beam search)
and checks that both beam searches return the same items.
"""

from __future__ import annotations

import argparse
import time

import torch

from llmrec.decoding import generate_items_by_codes
from llmrec.llm.recommender import load_llm_run
from llmrec.runs import load_run_data


def _histories(run: str, users: int) -> list[list[int]]:
    data = load_run_data(run)
    histories, _ = data.split("valid")
    return [h for h in histories if h][:users]


def _time(fn, histories, batch: int) -> tuple[float, list]:
    fn(histories[:batch])  # warm-up
    out = []
    start = time.perf_counter()
    for i in range(0, len(histories), batch):
        out.extend(fn(histories[i : i + batch]))
    return len(histories) / (time.perf_counter() - start), out


def _generate_fn(rec, width: int):
    def run(histories):
        prompts = [rec._prompt(h) for h in histories]
        lm = rec.item_lm
        return generate_items_by_codes(lm.lm, lm.vocab, rec.trie, prompts, rec.pad_id, k=width)

    return run


def _fast_fn(rec, width: int):
    def run(histories):
        return rec.beams([rec._prompt(h) for h in histories], None, width)[0]

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--semantic", required=True, help="a semantic-ID run directory")
    ap.add_argument("--atomic", default="", help="an atomic run directory (optional) for the fast path")
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--widths", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--batch", type=int, default=32, help="histories per call")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    histories = _histories(args.semantic, args.users)
    rows = []
    with torch.inference_mode():
        rec = load_llm_run(args.semantic)
        rec.item_lm.eval()
        for width in args.widths:
            fast, fast_items = _time(_fast_fn(rec, width), histories, args.batch)
            slow, slow_items = _time(_generate_fn(rec, width), histories, args.batch)
            same = sum(a == b for a, b in zip(fast_items, slow_items))
            rows.append((f"semantic, one-pass beam search, width {width}", fast, 1.0))
            rows.append((f"semantic, `generate` + trie processor, width {width} (same items: {same}/{len(histories)})",
                         slow, slow / fast))  # fmt: skip
        if args.atomic:
            atomic = load_llm_run(args.atomic)
            speed, _ = _time(lambda h: list(atomic.score(h)), histories, args.batch)
            rows.append(("atomic fast path (one forward pass, all item rows)", speed, float("nan")))
    print(f"{len(histories)} validation histories, batch {args.batch}, {args.threads} thread(s)\n")
    print("| method | users/s | vs one-pass beam search of the same width |\n|---|---|---|")
    for name, speed, ratio in rows:
        print(f"| {name} | {speed:,.1f} | {'' if ratio != ratio else f'{ratio:.2f}x'} |")


if __name__ == "__main__":
    main()
