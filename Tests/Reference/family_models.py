#!/usr/bin/env python3
"""Builds one tiny random model per claimed family and option with transformers itself, and records
transformers' own greedy continuation and logits, for Tests/TurboMindTests/FamilyReferenceTests.swift.

Each fixture directory holds config.json and model.safetensors (float32, as transformers saved them;
no tokenizer: the tests feed ids) and reference.json:
  prompt            the prompt ids
  tokens, gaps      greedy continuation by FULL RECOMPUTE: at every step the whole sequence runs
                    through the model with no cache and the argmax of the last row is appended
                    (not generate(), whose cached path drifts on SmolLM2 in transformers 5);
                    gaps[i] is the top-1 minus top-2 logit at step i
  cached_tokens, cached_gaps   the same greedy loop through transformers' KV cache (prefill once,
                    then one token per call); equal to the above except where the family's
                    semantics depend on the cache (dynamic NTK recomputes the base for new tokens
                    only, so cached keys keep the frequencies they were rotated with)
  last_logits       logits at the prompt's last position (float64 forward)
  ablation_max_diff max |last_logits - logits of the same weights with the option switched off|:
                    shows that the fixture can tell the option from its absence
  layer_types, sliding_window_rule   transformers' per-layer attention kind and window rule
The reference forward runs in float64 on CPU from the float32 weights (upcast exactly); transformers
computes the rotary cos/sin in float32 whatever the model dtype, as the engine does.

Weights: normal(0, 0.3) on every matrix, norm weights normal(1, 0.2), biases normal(0, 0.3): large
enough that top-2 gaps are wide. Per fixture several prompts are tried and the one whose greedy run
keeps every gap above 0.05 longest is kept.

Usage (needs torch and transformers; CPU only):
  python3 Tests/Reference/family_models.py --out DIR [--tar FILE.tgz]
"""
import argparse, copy, inspect, json, math, os, sys, tarfile

import torch
import transformers
from safetensors.torch import save_file

torch.set_num_threads(4)

VOCAB, HIDDEN, INTER = 256, 64, 128
STEPS = 32
NEAR_TIE = 0.05


def make_config(cls, rope=None, theta=10000.0, **kw):
    """A config of `cls`, with RoPE given the way this transformers version takes it."""
    params = inspect.signature(cls.__init__).parameters
    if "rope_parameters" in params:
        rp = {"rope_type": "default", "rope_theta": theta}
        if rope:
            rp.update(rope)
        kw["rope_parameters"] = rp
    else:
        kw["rope_theta"] = theta
        if rope:
            kw["rope_scaling"] = dict(rope)
    base = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                pad_token_id=None)
    base.update(kw)
    config = cls(**base)
    config._attn_implementation = "eager"
    return config


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied parameters appear once
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].double()


def top2_gap(row):
    top = torch.topk(row, 2).values
    return float(top[0] - top[1])


def greedy_recompute(model, prompt, steps, stop_at_tie=False):
    ids, tokens, gaps = list(prompt), [], []
    for _ in range(steps):
        row = logits_of(model, ids)[-1]
        gap = top2_gap(row)
        tok = int(torch.argmax(row))
        tokens.append(tok)
        gaps.append(gap)
        ids.append(tok)
        if stop_at_tie and gap < NEAR_TIE:
            break
    return tokens, gaps


def greedy_cached(model, prompt, steps):
    tokens, gaps = [], []
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        for i in range(steps):
            row = out.logits[0, -1].double()
            tok = int(torch.argmax(row))
            tokens.append(tok)
            gaps.append(top2_gap(row))
            if i + 1 < steps:
                out = model(input_ids=torch.tensor([[tok]]), past_key_values=out.past_key_values, use_cache=True)
    return tokens, gaps


def window_rule():
    """The source of transformers' sliding-window mask predicate, to record which offsets attend."""
    try:
        from transformers import masking_utils
        for name in ("sliding_window_overlay", "sliding_window_causal_mask_function"):
            if hasattr(masking_utils, name):
                return inspect.getsource(getattr(masking_utils, name))
    except Exception as e:  # older versions have no masking_utils
        return f"unavailable: {e}"
    return "unavailable"


