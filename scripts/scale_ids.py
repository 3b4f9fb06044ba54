"""Atomic item IDs vs semantic IDs on synthetic catalogs of 12k, 100k and 1M items: parameters, memory, time.

    OMP_NUM_THREADS=1 python scripts/scale_ids.py --output_dir runs/scale          # 12k, 100k, 1M (~20 min, 2 CPUs)
    python scripts/scale_ids.py --quick --output_dir runs/scale_quick                 # seconds: tiny Llama, tiny sizes

Per catalog size and method (``atomic``: one new token per item; ``semantic``: RQ-KMeans code paths, ``L`` shared
code tokens per item) it measures:

- parameters: new embedding rows, trainable parameters (LoRA + the new rows, as peft trains them), and their bytes
  in float32 with gradients and AdamW state (16 bytes per trainable parameter), computed from the model config;
  the trainable count is checked against the saved adapter where a run was trained;
- peak RSS of ``llmrec.llm.loop.train`` (the library's own training loop: a few steps of the recipe's batch, its
  validation on a few users and the checkpoint), measured in a forked process (Linux ``VmHWM``, reset before the
  training), where the computed memory fits ``--max_rss_gb``; otherwise only the computed bytes (the table says
  which);
- time to score one history, 1 thread: the atomic fast path (``ItemLM.score``: one forward pass + dot product
  with every item row) and trie-constrained beam search (``llmrec.llm.beam.beam_search_codes``) of each
  ``--widths``, on the trained run as ``load_recommender`` loads it (LoRA merged); an atomic catalog too large to
  train is scored on the base LM with its rows added (``resize_for_items``), which is the same computation. The
  median over ``--histories`` histories (each round after one warm-up) of ``--rounds`` rounds over all sizes, in
  alternating order, because the load of a shared machine drifts;
- two ``/recommend`` requests through the HTTP app (``llmrec.serving.app.create_app``, fastapi's TestClient) per
  round (the first one also builds the catalog's id index).

Synthetic data (``synthetic_data``): items in topics, users who buy within two topics; ``save_prepared`` writes it
like ``llmrec prepare``. The semantic runs need text embeddings, and MiniLM over a million texts would take hours
here, so unit-norm synthetic vectors (topic centre + noise, ``--embed_dim`` = MiniLM's 384) are written into the
library's text-embedding cache, in its documented format (``llmrec.items.text``: path from ``cache_path``, metadata
fingerprint / encoder / model / text-rule version) under ``OUTPUT_DIR/cache`` (``$LLMREC_CACHE`` for the stages; the
embedded LM is linked in, not copied), and ``llmrec.llm.build.sid_embeddings`` reads them from there.

Clustering: the library's RQ-KMeans uses exact ``KMeans(n_init=3, max_iter=300)``, whose k-means++ initialisation
alone costs ``N * 256 * 9 * d`` multiply-adds per restart and level. It is measured in full at
``--kmeans_full_max`` items and below, its initialisation and Lloyd iteration times at ``--kmeans_probe_max`` and
below, which give a lower bound of the full run there and, scaled linearly in N, beyond. The semantic runs are
clustered with ``rq_kmeans(estimator=MiniBatchKMeans)`` (its hook) and trained with ``train(cfg, sids=...)``.

Outputs in ``--output_dir``: ``scale.md`` (tables), ``scale.json`` (every number, the stages' raw records and the
machine), ``scale.png`` (log-log: items against time per history and memory, one line per method), ``stages/`` (one
JSON per stage), ``data/``, ``runs/`` and ``cache/`` (the prepared data, run directories and embeddings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

METHODS = ("atomic", "semantic")
GIB = 1 << 30
MIB = 1 << 20
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


# --- memory of this process (Linux /proc; the peak is resettable, unlike ru_maxrss) --------------------------------


def _status_kib(key: str, pid: str = "self") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset this process' peak RSS (``VmHWM``; ``clear_refs`` 5, Linux >= 4.0). False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Bytes: this process' peak RSS since the last ``reset_peak`` (``ru_maxrss`` where /proc is missing)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def rss_now(pid: str = "self") -> int:
    return (_status_kib("VmRSS", pid) or 0) * 1024


# --- stages: each in a forked process (its own peak RSS, a memory watchdog), or in-process for --quick -------------


class Record(dict):
    """A stage's results, rewritten to its JSON file after every ``put`` (a killed stage keeps what it measured)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def put(self, **values) -> None:
        self.update(values)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self, indent=1, default=float))
        os.replace(tmp, self.path)


@dataclass
class Context:
    args: argparse.Namespace
    out: Path
    model: str  # what the runs' --model is
    cache: Path  # $LLMREC_CACHE of the stages
    sizes: list[int]
    stages: dict = field(default_factory=dict)  # stage name -> record

    def data_dir(self, n: int) -> Path:
        return self.out / "data" / f"items_{n}"

    def run_dir(self, method: str, n: int) -> Path:
        return self.out / "runs" / f"{method}_{n}"


def _stage_body(ctx: Context, rec: Record, fn: Callable, kwargs: dict) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    os.environ["LLMREC_CACHE"] = str(ctx.cache)
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        fn(ctx, rec, **kwargs)


