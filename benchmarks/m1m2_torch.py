#!/usr/bin/python3
"""A probe, not a reference: Kingma et al. 2014's stacked M1+M2 in PyTorch, to see whether M2 on the codes of a
VAE (M1) opens the Fashion-MNIST margin that M2 on pixels does not (docs/m2.md, Fashion-MNIST). Same protocol
as benchmarks/m2_torch.py (class-balanced 1,000-image validation split, class-balanced label draw, 6,900
unlabelled images evenly spaced through the pool, 50 labelled + 100 unlabelled images a step, model selection on
validation). M1: 784-600-600-z1 softplus VAE, Bernoulli decoder on dynamically binarised pixels, trained on the
labelled and unlabelled images; M2 then works on z1 ~ q(z1|x) (or its mean, --sample-z1 0) with a Gaussian
decoder p(z1|y, z2). Prints progress every 10 epochs and a final JSON line with the supervised-only classifier
on the codes beside it.

  /usr/bin/python3 benchmarks/m1m2_torch.py --seed 1 [--z2 4 --alpha-w 50 --m1-epochs 100 --m2-epochs 60]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from m2_torch import balanced_split, load, mlp  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--labels", type=int, default=100)
ap.add_argument("--m1-epochs", type=int, default=100)
ap.add_argument("--m2-epochs", type=int, default=60)
ap.add_argument("--z1", type=int, default=50, help="M1's latent size: M2's input")
ap.add_argument("--z2", type=int, default=4, help="M2's latent size")
ap.add_argument("--alpha-w", type=float, default=50.0, help="weight of the mean cross-entropy (alpha / N)")
ap.add_argument("--sample-z1", type=int, default=1, help="1: M2 sees z1 ~ q(z1|x); 0: its mean")
ap.add_argument("--unlabelled", type=int, default=6900)
ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
ap.add_argument("--hidden", type=int, default=500)
a = ap.parse_args()
torch.set_num_threads(1)
torch.manual_seed(a.seed)
rng = np.random.default_rng(a.seed)
x_train, y_train, x_test, y_test = load(a.data)
val, pool = balanced_split(y_train, 100, np.random.default_rng(12345))
lab_i, unl_i = balanced_split(y_train[pool], a.labels // 10, rng)
lab, unl = pool[lab_i], pool[unl_i]
if a.unlabelled and a.unlabelled < len(unl):
    unl = unl[np.linspace(0, len(unl) - 1, a.unlabelled).astype(int)]
X, Y = torch.from_numpy(x_train), torch.from_numpy(y_train)
XT, YT = torch.from_numpy(x_test), torch.from_numpy(y_test)

# M1: a plain VAE on the pixels of the labelled and unlabelled images.
enc = mlp([784, 600, 600, 2 * a.z1])
dec = mlp([a.z1, 600, 600, 784])
opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
m1_set = np.concatenate([lab, unl])
t0 = time.time()
for ep in range(a.m1_epochs):
    order = rng.permutation(m1_set)
    for s in range(len(order) // 100):
        x = torch.bernoulli(X[order[s * 100:(s + 1) * 100]])
        mu, lv = enc(x).chunk(2, 1)
        z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(1)
        loss = (rec + 0.5 * (mu ** 2 + lv.exp() - 1 - lv).sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if ep % 20 == 19:
        print(f"m1 epoch {ep + 1} loss {loss.item():.2f} {time.time() - t0:.0f}s", flush=True)
with torch.no_grad():
    C_mu, C_lv = enc(X).chunk(2, 1)   # codes of every training image (q(z1|x) mean, log variance)
    T_mu, _ = enc(XT).chunk(2, 1)


def accuracy(classifier, inputs, labels):
    with torch.no_grad():
        return (classifier(inputs).argmax(1) == labels).float().mean().item()


def train_supervised_on_codes(epochs=60):
    """The baseline on M1's codes: the same classifier, the labelled codes alone, the same steps and selection."""
    clf = mlp([a.z1, a.hidden, 10])
    o = torch.optim.Adam(clf.parameters(), lr=1e-3)
    best = (-1, 0, 0)
    for ep in range(epochs):
        for s in range(len(unl) // 100):
            il = rng.choice(lab, 50, replace=False)
            loss = F.cross_entropy(clf(C_mu[il]), Y[il])
            o.zero_grad()
            loss.backward()
            o.step()
        v, t = accuracy(clf, C_mu[val], Y[val]), accuracy(clf, T_mu, YT)
        if v > best[0]:
            best = (v, t, ep + 1)
    return best


K, Z2, D = 10, a.z2, a.z1


class M2OnCodes(nn.Module):
    """M2 (benchmarks/m2_torch.py) with a Gaussian p(z1|y, z2) in place of the Bernoulli pixel decoder."""
    def __init__(self):
        super().__init__()
        H = a.hidden
        self.clf = mlp([D, H, K])
        self.ex = nn.Linear(D, H)
        self.ey = nn.Linear(K, H, bias=False)
        self.head = nn.Linear(H, 2 * Z2)
        self.dec = mlp([Z2 + K, H, 2 * D])

    def neg_elbo(self, x, features, y):
        mu, lv = self.head(F.softplus(features + self.ey(y))).chunk(2, 1)
        z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
        dm, dlv = self.dec(torch.cat([z, y], 1)).chunk(2, 1)
        nll = 0.5 * (math.log(2 * math.pi) + dlv + (x - dm) ** 2 / dlv.exp()).sum(1)
        return nll + 0.5 * (mu ** 2 + lv.exp() - 1 - lv).sum(1) + math.log(K)

    def neg_unlabelled(self, x):
        B = x.shape[0]
        y = torch.eye(K).repeat_interleave(B, 0)
        neg_l = self.neg_elbo(x.repeat(K, 1), self.ex(x).repeat(K, 1), y).view(K, B).t()
        log_q = F.log_softmax(self.clf(x), 1)
        return (log_q.exp() * (neg_l + log_q)).sum(1)


def z1_of(idx):
    return C_mu[idx] + (torch.exp(0.5 * C_lv[idx]) * torch.randn(len(idx), D) if a.sample_z1 else 0)


m = M2OnCodes()
o = torch.optim.Adam(m.parameters(), lr=1e-3)
best = (-1, 0, 0)
t0 = time.time()
for ep in range(a.m2_epochs):
    order = rng.permutation(unl)
    for s in range(len(order) // 100):
        il = rng.choice(lab, 50, replace=False)
        xl = z1_of(il)
        xu = z1_of(order[s * 100:(s + 1) * 100])
        yl = F.one_hot(Y[il], K).float()
        # --elbo-weights batch (1/3 labelled, 2/3 unlabelled) as in benchmarks/m2_torch.py
        loss = (m.neg_elbo(xl, m.ex(xl), yl).mean() / 3 + a.alpha_w * F.cross_entropy(m.clf(xl), Y[il])
                + 2 * m.neg_unlabelled(xu).mean() / 3)
        o.zero_grad()
        loss.backward()
        o.step()
    v, t = accuracy(m.clf, C_mu[val], Y[val]), accuracy(m.clf, T_mu, YT)
    if v > best[0]:
        best = (v, t, ep + 1)
    if ep % 10 == 9:
        print(f"m2 epoch {ep + 1} loss {loss.item():.2f} val {v:.4f} test {t:.4f} {time.time() - t0:.0f}s", flush=True)
sup = train_supervised_on_codes()
print(json.dumps({"seed": a.seed, "labels": a.labels, "m1m2_test_at_best": best[1], "m1m2_best_epoch": best[2],
                  "codes_sup_test_at_best": sup[1], "z2": a.z2, "alpha_w": a.alpha_w, "m1_epochs": a.m1_epochs}),
      flush=True)
