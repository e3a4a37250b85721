#!/usr/bin/python3
"""Quick PyTorch probes of two clustering ideas for the GMVAE (docs/gmvae.md, "Probes"), before building either
into tapegrad. One seed each, test-set clustering scores (Hungarian, majority, NMI) every 5 epochs.

  pretrain: VaDE's recipe (Jiang et al. 2017): pretrain the encoder/decoder as a plain VAE (or, with --ae, a
            deterministic autoencoder), fit k-means (k-means++ seeding, 10 restarts) to the codes mu(x) of the
            training images, start the component priors p(z|y) at the centroids and per-cluster variances, then
            train the GMVAE with q(y|x) in closed form, the coordinate-ascent optimum given q(z|x):
              log q(y=k|x) = log p(k) + E_q(z|x)[log p(z|k)] + const
                           = -1/2 sum_j [lv_kj + ((mu_j - m_kj)^2 + exp(log_var_j)) / exp(lv_kj)] + const
  consistency: the recipe of docs/gmvae.md (q(z|x), --mi-weight 0, binarised) plus a symmetric cross-entropy
            between q(y|x) and q(y|shift(x)), shift = a random translation by up to --shift pixels, so q(y|x)
            cannot split a class by position.

  /usr/bin/python3 scripts/gmvae_probes.py pretrain --pretrain-epochs 20 --epochs 30 --seed 1 [--ae --latent 10]
  /usr/bin/python3 scripts/gmvae_probes.py consistency --weight 1 --epochs 40 --seed 1
"""
import argparse, json, math, os, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
from gmvae_torch import Gmvae, load, mlp, scores  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
H, D = 512, 784


def report(epoch, seconds, logits, labels, K, **extra):
    acc, majority, nmi = scores(logits.argmax(-1).numpy(), labels, K)
    print(json.dumps({"epoch": epoch, "seconds": round(seconds, 1), "hungarian": round(acc, 3),
                      "majority": round(majority, 3), "nmi": round(nmi, 3), **extra}), flush=True)


def kmeans(codes, K, seed, restarts=10, iterations=100):
    """Lloyd's k-means with k-means++ seeding; the restart with the least inertia wins (no labels used)."""
    rng = np.random.RandomState(seed)
    best = None
    for _ in range(restarts):
        centroids = codes[rng.randint(len(codes))][None]
        for _ in range(1, K):
            d2 = ((codes[:, None] - centroids[None]) ** 2).sum(-1).min(1)
            centroids = np.vstack([centroids, codes[rng.choice(len(codes), p=d2 / d2.sum())]])
        for _ in range(iterations):
            d2 = ((codes[:, None] - centroids[None]) ** 2).sum(-1)
            assignment = d2.argmin(1)
            updated = np.stack([codes[assignment == k].mean(0) if (assignment == k).any() else centroids[k]
                                for k in range(K)])
            if np.allclose(updated, centroids):
                break
            centroids = updated
        inertia = d2.min(1).sum()
        if best is None or inertia < best[0]:
            best = (inertia, centroids, assignment)
    return best[1], best[2]


