"""Read weights exported by `multimat export` and run the text encoder with numpy.

The file format is safetensors (data-specs/checkpoint-v1.md, "Exported weights"): 8 bytes of
little-endian header length, a JSON header (tensor name -> dtype, shape, byte offsets; plus
`__metadata__`, string -> string), then the raw little-endian tensor bytes. It is parsed here
with the standard library and numpy only, so no `safetensors` or PyTorch install is needed; with
PyTorch, `safetensors.torch.load_file(path)` gives the same tensors under the same names.

    python python/multimat_weights.py model.safetensors            # tensor list + metadata
    python python/multimat_weights.py model.safetensors --text-embed X.npy --out Y.npy
"""

import argparse
import json
import struct
import sys

import numpy as np

_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1"}


def load(path):
    """Return (tensors: dict name -> numpy array, metadata: dict str -> str)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} runs past the end of the file ({len(raw)} bytes)")
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = raw[8 + n :]
    tensors = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(data):
            raise ValueError(f"{path}: tensor {name}: byte range {start}..{end} outside the data ({len(data)} bytes)")
        a = np.frombuffer(data[start:end], dtype=dtype)
        shape = tuple(info["shape"])
        if a.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name}: {a.size} values for shape {shape}")
        tensors[name] = a.reshape(shape)
    return tensors, meta


def config(meta):
    """The run's configuration (pre-training or fine-tuning TOML, as JSON) from the metadata."""
    return json.loads(meta["config"])


def text_embed(tensors, meta, x):
    """multimat's text encoder: Linear layers text.mlp.{0..L-1} (weight (out, in), bias (out,))
    with ReLU between them and none after the last, then the L2 normalisation `multimat embed`
    applies. x: (N, input_dim) frozen text embeddings (e.g. MatBERT CLS vectors)."""
    h = np.asarray(x, dtype=np.float32)
    layers = sorted(
        {int(k.split(".")[2]) for k in tensors if k.startswith("text.mlp.") and k.endswith(".weight")}
    )
    if not layers or layers != list(range(len(layers))):
        raise ValueError("no text encoder (text.mlp.N.weight) in this file; its modalities: "
                         + meta.get("modalities", "?"))
    for i in layers:
        w, b = tensors[f"text.mlp.{i}.weight"], tensors[f"text.mlp.{i}.bias"]
        if h.shape[1] != w.shape[1]:
            raise ValueError(f"text.mlp.{i}: input has {h.shape[1]} features, the layer expects {w.shape[1]}")
        h = h @ w.T + b
        if i != layers[-1]:
            h = np.maximum(h, 0.0)
    norm = np.linalg.norm(h.astype(np.float64), axis=1, keepdims=True)
    return (h / np.maximum(norm, 1e-12)).astype(np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", help="a file written by `multimat export`")
    ap.add_argument("--text-embed", metavar="X.npy", help="(N, input_dim) text embeddings to encode")
    ap.add_argument("--out", metavar="Y.npy", help="where to write the (N, embed_dim) embeddings")
    a = ap.parse_args(argv)
    tensors, meta = load(a.weights)
    if a.text_embed is None:
        for name in sorted(tensors):
            print(f"{name}\t{tensors[name].dtype}\t{tuple(tensors[name].shape)}")
        print(json.dumps({k: v for k, v in meta.items() if k != "config"}, indent=1))
        return 0
    y = text_embed(tensors, meta, np.load(a.text_embed))
    if a.out:
        np.save(a.out, y)
    else:
        np.savetxt(sys.stdout, y, fmt="%.7g")
    return 0


if __name__ == "__main__":
    sys.exit(main())