def run_stage(ctx: Context, name: str, fn: Callable, timeout_s: float, **kwargs) -> dict:
    """Run ``fn(ctx, record, **kwargs)`` as stage ``name``; returns its record with ``status``."""
    path = ctx.out / "stages" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = Record(path)
    log(f"stage {name}: start")
    t = time.perf_counter()
    if ctx.args.isolate == "none":  # --quick: errors propagate
        saved = os.environ.get("LLMREC_CACHE")
        try:
            _stage_body(ctx, rec, fn, kwargs)
        finally:
            if saved is None:
                os.environ.pop("LLMREC_CACHE", None)
            else:
                os.environ["LLMREC_CACHE"] = saved
        rec.put(status="ok")
    else:
        status = _forked(ctx, rec, fn, kwargs, timeout_s)
        if path.is_file():
            rec.update(json.loads(path.read_text()))  # what the child measured (up to its end, or its kill)
        rec.put(status=status)
    rec.put(stage_wall_s=time.perf_counter() - t)
    ctx.stages[name] = dict(rec)
    log(f"stage {name}: {rec['status']} in {rec['stage_wall_s']:.1f}s")
    return ctx.stages[name]


def _forked(ctx: Context, rec: Record, fn: Callable, kwargs: dict, timeout_s: float) -> str:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: measure, write the record, leave without the parent's atexit handlers
        code = 0
        try:
            _stage_body(ctx, rec, fn, kwargs)
        except BaseException as e:  # every failure, KeyboardInterrupt too, is recorded for the report
            traceback.print_exc()
            rec.put(error=f"{type(e).__name__}: {str(e)[:500]}")
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    limit, start, peak = ctx.args.max_rss_gb * GIB, time.perf_counter(), 0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        peak = max(peak, rss_now(str(pid)))
        why = ""
        if peak > limit:
            why = f"killed: RSS {peak / GIB:.2f} GiB > --max_rss_gb {ctx.args.max_rss_gb}"
        elif time.perf_counter() - start > timeout_s:
            why = f"killed: still running after {timeout_s:.0f}s"
        if why:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            log(why)
            return why
        time.sleep(0.2)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "ok"
    return f"failed (exit status {status})"


# --- synthetic data and embeddings ----------------------------------------------------------------------------------


