#!/usr/bin/env python3
"""Build the tokenizer test corpus and Hugging Face `tokenizers` reference outputs.

    python3 scripts/make_tokenizer_fixtures.py --out tests/fixtures/tokenizers

Writes (deterministic: fixed seeds, one thread):
- corpus.jsonl: {"kind", "text"} per line: hand-written strings (languages and scripts, emoji,
  combining marks, punctuation, whitespace, numerals, code, URLs, special tokens, bytes missing
  from the Falcon vocabulary, the empty string), seeded random mixtures and long inputs (one over
  100 KB). Every text is valid UTF-8 (Python str).
- falcon_reference.jsonl: per corpus line, the real Falcon tokenizer's (../shared) ids and
  decode(ids) with and without skip_special_tokens.
- gpt2style/tokenizer.json: a GPT-2-style byte-level BPE (ByteLevel pre-tokenizer alone, like
  falcon-rw's GPT-2 tokenizer) trained here on a small vocabulary, and gpt2style_reference.jsonl.
- variants/*.json: the gpt2style vocabulary under other pre-tokenizer configurations (every Split
  behaviour, invert, String patterns, Punctuation / Digits options, add_prefix_space) and added
  tokens with lstrip / rstrip / single_word / normalized flags, with <name>_reference.jsonl over
  the hand-written corpus lines and the first random ones.
- small384/tokenizer.json: a 384-id GPT-2-style tokenizer for the tiny fixture models, with
  <|endoftext|> at id 11 (their eos), and small384/reference.json (prompts and their ids).
- invalid_utf8.jsonl: byte strings that are not UTF-8 (hex), their U+FFFD repair as Rust's
  String::from_utf8_lossy does it (taken from the tokenizer's own ByteLevel decoder) and the Falcon
  ids of the repaired text.
- README.md.
"""

import argparse
import json
import os
import random
import sys
import unicodedata

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from tokenizers import processors, trainers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FALCON = os.path.join(HERE, "..", "..", "shared", "models", "falcon-tokenizer", "tokenizer.json")
SEED = 20261126
VARIANT_RANDOM_LINES = 60  # variants see the hand-written lines and this many random ones

SPECIALS = [">>TITLE<<", ">>ABSTRACT<<", ">>INTRODUCTION<<", ">>SUMMARY<<", ">>COMMENT<<",
            ">>ANSWER<<", ">>QUESTION<<", ">>DOMAIN<<", ">>PREFIX<<", ">>SUFFIX<<", ">>MIDDLE<<",
            "<|endoftext|>"]

# ----------------------------------------------------------------------------- hand-written text

