#!/usr/bin/env python3
"""Build tiny random-weight Falcon checkpoints and their transformers reference outputs.

    python3 scripts/make_fixtures.py --out tests/fixtures

Every fixture is a directory tests/fixtures/<name>/ holding a Hugging Face checkpoint
(config.json, generation_config.json, *.safetensors) and reference.json with, for three prompts,
the fp32 logits of the whole prompt and a 40-token greedy continuation (bf16 checkpoints also get
the same computed natively in bf16). The output is deterministic: fixed seeds, CPU only.

References are always computed by re-loading the saved directory with from_pretrained. The two
RW-era fixtures get their config.json rewritten AFTER the references were computed, because
transformers 5 cannot load RW-era configs (model_type RefinedWeb/RefinedWebModel need remote code,
and FalconConfig ignores n_head/n_layer/n_head_kv). Finally every fixture is checked against an
independent float64 implementation of docs/falcon.md that reads the files as written (RW-era
configs included), so the rewritten configs are proven to describe the measured weights.
The script also writes <out>/README.md (how the fixtures were made, what each covers).
"""

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys

import numpy as np
import safetensors
import safetensors.torch
import torch
import transformers
from transformers import FalconConfig, FalconForCausalLM

VOCAB = 384
NEW_TOKENS = 40
PROMPT_LENGTHS = (1, 7, 13)
MIN_MARGIN = 1e-3    # smallest top1 - top2 logit gap allowed on any fp32 greedy step
MIN_DISTINCT = 8     # each greedy path must visit this many distinct tokens (no trivial loops)
SEED_TRIES = 20

# Weight scales. The library default (normal, std 0.02) gives near-uniform logits; these give
# O(1) activations everywhere and logits with a spread of a few units.
STD_EMBED = 0.5      # word_embeddings / lm_head
STD_QKV = 0.3        # query_key_value: attention peaked (mean max prob ~0.7) but not one-hot
STD_LINEAR = 0.5     # dense, dense_h_to_4h, dense_4h_to_h
STD_BIAS = 0.1       # linear biases (bias=True models)
LN_WEIGHT = (0.6, 1.4)  # uniform range for LayerNorm weights
STD_LN_BIAS = 0.2    # LayerNorm biases

COMMON = dict(
    vocab_size=VOCAB, max_position_embeddings=2048, bos_token_id=11, eos_token_id=11,
    activation="gelu", layer_norm_epsilon=1e-5,
)


@dataclasses.dataclass
class Spec:
    name: str
    seed: int
    config: dict
    dtype: torch.dtype = torch.float32
    shard_size: str | None = None  # max_shard_size for save_pretrained, None = single file
    rw_format: str | None = None   # "RefinedWeb" / "RefinedWebModel": rewrite config.json
    covers: str = ""