def num_topics(n: int) -> int:
    return max(2, min(10_000, n // 100))


def synthetic_data(num_items: int, num_users: int, max_history: int, seed: int = 0):
    """A ``PreparedData``: item ``i`` in topic ``i % T``; each user buys 5..max_history+2 items within two topics."""
    from llmrec.data import Catalog, PreparedData

    rng = np.random.default_rng(seed)
    topics = num_topics(num_items)
    catalog = Catalog(
        raw_ids=[f"s{i}" for i in range(num_items)],
        titles=[f"item {i} topic {i % topics}" for i in range(num_items)],
    )
    seqs = []
    for _ in range(num_users):
        length = int(rng.integers(5, max_history + 3))
        t = rng.integers(0, topics, size=2)[rng.integers(0, 2, size=length)]  # [length] topic of each purchase
        per_topic = (num_items - 1 - t) // topics + 1  # items of topic t: t, t + T, ...
        seqs.append((t + topics * (rng.random(length) * per_topic).astype(np.int64)).tolist())
    users = [f"u{u}" for u in range(num_users)]
    return PreparedData(catalog, users, seqs, meta={"dataset": f"synthetic-{num_items}"})


def synthetic_embeddings(num_items: int, dim: int, seed: int = 0):
    """``[N, dim]`` float32 unit rows: the item's topic centre plus noise (about 0.7 of the centre's norm)."""
    import torch

    rng = np.random.default_rng(seed + 1)
    topics = num_topics(num_items)
    centres = rng.standard_normal((topics, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = torch.empty(num_items, dim)
    for s in range(0, num_items, 100_000):  # in blocks: a million rows of noise need no second copy
        ids = np.arange(s, min(s + 100_000, num_items))
        x = centres[ids % topics] + rng.standard_normal((len(ids), dim), dtype=np.float32) * (0.7 / dim**0.5)
        out[s : s + len(ids)] = torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out


def train_config(ctx: Context, method: str, n: int):
    from llmrec.llm.config import TrainConfig

    a = ctx.args
    return TrainConfig(
        data=str(ctx.data_dir(n)),
        output_dir=str(ctx.run_dir(method, n)),
        model=ctx.model,
        num_layers=a.num_layers,
        item_ids=method,
        sid_levels=a.sid_levels,
        sid_codes=a.sid_codes,
        item_cf_dim=0,  # synthetic purchases carry no co-occurrence signal; the factors change no parameter count
        batch_size=a.batch_size,
        max_steps=a.steps,
        eval_users=a.eval_users,
        test_users=-1,
        num_threads=1,
        overwrite=True,
        progress=False,
        log_every=1,
    )


def cache_file(cfg, fingerprint: str) -> tuple[Path, dict]:
    """The text-embedding cache file ``sid_embeddings(cfg, ...)`` reads, and its metadata (``llmrec.items.text``)."""
    from llmrec.items.text import TEXT_RULE_VERSION, cache_path, model_key
    from llmrec.llm.build import text_encoder_spec

    spec = text_encoder_spec(cfg)
    meta = {
        "fingerprint": fingerprint,
        "encoder": spec.name,
        "model": model_key(spec.model) if spec.name == "lm" else "",
        "text_rule": TEXT_RULE_VERSION,
    }
    return cache_path(spec.cache_dir, fingerprint, spec), meta


def stage_data(ctx: Context, rec: Record, n: int) -> None:
    """Prepared data set of ``n`` items (``save_prepared``) and its synthetic text embeddings in the cache."""
    import torch
    from safetensors.torch import save_file

    from llmrec.data import save_prepared

    t = time.perf_counter()
    data = synthetic_data(n, ctx.args.users, ctx.args.max_history)
    save_prepared(data, ctx.data_dir(n), overwrite=True)
    rec.put(items=n, users=data.num_users, fingerprint=data.fingerprint, prepare_s=time.perf_counter() - t)
    t = time.perf_counter()
    path, meta = cache_file(train_config(ctx, "semantic", n), data.fingerprint)
    vectors = synthetic_embeddings(n, ctx.args.embed_dim)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"vectors": vectors, "has": torch.ones(n, dtype=torch.uint8)}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    rec.put(embeddings=str(path), embed_dim=ctx.args.embed_dim, embeddings_s=time.perf_counter() - t)


def cached_sid_embeddings(ctx: Context, n: int) -> np.ndarray:
    """``sid_embeddings`` of the prepared data, refusing to start if it would miss the cache (a MiniLM run)."""
    from safetensors import safe_open

    from llmrec.data import load_prepared
    from llmrec.llm.build import sid_embeddings

    cfg, data = train_config(ctx, "semantic", n), load_prepared(ctx.data_dir(n))
    path, meta = cache_file(cfg, data.fingerprint)
    with safe_open(str(path), framework="pt") as f:  # the conditions of llmrec.items.text._load_cached
        stored, rows = f.metadata() or {}, f.get_slice("vectors").get_shape()[0]
    if any(stored.get(k) != v for k, v in meta.items()) or rows != n:
        raise RuntimeError(f"{path} would not be read by the library (metadata {stored}, {rows} rows)")
    emb, _ = sid_embeddings(cfg, data)
    return emb


# --- computed parameters and bytes ----------------------------------------------------------------------------------


def model_shape(model: str, num_layers: int | None) -> dict:
    from transformers import AutoConfig

    from llmrec.llm.loading import resolve_model_path

    c = AutoConfig.from_pretrained(resolve_model_path(model), local_files_only=True)
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return {
        "hidden": c.hidden_size,
        "layers": num_layers or c.num_hidden_layers,
        "q_out": heads * head_dim,
        "kv_out": getattr(c, "num_key_value_heads", heads) * head_dim,
        "tied": bool(getattr(c, "tie_word_embeddings", False)),
        "vocab": c.vocab_size,
    }


def computed_memory(shape: dict, new_tokens: int, lora_r: int) -> dict:
    """Parameters and float32 bytes of ``new_tokens`` new rows and of what trains (LoRA on q/k/v/o + the rows)."""
    d = shape["hidden"]
    lora = shape["layers"] * lora_r * ((d + shape["q_out"]) * 2 + (d + shape["kv_out"]) * 2)  # q, o; k, v
    rows = new_tokens * d * (1 if shape["tied"] else 2)
    trainable = lora + rows  # peft trains a delta copy of the new rows (trainable_token_indices)
    return {
        "new_tokens": new_tokens,
        "new_row_params": rows,
        "lora_params": lora,
        "trainable_params": trainable,
        "new_row_bytes": 4 * rows,
        "trainable_bytes_with_adamw": 16 * trainable,  # weight + gradient + AdamW's two moments
        "computed_bytes": 4 * rows + 16 * trainable,
    }


def untrained_reason(ctx: Context, shape: dict, method: str, n: int) -> str | None:
    """Why the ``method`` run of ``n`` items is not trained here (``None``: it is)."""
    a, predicted = ctx.args, predicted_train_bytes(ctx, shape, n)
    if method == "atomic" and a.atomic_train_max is not None and n > a.atomic_train_max:
        return f"not trained: above --atomic_train_max {a.atomic_train_max}"
    if method == "atomic" and predicted > a.max_rss_gb * GIB:
        return f"not trained: predicted peak {predicted / GIB:.1f} GiB > {a.max_rss_gb} GiB"
    return None


def predicted_train_bytes(ctx: Context, shape: dict, n: int) -> int:
    """Rough training peak of an atomic run: computed bytes + [targets, N] logits (x4: softmax, grads) + peft's
    per-forward copy of the embedding + a 1.5 GiB base."""
    mem = computed_memory(shape, n, ctx.args.lora_r)
    targets = ctx.args.batch_size * ctx.args.max_history
    return mem["computed_bytes"] + 16 * targets * n + 4 * (shape["vocab"] + n) * shape["hidden"] + int(1.5 * GIB)


# --- training, loading, scoring, serving ----------------------------------------------------------------------------


def histories(ctx: Context, n: int) -> list[list[int]]:
    from llmrec.data import load_prepared

    hist, _ = load_prepared(ctx.data_dir(n)).split("test")
    count = ctx.args.histories if n < 500_000 else ctx.args.histories_large
    return [h for h in hist if h][: count + 1]  # the first one warms up


def median_s(fn: Callable, inputs: list) -> dict:
    """Median and all times of ``fn`` on ``inputs[1:]`` after a warm-up call on ``inputs[0]``."""
    fn(inputs[0])
    times = []
    for x in inputs[1:] or inputs:
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return {"median_ms": 1000 * statistics.median(times), "all_ms": [1000 * s for s in times]}


def time_scoring(ctx: Context, rec: Record, recommender, n: int) -> None:
    """Time to score one history: the atomic fast path, or beam search of every width (prompts encoded first)."""
    from llmrec.llm.beam import beam_search_codes

    prompts = [recommender.encoder.encode(h) for h in histories(ctx, n)]
    lm, pad = recommender.item_lm, recommender.pad_id
    if getattr(recommender, "trie", None) is None:
        rec.put(score=median_s(lambda p: lm.score([p], pad, 1), prompts))
        log(f"  atomic {n}: fast path {rec['score']['median_ms']:.1f} ms / history")
        return
    for w in ctx.args.widths:
        beams = median_s(lambda p, w=w: beam_search_codes(lm, recommender.trie, [p], pad, w), prompts)
        rec.put(**{f"beam_{w}": beams})
        log(f"  semantic {n}: beam {w} {beams['median_ms']:.1f} ms / history")


def serve(rec: Record, recommender, history: list[int]) -> None:
    """Two ``/recommend`` requests through the HTTP app (the first one also builds the catalog's id index)."""
    from fastapi.testclient import TestClient

    from llmrec.serving.app import create_app

    refs = [recommender.catalog.raw_ids[i] for i in history]
    latencies = []
    with TestClient(create_app(recommender), base_url="http://localhost") as client:
        for _ in range(2):
            t = time.perf_counter()
            r = client.post("/recommend", json={"history": refs, "k": 10})
            latencies.append(1000 * (time.perf_counter() - t))
            if r.status_code != 200 or len(r.json()["items"]) != 10:
                raise RuntimeError(f"/recommend answered {r.status_code}: {r.text[:300]}")
    rec.put(serve={"status": 200, "first_ms": latencies[0], "second_ms": latencies[1], "top": r.json()["items"][0]})
    log(f"  /recommend: 200, 10 items in {latencies[0]:.0f} ms (first), {latencies[1]:.0f} ms (second)")


def adapter_params(run_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(run_dir / "adapter" / "adapter_model.safetensors"), framework="pt") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118 (not iterable)


def cluster(ctx: Context, rec: Record, n: int):
    """The semantic ids of ``n`` items: RQ-KMeans of the cached embeddings with MiniBatchKMeans (rq_kmeans' hook)."""
    from llmrec.items.semantic import kmeans_estimator, rq_kmeans

    a = ctx.args
    reset_peak()
    t = time.perf_counter()
    emb = cached_sid_embeddings(ctx, n)
    rec.put(embeddings_load_s=time.perf_counter() - t)
    t = time.perf_counter()
    np.unique(emb, axis=0)  # what rq_kmeans computes at every level, only to cap k for small catalogs
    rec.put(unique_rows_s=time.perf_counter() - t)
    log(f"  semantic {n}: RQ-KMeans of {emb.shape} with MiniBatchKMeans ...")
    reset_peak()
    t = time.perf_counter()
    sids = rq_kmeans(emb, a.sid_levels, a.sid_codes, seed=0, estimator=kmeans_estimator("minibatch"))
    rec.put(cluster_s=time.perf_counter() - t, cluster_peak_rss=peak_rss(), level_sizes=list(sids.level_sizes))
    log(f"  semantic {n}: level sizes {sids.level_sizes} in {rec['cluster_s']:.1f}s")
    return sids


def stage_train(ctx: Context, rec: Record, method: str, n: int) -> None:
    """Train ``--steps`` steps with the library's loop (semantic ids clustered first); peak RSS of the training."""
    import gc

    from llmrec.llm.loop import train

    cfg = train_config(ctx, method, n)
    sids = cluster(ctx, rec, n) if method == "semantic" else None
    gc.collect()  # the embeddings
    reset_peak()
    rec.put(rss_before_train=rss_now())
    log(f"  {method} {n}: training {cfg.max_steps} steps of {cfg.batch_size} ...")
    t = time.perf_counter()
    metrics = train(cfg, sids=sids)
    steps = metrics["train"]["steps"]
    rec.put(train_s=time.perf_counter() - t, train_peak_rss=peak_rss(), steps=steps,
            step_s=metrics["train"]["train_time_s"] / max(steps, 1), last_loss=metrics["train"]["last_loss"],
            trainable_params_adapter=adapter_params(ctx.run_dir(method, n)))  # fmt: skip
    log(f"  {method} {n}: trained in {rec['train_s']:.1f}s, peak RSS {rec['train_peak_rss'] / GIB:.2f} GiB")


def untrained_atomic(ctx: Context, n: int):
    """An atomic recommender with ``n`` item rows added to the base LM (random rows): what a merged run computes."""
    from llmrec.data import load_prepared
    from llmrec.items.atomic import ItemVocab, resize_for_items
    from llmrec.llm.loading import load_causal_lm
    from llmrec.llm.model import ItemLM
    from llmrec.llm.recommender import make_recommender
    from llmrec.prompts import PromptEncoder, load_template

    cfg = train_config(ctx, "atomic", n)
    lm, tokenizer = load_causal_lm(cfg.model, num_layers=cfg.num_layers)
    vocab = ItemVocab(len(tokenizer), n)  # where add_item_tokens would put them
    resize_for_items(lm, vocab)
    catalog = load_prepared(ctx.data_dir(n)).catalog
    encoder = PromptEncoder(load_template(cfg.prompt), tokenizer, vocab, catalog, cfg.max_history)
    return make_recommender(ItemLM(lm, vocab).eval(), encoder, tokenizer, catalog)


def stage_score(ctx: Context, rec: Record, method: str, n: int, trained: bool, first: bool) -> None:
    """Load the run as ``load_recommender`` does (or build an untrained atomic one), time scoring, serve twice; on
    the first round an untrained atomic catalog also times adding its item tokens to the tokenizer."""
    from llmrec.items.atomic import add_item_tokens
    from llmrec.recommenders import load_recommender
    from llmrec.trie import CodeTrie

    reset_peak()
    t = time.perf_counter()
    recommender = load_recommender(ctx.run_dir(method, n)) if trained else untrained_atomic(ctx, n)
    rec.put(load_s=time.perf_counter() - t, load_peak_rss=peak_rss())
    if method == "semantic":
        t = time.perf_counter()
        CodeTrie(recommender.trie.codes, recommender.trie.level_sizes)
        rec.put(trie_build_s=time.perf_counter() - t)
    time_scoring(ctx, rec, recommender, n)
    serve(rec, recommender, histories(ctx, n)[0])
    if not trained and first:
        t = time.perf_counter()
        add_item_tokens(recommender.tokenizer, n)
        rec.put(add_item_tokens_s=time.perf_counter() - t, peak_rss_with_tokens=peak_rss())


def stage_exact_kmeans(ctx: Context, rec: Record, n: int) -> None:
    """The library's exact RQ-KMeans: in full (``n <= --kmeans_full_max``), and the k-means++ init and Lloyd
    iteration times of its first level (one restart of ``KMeans(256)``)."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    from llmrec.items.semantic import rq_kmeans

    a = ctx.args
    emb = cached_sid_embeddings(ctx, n)
    k = min(a.sid_codes, n)
    t = time.perf_counter()
    centres, _ = kmeans_plusplus(emb, k, random_state=0)
    rec.put(init_s=time.perf_counter() - t)
    t = time.perf_counter()
    km = KMeans(k, init=centres, n_init=1, max_iter=3, tol=0.0).fit(emb)
    rec.put(iteration_s=(time.perf_counter() - t) / km.n_iter_)
    log(f"  exact KMeans {n}: init {rec['init_s']:.1f}s, {rec['iteration_s']:.2f}s per Lloyd iteration")
    if n <= a.kmeans_full_max:
        t = time.perf_counter()
        sids = rq_kmeans(emb, a.sid_levels, a.sid_codes, seed=0)  # the library's default, as `llmrec train` runs it
        rec.put(full_s=time.perf_counter() - t, level_sizes=list(sids.level_sizes))
        log(f"  exact RQ-KMeans {n}: {rec['full_s']:.1f}s, level sizes {sids.level_sizes}")


# --- the report -----------------------------------------------------------------------------------------------------


def kmeans_summary(ctx: Context) -> dict:
    """Per size: the library's exact RQ-KMeans time, measured in full, or its lower bound: ``levels x n_init (3)``
    k-means++ initialisations + one Lloyd iteration each, measured at that size or scaled linearly in N from the
    largest size probed (both are linear in N)."""
    a, out = ctx.args, {}
    probes = {n: ctx.stages.get(f"kmeans_{n}", {}) for n in ctx.sizes}
    probed = [n for n, p in probes.items() if "init_s" in p]
    for n in ctx.sizes:
        p = probes[n]
        if "full_s" in p:
            out[n] = {"seconds": p["full_s"], "how": "measured"}
        elif not probed:
            out[n] = {"seconds": None, "how": "not measured"}
        else:
            ref = n if n in probed else max(probed)
            q = probes[ref]
            seconds = a.sid_levels * 3 * (q["init_s"] + q["iteration_s"]) * n / ref
            how = f"lower bound: {a.sid_levels * 3} k-means++ inits of {q['init_s']:.0f}s measured at {ref:,} items"
            out[n] = {
                "seconds": seconds,
                "how": how + (f", x {n / ref:g}" if ref != n else "") + " + 1 iteration each",
            }
    return out


def _rounds(ctx: Context, method: str, n: int) -> list[dict]:
    return [st for r in range(1, ctx.args.rounds + 1) if (st := ctx.stages.get(f"score_{method}_{n}_r{r}"))]


def _timing(rounds: list[dict], key: str) -> dict | None:
    """Median over every round's timed histories, and each round's median."""
    done = [st[key] for st in rounds if key in st]
    if not done:
        return None
    times = [t for d in done for t in d["all_ms"]]
    return {"median_ms": statistics.median(times), "round_medians_ms": [d["median_ms"] for d in done]}


def build_rows(ctx: Context, shape: dict) -> list[dict]:
    rows = []
    for n in ctx.sizes:
        for method in METHODS:
            st, rounds = ctx.stages.get(f"{method}_{n}", {}), _rounds(ctx, method, n)
            if method == "atomic":
                tokens = n
            else:
                sizes = st.get("level_sizes") or [min(ctx.args.sid_codes, n)] * ctx.args.sid_levels + [1]
                tokens = int(sum(sizes))
            mem = computed_memory(shape, tokens, ctx.args.lora_r)
            problems = [
                s.get("status", "not run") for s in [st, *rounds] if s.get("status") not in ("ok", "not trained")
            ]
            if len(rounds) < ctx.args.rounds:
                problems.append(f"{len(rounds)} of {ctx.args.rounds} timing rounds")
            row = {"items": n, "method": method, "status": "; ".join(problems) or "ok", **mem}
            row["memory_note"] = "peak RSS measured" if "train_peak_rss" in st else st.get("skip", "not measured")
            for key in ("train_peak_rss", "step_s", "cluster_s", "cluster_peak_rss", "unique_rows_s", "level_sizes",
                        "trainable_params_adapter", "error"):  # fmt: skip
                if key in st:
                    row[key] = st[key]
            for key in ("load_s", "load_peak_rss", "trie_build_s", "add_item_tokens_s", "peak_rss_with_tokens"):
                if rounds and key in rounds[0]:
                    row[key] = rounds[0][key]
            for key in ["score"] + [f"beam_{w}" for w in ctx.args.widths]:
                if timing := _timing(rounds, key):
                    row[f"{key}_ms"], row[f"{key}_round_medians_ms"] = timing["median_ms"], timing["round_medians_ms"]
            if rounds and "serve" in rounds[-1]:
                row["serve_first_ms"], row["serve_ms"] = (
                    rounds[-1]["serve"]["first_ms"],
                    rounds[-1]["serve"]["second_ms"],
                )
            rows.append(row)
    return rows


def _fmt(value, unit: float = 1.0, digits: int = 1) -> str:
    return "—" if value is None else f"{value / unit:,.{digits}f}"


def markdown(ctx: Context, rows: list[dict], kmeans: dict, machine: dict) -> str:
    w = ctx.args.widths
    head = ["items", "method", "new tokens", "new row params", "trainable params",
            "rows + trainable w/ AdamW (MiB, computed)", "training peak RSS (MiB, measured)",
            "ms / history: fast path", *[f"beam {x}" for x in w], "train s / step", "/recommend ms (2nd)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        peak = _fmt(r["train_peak_rss"], MIB, 0) if "train_peak_rss" in r else f"— ({r['memory_note']})"
        cells = [f"{r['items']:,}", r["method"], f"{r['new_tokens']:,}", f"{r['new_row_params']:,}",
                 f"{r['trainable_params']:,}", _fmt(r["computed_bytes"], MIB), peak, _fmt(r.get("score_ms")),
                 *[_fmt(r.get(f"beam_{x}_ms")) for x in w], _fmt(r.get("step_s"), 1, 2),
                 _fmt(r.get("serve_ms"), 1, 0)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Semantic IDs: what building them costs", "",
              "| items | code tokens (level sizes) | RQ-KMeans with MiniBatchKMeans: s (measured) | its peak RSS (MiB) "
              "| RQ-KMeans with the library's exact KMeans: s | np.unique of the rows (s) | run load (s) | trie build "
              "(s) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if r["method"] != "semantic":
            continue
        km = kmeans.get(r["items"], {})
        exact = f"{_fmt(km.get('seconds'), 1, 0)} ({km.get('how', 'not measured')})"
        lines.append(f"| {r['items']:,} | {r['new_tokens']:,} ({r.get('level_sizes', '—')}) | "
                     f"{_fmt(r.get('cluster_s'))} | {_fmt(r.get('cluster_peak_rss'), MIB, 0)} | {exact} | "
                     f"{_fmt(r.get('unique_rows_s'))} | {_fmt(r.get('load_s'))} | "
                     f"{_fmt(r.get('trie_build_s'), 1, 2)} |")  # fmt: skip
    notes = [f"- {k}: {v}" for k, v in machine.items()]
    for r in rows:
        if r["status"] != "ok":
            notes.append(f"- {r['method']} {r['items']:,}: {r['status']} {r.get('error', '')}".rstrip())
        if "add_item_tokens_s" in r:
            notes.append(f"- atomic {r['items']:,}: {r['memory_note']}; scored and served with its rows added to the "
                         f"base LM ({_fmt(r.get('load_peak_rss'), MIB, 0)} MiB peak RSS); adding its {r['items']:,} "
                         f"item tokens to the tokenizer took {r['add_item_tokens_s']:.1f}s")  # fmt: skip
        if "serve_first_ms" in r:
            notes.append(f"- {r['method']} {r['items']:,}: first /recommend {r['serve_first_ms']:,.0f} ms (builds the "
                         f"catalog's id index), second {r['serve_ms']:,.0f} ms")  # fmt: skip
    return "\n".join(lines + ["", "Notes", ""] + notes) + "\n"


def plot(ctx: Context, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    colour = {"atomic": "C0", "semantic": "C1"}
    series = [("atomic", "score_ms", "atomic: fast path", "C0")] + [
        ("semantic", f"beam_{w}_ms", f"semantic: beam {w}", f"C{i + 1}") for i, w in enumerate(ctx.args.widths)
    ]
    for method, key, label, c in series:
        pts = [(r["items"], r[key]) for r in rows if r["method"] == method and r.get(key)]
        if pts:
            ax_t.plot(*zip(*pts), marker="o", color=c, label=label)
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        ax_m.plot([r["items"] for r in mine], [r["computed_bytes"] / MIB for r in mine], marker="o",
                  color=colour[method], label=f"{method}: rows + trainable w/ AdamW (computed)")  # fmt: skip
        pts = [(r["items"], r["train_peak_rss"] / MIB) for r in mine if r.get("train_peak_rss")]
        if pts:
            ax_m.plot(*zip(*pts), marker="s", linestyle="--", color=colour[method],
                      label=f"{method}: training peak RSS (measured)")  # fmt: skip
    for ax, title, unit in ((ax_t, "time to score one history", "ms"), (ax_m, "memory", "MiB")):
        ax.set(xscale="log", yscale="log", xlabel="catalog items", ylabel=unit, title=title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_notes(ctx: Context) -> dict:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "load average (1, 5, 15 min) at the end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "threads": f"torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "model": f"{ctx.model}, {ctx.args.num_layers or 'all'} layers, LoRA r={ctx.args.lora_r} on attention",
        "training": f"{ctx.args.steps} steps of {ctx.args.batch_size} users (max {ctx.args.max_history} items), "
        f"validation on {ctx.args.eval_users} users",
        "versions": f"python {platform.python_version()}, torch {torch.__version__}",
    }


def write_report(ctx: Context, shape: dict, final: bool = True, machine: dict | None = None,
                 wall_s: float | None = None) -> dict:  # fmt: skip
    rows, kmeans, machine = build_rows(ctx, shape), kmeans_summary(ctx), machine or machine_notes(ctx)
    report = {"args": vars(ctx.args), "machine": machine, "model_shape": shape, "rows": rows,
              "exact_kmeans": {str(k): v for k, v in kmeans.items()}, "stages": ctx.stages,
              "wall_s": wall_s or time.perf_counter() - T0}  # fmt: skip
    (ctx.out / "scale.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (ctx.out / "scale.md").write_text(markdown(ctx, rows, kmeans, machine))
    if final:  # the tables are rewritten after every stage; the plot once, at the end
        plot(ctx, rows, ctx.out / "scale.png")
    return report


# --- main -----------------------------------------------------------------------------------------------------------


def render(ctx: Context, shape: dict) -> dict:
    """The report of an earlier run, rebuilt from ``OUTPUT_DIR/stages/*.json`` (its machine notes and wall time
    from its ``scale.json``)."""
    for path in sorted((ctx.out / "stages").glob("*.json")):
        ctx.stages[path.stem] = json.loads(path.read_text())
    for n in ctx.sizes:
        for method in METHODS:
            if f"{method}_{n}" not in ctx.stages and (why := untrained_reason(ctx, shape, method, n)):
                ctx.stages[f"{method}_{n}"] = {"status": "not trained", "skip": why}
    old = ctx.out / "scale.json"
    earlier = json.loads(old.read_text()) if old.is_file() else {}
    return write_report(ctx, shape, machine=earlier.get("machine"), wall_s=earlier.get("wall_s"))


def tiny_llama(path: Path) -> Path:
    """A random 2-layer Llama with a word-level tokenizer (--quick): loads like any local model, no hub access."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "<s>", "</s>", "item", "topic", *map(str, range(10))]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>",
                                   eos_token="</s>")  # fmt: skip
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output_dir", required=True, help="where scale.md / scale.json / scale.png and the runs go")
    ap.add_argument("--sizes", default=None, help="catalog sizes (default 12000,100000,1000000; --quick 40,150)")
    ap.add_argument("--model", default=None, help="base LM (default smollm2-135m; --quick a tiny random Llama)")
    ap.add_argument("--num_layers", type=int, default=None, help="decoder layers kept (default 4, as the recipe)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, tiny Llama, in-process, seconds")
    ap.add_argument("--steps", type=int, default=3, help="training steps per run")
    ap.add_argument("--batch_size", type=int, default=None, help="users per step (default 32, the recipe's)")
    ap.add_argument("--users", type=int, default=None, help="synthetic users (default 512)")
    ap.add_argument("--max_history", type=int, default=20)
    ap.add_argument("--eval_users", type=int, default=None, help="validation users of the training loop (16)")
    ap.add_argument("--histories", type=int, default=None, help="timed histories per size (7) after one warm-up")
    ap.add_argument("--histories_large", type=int, default=5, help="timed histories from 500k items on")
    ap.add_argument("--rounds", type=int, default=2, help="timing rounds over all sizes, in alternating order")
    ap.add_argument("--widths", default="20,50", help="beam widths of the semantic-ID search")
    ap.add_argument("--embed_dim", type=int, default=None, help="synthetic text embedding size (384, MiniLM's)")
    ap.add_argument("--sid_levels", type=int, default=None, help="k-means levels (3, the default of train)")
    ap.add_argument("--sid_codes", type=int, default=None, help="clusters per level (256, the default of train)")
    ap.add_argument("--lora_r", type=int, default=8, help="LoRA rank of the runs (train's default), for the counts")
    ap.add_argument("--kmeans_full_max", type=int, default=None, help="exact RQ-KMeans in full up to N items (12000)")
    ap.add_argument("--kmeans_probe_max", type=int, default=None, help="its init/iteration probed up to N (100000)")
    ap.add_argument("--atomic_train_max", type=int, default=None,
                    help="largest atomic catalog trained (default: where the predicted peak fits --max_rss_gb)")  # fmt: skip
    ap.add_argument("--max_rss_gb", type=float, default=7.5, help="a stage above this RSS is killed (and recorded)")
    ap.add_argument("--render", action="store_true", help="only rebuild the report from OUTPUT_DIR/stages/*.json")
    ap.add_argument("--isolate", choices=("fork", "none"), default=None,
                    help="fork: every stage in its own process (default); none: in-process (--quick)")  # fmt: skip
    a = ap.parse_args(argv)
    quick = a.quick
    defaults = {"sizes": "40,150" if quick else "12000,100000,1000000", "num_layers": None if quick else 4,
                "batch_size": 8 if quick else 32, "users": 24 if quick else 512, "eval_users": 4 if quick else 16,
                "histories": 3 if quick else 7, "embed_dim": 16 if quick else 384, "sid_levels": 2 if quick else 3,
                "sid_codes": 4 if quick else 256, "isolate": "none" if quick else "fork"}  # fmt: skip
    for key, value in defaults.items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    if quick:
        a.steps = min(a.steps, 2)
    a.sizes = sorted(int(s) for s in str(a.sizes).split(","))
    a.widths = [int(w) for w in str(a.widths).split(",")]
    a.kmeans_full_max = a.kmeans_full_max if a.kmeans_full_max is not None else (a.sizes[-1] if quick else 12000)
    a.kmeans_probe_max = a.kmeans_probe_max if a.kmeans_probe_max is not None else (a.sizes[-1] if quick else 100000)
    if a.atomic_train_max is None and quick:
        a.atomic_train_max = a.sizes[-2] if len(a.sizes) > 1 else 0  # exercise the untrained path too
    return a


def prepare_context(a: argparse.Namespace) -> Context:
    from llmrec.llm.loading import EMBEDDED_MODELS, resolve_model_path

    out = Path(a.output_dir).resolve()
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    if a.model is None:
        a.model = str(tiny_llama(out / "tiny_llama")) if a.quick else "smollm2-135m"
    if a.model in EMBEDDED_MODELS:  # the stages' $LLMREC_CACHE holds the embeddings; link the materialised LM in
        real = Path(resolve_model_path(a.model))
        link = cache / real.name
        if not link.exists():
            link.symlink_to(real, target_is_directory=True)
    return Context(a, out, a.model, cache, a.sizes)


def main(argv: list[str] | None = None) -> dict:
    """Run every stage (see the module docstring) and write the report; returns the ``scale.json`` content."""
    a = parse_args(argv)
    ctx = prepare_context(a)
    # everything the stages need is imported once here, so a forked stage starts at once
    import torch  # noqa: F401

    import llmrec.llm.loop  # noqa: F401
    import llmrec.recommenders  # noqa: F401
    import llmrec.serving.app  # noqa: F401

    shape = model_shape(ctx.model, a.num_layers)
    if a.render:
        return render(ctx, shape)
    log(f"sizes {a.sizes}, model {ctx.model} ({shape}), output {ctx.out}")
    for n in a.sizes:
        run_stage(ctx, f"data_{n}", stage_data, 900, n=n)
    pairs = [(m, n) for n in a.sizes for m in METHODS if ctx.stages[f"data_{n}"]["status"] == "ok"]
    for method, n in pairs:
        if why := untrained_reason(ctx, shape, method, n):
            log(f"{method}_{n}: {why}")
            ctx.stages[f"{method}_{n}"] = {"status": "not trained", "skip": why}
        else:
            run_stage(ctx, f"{method}_{n}", stage_train, 2400, method=method, n=n)
            write_report(ctx, shape, final=False)
    for r in range(1, a.rounds + 1):  # alternating order: the load of a shared machine drifts
        for method, n in pairs if r % 2 else pairs[::-1]:
            status = ctx.stages[f"{method}_{n}"]["status"]
            if status in ("ok", "not trained"):
                run_stage(ctx, f"score_{method}_{n}_r{r}", stage_score, 900, method=method, n=n,
                          trained=status == "ok", first=r == 1)  # fmt: skip
        write_report(ctx, shape, final=False)
    for n in [n for n in a.sizes if n <= a.kmeans_probe_max]:
        if ctx.stages[f"data_{n}"]["status"] == "ok":
            run_stage(ctx, f"kmeans_{n}", stage_exact_kmeans, 900, n=n)
    report = write_report(ctx, shape)
    log(f"wrote {ctx.out / 'scale.md'}, scale.json, scale.png")
    print((ctx.out / "scale.md").read_text(), flush=True)
    return report


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    main()