def pretrain(args, xtr, xte, yte):
    Z, K = args.latent, args.components
    encoder, decoder = mlp([D, H, H, 2 * Z]), mlp([Z, H, H, D])
    encode = lambda x: encoder(x).split(Z, -1)  # (mu, log_var)
    networks = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(networks, lr=1e-3)
    start = time.perf_counter()
    for _ in range(args.pretrain_epochs):
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 100):
            x = torch.bernoulli(xtr[perm[i:i + 100]])
            mu, lv = encode(x)
            if args.ae:
                z, kl = mu, 0
            else:
                z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
                kl = 0.5 * (mu ** 2 + lv.exp() - 1 - lv).sum(-1)
            loss = (F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum(-1) + kl).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        codes_train = encode(xtr)[0].double().numpy()
        codes_test = encode(xte)[0].double().numpy()
    centroids, assignment = kmeans(codes_train, K, args.seed)
    nearest = ((codes_test[:, None] - centroids[None]) ** 2).sum(-1)
    report(0, time.perf_counter() - start, torch.from_numpy(-nearest), yte, K, phase="k-means on mu(x)")
    variances = np.stack([codes_train[assignment == k].var(0) + 1e-3 for k in range(K)])
    prior_mu = nn.Parameter(torch.tensor(centroids, dtype=torch.float32))
    prior_lv = nn.Parameter(torch.tensor(np.log(variances), dtype=torch.float32))
    optimizer = torch.optim.Adam(networks + [prior_mu, prior_lv], lr=1e-3)

    def loss_and_logits(x, training=True):  # training: unused, the signature train() calls
        mu, lv = encode(x)
        z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
        nll = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum(-1)
        spread = (mu[:, None] - prior_mu[None]) ** 2 + lv.exp()[:, None]                    # (B, K, Z)
        logits = -0.5 * (prior_lv[None] + spread / prior_lv.exp()[None]).sum(-1)            # closed-form q(y|x)
        log_qy = F.log_softmax(logits, -1)
        kl_z = 0.5 * (prior_lv[None] - lv[:, None] + spread / prior_lv.exp()[None] - 1).sum(-1)
        kl_y = (log_qy.exp() * (log_qy + math.log(K))).sum(-1)
        return (nll + (log_qy.exp() * kl_z).sum(-1) + kl_y).mean(), logits

    train(args, xtr, xte, yte, optimizer, loss_and_logits)


def shift(x, pixels):
    """Each image translated by its own random offset in [-pixels, pixels]^2, zeros shifted in."""
    B = x.shape[0]
    padded = F.pad(x.view(B, 1, 28, 28), (pixels,) * 4)
    dx, dy = torch.randint(0, 2 * pixels + 1, (B,)), torch.randint(0, 2 * pixels + 1, (B,))
    return torch.stack([padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(B)]).view(B, D)


def consistency(args, xtr, xte, yte):
    model = Gmvae(args.components, H, args.latent, z_given_y=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_and_logits(x, training=True):
        loss, _, logits = model.loss(x, mi_weight=0.0)
        if training and args.weight > 0:
            log_q, log_q_shifted = F.log_softmax(logits, -1), F.log_softmax(model.qy(shift(x, args.shift)), -1)
            symmetric_ce = -(log_q.exp().detach() * log_q_shifted).sum(-1) - (log_q_shifted.exp().detach() * log_q).sum(-1)
            loss = loss + args.weight * symmetric_ce.mean()
        return loss, logits

    train(args, xtr, xte, yte, optimizer, loss_and_logits)


def train(args, xtr, xte, yte, optimizer, loss_and_logits):
    test = torch.bernoulli(xte, generator=torch.Generator().manual_seed(0))
    for epoch in range(1, args.epochs + 1):
        start, perm = time.perf_counter(), torch.randperm(len(xtr))
        for i in range(0, len(xtr), 100):
            loss, _ = loss_and_logits(torch.bernoulli(xtr[perm[i:i + 100]]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch == 1 or epoch % 5 == 0:
            with torch.no_grad():
                report(epoch, time.perf_counter() - start, loss_and_logits(test, training=False)[1], yte,
                       args.components)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("probe", choices=["pretrain", "consistency"])
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "digits"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--components", type=int, default=10)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--ae", action="store_true", help="pretrain a deterministic autoencoder instead of a VAE")
    ap.add_argument("--weight", type=float, default=1.0, help="consistency weight")
    ap.add_argument("--shift", type=int, default=2, help="largest translation, pixels")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    folder = "/usr/share/datasets/fashion-mnist" if args.data == "fashion" else args.data
    xtr, _ = load(folder, "train")
    xte, yte = load(folder, "test")
    (pretrain if args.probe == "pretrain" else consistency)(args, xtr, xte, yte)


if __name__ == "__main__":
    main()
