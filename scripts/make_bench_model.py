#!/usr/bin/env python3
"""Write a random-weight bf16 Falcon checkpoint (Hugging Face layout) for benchmarks.

    python3 scripts/make_bench_model.py --out bench-models/falcon-1b \
        [--layers 16 --hidden 2048 --heads 32 --kv-heads 8 --vocab 65024] [--shard-mb 0]

Falcon-40B style: new decoder architecture, parallel attention with ln_attn + ln_mlp, no linear
bias, rotary, tied embeddings (no lm_head.weight). config.json is written by
FalconConfig.save_pretrained (current "falcon" format). The model is never instantiated in torch:
each tensor is drawn directly in bfloat16 (linears and embeddings normal(0, 0.02), LayerNorm weights
1 + normal(0, 0.02), LayerNorm biases normal(0, 0.02)) and written with safetensors. The weights
are deterministic for a given --seed but carry no meaning: use this for speed and memory, never
for accuracy.
"""

import argparse
import json
import os
import time

import torch
from safetensors.torch import save_file
from transformers import FalconConfig, GenerationConfig

STD = 0.02


def tensor_shapes(a) -> list[tuple[str, tuple[int, ...]]]:
    """Checkpoint names and shapes (docs/falcon.md section 4), in file order."""
    hd = a.hidden // a.heads
    shapes = [("transformer.word_embeddings.weight", (a.vocab, a.hidden))]
    for i in range(a.layers):
        p = f"transformer.h.{i}"
        shapes += [
            (f"{p}.ln_attn.weight", (a.hidden,)),
            (f"{p}.ln_attn.bias", (a.hidden,)),
            (f"{p}.ln_mlp.weight", (a.hidden,)),
            (f"{p}.ln_mlp.bias", (a.hidden,)),
            (f"{p}.self_attention.query_key_value.weight", ((a.heads + 2 * a.kv_heads) * hd, a.hidden)),
            (f"{p}.self_attention.dense.weight", (a.hidden, a.heads * hd)),
            (f"{p}.mlp.dense_h_to_4h.weight", (a.ffn, a.hidden)),
            (f"{p}.mlp.dense_4h_to_h.weight", (a.hidden, a.ffn)),
        ]
    shapes += [("transformer.ln_f.weight", (a.hidden,)), ("transformer.ln_f.bias", (a.hidden,))]
    return shapes


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def plan_shards(shapes, shard_bytes: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Greedy split in file order; shard_bytes <= 0 means one file."""
    if shard_bytes <= 0:
        return [shapes]
    shards, cur, size = [], [], 0
    for name, shape in shapes:
        b = 2 * numel(shape)
        if cur and size + b > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += b
    return shards + [cur] if cur else shards


def make_tensor(name: str, shape, gen: torch.Generator) -> torch.Tensor:
    t = torch.randn(shape, dtype=torch.bfloat16, generator=gen).mul_(STD)
    if name.endswith("norm.weight") or name.endswith(("ln_attn.weight", "ln_mlp.weight", "ln_f.weight")):
        t.add_(1.0)
    return t


def write_config(a) -> None:
    config = FalconConfig(
        vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_kv_heads=a.kv_heads, ffn_hidden_size=a.ffn,
        new_decoder_architecture=True, parallel_attn=True, num_ln_in_parallel_attn=2,
        bias=False, alibi=False, tie_word_embeddings=True, max_position_embeddings=a.max_pos,
        bos_token_id=11, eos_token_id=11, activation="gelu", layer_norm_epsilon=1e-5,
    )
    config.architectures = ["FalconForCausalLM"]
    config.dtype = torch.bfloat16
    config.save_pretrained(a.out)
    GenerationConfig(bos_token_id=11, eos_token_id=11).save_pretrained(a.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=65024)
    ap.add_argument("--ffn", type=int, default=0, help="MLP width (default 4 * hidden)")
    ap.add_argument("--max-pos", type=int, default=2048)
    ap.add_argument("--shard-mb", type=int, default=0, help="max MiB per file; 0 = one model.safetensors")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    a.ffn = a.ffn or 4 * a.hidden
    if a.hidden % a.heads or a.heads % a.kv_heads:
        ap.error("hidden must be divisible by heads, heads by kv-heads")
    t0 = time.time()
    os.makedirs(a.out, exist_ok=True)
    for f in os.listdir(a.out):  # stale weights from an earlier, differently sharded run
        if f.endswith(".safetensors") or f == "model.safetensors.index.json":
            os.remove(os.path.join(a.out, f))
    write_config(a)

    shapes = tensor_shapes(a)
    shards = plan_shards(shapes, a.shard_mb * 2**20)
    gen = torch.Generator().manual_seed(a.seed)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: make_tensor(name, shape, gen) for name, shape in shard}
        save_file(tensors, os.path.join(a.out, fname), metadata={"format": "pt"})
        for name, t in tensors.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
        del tensors
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")

    params = sum(numel(s) for _, s in shapes)
    print(f"{a.out}: {params:,} parameters ({params / 1e9:.3f} B), {total:,} bytes of bf16 weights "
          f"in {len(shards)} file(s), {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
