#!/usr/bin/env python3
"""Independent float64 reference of the Llama forward pass (numpy), used to check the golden
greedy continuations: HF's generate() output for two of the chats is not the argmax of the exact
model (see reference-f64.json's margins), so the engine is tested against exact-math greedy decoding.

Usage: llama_reference.py MODEL_DIR golden.json OUT.json   (bf16 safetensors, Llama naming)
"""
import json, struct, sys, numpy as np
d = sys.argv[1].rstrip('/') + '/'
f = open(d + 'model.safetensors', 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n)); base = 8 + n
buf = np.memmap(d + 'model.safetensors', dtype=np.uint8, mode='r')
def T(name):
    e = h[name]; a, b = e['data_offsets']
    u = np.frombuffer(buf[base + a: base + b], dtype=np.uint16).astype(np.uint32) << 16
    return u.view(np.float32).astype(np.float64).reshape(e['shape'])
cfg = json.load(open(d + 'config.json'))
H, KV, L = cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['num_hidden_layers']
D = cfg.get('head_dim') or cfg['hidden_size'] // H

def forward(ids):
    n = len(ids)
    x = E[ids]
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    def rope(t):  # t [n, heads, D], rotate-half as HF Llama
        a, b = t[..., :D // 2], t[..., D // 2:]
        return np.concatenate([a * cos[:, None] - b * sin[:, None], b * cos[:, None] + a * sin[:, None]], -1)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for l in range(L):
        p = f'model.layers.{l}.'
        hN = norm(x, W[p + 'input_layernorm.weight'])
        q = rope((hN @ W[p + 'self_attn.q_proj.weight'].T).reshape(n, H, D))
        k = rope((hN @ W[p + 'self_attn.k_proj.weight'].T).reshape(n, KV, D))
        v = (hN @ W[p + 'self_attn.v_proj.weight'].T).reshape(n, KV, D)
        k = np.repeat(k, H // KV, 1); v = np.repeat(v, H // KV, 1)
        s = np.einsum('qhd,khd->hqk', q, k) / np.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        o = np.einsum('hqk,khd->qhd', s, v).reshape(n, H * D)
        x = x + o @ W[p + 'self_attn.o_proj.weight'].T
        hN = norm(x, W[p + 'post_attention_layernorm.weight'])
        gt = hN @ W[p + 'mlp.gate_proj.weight'].T; up = hN @ W[p + 'mlp.up_proj.weight'].T
        x = x + (gt / (1 + np.exp(-gt)) * up) @ W[p + 'mlp.down_proj.weight'].T
    return norm(x, W['model.norm.weight']) @ E.T

def norm(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg['rms_norm_eps']) * w

W = {name: T(name) for name in h if name != '__metadata__'}
E = W['model.embed_tokens.weight']
inv = 1.0 / (cfg['rope_theta'] ** (np.arange(0, D, 2) / D))

golden = json.load(open(sys.argv[2]))
out = {}
for key in ('prompts', 'chats'):
    for i, c in enumerate(golden[key]):
        ids = list(c['ids'])
        greedy = []
        margins = []
        for _ in range(len(c['greedy_ids'])):
            row = forward(ids)[-1]
            top2 = np.argsort(row)[-2:][::-1]
            greedy.append(int(top2[0])); margins.append(float(row[top2[0]] - row[top2[1]]))
            ids.append(int(top2[0]))
        name = f"{key[:-1]}{i}"
        out[name] = {'greedy_ids': greedy, 'top2_margins': [round(m, 5) for m in margins]}
        same = next((j for j, (a, b) in enumerate(zip(greedy, c['greedy_ids'])) if a != b), len(greedy))
        print(f'{name}: float64 greedy matches HF for {same}/{len(greedy)} tokens; smallest margin {min(margins):.5f}', file=sys.stderr)
json.dump(out, open(sys.argv[3], 'w'), indent=1)
