#!/usr/bin/env python3
"""Scripts/bench-transformers.py MODEL_DIR [batch ...] — the HF transformers peer of `lmdeploy bench`
on a GPU (run it on the device, beside ours, in the same lease): fp16, static KV cache, greedy
`generate` of 512 prompt tokens and 256 new tokens per sequence at each batch size (output tokens per
second over the whole call, prefill included, as `lmdeploy bench --concurrency` counts them), and a
2,048-token prefill (one forward pass). Prints JSON lines. Needs torch + transformers (not in CI)."""
import json, sys, time

import torch
from transformers import AutoModelForCausalLM

path = sys.argv[1]
batches = [int(b) for b in sys.argv[2:]] or [64]
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float16).cuda().eval()
vocab = model.config.vocab_size


def generate(batch, prompt, new):
    ids = torch.randint(100, vocab, (batch, prompt), device='cuda')
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         cache_implementation='static', pad_token_id=0)
    torch.cuda.synchronize()
    assert out.shape[1] == prompt + new
    return time.perf_counter() - t


with torch.no_grad():
    ids = torch.randint(100, vocab, (1, 2048), device='cuda')
    model(ids)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(3):
        model(ids)
    torch.cuda.synchronize()
    print(json.dumps({'bench': 'transformers_prefill', 'tokens': 2048, 'tokens_per_s': round(3 * 2048 / (time.perf_counter() - t), 1)}),
          flush=True)
    for b in batches:
        # Warm-up at the measured shape: generate compiles the static-cache forward for its cache length
        # (a shorter warm-up left that compilation inside the timed run: 130 tok/s at batch 16, 31 s).
        generate(b, 512, 256)
        s = generate(b, 512, 256)
        print(json.dumps({'bench': 'transformers_generate', 'batch': b, 'input_len': 512, 'output_len': 256,
                          'output_tokens_per_s': round(b * 256 / s, 1), 'seconds': round(s, 2)}), flush=True)