LANGUAGES = {
    "english": "The quick brown fox jumps over the lazy dog. It's 5 o'clock somewhere!",
    "french": "L'été dernier, nous sommes allés à la plage ; c'était très agréable, n'est-ce pas ?",
    "german": "Größere Übungen für Straßenbahnfahrer: „Wie heißt du?“ — „Jürgen.“",
    "spanish": "¿Dónde está la biblioteca? ¡El niño comió piñas en el año 2023!",
    "portuguese": "Não há razão para preocupação; a situação está sob controle, irmã.",
    "italian": "Perché l'università è così lontana? Però è bellissima, più o meno.",
    "polish": "Zażółć gęślą jaźń. Pchnąć w tę łódź jeża lub ośm skrzyń fig.",
    "turkish": "Işık ılık süt içti; İstanbul'da ğ ve ş harfleri çok güzel.",
    "vietnamese": "Tiếng Việt có nhiều dấu thanh: à, á, ả, ã, ạ; người Việt Nam.",
    "icelandic": "Þú ert að læra íslensku; það er ðæmigert og skemmtilegt.",
    "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "ukrainian": "Чуєш їх, доцю, га? Кумедна ж ти, прощайся без ґольфів!",
    "greek": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Αυτό είναι ελληνικό κείμενο;",
    "hebrew": "שלום עולם! זהו טקסט בעברית עם ניקוד: שָׁלוֹם.",
    "arabic": "مرحبا بالعالم! هذا نص عربي، مع أرقام ١٢٣ وتشكيل: مَرْحَبًا.",
    "persian": "سلام دنیا! این یک متن فارسی است با اعداد ۱۲۳۴ و نیم‌فاصله.",
    "urdu": "یہ اردو زبان کا ایک جملہ ہے۔",
    "hindi": "नमस्ते दुनिया! यह हिन्दी में एक वाक्य है। संख्या: १२३४५",
    "bengali": "আমি বাংলায় গান গাই। সংখ্যা ১২৩।",
    "tamil": "வணக்கம் உலகம்! இது தமிழ் உரை.",
    "telugu": "నమస్కారం ప్రపంచం! ఇది తెలుగు వాక్యం.",
    "thai": "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ ๑๒๓",
    "lao": "ສະບາຍດີ ໂລກ",
    "khmer": "សួស្តីពិភពលោក",
    "burmese": "မင်္ဂလာပါ ကမ္ဘာလောက",
    "tibetan": "བཀྲ་ཤིས་བདེ་ལེགས།",
    "chinese_simplified": "你好，世界！这是一个中文句子，没有空格。我们在2024年见面。",
    "chinese_traditional": "你好，世界！這是一個繁體中文的句子。「引號」與『雙引號』。",
    "japanese": "こんにちは世界！日本語の文章です。カタカナ、ひらがな、漢字。ｶﾀｶﾅ",
    "korean": "안녕하세요 세계! 한국어 문장입니다. 숫자 123개.",
    "georgian": "გამარჯობა მსოფლიო! ქართული ენა.",
    "armenian": "Բարեւ աշխարհ։ Հայերեն լեզու։",
    "amharic": "ሰላም ልዑል! የአማርኛ ጽሑፍ።",
    "mongolian": "Сайн байна уу? ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ",
    "sinhala": "ආයුබෝවන් ලෝකය",
    "swahili": "Habari ya dunia! Ninapenda kusoma vitabu.",
    "yoruba": "Ẹ kú àárọ̀! Ọjọ́ dára.",
    "cherokee": "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ",
    "inuktitut": "ᐃᓄᒃᑎᑐᑦ ᑎᑎᕋᐅᓯᖅ",
    "math": "∀x ∈ ℝ: x² ≥ 0; ∑ᵢ aᵢ = ∫₀¹ f(t) dt ≈ π/4 ± ε; √2 ≠ 1.414…",
    "mixed_scripts": "Latin Кириллица Ελληνικά العربية עברית हिन्दी 中文 日本語 한국어 ไทย",
}

EMOJI = [
    "😀", "I ❤️ you", "👍🏽 good job 👏🏿", "👨‍👩‍👧‍👦 family", "👩🏻‍💻 coding", "🏳️‍🌈 flag",
    "🇫🇷🇩🇪🇯🇵 flags", "1️⃣ 2️⃣ #️⃣", "🧑‍🤝‍🧑", "😂😂😂😂", "emoji🙂inside🙃words",
    "🫠🫡🥲", "☕ ☔ ⚡ ✨", "🐍 Python", "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland", "❤\ufe0e text vs ❤\ufe0f emoji",
]

COMBINING = [
    "e\u0301", "cafe\u0301 vs café", "a\u0300\u0301\u0302\u0303\u0304", "Z\u0335\u0321a\u0336l\u0337g\u0338o",
    "n\u0303", "\u0301 leading mark", "Tie\u0302\u0301ng Vie\u0323\u0302t", "\u1100\u1161\u11a8 jamo",
    "क्षत्रिय", "ศึกษา", "ไม่ได้", "שָׁלוֹם", "i\u0307", "ﬁ ligature", "Å vs A\u030a",
]

ASCII_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

