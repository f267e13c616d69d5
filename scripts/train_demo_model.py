#!/usr/bin/env python3
"""Trains saker's demo models from scratch on public-domain English, on the CPU, reproducibly.

Two Falcons in the Hugging Face format the big checkpoints use (transformers' own
FalconForCausalLM, saved with save_pretrained as bf16 safetensors):
  models/falcon-demo/        the target: Falcon-40B's decoder (new_decoder_architecture: grouped
                             KV heads, parallel attention + MLP, ln_attn / ln_mlp, rotary), 6 query
                             heads over 3 KV groups, so that tp 2 splits the groups 2 + 1;
  models/falcon-demo-draft/  its draft for speculative decoding: 2 layers, Falcon-7B's decoder
                             (multi-query, one shared layer norm), same tokenizer.

The corpus comes from Debian packages (scripts/setup.sh installs them), all public domain:
the King James Bible (bible-kjv, bible-kjv-text), Ambrose Bierce's The Devil's Dictionary
(dict-devil) and the Jargon File 4.4.7 (dict-jargon). Each dictionary entry also becomes a short
chat in Falcon's "User: / Falcon:" style, so the model learns turns and the demo's chat stops on
"\\nUser:". Every 20th document is held out for evaluation.

The tokenizer is a byte-level BPE of 8192 ids trained on the training split with HF tokenizers,
in Falcon's own pipeline (Falcon's tokenizer.json retrained: same pre-tokenizer, decoder and
special tokens, <|endoftext|> = 11). Falcon's 65024 ids would make the embedding alone 25 M
parameters (50 MB in bf16), over the size budget for two models in the repository.

Also writes tests/fixtures/falcon-demo-reference.json from transformers (held-out perplexity in
fp32 and bf16, greedy continuations of 20 held-out prompts), which the C++ tests read.

  PATH=/work/.benchvenv/bin:$PATH python3 scripts/train_demo_model.py   # ~25 min on 2 cores
Versions: scripts/requirements-demo-model.txt.
"""

import argparse
import copy
import gzip
import json
import math
import os
import random
import re
import subprocess
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import FalconConfig, FalconForCausalLM, GenerationConfig  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
FALCON_TOKENIZER = os.path.join(ROOT, "..", "shared", "models", "falcon-tokenizer", "tokenizer.json")
SEED = 20261206
VOCAB = 8192
SEQ = 256
EOS = "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}"
    "{% else %}{{ 'Falcon: ' + message['content'] + '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Falcon:' }}{% endif %}")

TARGET = dict(hidden_size=384, num_hidden_layers=5, num_attention_heads=6, num_kv_heads=3,
              new_decoder_architecture=True, parallel_attn=True, multi_query=True)
DRAFT = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=1,
             new_decoder_architecture=False, parallel_attn=True, multi_query=True)