SPECS = [
    Spec("mqa7-fp32", 1000, dict(
        hidden_size=56, num_attention_heads=7, num_hidden_layers=2, new_decoder_architecture=False,
        multi_query=True, parallel_attn=True, bias=False, alibi=False),
        covers="falcon-7B layout: multi-query (1 KV head, qkv rows [q0..q6, k, v]), parallel block "
               "with one input_layernorm, rotary, no bias, tied lm_head, odd head count."),
    Spec("mqa7-bf16", 2000, dict(
        hidden_size=56, num_attention_heads=7, num_hidden_layers=2, new_decoder_architecture=False,
        multi_query=True, parallel_attn=True, bias=False, alibi=False),
        dtype=torch.bfloat16,
        covers="same as mqa7-fp32, stored in bfloat16; references in fp32 (exact upcast) and native bf16."),
    Spec("gqa8x2-fp32", 3000, dict(
        hidden_size=64, num_attention_heads=8, num_kv_heads=2, num_hidden_layers=3,
        new_decoder_architecture=True, bias=False, alibi=False),
        covers="falcon-40B layout: new decoder architecture, 8 query heads over 2 KV groups (r=4, qkv "
               "rows [q0..q3,k0,v0; q4..q7,k1,v1]), ln_attn + ln_mlp (num_ln_in_parallel_attn unset), 3 layers."),
    Spec("gqa8x4-bf16-sharded", 4000, dict(
        hidden_size=64, num_attention_heads=8, num_kv_heads=4, num_hidden_layers=2,
        new_decoder_architecture=True, bias=False, alibi=False),
        dtype=torch.bfloat16, shard_size="60KB", rw_format="RefinedWeb",
        covers="falcon-40B layout with r=2, bf16, sharded safetensors + model.safetensors.index.json, "
               "RW-era config.json (model_type RefinedWeb, n_head/n_head_kv/n_layer, hidden_size)."),
    Spec("falcon11b-fp32", 5000, dict(
        hidden_size=64, num_attention_heads=8, num_kv_heads=2, num_hidden_layers=2,
        new_decoder_architecture=True, num_ln_in_parallel_attn=1, tie_word_embeddings=False,
        rope_parameters={"rope_theta": 500042.0, "rope_type": "default"}, bias=False, alibi=False),
        covers="falcon-11B layout: new decoder architecture with ONE input_layernorm, untied lm_head.weight, "
               "rope_theta 500042 (config.json: rope_parameters.rope_theta)."),
    Spec("rw-alibi-fp32", 6000, dict(
        hidden_size=48, num_attention_heads=6, num_hidden_layers=2, new_decoder_architecture=False,
        multi_query=False, parallel_attn=False, bias=True, alibi=True),
        rw_format="RefinedWebModel",
        covers="falcon-rw layout: sequential block (input_layernorm, post_attention_layernorm), ALiBi with "
               "6 heads (non power of two: extra slopes), biases on all linears, kv = heads (qkv rows "
               "[q0,k0,v0,q1,k1,v1,...]), RW-era config.json (model_type RefinedWebModel, n_embed)."),
    Spec("rw-alibi16-fp32", 7000, dict(
        hidden_size=64, num_attention_heads=16, num_hidden_layers=2, new_decoder_architecture=False,
        multi_query=False, parallel_attn=False, bias=True, alibi=True),
        covers="falcon-rw layout with 16 heads (head_dim 4) in the current `falcon` config format: the "
               "slopes 2^(-k/2) are not powers of two, so transformers' bf16 rounding of "
               "bf16(slope) * position changes the bias; an engine using exact slopes fails this one."),
]


# ----------------------------------------------------------------------------- weights

def randomize(model: FalconForCausalLM, seed: int) -> None:
    """Overwrite every parameter (tied ones once) with seeded non-trivial values."""
    gen = torch.Generator().manual_seed(seed)
    ln_names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            module, leaf = name.rsplit(".", 1)
            shape = p.shape
            if module in ln_names:
                if leaf == "weight":
                    lo, hi = LN_WEIGHT
                    v = lo + (hi - lo) * torch.rand(shape, generator=gen)
                else:
                    v = STD_LN_BIAS * torch.randn(shape, generator=gen)
            elif module.endswith("word_embeddings") or module == "lm_head":
                v = STD_EMBED * torch.randn(shape, generator=gen)
            elif leaf == "bias":
                v = STD_BIAS * torch.randn(shape, generator=gen)
            elif module.endswith("query_key_value"):
                v = STD_QKV * torch.randn(shape, generator=gen)
            else:
                v = STD_LINEAR * torch.randn(shape, generator=gen)
            p.copy_(v)


def build_and_save(spec: Spec, seed: int, path: str) -> None:
    torch.manual_seed(seed)
    config = FalconConfig(**COMMON, **spec.config)
    model = FalconForCausalLM(config).eval()
    randomize(model, seed)
    model = model.to(spec.dtype)
    if os.path.isdir(path):
        shutil.rmtree(path)
    kwargs = {"max_shard_size": spec.shard_size} if spec.shard_size else {}
    model.save_pretrained(path, **kwargs)