WHITESPACE = [
    " ", "  ", "   leading", "trailing   ", "\t", "\ttab", "tab\t\tx", "\n", "\n\n\n", "a\nb",
    "a\r\nb\r\n", "\r", "line1\nline2\n\nline4\n", "  \n  \n", " \t \n mixed \t\n", "\u00a0",
    "a\u00a0b", "x\u00a0\u00a0y", "\u3000全角\u3000空白\u3000", "em\u2003space", "thin\u2009space",
    "\u2028line sep\u2029para sep", "\u0085NEL", "zero\u200bwidth", "\ufeffBOM", "\u180emongolian",
    "\u202fnarrow", "\u205fmath", "\u1680ogham", "end with space ", "end with newline\n",
    "     five spaces before", "word  two  spaces", "\n\tindented\n\t\tmore", " \u00a0 \u3000 ",
]

NUMBERS = [
    "0", "7", "42", "123", "1234", "12345", "123456", "1234567", "3333", "2024-11-26",
    "3.14159265358979", "1,000,000", "6.02e23", "0xDEADBEEF", "+1 (555) 123-4567",
    "abc123def456", "v2.0.1", "H2O and CO2", "x²+y³", "½ ¼ ¾", "²³¹", "⅓ ⅔ ⅛",
    "١٢٣٤٥٦٧٨٩٠", "۱۲۳۴۵۶", "०१२३४५६७८९", "০১২৩", "๑๒๓", "０１２３４", "Ⅰ Ⅱ Ⅻ ⅿ", "①②③",
    "⁰¹²³⁴⁵", "₀₁₂₃", "1½ cups", "12½%", "99.9%", "$100", "€50,00", "¥1000", "9" * 40,
    "31415926535897932384626433832795028841971693993751", " 1 2 3 4 5", "1 000 000",
]

CODE = [
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "fn main() { println!(\"Hello, {}!\", name); }",
    "const add = (a, b) => a + b; // arrow\nconsole.log(add(1, 2));",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done",
    "\\begin{equation} E = mc^2 \\end{equation}",
    "^(?:[a-z0-9._%+-]+)@(?:[a-z0-9-]+\\.)+[a-z]{2,}$",
    "std::vector<std::unique_ptr<Foo>> v; v.emplace_back(std::make_unique<Foo>());",
    "    indented_with_spaces = True\n\t\tindented_with_tabs = False",
    "x += 1; y -= 2; z *= 3; w /= 4; a %= 5; b ||= c; d &&= e; f ??= g;",
    "if (a != b && c == d || !e) { return -1; }",
    "private static final Map<String, List<Integer>> CACHE = new HashMap<>();",
    "print(f\"{x!r:>10}\")  # don't panic",
]

URLS = [
    "https://huggingface.co/tiiuae/falcon-40b/blob/main/tokenizer.json",
    "http://example.com/path?query=1&other=two#fragment",
    "ftp://files.example.org/pub/README.txt", "mailto:someone@example.com",
    "user.name+tag@sub.domain.co.uk", "/usr/local/bin/saker --model ./dir",
    "C:\\Users\\Name\\Documents\\file.txt", "[link](https://example.com) and <https://a.b/c>",
    "www.example.com/a-b_c~d", "https://例え.jp/パス?キー=値",
]

SPECIAL_TEXT = [
    ">>TITLE<<", "<|endoftext|>", ">>TITLE<<Hello", "Hello>>TITLE<<", "a<|endoftext|>b",
    " >>QUESTION<< what is it? >>ANSWER<< this", "<|endoftext|><|endoftext|>",
    ">>>TITLE<<<", ">>TITLE<", "<|endoftext|", "<|endoftext|>\n", "\n<|endoftext|> ",
    ">>ABSTRACT<<>>INTRODUCTION<<>>SUMMARY<<", ">>COMMENT<< >>DOMAIN<< >>PREFIX<< >>SUFFIX<< >>MIDDLE<<",
    "x >>TITLE<< y", "endoftext <|endoftext|>start", "<|ENDOFTEXT|>", ">> TITLE <<",
]

MISSING_BYTES = [
    "\x03", "\x04\x05", "a\x0bb", "ab\x0bcd", "\x11\x13\x14\x15\x16\x17\x19", "x\x1cy\x1dz\x1e",
    "he\x17llo", "\x1e\x1e\x1e", "\U00080000", "a\U0009abcdb", "\U000affff \U000b0000",
    "text \x0b with \x0b vertical \x0b tabs", "the\x03re", "\x05 hello", "in\U00080123the",
]

