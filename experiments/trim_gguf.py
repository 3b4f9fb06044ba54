"""Write a copy of a GGUF checkpoint whose unused parts are zeroed, so that it compresses for transport.

Used to ship the embedded SmolLM2 to a lent GPU machine whose upload is capped (64 MiB): the decoder layers at
and beyond ``--keep-layers`` and the token-embedding rows of every token a data set never reads are overwritten
with zero blocks in place (the file stays a valid GGUF of the same shape), then the file is gzip-compressed.

Exactness: with the ``compact`` prompt (item tokens only; ``compact_bos`` adds the BOS token, a special token, kept)
the text vocabulary is read in one place only, the
title initialisation of the item rows (mean of each title's token embeddings; items without a title get the
mean of those means). Keeping the rows of every token of every catalog title (plus the special tokens) therefore
leaves a run with ``num_layers <= keep_layers`` bit-identical. Scoring covers item tokens only, so the zeroed
rows of the tied output layer are never read either. Do NOT use a trimmed file with a prompt that has text.

Usage:
    python experiments/trim_gguf.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --data prepared/beauty-llm \
        --keep-layers 16 --out smol-trim.gguf.gz
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
from pathlib import Path

import numpy as np


def used_token_ids(gguf_path: Path, data_dir: Path) -> set[int]:
    """Token ids read by title initialisation on ``data_dir``'s catalog, plus every special token."""
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    titles = [t or "" for t in pq.read_table(data_dir / "catalog.parquet").column("title").to_pylist()]
    ids: set[int] = set(tok.all_special_ids)
    for row in tok(titles, add_special_tokens=False)["input_ids"]:
        ids.update(row)
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="prepared data dir whose catalog titles are kept")
    ap.add_argument("--keep-layers", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True, help="output .gguf.gz")
    args = ap.parse_args()

    import gguf

    keep = used_token_ids(args.gguf, args.data)
    reader = gguf.GGUFReader(args.gguf)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / args.gguf.name
        shutil.copyfile(args.gguf, copy)
        mm = np.memmap(copy, dtype=np.uint8, mode="r+")
        zeroed = 0
        for t in reader.tensors:
            start, n = int(t.data_offset), int(t.n_bytes)
            if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= args.keep_layers:
                mm[start : start + n] = 0
                zeroed += n
            elif t.name == "token_embd.weight":
                vocab = int(t.shape[1])
                row = n // vocab  # bytes per quantised row (rows are whole blocks)
                drop = np.setdiff1d(np.arange(vocab), np.fromiter(keep, dtype=np.int64))
                view = mm[start : start + n].reshape(vocab, row)
                view[drop] = 0
                zeroed += len(drop) * row
                print(f"token_embd: kept {vocab - len(drop)} of {vocab} rows")
        mm.flush()
        del mm
        tmp_out = args.out.with_name(args.out.name + ".tmp")
        with open(copy, "rb") as src, gzip.open(tmp_out, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        tmp_out.replace(args.out)
    print(f"zeroed {zeroed / 1e6:.1f} MB; wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
