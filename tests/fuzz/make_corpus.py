#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (tests/fuzz/corpus/{idx,safetensors}/): small valid files of every kind the
readers accept, plus a few near misses. Run from anywhere; the files are committed, so this is only needed to
change them. Standard library only."""
import gzip
import json
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))


def write(kind, name, data):
    path = os.path.join(here, "corpus", kind, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def idx(dims, data=None):
    n = 1
    for d in dims:
        n *= d
    data = bytes((7 * i + 3) % 256 for i in range(n)) if data is None else data
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def gz(raw):
    return gzip.compress(raw, compresslevel=9, mtime=0)


images, labels = idx([2, 3, 3]), idx([5], bytes([0, 1, 9, 4, 2]))
write("idx", "images-2x3x3", images)
write("idx", "images-2x3x3.gz", gz(images))
write("idx", "labels-5", labels)
write("idx", "labels-5.gz", gz(labels))
write("idx", "rank2-4x4", idx([4, 4]))
write("idx", "rank4-1x2x2x2", idx([1, 2, 2, 2]))
write("idx", "empty-0x28x28", idx([0, 28, 28]))
write("idx", "images-2-members.gz", gz(images[:10]) + gz(images[10:]))
write("idx", "truncated", images[:-3])
write("idx", "type-float", bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 128, 63]))


def safetensors(tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        size = n * (4 if dtype == "F32" else 8)
        blobs.append(bytes((i * 13 + 1) % 256 for i in range(size)))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


write("safetensors", "one-f32", safetensors([("w", "F32", [2, 3])], {"model": "vae-mlp", "epoch": "3"}))
write("safetensors", "f32-f64-scalar-empty",
      safetensors([("a.weight", "F32", [3]), ("b", "F64", [2, 1]), ("s", "F32", []), ("e", "F32", [0, 4])]))
write("safetensors", "no-metadata", safetensors([("x", "F64", [1, 1, 2])]))
write("safetensors", "escapes", safetensors([("n\u00e9\U0001F600", "F32", [1])], {"k\n": "v\"\\/"}))
write("safetensors", "empty-header", struct.pack("<Q", 8) + b"{}      ")
write("safetensors", "metadata-only", safetensors([], {"optimizer": "Adam", "optimizer_steps": "10"}))
write("safetensors", "truncated", safetensors([("w", "F32", [4])])[:-2])