CONTRACTIONS = [
    "it's", "don't", "I'll", "we've", "they're", "I'm", "he'd", "'s", "''", "O'Neil",
    "rock 'n' roll", "it’s curly", "'tis", "can't won't shouldn't", "'re 've 'll 'd 'm 't",
]

EDGE = [
    "", "a", " a", "a ", "\x00", "a\x00b", "\x7f", "\x80\x81", "\ue000 private", "\uffff",
    "\U0010fffd", "\U0001d11e music", "\U00020000 ext B", "~", "``", "''''", "...", "…",
    "----", "____", "====", "!!!???", "a" * 300, "ab" * 200, " " * 50, "\n" * 20,
]


# For the variants' added tokens (<mask> lstrip, [SEP] rstrip, qzq single_word, "héllo wörld"
# with a space, @@ both strips, "ab" single_word) and their neighbourhoods.
ADDED_TOKEN_TEXTS = [
    "a  <mask>b", "<mask>", "x\u00a0\u00a0<mask>", "\u3000<mask>\u3000", "a[SEP]  \n b", "[SEP]",
    "[SEP]\u3000\u0085y", "qzq", "aqzq b", "a qzq b", "a qzqb", "éqzqé", "_qzq", "1qzq", "qzq\u0301",
    "a\u0301qzq", "\u200dqzq", "²qzq", "say héllo wörld!", "héllo wörldhéllo wörld", "a @@ b",
    "x@@y", "  @@  ", "<mask>\u00a0[SEP]\u3000", "  <mask>  [SEP]  ", "[SEP]  <mask>", "ab", "cab",
    "ab!", "abab", "ab ab", " ab", "<|endoftext|>ab<mask>", "qzq<mask>qzq", "@@@@",
]


def hand_written():
    out = [("doc", "Hello world"), ("doc", " Hello"), ("doc", "3333")]
    out += [("language", t) for t in LANGUAGES.values()]
    out += [("emoji", t) for t in EMOJI]
    out += [("combining", t) for t in COMBINING]
    out += [("punctuation", c) for c in ASCII_PUNCT]
    out += [("punctuation", c * 3) for c in ASCII_PUNCT]
    out += [("punctuation", "a" + c + "b") for c in ASCII_PUNCT]
    out += [("punctuation", " " + c + " x") for c in ASCII_PUNCT]
    out += [("punctuation", ASCII_PUNCT), ("punctuation", ASCII_PUNCT[::-1]),
            ("punctuation", " ".join(ASCII_PUNCT)),
            ("punctuation", "«Bonjour» „Hallo“ “quote” ‘single’ — – … ¿¡ 、。「」【】 ・ ‼ ⁉ §¶"),
            ("punctuation", "Hello, world! How are you? I'm fine... (really) [ok] {yes}")]
    out += [("whitespace", t) for t in WHITESPACE]
    out += [("numbers", t) for t in NUMBERS]
    out += [("code", t) for t in CODE]
    out += [("url", t) for t in URLS]
    out += [("special", t) for t in SPECIAL_TEXT]
    out += [("missing_bytes", t) for t in MISSING_BYTES]
    out += [("contraction", t) for t in CONTRACTIONS]
    out += [("edge", t) for t in EDGE]
    return out


# ----------------------------------------------------------------------------- random text

def stable_char(c, probes):
    """True when HF tokenizers and Unicode 14 (Python's unicodedata, the version of Debian's PCRE2
    10.42) agree on the character classes the pre-tokenizers test. Characters assigned or
    re-categorized later are left out of random text; docs/tokenizer.md lists the differences."""
    cat = unicodedata.category(c)
    if cat == "Cn" or cat == "Cs":
        return False
    letter, number, space, punct = probes(c)
    return (letter == cat.startswith("L") and number == cat.startswith("N") and
            space == (c in WHITE_SPACE) and
            punct == (cat.startswith("P") or (c.isascii() and c in ASCII_PUNCT)))


