#!/usr/bin/env python3
"""Independent numpy reference of AWQ W4A16 (issue [Q4]): round-to-nearest quantization, AutoAWQ's
GEMM packing, the TurboMind int4 workspace layout of lmdeploy-swift, and a float64 Llama forward
of the dequantized model. numpy only (no torch).

Formats (read from AutoAWQ's awq/quantize/quantizer.py + awq/modules/linear/gemm.py and
lmdeploy's lmdeploy/turbomind/deploy/{source_model/llama_awq.py,target_model/w4.py}):

  Quantization of a linear W [out, in] per group of G input channels (AutoAWQ's
  pseudo_quantize_tensor, zero_point=True, w_bit=4):
      max, min over each group of G consecutive inputs of one output row
      scale = max(max - min, 1e-5) / 15            (stored fp16; we quantize with the fp16 value)
      zero  = clamp(-round(min / scale), 0, 15)    (uint4)
      q     = clamp(round(w / scale) + zero, 0, 15)
      dequantized w = (q - zero) * scale
  AutoAWQ GEMM tensors of a linear `P` (`P.qweight`, `P.qzeros`, `P.scales`):
      qweight int32 [in, out/8]: the transposed uint4 matrix Q^T [in, out]; int32 column c holds
              outputs 8c..8c+7, output 8c + ORDER[i] in bits 4i..4i+3, ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
      qzeros  int32 [in/G, out/8]: the zeros [in/G, out] packed the same way
      scales  fp16  [in/G, out]
  quant_config.json: {"quant_method": "awq", "bits": 4, "group_size": G, "zero_point": true, "version": "gemm"}
  (AutoAWQ itself writes {"zero_point", "q_group_size", "w_bit", "version"}; config.json carries the
  same under "quantization_config").

  lmdeploy-swift's int4 workspace (weight_type = int4, group_size = G; see docs/w4a16.md). lmdeploy's
  own int4 bytes are a CUDA swizzle (convert_s4_k_m8); we keep its file names and use this layout:
      NAME.R.qweight       int32 [rows, cols/8], AWQ's packing of the rank's uint4 matrix F [rows, cols]
      NAME.R.scales_zeros  fp16  [rows/G, cols, 2]: (scale, zero) of each group and column
  where F[i][c] = Q_src(c)[row(c)][in_offset + i] with the fp16 workspace's column maps:
      attention.w_qkv: q_R | k_R | v_R, q and k permuted for interleaved rotary (per head, column j is
                       HF row (j % 2)·d/2 + j/2), R-th of tp chunks of heads; rows = hidden
      attention.wo:    rows = R-th chunk of the input (heads·d/tp), all hidden columns
      feed_forward.w13: gate_R | up_R (R-th chunk of inter each); rows = hidden
      feed_forward.w2: rows = R-th chunk of inter, all hidden columns
  Norms, embeddings and the LM head are the fp16 workspace's files (fp16, vocab padded to tp).

Usage:
  awq_reference.py fixture OUT_DIR      writes the tiny fixture set (Tests/Fixtures/awq)
  awq_reference.py rtn HF_DIR OUT_DIR G writes an AutoAWQ RTN directory of a bf16/f16/f32 HF Llama
"""
import json, os, shutil, struct, sys
import numpy as np

ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
LINEARS = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj',
           'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']