def load(path: str, dtype: torch.dtype) -> FalconForCausalLM:
    # sdpa (the default) is the correct path for ALiBi; transformers' eager ALiBi path adds the
    # bias twice (once in the attention, once through the mask). For rotary both agree.
    model = FalconForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


# ----------------------------------------------------------------------------- references

def prompts_for(index: int) -> list[list[int]]:
    rng = np.random.RandomState(77 + index)
    return [rng.randint(0, VOCAB, size=n).tolist() for n in PROMPT_LENGTHS]


def cache_of(out):
    return out.cache if hasattr(out, "cache") else out.past_key_values


@torch.no_grad()
def greedy(model, prompt: list[int]):
    """Greedy decode with the KV cache; returns ids, per-step logits [NEW_TOKENS, V], min margin."""
    out = model(input_ids=torch.tensor([prompt]), use_cache=True)
    cache, last = cache_of(out), out.logits[0, -1].float()
    ids, steps, margin = [], [], math.inf
    for step in range(NEW_TOKENS):
        top = torch.topk(last, 2).values
        margin = min(margin, float(top[0] - top[1]))
        nxt = int(torch.argmax(last))
        ids.append(nxt)
        steps.append(last)
        if step + 1 == NEW_TOKENS:
            break
        out = model(input_ids=torch.tensor([[nxt]]), cache=cache, use_cache=True)
        cache, last = cache_of(out), out.logits[0, -1].float()
    return ids, torch.stack(steps), margin


@torch.no_grad()
def forward_logits(model, ids: list[int]) -> torch.Tensor:
    return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()


def compute_cases(path: str, prompts, native: bool):
    """Reference cases from the saved directory; also the cache-vs-full self-check figures."""
    model = load(path, torch.float32)
    cases, checks = [], []
    native_model = load(path, torch.bfloat16) if native else None
    for prompt in prompts:
        case = {"prompt_ids": prompt, "logits": forward_logits(model, prompt)}
        case["greedy_ids"], steps, case["min_margin"] = greedy(model, prompt)
        checks.append(self_check(model, prompt, case["greedy_ids"], steps))
        if native:
            case["logits_native"] = forward_logits(native_model, prompt)
            case["greedy_ids_native"], _, case["min_margin_native"] = greedy(native_model, prompt)
        cases.append(case)
    return cases, checks


def self_check(model, prompt, gen, steps) -> float:
    """Full-sequence forward over prompt + generated tokens must reproduce the cached decode."""
    full = forward_logits(model, prompt + gen[:-1])[len(prompt) - 1:]
    assert full.argmax(-1).tolist() == gen, "cached greedy decode disagrees with full forward"
    return float((full - steps).abs().max())


# ----------------------------------------------------------------------------- RW-era configs