WHITE_SPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" +
                  "".join(chr(c) for c in range(0x2000, 0x200b)))


def make_probes():
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pu = pre_tokenizers.Punctuation("isolated")

    def probes(c):
        letter = len(bl.pre_tokenize_str("a" + c)) == 1
        number = len(bl.pre_tokenize_str("1" + c)) == 1
        other = len(bl.pre_tokenize_str("!" + c)) == 1
        space = not (letter or number or other)
        punct = len(pu.pre_tokenize_str("a" + c + "a")) == 3
        return letter, number, space, punct
    return probes


RANGES = [  # blocks random characters are drawn from
    (0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x5ff), (0x600, 0x6ff),
    (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff), (0x2000, 0x206f), (0x2190, 0x22ff),
    (0x3000, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0xff00, 0xffef), (0x1f300, 0x1f64f),
    (0x1f900, 0x1f9ff), (0x10000, 0x1007f), (0x1d400, 0x1d7ff),
]


def fragments(rng, probes, kinds=12):
    """Pieces random strings are assembled from, one kind per call."""
    words = [w for t in LANGUAGES.values() for w in t.split()]
    kind = rng.randrange(kinds)
    if kind <= 2:
        return rng.choice(words)
    if kind == 3:
        return rng.choice(" \t\n\r\u00a0\u3000") * rng.randint(1, 4)
    if kind == 4:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 12)))
    if kind == 5:
        return "".join(rng.choice(ASCII_PUNCT) for _ in range(rng.randint(1, 4)))
    if kind == 6:
        return rng.choice(SPECIALS)
    if kind == 7:
        return rng.choice(EMOJI)
    if kind == 8:
        return rng.choice(CODE + URLS + NUMBERS)
    if kind == 11:  # last, so that long texts can leave it out
        return rng.choice(MISSING_BYTES)
    while True:
        lo, hi = rng.choice(RANGES)
        c = chr(rng.randint(lo, hi))
        if stable_char(c, probes):
            return c * rng.randint(1, 3)


def random_strings(rng, probes, count):
    out = []
    for i in range(count):
        n = rng.choice([1, 2, 3, 5, 8, 13, 21, 40])
        sep = rng.choice(["", " ", " ", "\n", ""])
        out.append(("random", sep.join(fragments(rng, probes) for _ in range(n))))
    return out


def long_strings(rng, probes):
    def mixed(target):
        parts, size = [], 0
        while size < target:
            # Without the missing-byte fragments: their decode would differ from the text and
            # have to be stored too.
            p = fragments(rng, probes, kinds=11) + rng.choice([" ", " ", "", "\n", ". "])
            parts.append(p)
            size += len(p.encode())
        return "".join(parts)
    cjk = "".join(chr(rng.randint(0x4e00, 0x9fa5)) for _ in range(4000))
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5000))
    return [
        ("long", mixed(102_400)),
        ("long", " " * 3000 + "x" + "\n" * 2000 + "\t \t" * 500),
        ("long", "".join(rng.choice("0123456789") for _ in range(5000))),
        ("long", word),
        ("long", cjk),
    ]


def unicode_report():
    """Every code point where tokenizers' pre-tokenizers classify a character differently from
    Unicode 14 (Python's unicodedata; Debian's PCRE2 10.42, which saker uses, has the same
    version): the differences docs/tokenizer.md lists."""
    probes = make_probes()
    digits = pre_tokenizers.Digits(individual_digits=False)
    names = ["letter \\p{L}", "number \\p{N}", "White_Space", "Punctuation", "Digits (is_numeric)"]
    diffs = {n: [] for n in names}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        cat = unicodedata.category(c)
        hf = list(probes(c)) + [len(digits.pre_tokenize_str("1" + c)) == 1]
        u14 = [cat.startswith("L"), cat.startswith("N"), c in WHITE_SPACE,
               cat.startswith("P") or c in ASCII_PUNCT, cat.startswith("N")]
        for name, a, b in zip(names, hf, u14):
            if a != b:
                diffs[name].append((cp, a))
    print(f"Unicode {unicodedata.unidata_version} vs tokenizers {tokenizers.__version__}")
    for name, d in diffs.items():
        only_hf = [cp for cp, a in d if a]
        print(f"{name}: {len(d)} code points differ ({len(only_hf)} only tokenizers counts, "
              f"{len(d) - len(only_hf)} only Unicode 14 counts)")
        if d and len(d) <= 120:
            print("  " + " ".join(f"{cp:04X}{'+' if a else '-'}" for cp, a in d))


