#!/usr/bin/env python3
"""Independent float64 reference of `lmdeploy lite calibrate`'s statistics (numpy only), for
Tests/LiteTests/CalibrationTests.swift.

Runs the tiny random Llama of Tests/Fixtures/families/llama_gqa (float32 weights, upcast exactly)
over a few fixed windows of random token ids, each from an empty cache, and records per layer, over
all tokens of all windows:
  key / value (after RoPE / as cached), per KV head and channel: min, max, absmax   [kv_heads, head_dim]
  the input of every linear layer, per channel: max, min, mean, absmax, absmean  [in_features]
    attention.w_qkv  the normed hidden state entering q/k/v_proj
    attention.wo     the attention output entering o_proj
    feed_forward.w13 the normed hidden state entering gate/up_proj
    feed_forward.w2  silu(gate) * up entering down_proj
Names are those of calib_stats.safetensors (docs/kv-int8.md).

Usage: python3 Tests/Reference/calibration_reference.py [MODEL_DIR] [OUT.json]
"""
import json, struct, sys
import numpy as np

here = __file__.rsplit('/', 2)[0]
d = (sys.argv[1] if len(sys.argv) > 1 else here + '/Fixtures/families/llama_gqa').rstrip('/') + '/'
out_path = sys.argv[2] if len(sys.argv) > 2 else here + '/Fixtures/calibration/llama_gqa_stats.json'

raw = open(d + 'model.safetensors', 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
def tensor(name):
    e = header[name]; a, b = e['data_offsets']
    assert e['dtype'] == 'F32', e['dtype']
    return np.frombuffer(raw[8 + n + a: 8 + n + b], dtype='<f4').astype(np.float64).reshape(e['shape'])
W = {k: tensor(k) for k in header if k != '__metadata__'}
cfg = json.load(open(d + 'config.json'))
H, KV, L = cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['num_hidden_layers']
D = cfg.get('head_dim') or cfg['hidden_size'] // H
theta = cfg.get('rope_theta') or cfg['rope_parameters']['rope_theta']
inv = 1.0 / (theta ** (np.arange(0, D, 2) / D))
E = W['model.embed_tokens.weight']

def norm(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg['rms_norm_eps']) * w

def forward(ids, record):
    n = len(ids)
    x = E[ids]
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    def rope(t):
        a, b = t[..., :D // 2], t[..., D // 2:]
        return np.concatenate([a * cos[:, None] - b * sin[:, None], b * cos[:, None] + a * sin[:, None]], -1)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for l in range(L):
        p = f'model.layers.{l}.'
        h = norm(x, W[p + 'input_layernorm.weight'])
        record(l, 'attention.w_qkv', h)
        q = rope((h @ W[p + 'self_attn.q_proj.weight'].T).reshape(n, H, D))
        k = rope((h @ W[p + 'self_attn.k_proj.weight'].T).reshape(n, KV, D))
        v = (h @ W[p + 'self_attn.v_proj.weight'].T).reshape(n, KV, D)
        record(l, 'key', k.reshape(n, KV * D)); record(l, 'value', v.reshape(n, KV * D))
        kk = np.repeat(k, H // KV, 1); vv = np.repeat(v, H // KV, 1)
        s = np.einsum('qhd,khd->hqk', q, kk) / np.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        o = np.einsum('hqk,khd->qhd', s, vv).reshape(n, H * D)
        record(l, 'attention.wo', o)
        x = x + o @ W[p + 'self_attn.o_proj.weight'].T
        h = norm(x, W[p + 'post_attention_layernorm.weight'])
        record(l, 'feed_forward.w13', h)
        g = h @ W[p + 'mlp.gate_proj.weight'].T; u = h @ W[p + 'mlp.up_proj.weight'].T
        a = g / (1 + np.exp(-g)) * u
        record(l, 'feed_forward.w2', a)
        x = x + a @ W[p + 'mlp.down_proj.weight'].T

rng = np.random.default_rng(20261202)
windows = [rng.integers(0, cfg['vocab_size'], size=19).tolist() for _ in range(3)]
rows = {}
def record(l, name, t): rows.setdefault((l, name), []).append(t)
for w in windows: forward(w, record)

stats = {}
for (l, name), parts in rows.items():
    t = np.concatenate(parts, 0)
    if name in ('key', 'value'):
        for s, v in (('min', t.min(0)), ('max', t.max(0)), ('absmax', np.abs(t).max(0))):
            stats[f'layers.{l}.{name}.{s}'] = v.tolist()
    else:
        for s, v in (('max', t.max(0)), ('min', t.min(0)), ('mean', t.mean(0)), ('absmax', np.abs(t).max(0)), ('absmean', np.abs(t).mean(0))):
            stats[f'layers.{l}.{name}.input.{s}'] = v.tolist()
json.dump({'model': 'families/llama_gqa', 'windows': windows, 'stats': stats}, open(out_path, 'w'))
print(f'{out_path}: {len(stats)} statistics over {sum(map(len, windows))} tokens')
