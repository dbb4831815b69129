#!/usr/bin/env python3
"""An independent reference of lmdeploy's `convert` weight export (lmdeploy v0.0.x/v0.1
`turbomind/deploy/target_model/{base,fp}.py` with the `hf` Llama reader), in numpy only.

    lmdeploy_convert_reference.py HF_DIR OUT_DIR TP

Writes OUT_DIR/<name> for every weight file lmdeploy writes, as raw little-endian fp16
(numpy `tofile`), following lmdeploy's operations step by step: transpose, `permute`,
`merge_qkv`, `save_split`, vocab padding. Deliberately written from lmdeploy's code, not from
the Swift writer, so the test compares two independent implementations.
"""
import json
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode='r', offset=8 + n)
    tensors = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        a, b = info['data_offsets']
        raw = np.asarray(data[a:b])
        dtype = info['dtype']
        if dtype == 'BF16':
            x = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype == 'F16':
            x = raw.view(np.float16).astype(np.float32)
        elif dtype == 'F32':
            x = raw.view(np.float32)
        else:
            raise ValueError(f'{path}: {name}: dtype {dtype}')
        tensors[name] = x.reshape(info['shape'])
    return tensors


def load_checkpoint(model_dir):
    index = os.path.join(model_dir, 'model.safetensors.index.json')
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))['weight_map'].values()))
    else:
        files = ['model.safetensors']
    params = {}
    for f in files:
        params.update(read_safetensors(os.path.join(model_dir, f)))
    return params


def permute(x, size_per_head):
    # lmdeploy: x.view(-1, n_heads, 2, dim // n_heads // 2).transpose(2, 3).reshape(-1, dim)
    if x.shape[-1] > 1:
        dim = x.shape[-1]
        n_heads = dim // size_per_head
        return x.reshape(-1, n_heads, 2, dim // n_heads // 2).transpose(0, 1, 3, 2).reshape(-1, dim)
    raise ValueError('scales/zeros are not used for fp16')


def merge_qkv(q, k, v, tp, dim):
    def reshape(x):
        return x.reshape(x.shape[0], tp, -1) if dim == 2 else x.reshape(tp, -1)
    qkv = np.concatenate((reshape(q), reshape(k), reshape(v)), axis=-1)
    return qkv.reshape(q.shape[0], -1)


class Exporter:
    def __init__(self, out_dir, tp):
        self.out_dir = out_dir
        self.tp = tp

    def export_weight(self, param, name):
        # lmdeploy v0.0.x: float and bfloat16 params are converted with .half()
        np.ascontiguousarray(param.astype(np.float16)).tofile(os.path.join(self.out_dir, name))

    def save_split(self, tensor, name, split_dim=None, copy=False):
        tp = self.tp
        prefix, ext = os.path.splitext(name)
        if split_dim is not None:
            assert tensor.shape[split_dim] % tp == 0
            for i, split in enumerate(np.split(tensor, tp, axis=split_dim)):
                self.export_weight(split, f'{prefix}.{i}{ext}')
        elif copy:
            for i in range(tp):
                self.export_weight(tensor, f'{prefix}.{i}{ext}')
        else:
            self.export_weight(tensor, name)


def main():
    model_dir, out_dir, tp = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = json.load(open(os.path.join(model_dir, 'config.json')))
    heads = cfg['num_attention_heads']
    size_per_head = cfg.get('head_dim') or cfg['hidden_size'] // heads
    params = load_checkpoint(model_dir)
    os.makedirs(out_dir, exist_ok=True)
    ex = Exporter(out_dir, tp)

    emb = params['model.embed_tokens.weight']
    out = params.get('lm_head.weight', emb)  # tied embeddings: the output is the embedding table
    vocab = emb.shape[0]

    def pad(t):
        if vocab % tp == 0:
            return t
        pad_size = (vocab + tp - 1) // tp * tp - vocab
        return np.pad(t, ((0, pad_size), (0, 0)))

    ex.export_weight(pad(emb), 'tok_embeddings.weight')
    ex.export_weight(params['model.norm.weight'], 'norm.weight')
    ex.export_weight(pad(out), 'output.weight')

    for i in range(cfg['num_hidden_layers']):
        p = f'model.layers.{i}.'
        qw, kw, vw, ow = (params[p + f'self_attn.{x}_proj.weight'].T for x in 'qkvo')
        qw = permute(qw, size_per_head)
        kw = permute(kw, size_per_head)
        ex.save_split(merge_qkv(qw, kw, vw, tp, dim=2), f'layers.{i}.attention.w_qkv.weight', -1)
        ex.save_split(ow, f'layers.{i}.attention.wo.weight', 0)
        qb = params.get(p + 'self_attn.q_proj.bias')
        if qb is not None:
            kb, vb = params[p + 'self_attn.k_proj.bias'], params[p + 'self_attn.v_proj.bias']
            ob = params.get(p + 'self_attn.o_proj.bias', np.zeros(cfg['hidden_size'], np.float32))
            qb = permute(qb, size_per_head)  # 1-D becomes [1, dim], as in lmdeploy
            kb = permute(kb, size_per_head)
            ex.save_split(merge_qkv(qb, kb, vb, tp, dim=1), f'layers.{i}.attention.w_qkv.bias', -1)
            ex.save_split(ob, f'layers.{i}.attention.wo.bias', copy=True)
        w1, w2, w3 = (params[p + f'mlp.{x}_proj.weight'].T for x in ('gate', 'down', 'up'))
        ex.save_split(w1, f'layers.{i}.feed_forward.w1.weight', -1)
        ex.save_split(w3, f'layers.{i}.feed_forward.w3.weight', -1)
        ex.save_split(w2, f'layers.{i}.feed_forward.w2.weight', 0)
        ex.save_split(params[p + 'input_layernorm.weight'], f'layers.{i}.attention_norm.weight')
        ex.save_split(params[p + 'post_attention_layernorm.weight'], f'layers.{i}.ffn_norm.weight')


if __name__ == '__main__':
    main()