def build_corpus():
    rng = random.Random(SEED)
    probes = make_probes()
    corpus = hand_written() + random_strings(rng, probes, 320) + long_strings(rng, probes)
    for kind, text in corpus:
        text.encode("utf-8")  # every text must be valid UTF-8
    return corpus


# ----------------------------------------------------------------------------- tokenizers

def train_byte_level(texts, vocab_size):
    """A GPT-2-style byte-level BPE: all 256 byte symbols, merges learned from texts."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return json.loads(tok.to_str())


def move_token(tj, token, new_id):
    """Gives `token` the id new_id in vocab and added_tokens, swapping with the token there."""
    vocab = tj["model"]["vocab"]
    old_id = vocab[token]
    other = next(t for t, i in vocab.items() if i == new_id)
    vocab[token], vocab[other] = new_id, old_id
    for a in tj["added_tokens"]:
        if a["content"] == token:
            a["id"] = new_id
    tj["model"]["vocab"] = dict(sorted(vocab.items(), key=lambda kv: kv[1]))


def set_special(tj, normalized):
    for a in tj["added_tokens"]:
        a.update(single_word=False, lstrip=False, rstrip=False, normalized=normalized, special=True)


def gpt2style(texts):
    tj = train_byte_level(texts, 1500)
    move_token(tj, "<|endoftext|>", len(tj["model"]["vocab"]) - 1)  # last, as in GPT-2
    set_special(tj, normalized=True)
    return tj


def small384(texts):
    tj = train_byte_level(texts, 384)
    move_token(tj, "<|endoftext|>", 11)  # the tiny fixture models' eos id
    set_special(tj, normalized=False)
    assert len(tj["model"]["vocab"]) == 384, len(tj["model"]["vocab"])
    return tj


def variants(base):
    """The gpt2style vocabulary under other pre-tokenizers and with other added tokens."""
    def split(pattern, behavior, invert=False, literal=False):
        return {"type": "Split", "pattern": {"String" if literal else "Regex": pattern},
                "behavior": behavior, "invert": invert}

    def byte_level(prefix, regex=True):
        return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True,
                "use_regex": regex}

    def added(content, tid, **flags):
        d = {"id": tid, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": False}
        d.update(flags)
        return d

    n = len(base["model"]["vocab"])
    out = {}
    v = json.loads(json.dumps(base))
    v["pre_tokenizer"] = byte_level(True)
    v["added_tokens"] = [
        dict(base["added_tokens"][0], normalized=False),
        added("<mask>", n, lstrip=True, special=True),
        added("[SEP]", n + 1, rstrip=True, special=True),
        added("qzq", n + 2, single_word=True, normalized=True),
        added("héllo wörld", n + 3),
        added("@@", n + 4, lstrip=True, rstrip=True, normalized=True),
        added("ab", base["model"]["vocab"]["ab"] if "ab" in base["model"]["vocab"] else n + 5,
              single_word=True),
    ]
    out["prefix_space_added_tokens"] = v
    v = json.loads(json.dumps(base))
    v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        split("\\s+", "MergedWithPrevious"), split("-", "MergedWithNext", literal=True),
        {"type": "Punctuation", "behavior": "Isolated"}, {"type": "Digits", "individual_digits": True},
        split("[aeiou]", "Contiguous", invert=True), byte_level(False, regex=False)]}
    out["split_behaviors"] = v
    v = json.loads(json.dumps(base))
    v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Punctuation", "behavior": "MergedWithPrevious"}, split("\\s", "Removed"),
        split("(?=[A-Z])|x*", "Isolated"), {"type": "Digits", "individual_digits": False},
        byte_level(True), split("ĠĠ", "Isolated", invert=True, literal=True)]}
    out["removed_and_empty_matches"] = v
    v = json.loads(json.dumps(base))
    v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Punctuation", "behavior": "MergedWithNext"},
        split("[^\\s\\p{L}]+", "Contiguous", invert=True),
        byte_level(False), {"type": "Punctuation", "behavior": "Removed"}]}
    out["merged_with_next_invert"] = v
    return out


# ----------------------------------------------------------------------------- references

def reference(tok, texts):
    """ids and both decodes; a decode equal to the text (or, skipping specials, to the plain
    decode) is left out to keep the files small."""
    rows = []
    for text in texts:
        ids = tok.encode(text).ids
        row = {"ids": ids}
        decoded = tok.decode(ids, skip_special_tokens=False)
        skipped = tok.decode(ids, skip_special_tokens=True)
        if decoded != text:
            row["decoded"] = decoded
        if skipped != decoded:
            row["decoded_skip_special"] = skipped
        rows.append(row)
    return rows


def invalid_utf8_cases(rng):
    cases = [b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80",
             b"\xf4\x90\x80\x80", b"\xf5", b"\xff\xfe", b"\xe2\x82", b"\xe2\x82A", b"\xf0\x9f\x98",
             b"\xf0\x9f\x98 x", b"abc\xe2", b"\xc3", b"\xc3\xa9\xa9", b"caf\xe9", b"\xf0\x80\x80",
             b"Hello \xff world\n", b"\xe2\x28\xa1", b"\xf8\x88\x80\x80\x80",
             b">>TITLE<<\x80<|endoftext|>", b"\x00\x80\x00", b"\xef\xbf\xbd real U+FFFD"]
    for _ in range(40):
        n = rng.randint(1, 24)
        cases.append(bytes(rng.choice([rng.randint(0x80, 0xff), rng.randint(0x20, 0x7e),
                                       rng.choice([0xc3, 0xe2, 0xf0, 0x9f, 0xa9])])
                           for _ in range(n)))
    return cases


def rust_lossy(byte_tok, data):
    """String::from_utf8_lossy, via tokenizers' ByteLevel decoder on one token per byte."""
    alphabet = byte_symbols()
    return byte_tok.decode([byte_tok.token_to_id(alphabet[b]) for b in data])