# ----------------------------------------------------------------------------------- the corpus
def paragraphs(text):
    """Blank-line separated blocks, each with its lines joined by single spaces."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        p = " ".join(line.strip() for line in block.splitlines() if line.strip())
        if p:
            out.append(p)
    return out


def kjv():
    """One document per chapter: 'Genesis 1' then its verses as running prose."""
    text = subprocess.run(["bible", "Gen1:1-Rev22:21"], check=True, capture_output=True,
                          text=True).stdout
    docs, title, verses = [], None, []
    for line in text.splitlines():
        m = re.match(r"^(\S.*\S) (\d+)$", line)
        if m and not line.startswith(" "):
            if title and verses:
                docs.append(title + "\n\n" + " ".join(verses))
            title, verses = line.strip(), []
            continue
        m = re.match(r"^\s+\d+ (.*)$", line)
        if m:
            verses.append(m.group(1).strip())
        elif line.strip() and verses:
            verses[-1] += " " + line.strip()
    if title and verses:
        docs.append(title + "\n\n" + " ".join(verses))
    return docs


def dictd(name):
    """The entries of a dictd database (after its 00-database header entries)."""
    with gzip.open(f"/usr/share/dictd/{name}.dict.dz", "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    # Typographic quotes and dashes as plain ASCII: one spelling per word for a small vocabulary.
    for a, b in (("\u201c", '"'), ("\u201d", '"'), ("\u2018", "'"), ("\u2019", "'"), ("\u2014", " -- ")):
        text = text.replace(a, b)
    return text


def devil():
    """(word, definition) pairs and the book as documents of a few entries each."""
    text = dictd("devil")
    text = text[text.index("ABASEMENT, n."):]
    entries = []
    for p in re.split(r"\n\s*\n", text):
        m = re.match(r"^([A-Z][A-Z' -]+), ([a-z.]+)\s+(.*)$", p.strip(), re.S)
        if m:
            entries.append((m.group(1).strip().lower(), " ".join(m.group(3).split())))
    docs = ["\n\n".join(paragraphs(c)) for c in re.split(r"\n(?=[A-Z][A-Z' -]+, [a-z.]+ )", text)]
    return entries, docs


def jargon():
    """(term, definition) pairs; braces of cross-references and [tags] dropped."""
    text = dictd("jargon")
    start = text.index("\n(TM)\n")  # the first entry
    entries, docs = [], []
    for block in re.split(r"\n(?=\S)", text[start:]):
        lines = block.strip("\n").splitlines()
        if not lines:
            continue
        term = lines[0].strip()
        body = "\n".join(lines[1:])
        paras = [re.sub(r"\s*\{([^}]*)\}", r" \1", p) for p in paragraphs(body)]
        paras = [re.sub(r"^\[[^\]]*\]\s*", "", p).replace("  ", " ").strip() for p in paras]
        paras = [p for p in paras if len(p.split()) > 3]
        if not paras:
            continue
        entries.append((term, paras[0]))
        docs.append(term + "\n\n" + "\n\n".join(paras))
    return entries, docs


def chats(entries, rng):
    """Dictionary entries as conversations of two to four turns."""
    asks = ["What is {}?", "What does \"{}\" mean?", "Define {}.", "Tell me about {}."]
    out, i = [], 0
    entries = list(entries)
    rng.shuffle(entries)
    while i < len(entries):
        n = rng.randint(2, 4)
        turns = []
        for w, d in entries[i:i + n]:
            turns.append("User: " + rng.choice(asks).format(w) + "\nFalcon: " + d)
        out.append("\n".join(turns) + "\nUser:")
        i += n
    return out


def corpus():
    rng = random.Random(SEED)
    bible = kjv()
    dev_entries, dev_docs = devil()
    jar_entries, jar_docs = jargon()
    talks = chats(dev_entries + jar_entries, rng)
    docs = [("kjv", d) for d in bible] + [("devil", d) for d in dev_docs] + \
           [("jargon", d) for d in jar_docs] + [("chat", d) for d in talks]
    rng.shuffle(docs)
    train = [d for i, (_, d) in enumerate(docs) if i % 20 != 0]
    heldout = [d for i, (_, d) in enumerate(docs) if i % 20 == 0]
    sizes = {}
    for src, d in docs:
        sizes[src] = sizes.get(src, 0) + len(d.split())
    return train, heldout, sizes


# -------------------------------------------------------------------------------- the tokenizer
def make_tokenizer(train, out_dir):
    falcon = PreTrainedTokenizerFast(tokenizer_file=FALCON_TOKENIZER)
    specials = [t for t in falcon.get_vocab() if falcon.convert_tokens_to_ids(t) < 12]
    specials.sort(key=falcon.convert_tokens_to_ids)
    tok = falcon.train_new_from_iterator(iter(train), vocab_size=VOCAB, new_special_tokens=[])
    assert tok.convert_tokens_to_ids(EOS) == 11, "retraining moved <|endoftext|>"
    assert [tok.convert_tokens_to_ids(t) for t in specials] == list(range(12)), specials
    tok.eos_token = EOS
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 2048
    tok.save_pretrained(out_dir)
    falcon_format(out_dir)
    return tok


def falcon_format(out_dir):
    """Falcon's tokenizer.json adds no special tokens: no post-processor (retraining adds an
    identity TemplateProcessing)."""
    path = os.path.join(out_dir, "tokenizer.json")
    with open(path) as f:
        tj = json.load(f)
    pp = tj.get("post_processor")
    assert pp is None or (pp["type"] == "TemplateProcessing" and not pp["special_tokens"]), pp
    tj["post_processor"] = None
    with open(path, "w") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def blocks(tok, texts):
    ids = []
    for t in texts:
        ids.extend(tok(t)["input_ids"])
        ids.append(11)
    n = len(ids) // SEQ
    return torch.tensor(ids[:n * SEQ], dtype=torch.long).view(n, SEQ), len(ids)


# ----------------------------------------------------------------------------------- the models
def falcon_config(shape, vocab):
    return FalconConfig(vocab_size=vocab, bias=False, alibi=False, max_position_embeddings=2048,
                        rope_theta=10000.0, bos_token_id=11, eos_token_id=11,
                        tie_word_embeddings=True, layer_norm_epsilon=1e-5, **shape)


def train(model, data, steps, batch, lr, log, label):
    g = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    model.train()
    losses, t0 = [], time.time()
    for step in range(steps):
        idx = torch.randint(0, data.shape[0], (batch,), generator=g)
        x = data[idx]
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            log(f"{label} step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)")
    model.eval()
    return losses, time.time() - t0


@torch.no_grad()
def perplexity(model, data, dtype):
    # A copy for bf16: converting the model itself would round its rotary buffers for good.
    m = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    nll, n = 0.0, 0
    for i in range(0, data.shape[0], 8):
        x = data[i:i + 8]
        logits = m(input_ids=x).logits.float()
        lp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll -= lp.gather(-1, x[:, 1:, None]).sum().item()
        n += x[:, 1:].numel()
    return math.exp(nll / n)


def save(model, tok, out_dir):
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
    GenerationConfig(bos_token_id=11, eos_token_id=11, max_new_tokens=64, do_sample=True,
                     temperature=0.8, top_p=0.95).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    falcon_format(out_dir)


def plot(curves, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for label, losses in curves.items():
        k = 20
        smooth = [sum(losses[max(0, i - k):i + 1]) / len(losses[max(0, i - k):i + 1]) for i in range(len(losses))]
        ax.plot(range(1, len(losses) + 1), smooth, label=label)
    ax.set_xlabel("step (16 sequences of 256 tokens)")
    ax.set_ylabel("training loss (nats per token, 20-step mean)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "models"))
    ap.add_argument("--reference", default=os.path.join(ROOT, "tests", "fixtures", "falcon-demo-reference.json"))
    ap.add_argument("--steps", type=int, default=500, help="target's optimizer steps")
    ap.add_argument("--draft-steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reference-only", action="store_true",
                    help="rewrite only the reference of the model already in --out")
    args = ap.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    random.seed(SEED)
    t_start = time.time()
    log_lines = []

    def log(s):
        print(s, flush=True)
        log_lines.append(s)

    target_dir = os.path.join(args.out, "falcon-demo")
    draft_dir = os.path.join(args.out, "falcon-demo-draft")
    if args.reference_only:
        _, heldout_docs, _ = corpus()
        tok = PreTrainedTokenizerFast.from_pretrained(target_dir)
        model = FalconForCausalLM.from_pretrained(target_dir, dtype=torch.float32)
        write_reference(args.reference, tok, model, heldout_docs, blocks(tok, heldout_docs)[0])
        return
    os.makedirs(target_dir, exist_ok=True)
    os.makedirs(draft_dir, exist_ok=True)
    train_docs, heldout_docs, sizes = corpus()
    log(f"corpus: {len(train_docs)} training and {len(heldout_docs)} held-out documents; words {sizes}")
    tok = make_tokenizer(train_docs, target_dir)
    train_data, n_train = blocks(tok, train_docs)
    held_data, n_held = blocks(tok, heldout_docs)
    log(f"tokens: {n_train} training, {n_held} held-out ({held_data.shape[0]} blocks of {SEQ})")

    results = {}
    curves = {}
    for name, shape, steps, out_dir in (("target", TARGET, args.steps, target_dir),
                                        ("draft", DRAFT, args.draft_steps, draft_dir)):
        torch.manual_seed(SEED)
        model = FalconForCausalLM(falcon_config(shape, len(tok)))
        params = sum(p.numel() for p in model.parameters())
        log(f"{name}: {params / 1e6:.2f} M parameters")
        losses, seconds = train(model, train_data, steps, 16, 3e-3 if name == "target" else 4e-3, log, name)
        curves[name] = losses
        # What ships is bf16: evaluate the bf16 weights, in fp32 and in bf16 compute.
        save(model, tok, out_dir)
        model = FalconForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
        ppl32 = perplexity(model, held_data, torch.float32)
        ppl16 = perplexity(model, held_data, torch.bfloat16)
        log(f"{name}: {seconds / 60:.1f} min, held-out perplexity {ppl32:.2f} (fp32 compute), {ppl16:.2f} (bf16)")
        results[name] = dict(params=params, steps=steps, minutes=seconds / 60, final_loss=sum(losses[-50:]) / 50,
                             heldout_ppl_fp32=ppl32, heldout_ppl_bf16=ppl16, model=model)
    plot(curves, os.path.join(target_dir, "loss.png"))

    write_reference(args.reference, tok, results["target"]["model"], heldout_docs, held_data)
    for name, out_dir in (("target", target_dir), ("draft", draft_dir)):
        write_card(out_dir, name, results, sizes, n_train, n_held, time.time() - t_start)
    with open(os.path.join(target_dir, "training_log.txt"), "w") as f:
        f.write("\n".join(log_lines) + "\n")


@torch.no_grad()
def write_reference(path, tok, model, heldout_docs, held_data):
    """transformers' numbers for the C++ tests: held-out perplexity and greedy continuations."""
    ppl_blocks = held_data[:8]
    ref = {"seq": SEQ, "perplexity_blocks": ppl_blocks.tolist()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        ref[f"perplexity_{name}"] = perplexity(model, ppl_blocks, dtype)
    # Held-out prompts whose 64 greedy steps have no near-tie: at every step transformers' best
    # logit leads the second by at least 1e-3, far above the ~1e-5 two fp32 implementations differ
    # by, so that one greedy path is the right answer.
    rng = random.Random(SEED + 1)
    m = model.to(torch.float32)
    ref["greedy"], tried = [], 0
    for d in rng.sample(heldout_docs, len(heldout_docs)):
        if len(ref["greedy"]) == 20:
            break
        tried += 1
        words = d.split()
        start = rng.randrange(0, max(1, len(words) - 12))
        p = " ".join(words[start:start + rng.randint(4, 10)])
        ids = tok(p)["input_ids"]
        out = m.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False, eos_token_id=None,
                         pad_token_id=11, min_new_tokens=64)[0]
        logits = m(input_ids=out[None]).logits[0, len(ids) - 1:-1]
        top2 = torch.topk(logits, 2, dim=-1).values
        margin = (top2[:, 0] - top2[:, 1]).min().item()
        if margin >= 1e-3:
            ref["greedy"].append({"prompt": p, "prompt_ids": ids, "greedy_ids": out[len(ids):].tolist(),
                                  "min_top2_margin": margin})
    ref["greedy_prompts_tried"] = tried
    with open(path, "w") as f:
        json.dump(ref, f)
        f.write("\n")