# ---- quantization -------------------------------------------------------------------------------
def quantize(w, G):
    """w [out, in] float → q uint8 [out, in], zeros uint8 [out, in/G], scales fp16 [out, in/G]."""
    out, inp = w.shape
    if inp % G:
        raise ValueError(f'group size {G} does not divide {inp} input features')
    g = w.astype(np.float32).reshape(out, inp // G, G)
    mx, mn = g.max(-1), g.min(-1)
    scales = (np.maximum(mx - mn, 1e-5) / 15).astype(np.float16)
    s = scales.astype(np.float32)
    zeros = np.clip(-np.round(mn / s), 0, 15)
    q = np.clip(np.round(g / s[..., None]) + zeros[..., None], 0, 15)
    return q.reshape(out, inp).astype(np.uint8), zeros.astype(np.uint8), scales


def dequantize(q, zeros, scales, G):
    """q [out, in], zeros/scales [out, in/G] → float64 [out, in]."""
    z = np.repeat(zeros.astype(np.float64), G, axis=1)
    s = np.repeat(scales.astype(np.float64), G, axis=1)
    return (q.astype(np.float64) - z) * s


# ---- AWQ packing --------------------------------------------------------------------------------
def pack(m):
    """uint4 matrix [rows, cols] → int32 [rows, cols/8] in AWQ's order."""
    rows, cols = m.shape
    assert cols % 8 == 0
    m = m.astype(np.uint32).reshape(rows, cols // 8, 8)
    out = np.zeros((rows, cols // 8), dtype=np.uint32)
    for i, o in enumerate(ORDER):
        out |= (m[:, :, o] & 0xF) << np.uint32(4 * i)
    return out.view(np.int32)


def unpack(p):
    """int32 [rows, cols/8] → uint8 [rows, cols]."""
    u = p.view(np.uint32)
    rows, packed = u.shape
    out = np.zeros((rows, packed, 8), dtype=np.uint8)
    for i, o in enumerate(ORDER):
        out[:, :, o] = (u >> np.uint32(4 * i)) & 0xF
    return out.reshape(rows, packed * 8)


def awq_tensors(q, zeros, scales):
    """The AutoAWQ GEMM tensors of one linear (HF layout inputs [out, ...])."""
    return pack(q.T.copy()), pack(zeros.T.copy()), scales.T.copy().astype(np.float16)


# ---- safetensors ----------------------------------------------------------------------------------
DT = {np.dtype(np.float16): 'F16', np.dtype(np.float32): 'F32', np.dtype(np.int32): 'I32', np.dtype(np.uint16): 'BF16'}


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {'dtype': DT[a.dtype], 'shape': list(a.shape), 'data_offsets': [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    hb = json.dumps(header, separators=(',', ':')).encode()
    hb += b' ' * ((8 - len(hb) % 8) % 8)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(struct.pack('<Q', len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path, lazy=False):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        h = json.loads(f.read(n))
    buf = np.memmap(path, dtype=np.uint8, mode='r', offset=8 + n)
    def load(e):
        a, b = e['data_offsets']
        raw = np.frombuffer(buf[a:b], dtype={'F16': np.float16, 'F32': np.float32, 'I32': np.int32, 'BF16': np.uint16}[e['dtype']])
        if e['dtype'] == 'BF16':
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.reshape(e['shape'])
    items = [(name, e) for name, e in h.items() if name != '__metadata__']
    if lazy:
        return {name: (lambda e=e: load(e)) for name, e in items}
    return {name: load(e) for name, e in items}


def quant_config(G):
    return {'quant_method': 'awq', 'bits': 4, 'group_size': G, 'zero_point': True, 'version': 'gemm'}


def write_autoawq(out_dir, cfg, weights, G):
    """Writes an AutoAWQ GEMM directory of the HF Llama `weights` (float arrays by HF name). Returns
    the dequantized weights (float64) the runtime must reproduce."""
    os.makedirs(out_dir, exist_ok=True)
    tensors, deq = {}, {}
    for name, w in weights.items():
        base = name[:-len('.weight')] if name.endswith('.weight') else name
        if any(base.endswith(l) for l in LINEARS):
            q, z, s = quantize(w, G)
            qw, qz, sc = awq_tensors(q, z, s)
            tensors[base + '.qweight'], tensors[base + '.qzeros'], tensors[base + '.scales'] = qw, qz, sc
            deq[name] = dequantize(q, z, s, G)
        else:
            tensors[name] = w.astype(np.float16)
            deq[name] = w.astype(np.float16).astype(np.float64)
    write_safetensors(os.path.join(out_dir, 'model.safetensors'), tensors)
    c = dict(cfg)
    c['torch_dtype'] = 'float16'
    c['quantization_config'] = quant_config(G)
    json.dump(c, open(os.path.join(out_dir, 'config.json'), 'w'), indent=2)
    json.dump(quant_config(G), open(os.path.join(out_dir, 'quant_config.json'), 'w'), indent=2)
    return deq


# ---- workspace int4 layout ------------------------------------------------------------------------
def permuted_rows(heads_per_rank, rank, d):
    rows = []
    for c in range(heads_per_rank * d):
        head, j = rank * heads_per_rank + c // d, c % d
        rows.append(head * d + (j % 2) * (d // 2) + j // 2)
    return rows


def workspace_int4(cfg, qz, G, tp):
    """qz: per HF linear name (without .weight) (q [out, in], zeros [out, in/G], scales [out, in/G]).
    Returns {file name: array} of the int4 linear files for tensor parallelism tp."""
    H, KV, L = cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['num_hidden_layers']
    hidden, inter = cfg['hidden_size'], cfg['intermediate_size']
    d = cfg.get('head_dim') or hidden // H
    files = {}

    def emit(name, parts, in_offset, rows):
        # parts: list of (linear, row indices of that HF tensor)
        qs, zs, ss = [], [], []
        for lin, idx in parts:
            q, z, s = qz[lin]
            qs.append(q[idx, in_offset:in_offset + rows])
            zs.append(z[idx, in_offset // G:(in_offset + rows) // G])
            ss.append(s[idx, in_offset // G:(in_offset + rows) // G])
        F = np.concatenate(qs, 0).T            # [rows, cols]
        Z = np.concatenate(zs, 0).T            # [rows/G, cols]
        S = np.concatenate(ss, 0).T
        files[name + '.qweight'] = pack(F.copy())
        files[name + '.scales_zeros'] = np.stack([S.astype(np.float16), Z.astype(np.float16)], -1)

    for l in range(L):
        p, w = f'layers.{l}.', f'model.layers.{l}.'
        qp, kvp = H // tp, KV // tp
        for r in range(tp):
            emit(p + f'attention.w_qkv.{r}', [(w + 'self_attn.q_proj', permuted_rows(qp, r, d)),
                                              (w + 'self_attn.k_proj', permuted_rows(kvp, r, d)),
                                              (w + 'self_attn.v_proj', list(range(r * kvp * d, (r + 1) * kvp * d)))], 0, hidden)
        share = H * d // tp
        for r in range(tp):
            emit(p + f'attention.wo.{r}', [(w + 'self_attn.o_proj', list(range(hidden)))], r * share, share)
        ishare = inter // tp
        for r in range(tp):
            cols = list(range(r * ishare, (r + 1) * ishare))
            emit(p + f'feed_forward.w13.{r}', [(w + 'mlp.gate_proj', cols), (w + 'mlp.up_proj', cols)], 0, hidden)
        for r in range(tp):
            emit(p + f'feed_forward.w2.{r}', [(w + 'mlp.down_proj', list(range(hidden)))], r * ishare, ishare)
    return files


# ---- float64 Llama forward (HF rotate-half rotary) ------------------------------------------------
def forward(cfg, W, ids):
    H, KV, L = cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['num_hidden_layers']
    D = cfg.get('head_dim') or cfg['hidden_size'] // H
    eps = cfg['rms_norm_eps']
    inv = 1.0 / (cfg.get('rope_theta', 10000.0) ** (np.arange(0, D, 2) / D))
    n = len(ids)
    norm = lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(t):
        a, b = t[..., :D // 2], t[..., D // 2:]
        return np.concatenate([a * cos[:, None] - b * sin[:, None], b * cos[:, None] + a * sin[:, None]], -1)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    x = W['model.embed_tokens.weight'][ids]
    for l in range(L):
        p = f'model.layers.{l}.'
        h = norm(x, W[p + 'input_layernorm.weight'])
        q = rope((h @ W[p + 'self_attn.q_proj.weight'].T).reshape(n, H, D))
        k = rope((h @ W[p + 'self_attn.k_proj.weight'].T).reshape(n, KV, D))
        v = (h @ W[p + 'self_attn.v_proj.weight'].T).reshape(n, KV, D)
        k, v = np.repeat(k, H // KV, 1), np.repeat(v, H // KV, 1)
        s = np.einsum('qhd,khd->hqk', q, k) / np.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + np.einsum('hqk,khd->qhd', s, v).reshape(n, H * D) @ W[p + 'self_attn.o_proj.weight'].T
        h = norm(x, W[p + 'post_attention_layernorm.weight'])
        g, u = h @ W[p + 'mlp.gate_proj.weight'].T, h @ W[p + 'mlp.up_proj.weight'].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + 'mlp.down_proj.weight'].T
    head = W.get('lm_head.weight', W['model.embed_tokens.weight'])
    return norm(x, W['model.norm.weight']) @ head.T


# ---- the fixture ----------------------------------------------------------------------------------
def tiny_config():
    return {'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', 'hidden_size': 128, 'intermediate_size': 256,
            'num_hidden_layers': 2, 'num_attention_heads': 4, 'num_key_value_heads': 2, 'head_dim': 32, 'vocab_size': 96,
            'rms_norm_eps': 1e-5, 'rope_theta': 10000.0, 'max_position_embeddings': 128, 'bos_token_id': 1,
            'eos_token_id': 2, 'tie_word_embeddings': False, 'hidden_act': 'silu'}


def tiny_weights(cfg, rng):
    h, I, V, L = cfg['hidden_size'], cfg['intermediate_size'], cfg['vocab_size'], cfg['num_hidden_layers']
    H, KV, d = cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['head_dim']
    W = {'model.embed_tokens.weight': rng.standard_normal((V, h)) * 0.5}
    for l in range(L):
        p = f'model.layers.{l}.'
        W[p + 'input_layernorm.weight'] = 1 + rng.standard_normal(h) * 0.1
        W[p + 'self_attn.q_proj.weight'] = rng.standard_normal((H * d, h)) * 0.15
        W[p + 'self_attn.k_proj.weight'] = rng.standard_normal((KV * d, h)) * 0.15
        W[p + 'self_attn.v_proj.weight'] = rng.standard_normal((KV * d, h)) * 0.15
        W[p + 'self_attn.o_proj.weight'] = rng.standard_normal((h, H * d)) * 0.15
        W[p + 'post_attention_layernorm.weight'] = 1 + rng.standard_normal(h) * 0.1
        W[p + 'mlp.gate_proj.weight'] = rng.standard_normal((I, h)) * 0.15
        W[p + 'mlp.up_proj.weight'] = rng.standard_normal((I, h)) * 0.15
        W[p + 'mlp.down_proj.weight'] = rng.standard_normal((h, I)) * 0.1
    W['model.norm.weight'] = 1 + rng.standard_normal(h) * 0.1
    W['lm_head.weight'] = rng.standard_normal((V, h)) * 0.3
    return {k: v.astype(np.float32) for k, v in W.items()}


def fixture(out):
    G, tp = 64, 2
    cfg = tiny_config()
    rng = np.random.default_rng(12)
    W = tiny_weights(cfg, rng)
    model = os.path.join(out, 'model')
    deq = write_autoawq(model, cfg, W, G)
    # Per-linear unpacked values, from the written tensors (so the layout check covers unpacking too).
    st = read_safetensors(os.path.join(model, 'model.safetensors'))
    qz = {}
    for name in W:
        base = name[:-7]
        if any(base.endswith(l) for l in LINEARS):
            q, z, s = unpack(st[base + '.qweight']).T, unpack(st[base + '.qzeros']).T, st[base + '.scales'].T
            qz[base] = (q, z, s)
            assert np.array_equal(dequantize(q, z, s, G), deq[name])
    ws = workspace_int4(cfg, qz, G, tp)
    write_safetensors(os.path.join(out, 'workspace-int4-tp2.safetensors'), ws)
    # Raw packing vectors: one matrix with every nibble value in every position.
    m = (np.arange(4 * 16) % 16).astype(np.uint8).reshape(4, 16)
    m[1] = m[1][::-1]
    ids = [1, 17, 42, 5, 88, 23, 60, 9, 3, 71, 30, 14]
    logits = forward(cfg, deq, ids)
    # The same forward with every linear's input rounded to fp16 (lmdeploy's W4A16 activations):
    # how far a faithful A16 implementation may sit from the float64 reference.
    class Fp16Input:
        __array_ufunc__ = None
        def __init__(self, w): self.w = w
        @property
        def T(self): return self
        def __rmatmul__(self, x): return x.astype(np.float16).astype(np.float64) @ self.w.T
    a16 = forward(cfg, {k: Fp16Input(v) if k.endswith('proj.weight') else v for k, v in deq.items()}, ids)
    a16_error = float(np.abs(a16 - logits).max() / max(np.abs(logits).max(), 1))
    ref = {'group_size': G, 'tp': tp, 'ids': ids, 'fp16_activation_error': a16_error, 'logits': [[float(v) for v in row] for row in logits],
           'pack_input': m.tolist(), 'pack_output': [int(v) for v in pack(m).reshape(-1)],
           'fp16_linear_bytes': int(sum(W[n].size * 2 for n in W if any(n[:-7].endswith(l) for l in LINEARS))),
           'int4_linear_bytes': int(sum(a.nbytes for k, a in ws.items()))}
    json.dump(ref, open(os.path.join(out, 'reference.json'), 'w'), indent=1)
    print(f'{out}: AutoAWQ tiny Llama g{G}, {len(ws)} workspace int4 files (tp {tp}), logits of {len(ids)} tokens')


def rtn(hf_dir, out_dir, G):
    cfg = json.load(open(os.path.join(hf_dir, 'config.json')))
    files = sorted(f for f in os.listdir(hf_dir) if f.endswith('.safetensors'))
    W = {}
    for f in files:
        W.update(read_safetensors(os.path.join(hf_dir, f), lazy=True))
    # Quantize linear by linear to keep memory near one copy.
    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for name, get in W.items():
        w = get()
        base = name[:-len('.weight')] if name.endswith('.weight') else name
        if any(base.endswith(l) for l in LINEARS):
            q, z, s = quantize(np.asarray(w, dtype=np.float32), G)
            tensors[base + '.qweight'], tensors[base + '.qzeros'], tensors[base + '.scales'] = awq_tensors(q, z, s)
        else:
            tensors[name] = np.asarray(w, dtype=np.float32).astype(np.float16)
    write_safetensors(os.path.join(out_dir, 'model.safetensors'), tensors)
    c = dict(cfg)
    c['torch_dtype'] = 'float16'
    c['quantization_config'] = quant_config(G)
    json.dump(c, open(os.path.join(out_dir, 'config.json'), 'w'), indent=2)
    json.dump(quant_config(G), open(os.path.join(out_dir, 'quant_config.json'), 'w'), indent=2)
    for name in os.listdir(hf_dir):
        if name.startswith('tokenizer') or name in ('special_tokens_map.json', 'generation_config.json', 'vocab.json', 'merges.txt'):
            shutil.copy(os.path.join(hf_dir, name), os.path.join(out_dir, name))
    print(f'{out_dir}: AutoAWQ RTN g{G} of {hf_dir}')


if __name__ == '__main__':
    if len(sys.argv) >= 3 and sys.argv[1] == 'fixture':
        fixture(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == 'rtn':
        rtn(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)