def rope_source(kind):
    try:
        from transformers import modeling_rope_utils as r
        fn = r.ROPE_INIT_FUNCTIONS.get(kind)
        return inspect.getsource(fn) if fn else None
    except Exception as e:
        return f"unavailable: {e}"


def build(name, cls_name, prompt_len, ablate=None, steps=STEPS, seed=0, internlm2=False, **cfg):
    """Builds, saves and references one fixture. `ablate` edits a copy of the config to switch the
    fixture's option off (for ablation_max_diff)."""
    cfg_cls = getattr(transformers, cls_name.replace("ForCausalLM", "Config"))
    model_cls = getattr(transformers, cls_name)
    config = make_config(cfg_cls, **cfg)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    randomise(model, 1000 + seed)
    model64 = copy.deepcopy(model).double().eval()

    # Choose the prompt whose greedy run stays clear of near-ties longest.
    best = None
    for trial in range(24):
        g = torch.Generator().manual_seed(7919 * (trial + 1) + seed)
        prompt = torch.randint(3, VOCAB, (prompt_len,), generator=g).tolist()
        _, gaps = greedy_recompute(copy.deepcopy(model64), prompt, steps, stop_at_tie=True)
        clear = next((i for i, gp in enumerate(gaps) if gp < NEAR_TIE), len(gaps))
        if best is None or clear > best[0]:
            best = (clear, prompt)
        if clear == steps:
            break
    prompt = best[1]

    fresh = copy.deepcopy(model64)   # rotary modules keep state (dynamic NTK): a fresh copy per run
    last = logits_of(fresh, prompt)[-1]
    tokens, gaps = greedy_recompute(fresh, prompt, steps)
    cached_tokens, cached_gaps = greedy_cached(copy.deepcopy(model64), prompt, steps)

    ablation = None
    if ablate is not None:
        off_cfg = dict(cfg)
        ablate(off_cfg)
        off = model_cls(make_config(cfg_cls, **off_cfg)).eval()
        off.load_state_dict(model.state_dict())
        off = off.double().eval()
        ablation = float((logits_of(off, prompt)[-1] - last).abs().max())

    out_dir = os.path.join(ARGS.out, name)
    os.makedirs(out_dir, exist_ok=True)
    if internlm2:
        save_internlm2(model, config, out_dir)
    else:
        model.save_pretrained(out_dir, safe_serialization=True)
        for extra in ("generation_config.json",):
            p = os.path.join(out_dir, extra)
            if os.path.exists(p):
                os.remove(p)
    rope_kind = (cfg.get("rope") or {}).get("rope_type", "default")
    ref = {
        "name": name,
        "architecture": "InternLM2ForCausalLM" if internlm2 else cls_name,
        "reference_class": cls_name,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "reference_dtype": "float64 (weights stored float32)",
        "prompt": prompt,
        "steps": steps,
        "tokens": tokens,
        "gaps": gaps,
        "cached_tokens": cached_tokens,
        "cached_gaps": cached_gaps,
        "first_near_tie": next((i for i, gp in enumerate(gaps) if gp < NEAR_TIE), None),
        "last_logits": [float(v) for v in last],
        "ablation_max_diff": ablation,
        "layer_types": getattr(config, "layer_types", None),
        "sliding_window": getattr(config, "sliding_window", None),
        "max_window_layers": getattr(config, "max_window_layers", None),
        "rope_init_source": rope_source(rope_kind) if rope_kind != "default" else None,
    }
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(f"{name}: prompt {len(prompt)}, clear steps {best[0]}/{steps}, min gap {min(gaps):.3f}, "
          f"recompute==cached {tokens == cached_tokens}, ablation {ablation}, layer_types {ref['layer_types']}, "
          f"files {sorted(os.listdir(out_dir))}", flush=True)