def write_card(out_dir, name, results, sizes, n_train, n_held, total_s):
    r = results[name]
    other = "falcon-demo-draft" if name == "target" else "falcon-demo"
    shape = TARGET if name == "target" else DRAFT
    arch = ("Falcon-40B's decoder (new_decoder_architecture): 6 query heads in 3 KV groups, parallel "
            "attention and MLP with separate ln_attn / ln_mlp, rotary positions" if name == "target" else
            "Falcon-7B's decoder: multi-query attention (one KV head), parallel attention and MLP "
            "sharing one input_layernorm, rotary positions")
    card = f"""---
license: apache-2.0
language: en
library_name: transformers
tags: [falcon, saker, demo]
---
# {os.path.basename(out_dir)}

A small Falcon trained from scratch for saker's demo, docs and tests
({'the target; its draft for speculative decoding is' if name == 'target' else 'the draft for speculative decoding of'}
`{other}`). It writes readable, if often odd, English in the style of its corpus; it knows
nothing else. Made by `scripts/train_demo_model.py` (fixed seed; versions in
`scripts/requirements-demo-model.txt`).

- **Architecture**: `FalconForCausalLM`, {arch}. hidden {shape['hidden_size']},
  {shape['num_hidden_layers']} layers, vocabulary {VOCAB}, context 2048, tied embeddings, no biases:
  **{r['params'] / 1e6:.2f} M parameters**, stored as bf16 safetensors.
- **Tokenizer**: Falcon's tokenizer.json retrained to {VOCAB} ids with HF tokenizers (same
  pre-tokenizer, decoder and special tokens; `<|endoftext|>` = 11). Falcon's own 65024 ids would
  make the embedding alone 25 M parameters. Chat template: Falcon's `User:` / `Falcon:` turns.
- **Data** (all public domain, from Debian packages): the King James Bible (`bible-kjv-text`,
  {sizes.get('kjv', 0)} words), Ambrose Bierce's *The Devil's Dictionary* (`dict-devil`,
  {sizes.get('devil', 0)} words), the Jargon File 4.4.7 (`dict-jargon`, {sizes.get('jargon', 0)} words),
  and their dictionary entries again as short `User:` / `Falcon:` chats ({sizes.get('chat', 0)} words).
  Every 20th document is held out: {n_train} training tokens, {n_held} held-out tokens.
- **Training**: AdamW (lr {'3e-3' if name == 'target' else '4e-3'}, betas 0.9/0.95, weight decay 0.1,
  warm-up then cosine to 10 %), {r['steps']} steps of 16 x {SEQ} tokens, fp32 on the CPU:
  **{r['minutes']:.1f} minutes** on a 2-core machine (the whole script, both models and
  fixtures: {total_s / 60:.1f} minutes). Final training loss {r['final_loss']:.3f} (mean of the
  last 50 steps). Loss curve: `{'loss.png' if name == 'target' else '../falcon-demo/loss.png'}`.
- **Held-out perplexity** of the shipped bf16 weights: **{r['heldout_ppl_fp32']:.2f}** in fp32
  compute, {r['heldout_ppl_bf16']:.2f} in bf16 compute (transformers).
- **Licence**: Apache-2.0, like saker. The training texts are in the public domain.
"""
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(card)


if __name__ == "__main__":
    sys.exit(main())