def byte_symbols():
    printable = list(range(0x21, 0x7f)) + list(range(0xa1, 0xad)) + list(range(0xae, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# ----------------------------------------------------------------------------- output

def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="output folder, e.g. tests/fixtures/tokenizers")
    ap.add_argument("--falcon", default=FALCON, help="the real Falcon tokenizer.json")
    ap.add_argument("--unicode-report", action="store_true",
                    help="only print where tokenizers and Unicode 14 classify characters differently")
    args = ap.parse_args()
    if args.unicode_report:
        unicode_report()
        return
    if not args.out:
        ap.error("--out is required")
    out = args.out
    os.makedirs(os.path.join(out, "variants"), exist_ok=True)

    corpus = build_corpus()
    texts = [t for _, t in corpus]
    write_jsonl(os.path.join(out, "corpus.jsonl"), [{"kind": k, "text": t} for k, t in corpus])

    falcon = Tokenizer.from_file(args.falcon)
    write_jsonl(os.path.join(out, "falcon_reference.jsonl"), reference(falcon, texts))

    training = [t for k, t in corpus if k != "long"] * 3
    g = gpt2style(training)
    write_json(os.path.join(out, "gpt2style", "tokenizer.json"), g)
    gtok = Tokenizer.from_file(os.path.join(out, "gpt2style", "tokenizer.json"))
    write_jsonl(os.path.join(out, "gpt2style_reference.jsonl"), reference(gtok, texts))

    hand = [t for k, t in corpus if k not in ("random", "long")]
    short = hand + [t for k, t in corpus if k == "random"][:VARIANT_RANDOM_LINES] + ADDED_TOKEN_TEXTS
    for name, v in variants(g).items():
        path = os.path.join(out, "variants", name + ".json")
        write_json(path, v)
        vt = Tokenizer.from_file(path)
        rows = reference(vt, short)
        for r, t in zip(rows, short):
            r["text"] = t
        write_jsonl(os.path.join(out, "variants", name + "_reference.jsonl"), rows)

    s = small384(training)
    write_json(os.path.join(out, "small384", "tokenizer.json"), s)
    stok = Tokenizer.from_file(os.path.join(out, "small384", "tokenizer.json"))
    prompts = ["Hello world", "The quick brown fox", "It's 12345 o'clock, café!"]
    write_json(os.path.join(out, "small384", "reference.json"),
               {"prompts": [{"text": p, "ids": stok.encode(p).ids} for p in prompts]})

    rng = random.Random(SEED + 1)
    rows = []
    for data in invalid_utf8_cases(rng):
        repaired = rust_lossy(gtok, data)
        assert repaired == data.decode("utf-8", errors="replace"), data
        rows.append({"hex": data.hex(), "repaired": repaired, "falcon_ids": falcon.encode(repaired).ids})
    write_jsonl(os.path.join(out, "invalid_utf8.jsonl"), rows)

    write_readme(out, corpus)
    print(f"{len(corpus)} corpus strings, {sum(len(t.encode()) for t in texts)} bytes", file=sys.stderr)


def write_readme(out, corpus):
    kinds = {}
    for k, t in corpus:
        kinds.setdefault(k, [0, 0])
        kinds[k][0] += 1
        kinds[k][1] += len(t.encode())
    table = "\n".join(f"| {k} | {n} | {b} |" for k, (n, b) in kinds.items())
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(f"""# Tokenizer reference fixtures

Generated by `scripts/make_tokenizer_fixtures.py`; do not edit by hand. Regenerate (deterministic,
a few seconds):

    pip install -r scripts/requirements-fixtures.txt
    python3 scripts/make_tokenizer_fixtures.py --out tests/fixtures/tokenizers

Made with tokenizers {tokenizers.__version__} (Python bindings, one thread) and the real Falcon
tokenizer in ../shared/models/falcon-tokenizer.

- `corpus.jsonl`: one {{"kind", "text"}} per line. Reference files have one line per corpus line,
  in the same order: `ids`, `decoded` (decode(ids, skip_special_tokens=False); absent when equal
  to the text) and `decoded_skip_special` (skip_special_tokens=True; absent when equal to
  `decoded`).
- `falcon_reference.jsonl`: the Falcon tokenizer on every corpus line.
- `gpt2style/tokenizer.json` + `gpt2style_reference.jsonl`: a GPT-2-style byte-level BPE (ByteLevel
  pre-tokenizer alone, add_prefix_space false, ByteLevel post-processor and decoder) with 1500 ids,
  trained on the short corpus lines; `<|endoftext|>` is its last id, special and normalized.
- `variants/<name>.json` + `<name>_reference.jsonl`: the gpt2style vocabulary under other
  pre-tokenizers (every Split behaviour, invert, String and Regex patterns, patterns matching the
  empty string, Punctuation and Digits options, add_prefix_space) and added tokens with lstrip,
  rstrip, single_word and normalized; over the hand-written corpus lines, the first
  {VARIANT_RANDOM_LINES} random ones and texts around the added tokens, each line with its `text`.
- `small384/tokenizer.json`: a 384-id GPT-2-style tokenizer for the tiny model fixtures
  (`<|endoftext|>` special at id 11, their eos); `small384/reference.json`: prompts and their ids.
- `invalid_utf8.jsonl`: `hex` bytes that are not valid UTF-8, `repaired` (String::from_utf8_lossy,
  taken from tokenizers' own ByteLevel decoder and equal to Python's errors="replace") and the
  Falcon `falcon_ids` of the repaired text.

Random characters are drawn only where tokenizers and Unicode 14 agree on the classes the
pre-tokenizers test (see docs/tokenizer.md, "Regexes and Unicode versions").

| kind | strings | bytes |
|---|---|---|
{table}
""")


if __name__ == "__main__":
    main()
