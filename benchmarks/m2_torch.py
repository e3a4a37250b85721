#!/usr/bin/python3
"""PyTorch reference of tapegrad's M2 (models/m2.h, examples/m2.cpp): same networks, same loss normalisation
(Note [M2 loss normalisation]), same data protocol (class-balanced validation split held out of the training
set, class-balanced labelled draw, fixed labelled/unlabelled batch proportion, model selection on validation).
Its random draws differ from tapegrad's (torch's generator), so runs agree in distribution, not bit for bit.

  /usr/bin/python3 benchmarks/m2_torch.py --labels 100 --alpha 350000 --epochs 15 --lr 1e-3 --threads 1

Prints one line per epoch and a final JSON object (seconds per epoch, best-validation test accuracy).
"""
import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(folder):
    def find(stem):
        for name in (stem, stem + ".gz"):
            if os.path.exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
        raise FileNotFoundError(os.path.join(folder, stem))
    x_train = read_idx(find("train-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255
    y_train = read_idx(find("train-labels-idx1-ubyte")).astype(np.int64)
    x_test = read_idx(find("t10k-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255
    y_test = read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64)
    return x_train, y_train, x_test, y_test


def balanced_split(labels, per_class, rng):
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(10)])
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    return np.sort(chosen), rest


def mlp(sizes):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes):
            layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class M2(nn.Module):
    def __init__(self, D=784, K=10, H=500, Z=50):
        super().__init__()
        self.K, self.Z = K, Z
        self.classifier = mlp([D, H, K])
        self.encoder_x = nn.Linear(D, H)
        self.encoder_y = nn.Linear(K, H, bias=False)
        self.mu = nn.Linear(H, Z)
        self.log_var = nn.Linear(H, Z)
        self.decoder = mlp([Z + K, H, D])

    def neg_elbo(self, x, features, y):
        h = F.softplus(features + self.encoder_y(y))
        mu, log_var = self.mu(h), self.log_var(h)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        logits = self.decoder(torch.cat([z, y], 1))
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
        return rec + kl + math.log(self.K)

    def neg_unlabelled(self, x):
        B, K = x.shape[0], self.K
        y = torch.eye(K).repeat_interleave(B, 0)                     # row k * B + b: class k
        features = self.encoder_x(x).repeat(K, 1)                     # shared x features, as in tapegrad
        neg_l = self.neg_elbo(x.repeat(K, 1), features, y).view(K, B).t()
        log_q = F.log_softmax(self.classifier(x), 1)
        return (log_q.exp() * (neg_l + log_q)).sum(1)

    def loss(self, x_l, y_l, x_u, w_l, w_u, w_c):
        y = F.one_hot(y_l, self.K).float()
        neg_l = self.neg_elbo(x_l, self.encoder_x(x_l), y)
        ce = F.cross_entropy(self.classifier(x_l), y_l)
        return w_l * neg_l.mean() + w_c * ce + w_u * self.neg_unlabelled(x_u).mean()


def accuracy(model, x, y):
    with torch.no_grad():
        return (model.classifier(x).argmax(1) == y).float().mean().item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join(HERE, "..", "data", "digits"))
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--labelled-batch", type=int, default=50)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--latent", type=int, default=50)
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--validation", type=int, default=1000)
    p.add_argument("--elbo-weights", choices=["batch", "data"], default="batch")
    p.add_argument("--binarize", action="store_true")
    p.add_argument("--supervised-only", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.data == "fashion":
        a.data = "/usr/share/datasets/fashion-mnist"
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    x_train, y_train, x_test, y_test = load(a.data)
    val, pool = balanced_split(y_train, a.validation // 10, np.random.default_rng(12345))
    lab_in_pool, unl_in_pool = balanced_split(y_train[pool], a.labels // 10, rng)
    lab, unl = pool[lab_in_pool], pool[unl_in_pool]
    n_l, n_u = len(lab), len(unl)
    n = n_l + n_u
    alpha = a.alpha if a.alpha > 0 else 0.1 * n
    B_l = min(a.labelled_batch, n_l)
    if a.elbo_weights == "data":
        w_l, w_u = n_l / n, n_u / n
    else:
        w_l, w_u = B_l / (B_l + a.batch), a.batch / (B_l + a.batch)
    w_c = alpha / n
    X = torch.from_numpy(x_train)
    Y = torch.from_numpy(y_train)
    xv, yv = X[val], Y[val]
    xt, yt = torch.from_numpy(x_test), torch.from_numpy(y_test)
    model = M2(H=a.hidden, Z=a.latent)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    steps = n_u // a.batch
    best = (-1.0, 0.0, 0)
    times, times_with_eval = [], []
    lab_order, lab_pos = rng.permutation(lab), 0
    for epoch in range(1, a.epochs + 1):
        start = time.perf_counter()
        unl_order = rng.permutation(unl)
        for s in range(steps):
            if lab_pos + B_l > n_l:
                lab_order, lab_pos = rng.permutation(lab), 0
            il = lab_order[lab_pos:lab_pos + B_l]
            lab_pos += B_l
            x_l, y_l = X[il], Y[il]
            if a.binarize:
                x_l = torch.bernoulli(x_l)
            opt.zero_grad()
            if a.supervised_only:
                loss = F.cross_entropy(model.classifier(x_l), y_l)
            else:
                x_u = X[unl_order[s * a.batch:(s + 1) * a.batch]]
                if a.binarize:
                    x_u = torch.bernoulli(x_u)
                loss = model.loss(x_l, y_l, x_u, w_l, w_u, w_c)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
        acc_v, acc_t = accuracy(model, xv, yv), accuracy(model, xt, yt)
        times_with_eval.append(time.perf_counter() - start)  # what `m2 train` logs as an epoch's seconds
        if acc_v > best[0]:
            best = (acc_v, acc_t, epoch)
        print(f"epoch {epoch} loss {loss.item():.3f} {times[-1]:.2f}s val {acc_v:.4f} test {acc_t:.4f}", flush=True)
    print(json.dumps({"bench": "m2_torch", "labels": a.labels, "alpha": alpha, "threads": a.threads,
                      "supervised_only": a.supervised_only, "epochs": a.epochs,
                      "median_epoch_seconds": float(np.median(times)),
                      "median_epoch_seconds_with_eval": float(np.median(times_with_eval)), "best_epoch": best[2],
                      "validation": best[0], "test_at_best": best[1], "torch": torch.__version__}))


if __name__ == "__main__":
    main()
