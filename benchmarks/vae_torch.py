#!/usr/bin/python3
"""The PyTorch twin of tapegrad's VAE (models/vae.cpp), for benchmarks/vae_race.py and docs/vae-benchmark.md.

Same data (the IDX files tapegrad reads), same architectures (mlp: pytorch/examples' 784-400-20; conv: the
strided convolutions of models/vae.cpp), same objective (mean over the batch of BCE-with-logits summed over
pixels + analytic KL), Adam(lr 1e-3), shuffled minibatches with a short last batch, and the same evaluation:
the ELBO with one sampled z per test image, averaged over the test set in batches of 500.

Prints one JSON line at the end:
  {"framework": "torch", "arch": ..., "batch": ..., "intra_threads": ..., "blas_threads": ...,
   "epoch_s": [training seconds per epoch, evaluation excluded], "epoch_cpu_s": [the same in CPU seconds],
  "peak_rss_mib": ..., "test_elbo": [...]}

Run with Debian's interpreter (the one python3-torch is installed into): /usr/bin/python3 benchmarks/vae_torch.py.
OpenBLAS reads its thread count when torch is imported, so --blas-threads is applied before the import.
"""
import argparse
import gzip
import json
import os
import resource
import struct
import sys
import time

DATA = {"digits": os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "digits"),
        "fashion": "/usr/share/datasets/fashion-mnist"}


def read_idx(path):
    """IDX: magic 0 0 type ndim (type 0x08 = u8), big-endian u32 dims, C-order data; gzipped or not."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    zero, dtype, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\0\0" or dtype != 0x08:
        sys.exit(f"{path}: IDX magic, expected 00 00 08 ndim, found {raw[:4].hex()}")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    count = 1
    for d in dims:
        count *= d
    if len(raw) != 4 + 4 * ndim + count:
        sys.exit(f"{path}: size, expected {4 + 4 * ndim + count} bytes for dims {dims}, found {len(raw)}")
    return dims, raw[4 + 4 * ndim:]


def load_images(folder, split, torch):
    name = "train" if split == "train" else "t10k"
    for suffix in ("-images-idx3-ubyte.gz", "-images-idx3-ubyte"):
        path = os.path.join(folder, name + suffix)
        if os.path.exists(path):
            dims, data = read_idx(path)
            x = torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(dims[0], dims[1] * dims[2])
            return x.float() / 255.0
    sys.exit(f"{folder}: {name} images, expected {name}-images-idx3-ubyte[.gz], found none")


def build(arch, torch):
    nn = torch.nn

    class Vae(nn.Module):
        def __init__(self):
            super().__init__()
            D, H, Z = 784, 400, 20
            if arch == "mlp":
                self.encoder = nn.Sequential(nn.Linear(D, H), nn.ReLU())
                self.decoder = nn.Sequential(nn.Linear(Z, H), nn.ReLU(), nn.Linear(H, D))
            else:  # models/vae.cpp, arch == "conv"
                self.encoder = nn.Sequential(
                    nn.Unflatten(1, (1, 28, 28)),
                    nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),
                    nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                    nn.Flatten(), nn.Linear(64 * 7 * 7, H), nn.ReLU())
                self.decoder = nn.Sequential(
                    nn.Linear(Z, H), nn.ReLU(), nn.Linear(H, 64 * 7 * 7), nn.ReLU(),
                    nn.Unflatten(1, (64, 7, 7)),
                    nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                    nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Flatten())
            self.mu = nn.Linear(H, Z)
            self.log_var = nn.Linear(H, Z)

        def forward(self, x):
            h = self.encoder(x)
            mu, log_var = self.mu(h), self.log_var(h)
            z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
            logits = self.decoder(z)
            rec = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
            kl = 0.5 * (mu * mu + log_var.exp() - 1 - log_var).sum(1)
            return rec, kl

    return Vae()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="digits", help="digits, fashion, or a folder of IDX files")
    ap.add_argument("--arch", default="mlp", choices=["mlp", "conv"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (torch.set_num_threads)")
    ap.add_argument("--blas-threads", type=int, default=1, help="OpenBLAS threads (OPENBLAS_NUM_THREADS)")
    ap.add_argument("--no-eval", action="store_true", help="skip the test ELBO (speed runs)")
    args = ap.parse_args()

    os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)  # read once, when torch loads OpenBLAS
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    folder = DATA.get(args.data, args.data)
    train_x, test_x = load_images(folder, "train", torch), load_images(folder, "test", torch)
    model = build(args.arch, torch)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    n = train_x.shape[0]
    epoch_s, epoch_cpu_s, elbos = [], [], []
    for epoch in range(args.epochs):
        model.train()
        start, cpu_start = time.perf_counter(), time.process_time()
        order = torch.randperm(n)
        for i in range(0, n, args.batch):
            x = train_x[order[i:i + args.batch]]
            rec, kl = model(x)
            loss = (rec + kl).mean()  # tapegrad's loss: mean over the batch of the per-example -ELBO
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epoch_s.append(time.perf_counter() - start)
        epoch_cpu_s.append(time.process_time() - cpu_start)
        if not args.no_eval:
            model.eval()
            total = 0.0
            with torch.no_grad():
                for i in range(0, test_x.shape[0], 500):
                    rec, kl = model(test_x[i:i + 500])
                    total += float((rec + kl).double().sum())
            elbos.append(-total / test_x.shape[0])
        print(json.dumps({"epoch": epoch + 1, "train_s": round(epoch_s[-1], 4),
                          "test_elbo": elbos[-1] if elbos else None}), file=sys.stderr, flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"framework": "torch", "torch": torch.__version__, "data": args.data, "arch": args.arch,
                      "batch": args.batch, "epochs": args.epochs, "seed": args.seed,
                      "intra_threads": args.threads, "blas_threads": args.blas_threads,
                      "epoch_s": [round(s, 4) for s in epoch_s],
                      "epoch_cpu_s": [round(s, 4) for s in epoch_cpu_s], "peak_rss_mib": round(peak, 1),
                      "test_elbo": elbos}))


if __name__ == "__main__":
    main()