def rewrite_rw_config(path: str, spec: Spec) -> None:
    cfg = json.load(open(os.path.join(path, "config.json")))
    dtype = "bfloat16" if spec.dtype == torch.bfloat16 else "float32"
    rw = {
        "alibi": cfg["alibi"],
        "apply_residual_connection_post_layernorm": False,
        "architectures": ["RWForCausalLM"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_RW.RWConfig",
            "AutoModelForCausalLM": "modelling_RW.RWForCausalLM",
        },
        "bias": cfg["bias"],
        "bos_token_id": cfg["bos_token_id"],
        "eos_token_id": cfg["eos_token_id"],
        "hidden_dropout": 0.0,
        "initializer_range": 0.02,
        "layer_norm_epsilon": cfg["layer_norm_epsilon"],
        "model_type": spec.rw_format,
        "n_head": cfg["num_attention_heads"],
        "n_layer": cfg["num_hidden_layers"],
        "parallel_attn": cfg["parallel_attn"],
        "torch_dtype": dtype,
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "vocab_size": cfg["vocab_size"],
    }
    if spec.rw_format == "RefinedWeb":   # falcon-40b's file: hidden_size + n_head_kv
        rw["hidden_size"] = cfg["hidden_size"]
        rw["n_head_kv"] = cfg["num_kv_heads"]
    else:                                # RefinedWebModel (falcon-rw / early 7b): n_embed alias
        rw["n_embed"] = cfg["hidden_size"]
        rw["multi_query"] = cfg["multi_query"]
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(dict(sorted(rw.items())), f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------- independent check

def doc_config(path: str) -> dict:
    """Effective structure from config.json exactly as docs/falcon.md section 1 describes it."""
    c = json.load(open(os.path.join(path, "config.json")))
    mt = c["model_type"]
    H = c.get("hidden_size", c.get("n_embed"))
    nh = c.get("num_attention_heads", c.get("n_head"))
    new_arch = True if mt == "RefinedWeb" else c.get("new_decoder_architecture", False)
    mq = c.get("multi_query", True)
    kv_field = c.get("num_kv_heads", c.get("n_head_kv", nh))
    kv = kv_field if new_arch else (1 if mq else nh)
    rope = c.get("rope_parameters") or {}
    return dict(
        H=H, L=c.get("num_hidden_layers", c.get("n_layer")), nh=nh, kv=kv, hd=H // nh,
        new_arch=new_arch, parallel=True if new_arch else c.get("parallel_attn", True),
        n_ln=c.get("num_ln_in_parallel_attn") or (2 if new_arch else 1),
        alibi=c.get("alibi", False), eps=c.get("layer_norm_epsilon", 1e-5),
        theta=rope.get("rope_theta", c.get("rope_theta", 10000.0)))


def doc_tensors(path: str) -> dict:
    index = os.path.join(path, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) \
        else ["model.safetensors"]
    out = {}
    for f in files:
        out.update({k: v.double() for k, v in safetensors.torch.load_file(os.path.join(path, f)).items()})
    return out


def alibi_slopes(nh: int) -> torch.Tensor:
    n = 2 ** int(math.floor(math.log2(nh)))
    s = [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]
    s += [2.0 ** (-4.0 * (2 * k + 1) / n) for k in range(nh - n)]
    return torch.tensor(s, dtype=torch.float64)


def doc_forward(c: dict, w: dict, ids: list[int]) -> torch.Tensor:
    """float64 forward of docs/falcon.md section 2; returns logits [T, V]."""
    T, H, nh, kv, hd = len(ids), c["H"], c["nh"], c["kv"], c["hd"]
    gelu = lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))  # noqa: E731

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    def ln(x, name):
        return torch.nn.functional.layer_norm(x, (H,), w[name + ".weight"], w[name + ".bias"], c["eps"])

    pos = torch.arange(T, dtype=torch.float64)
    if not c["alibi"]:
        inv = c["theta"] ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        ang = pos[:, None] * inv[None, :]
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

    def rot(x):  # [heads, T, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    mask = torch.full((T, T), -math.inf, dtype=torch.float64).triu(1)

    def attn(x, p):
        qkv = lin(x, p + ".query_key_value").view(T, kv, nh // kv + 2, hd)
        q = qkv[:, :, :-2].reshape(T, nh, hd).transpose(0, 1)
        k = qkv[:, :, -2].transpose(0, 1).repeat_interleave(nh // kv, 0)
        v = qkv[:, :, -1].transpose(0, 1).repeat_interleave(nh // kv, 0)
        if not c["alibi"]:
            q, k = rot(q), rot(k)
        s = q @ k.transpose(1, 2)
        if c["alibi"]:  # bias = slope * key position, scaled by 1/sqrt(hd) together with q.k;
            # transformers (like the original RW code) rounds the slope and the product to bf16.
            slope = alibi_slopes(nh).float().bfloat16()
            bias = (slope[:, None, None] * pos.long()[None, None, :]).double()
            s = s + bias
        prob = torch.softmax(s / math.sqrt(hd) + mask, -1)
        return lin((prob @ v).transpose(0, 1).reshape(T, nh * hd), p + ".dense")

    def mlp(x, p):
        return lin(gelu(lin(x, p + ".dense_h_to_4h")), p + ".dense_4h_to_h")

    x = w["transformer.word_embeddings.weight"][ids]
    for i in range(c["L"]):
        p = f"transformer.h.{i}"
        if not c["parallel"]:
            x = x + attn(ln(x, p + ".input_layernorm"), p + ".self_attention")
            x = x + mlp(ln(x, p + ".post_attention_layernorm"), p + ".mlp")
        elif c["new_arch"] and c["n_ln"] == 2:
            x = x + mlp(ln(x, p + ".ln_mlp"), p + ".mlp") + attn(ln(x, p + ".ln_attn"), p + ".self_attention")
        else:
            h = ln(x, p + ".input_layernorm")
            x = x + mlp(h, p + ".mlp") + attn(h, p + ".self_attention")
    x = ln(x, "transformer.ln_f")
    head = w.get("lm_head.weight", w["transformer.word_embeddings.weight"])
    return x @ head.T


def doc_check(path: str, cases) -> float:
    """Max |logit difference| between the doc implementation and transformers, greedy paths included."""
    c, w = doc_config(path), doc_tensors(path)
    worst = 0.0
    for case in cases:
        seq = case["prompt_ids"] + case["greedy_ids"][:-1]
        got = doc_forward(c, w, seq)
        n = len(case["prompt_ids"])
        worst = max(worst, float((got[:n] - case["logits"].double()).abs().max()))
        assert got[n - 1:].argmax(-1).tolist() == case["greedy_ids"], "doc implementation: greedy differs"
    return worst


# ----------------------------------------------------------------------------- output

def fmt(v: float) -> str:
    return str(np.float32(v))  # shortest string that round-trips float32


def rows(t: torch.Tensor, indent: str) -> str:
    lines = ("[" + ",".join(fmt(v) for v in r.tolist()) + "]" for r in t)
    return "[\n" + ",\n".join(indent + "  " + s for s in lines) + "\n" + indent + "]"


def write_reference(path: str, spec: Spec, cases) -> None:
    head = {
        "generator": "scripts/make_fixtures.py",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "safetensors_version": safetensors.__version__,
        "stored_dtype": "bfloat16" if spec.dtype == torch.bfloat16 else "float32",
    }
    out = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()] + ['  "cases": [']
    blocks = []
    for case in cases:
        fields = [f'      "prompt_ids": {json.dumps(case["prompt_ids"])}',
                  f'      "logits": {rows(case["logits"], "      ")}',
                  f'      "greedy_ids": {json.dumps(case["greedy_ids"])}',
                  f'      "min_margin": {fmt(case["min_margin"])}']
        if "logits_native" in case:
            fields += [f'      "logits_native": {rows(case["logits_native"], "      ")}',
                       f'      "greedy_ids_native": {json.dumps(case["greedy_ids_native"])}',
                       f'      "min_margin_native": {fmt(case["min_margin_native"])}']
        blocks.append("    {\n" + ",\n".join(fields) + "\n    }")
    out += [",\n".join(blocks), "  ]", "}"]
    with open(os.path.join(path, "reference.json"), "w") as f:
        f.write("\n".join(out) + "\n")


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def digest(path: str) -> str:
    h = hashlib.sha256()
    for f in sorted(os.listdir(path)):
        h.update(f.encode())
        h.update(open(os.path.join(path, f), "rb").read())
    return h.hexdigest()[:16]


README = """\
# Falcon reference fixtures

Generated by `scripts/make_fixtures.py`; do not edit by hand. Regenerate (deterministic, CPU, ~1 min):

    pip install -r scripts/requirements-fixtures.txt
    python3 scripts/make_fixtures.py --out tests/fixtures

Made with torch {torch}, transformers {transformers}, safetensors {safetensors}, numpy {numpy}.

Each folder is a tiny random-weight Falcon saved by `FalconForCausalLM.save_pretrained` (safetensors):
vocab 384, head_dim 8, gelu MLP of width 4H, eps 1e-5, bos/eos 11. Weights: embeddings normal(0, {std_embed}),
query_key_value normal(0, {std_qkv}), other linears normal(0, {std_linear}), linear biases normal(0, {std_bias}),
LayerNorm weights uniform{ln_weight}, LayerNorm biases normal(0, {std_ln_bias}), so every tensor matters.
Seeds are tried from a base upwards until every greedy path has min_margin >= {min_margin} and at least
{min_distinct} distinct tokens.

| fixture | seed | stored | min_margin per prompt | what it covers |
|---|---|---|---|---|
{rows}

## reference.json
`cases` holds three prompts (lengths {lengths}, random ids). Per case:
- `logits` [len(prompt)][384]: one forward over the whole prompt, fp32 compute (a bf16 checkpoint is
  loaded with `dtype=float32`, an exact upcast), attention `sdpa`.
- `greedy_ids`: {new} greedy tokens (argmax, lowest id on ties) with the KV cache; EOS does not stop it.
- `min_margin`: smallest top1 - top2 logit gap over those {new} steps.
- bf16 checkpoints also: `logits_native`, `greedy_ids_native`, `min_margin_native`, the same computed
  natively in bfloat16. `min_margin_native` is often 0 (exact bf16 ties): compare native greedy ids
  only up to the first near-tie, and native logits only loosely (bf16 spacing at |logit| ~ 16 is 0.125).
Floats are the shortest strings that round-trip float32. Logits span about -18..18.

References were computed by re-loading each saved folder with `from_pretrained`. The script checks that
a full forward over prompt + greedy tokens reproduces the cached decode (max |diff| ~1e-5), and that an
independent float64 implementation of docs/falcon.md, reading the folder as written (RW-era configs
included), matches the fp32 logits within ~1.5e-5 and reproduces every greedy path. An fp32 engine should
match `logits` to 1e-4.

## Config formats
- `gqa8x4-bf16-sharded`, `rw-alibi-fp32`: config.json is rewritten in the RW-era format AFTER the
  references were computed (with the standard config the model was saved with), because transformers 5
  cannot load RW-era configs: `RefinedWeb`/`RefinedWebModel` are not registered model types (AutoConfig
  asks for remote code), and FalconConfig ignores `n_head`/`n_layer`/`n_head_kv`. Key sets follow the
  real files: `RefinedWeb` (falcon-40b: `hidden_size`, `n_head`, `n_head_kv`, `n_layer`, implies the new
  decoder architecture) and `RefinedWebModel` (falcon-rw: `n_embed`, `n_head`, `n_layer`, `multi_query`).
  The weights are untouched by the rewrite. bos/eos are 11 here (the real falcon-40b files say 1/2).
- The current format stores the rotary base as `rope_parameters.rope_theta` (older files: top-level
  `rope_theta`); the dtype key is `dtype` (older files: `torch_dtype`).
- `mqa7-*` config.json says `num_kv_heads: 7` although the model is multi-query (1 KV head), like the
  real falcon-7b config; new-architecture configs carry `multi_query: true`, which is ignored.

## transformers behaviour worth knowing
- ALiBi: use `sdpa`. The `eager` path adds the ALiBi bias twice (in the attention and through the mask);
  for `rw-alibi-fp32` its logits differ from sdpa by up to ~1.7.
- ALiBi bias is built as bf16(bf16(slope) * position) even for fp32 models (as in the original RW code).
  With 6 heads the slopes are powers of two, so this is exact for positions < 256 and the fixture
  (positions < 53) matches exact ALiBi. With 16+ heads (falcon-rw-1b has 32) the slopes are not powers
  of two: transformers' bias then differs from exact slope * position by up to 0.18 at positions < 64
  and 0.75 below 256 (before the 1/sqrt(head_dim) scaling). This fixture cannot tell the two apart.
"""


def write_readme(out_dir: str, results: dict) -> None:
    lines = []
    for spec in SPECS:
        r = results[spec.name]
        dtype = "bf16" if spec.dtype == torch.bfloat16 else "fp32"
        files = "sharded" if spec.shard_size else "single file"
        lines.append(f"| `{spec.name}` | {r['seed']} | {dtype}, {files} | "
                     + ", ".join(f"{m:.4g}" for m in r["margins"]) + f" | {spec.covers} |")
    text = README.format(
        torch=torch.__version__, transformers=transformers.__version__, safetensors=safetensors.__version__,
        numpy=np.__version__, std_embed=STD_EMBED, std_qkv=STD_QKV, std_linear=STD_LINEAR, std_bias=STD_BIAS,
        ln_weight=LN_WEIGHT, std_ln_bias=STD_LN_BIAS, min_margin=MIN_MARGIN, min_distinct=MIN_DISTINCT,
        rows="\n".join(lines), lengths=", ".join(map(str, PROMPT_LENGTHS)), new=NEW_TOKENS)
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(text)


# ----------------------------------------------------------------------------- main

def make(spec: Spec, index: int, out_dir: str):
    path = os.path.join(out_dir, spec.name)
    prompts = prompts_for(index)
    native = spec.dtype == torch.bfloat16
    for attempt in range(SEED_TRIES):
        seed = spec.seed + attempt
        build_and_save(spec, seed, path)
        cases, checks = compute_cases(path, prompts, native)
        margin = min(c["min_margin"] for c in cases)
        distinct = min(len(set(c["greedy_ids"])) for c in cases)
        if margin >= MIN_MARGIN and distinct >= MIN_DISTINCT:
            break
        print(f"  {spec.name}: seed {seed} rejected (min_margin {margin:.2g}, distinct tokens {distinct})")
    else:
        sys.exit(f"{spec.name}: no seed in {SEED_TRIES} tries meets min_margin/distinct")
    write_reference(path, spec, cases)
    if spec.rw_format:
        rewrite_rw_config(path, spec)
    return dict(seed=seed, margins=[c["min_margin"] for c in cases], cache_diff=max(checks),
                doc_diff=doc_check(path, cases),
                native_margins=[c["min_margin_native"] for c in cases] if native else None,
                native_agree=[c["greedy_ids_native"] == c["greedy_ids"] for c in cases] if native else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder, e.g. tests/fixtures")
    ap.add_argument("--only", nargs="*", help="build only these fixture names")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    total, results = 0, {}
    for index, spec in enumerate(SPECS):
        if args.only and spec.name not in args.only:
            continue
        r = results[spec.name] = make(spec, index, args.out)
        path = os.path.join(args.out, spec.name)
        size = dir_size(path)
        total += size
        print(f"{spec.name:22s} seed {r['seed']:5d}  min_margin "
              + " ".join(f"{m:.4f}" for m in r["margins"])
              + f"  cache-vs-full {r['cache_diff']:.1e}  doc-impl {r['doc_diff']:.1e}"
              + f"  {size / 1024:7.1f} KiB  sha {digest(path)}")
        if r["native_margins"]:
            print(f"{'':22s} native bf16: min_margin "
                  + " ".join(f"{m:.4f}" for m in r["native_margins"])
                  + f"  greedy == fp32 greedy: {r['native_agree']}")
        assert r["cache_diff"] < 1e-4 and r["doc_diff"] < 1e-4, "self-check tolerance exceeded"
    if not args.only:
        write_readme(args.out, results)
    print(f"total {total / 1024:.1f} KiB (README.md not counted)")


if __name__ == "__main__":
    main()