def save_internlm2(model, config, out_dir):
    """InternLM2 has no class in transformers: the reference runs LlamaForCausalLM, whose math is
    InternLM2's, and the weights are written under InternLM2's names with q/k/v fused the way its
    remote code splits them: wqkv rows grouped per KV head as [kv_heads][groups + 2][head_dim]."""
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    H, KV = config.num_attention_heads, config.num_key_value_heads
    D = config.head_dim or config.hidden_size // H
    G = H // KV
    out = {"model.tok_embeddings.weight": sd["model.embed_tokens.weight"],
           "model.norm.weight": sd["model.norm.weight"],
           "output.weight": sd["lm_head.weight"]}
    for i in range(config.num_hidden_layers):
        p, o = f"model.layers.{i}.", f"model.layers.{i}."
        q = sd[p + "self_attn.q_proj.weight"].view(KV, G, D, -1)
        k = sd[p + "self_attn.k_proj.weight"].view(KV, 1, D, -1)
        v = sd[p + "self_attn.v_proj.weight"].view(KV, 1, D, -1)
        out[o + "attention.wqkv.weight"] = torch.cat([q, k, v], 1).reshape(KV * (G + 2) * D, -1).contiguous()
        out[o + "attention.wo.weight"] = sd[p + "self_attn.o_proj.weight"]
        out[o + "attention_norm.weight"] = sd[p + "input_layernorm.weight"]
        out[o + "ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
        out[o + "feed_forward.w1.weight"] = sd[p + "mlp.gate_proj.weight"]
        out[o + "feed_forward.w3.weight"] = sd[p + "mlp.up_proj.weight"]
        out[o + "feed_forward.w2.weight"] = sd[p + "mlp.down_proj.weight"]
    save_file(out, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    cfg = {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "vocab_size": config.vocab_size,
           "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
           "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": H, "num_key_value_heads": KV,
           "max_position_embeddings": config.max_position_embeddings, "rms_norm_eps": config.rms_norm_eps,
           "rope_theta": 10000.0, "rope_scaling": None, "bias": False, "hidden_act": "silu",
           "tie_word_embeddings": False, "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def no_rope(c):
    c.pop("rope", None)


def main():
    os.makedirs(ARGS.out, exist_ok=True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}", flush=True)
    print("sliding window rule:\n" + window_rule(), flush=True)
    print("internlm2 class in transformers:", hasattr(transformers, "InternLM2ForCausalLM"), flush=True)
    L = "LlamaForCausalLM"
    jobs = [
        ("llama_mha", L, 24, None, dict()),
        ("llama_gqa", L, 24, None, dict(num_attention_heads=8, num_key_value_heads=2, seed=1)),
        ("llama_tied", L, 24, None, dict(tie_word_embeddings=True, seed=2)),
        # head_dim 32 with hidden 64 and 4 heads (hidden / heads = 16), MHA.
        ("llama_head_dim", L, 24, None, dict(head_dim=32, seed=3)),
        ("llama3_rope", L, 80, no_rope, dict(rope=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                       high_freq_factor=4.0, original_max_position_embeddings=32),
                                             head_dim=32, seed=4)),
        ("llama_linear_rope", L, 40, no_rope, dict(rope=dict(rope_type="linear", factor=4.0), seed=5)),
        ("llama_dynamic_rope", L, 40, no_rope, dict(rope=dict(rope_type="dynamic", factor=2.0),
                                                    max_position_embeddings=32, seed=6)),
        ("mistral_sliding", "MistralForCausalLM", 40, lambda c: c.update(sliding_window=None),
         dict(num_key_value_heads=2, sliding_window=8, seed=7)),
        ("qwen2_bias", "Qwen2ForCausalLM", 24, None, dict(num_key_value_heads=2, seed=8)),
        ("qwen2_sliding", "Qwen2ForCausalLM", 40, lambda c: c.update(use_sliding_window=False),
         dict(num_key_value_heads=2, num_hidden_layers=3, use_sliding_window=True, sliding_window=8,
              max_window_layers=1, seed=9)),
        ("internlm2", L, 24, None, dict(num_key_value_heads=2, seed=10, internlm2=True)),
    ]
    failed = []
    for name, cls_name, prompt_len, ablate, kw in jobs:
        if ARGS.only and name not in ARGS.only.split(","):
            continue
        try:
            build(name, cls_name, prompt_len, ablate=ablate, **kw)
        except Exception as e:
            import traceback
            traceback.print_exc()
            failed.append(name)
    if ARGS.tar:
        with tarfile.open(ARGS.tar, "w:gz") as t:
            t.add(ARGS.out, arcname="families")
    print("failed:", failed, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tar")
    ap.add_argument("--only")
    ARGS = ap.parse_args()
    sys.exit(main())
