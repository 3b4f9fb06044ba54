"""How much an LLM run's decoder attends to position 0, and how large the hidden state there is.

    python experiments/attention_sink.py --run runs/exp/BOS-L4

Takes the first ``--length`` tokens of the validation prompts of the run's data that have at least that many
tokens (the first ``--users`` of them), runs the merged model with eager attention, and prints per layer: the mean
attention weight that positions 1.. put on position 0 (averaged over heads, positions and prompts; next to it the
value a uniform causal attention would give), and the mean hidden-state norm at position 0 vs the other positions.
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="LLM run directory written by llmrec train")
    ap.add_argument("--data", default=None, help="prepared data (default: where the run recorded it)")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--length", type=int, default=8, help="tokens per prompt")
    args = ap.parse_args()

    import torch

    from llmrec.llm.recommender import load_llm_run
    from llmrec.runs import load_run_data

    rec = load_llm_run(args.run)
    lm = rec.item_lm.lm
    lm.set_attn_implementation("eager")  # attention weights are only returned by the eager implementation
    histories, _ = load_run_data(args.run, args.data).split("valid")
    prompts = []
    for h in histories:
        ids = rec.encoder.encode(h)
        if len(ids) >= args.length:
            prompts.append(ids[: args.length])
        if len(prompts) == args.users:
            break
    if not prompts:
        raise SystemExit(f"no validation prompt has {args.length} tokens")
    with torch.no_grad():
        out = lm(input_ids=torch.tensor(prompts), output_attentions=True, output_hidden_states=True)
    uniform = (1.0 / torch.arange(2, args.length + 1, dtype=torch.float)).mean().item()
    print(
        f"{len(prompts)} prompts of {args.length} tokens; first token {rec.tokenizer.convert_ids_to_tokens(prompts[0][0])}"
    )
    for layer, att in enumerate(out.attentions):  # [B, heads, L, L]
        print(f"layer {layer}: attention on position 0 = {att[:, :, 1:, 0].mean().item():.3f} (uniform {uniform:.3f})")
    for layer, hidden in enumerate(out.hidden_states):  # [B, L, D]; 0 = embeddings, last = after the final norm
        norm = hidden.norm(dim=-1).mean(0)
        print(f"hidden {layer}: norm at position 0 {norm[0]:.1f}, positions 1.. {norm[1:].mean():.1f}")


if __name__ == "__main__":
    main()
