#!/usr/bin/python3
"""PyTorch reference of tapegrad's GMVAE (models/gmvae.h): the same networks, the same exact sum over y,
analytic Gaussian KLs, Adam, batch 100. Prints one JSON object per epoch (seconds, test ELBO, clustering
scores), so its epoch time and accuracy sit beside `gmvae train` at the same thread count.

  /usr/bin/python3 benchmarks/gmvae_torch.py --data data/digits --epochs 3 --threads 2 [--binarize] [--z-given x]
      [--mi-weight 0] [--q-y closed-form] [--pretrain 20] [--kmeans-restarts 10]
"""
import argparse, gzip, json, math, os, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(folder, split):
    prefix = "train" if split == "train" else "t10k"
    def find(name):
        for suffix in ("", ".gz"):
            if os.path.exists(os.path.join(folder, name + suffix)):
                return os.path.join(folder, name + suffix)
        raise FileNotFoundError(os.path.join(folder, name))
    x = read_idx(find(f"{prefix}-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255.0
    y = read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    return torch.from_numpy(x), y


def mlp(sizes):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Gmvae(nn.Module):
    def __init__(self, K=10, H=512, Z=64, D=784, prior_init=0.29, z_given_y=True, y_closed_form=False,
                 full_covariance=False):
        super().__init__()
        self.K, self.Z, self.z_given_y, self.y_closed_form = K, Z, z_given_y, y_closed_form
        assert not (y_closed_form and z_given_y), "a closed-form q(y|x) needs q(z|x)"
        assert not (full_covariance and z_given_y), "full-covariance components need q(z|x)"
        if not y_closed_form:
            self.qy = mlp([D, H, H, K])
        # q(z|x, y) on concat(x, onehot(y)), split below as in tapegrad; q(z|x) on x alone (Note [q(z|x)])
        self.qz_first = nn.Linear(D + K if z_given_y else D, H)
        self.qz_rest = nn.Sequential(nn.ReLU(), nn.Linear(H, H), nn.ReLU())
        self.qz_mu, self.qz_lv = nn.Linear(H, Z), nn.Linear(H, Z)
        self.prior_mu = nn.Parameter(torch.empty(K, Z).uniform_(-prior_init, prior_init) if prior_init > 0
                                     else torch.randn(K, Z))
        self.prior_lv = nn.Parameter(torch.zeros(K, Z))
        # Note [full-covariance components]: Sigma_k^-1 = P_k P_k^T, P_k = tril(T_k, -1) + diag(exp(-lv_k / 2))
        self.prior_tril = nn.Parameter(torch.zeros(K, Z, Z)) if full_covariance else None
        self.decoder = mlp([Z, H, H, D])

    def encode_x(self, x):
        """q(z|x): (mu, log_var), each (B, Z)."""
        h = self.qz_rest(self.qz_first(x))
        return self.qz_mu(h), self.qz_lv(h)

    def loss(self, x, mi_weight=1.0, standard_prior=False):
        """(mean loss, per-example negative ELBO, y logits); mi_weight < 1 down-weights I_q(x; y) inside the
        categorical KL in the mean loss (Note [cluster collapse] in models/gmvae.h); standard_prior: the
        pretraining loss, a plain VAE with p(z) = N(0, I) (Note [pretraining])."""
        B, K, Z = x.shape[0], self.K, self.Z
        Kz = K if self.z_given_y else 1  # z samples per example
        logits = None if self.y_closed_form else self.qy(x)
        if self.z_given_y:
            W, b = self.qz_first.weight, self.qz_first.bias
            h = (x @ W[:, :-K].t() + b)[:, None, :] + W[:, -K:].t()[None]   # (B, K, H)
        else:
            h = self.qz_first(x)
        h = self.qz_rest(h.reshape(B * Kz, -1))
        mu, lv = self.qz_mu(h).view(B, Kz, Z), self.qz_lv(h).view(B, Kz, Z)
        z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
        out = self.decoder(z.view(B * Kz, Z))
        nll = F.binary_cross_entropy_with_logits(out, x.repeat_interleave(Kz, 0), reduction="none").sum(-1).view(B, Kz)
        if standard_prior:
            per_example = nll[:, 0] + 0.5 * (mu ** 2 + lv.exp() - 1 - lv).sum(-1)[:, 0]
            return per_example.mean(), per_example, logits
        plv, pmu = self.prior_lv[None], self.prior_mu[None]
        if self.prior_tril is not None:  # KL(q(z|x) || N(m_k, Sigma_k)), kl_normal_full_pairwise
            P = self.precision_factor()
            d = mu - pmu                                                      # (B, K, Z)
            mahalanobis = torch.einsum("bki,kij->bkj", d, P).pow(2).sum(-1)
            trace = lv[:, 0].exp() @ P.pow(2).sum(-1).t()
            kl_z = 0.5 * (trace + mahalanobis - Z + self.prior_lv.sum(-1)[None] - lv[:, 0].sum(-1, keepdim=True))
        else:
            kl_z = 0.5 * (plv - lv + (lv.exp() + (mu - pmu) ** 2) / plv.exp() - 1).sum(-1)
        if self.y_closed_form:  # Note [closed-form q(y|x)]: log q(k|x) = -KL(q(z|x) || p(z|k)) + const
            logits = -kl_z
        log_qy = F.log_softmax(logits, -1)
        qy = log_qy.exp()
        kl_y = (qy * (log_qy + math.log(K))).sum(-1)
        per_example = (qy * (nll + kl_z)).sum(-1) + kl_y
        kl_y_mean = kl_y.mean()
        if mi_weight != 1.0:  # mean KL(q(y|x) || p(y)) = I_q(x; y) + KL(q(y) || p(y)), q(y) the batch mean
            q_marginal = qy.mean(0)
            kl_marginal = (q_marginal * (q_marginal.log() + math.log(K))).sum()
            kl_y_mean = (kl_y_mean - kl_marginal) * mi_weight + kl_marginal
        return (per_example - kl_y).mean() + kl_y_mean, per_example, logits

    def precision_factor(self):
        return torch.tril(self.prior_tril, -1) + torch.diag_embed(torch.exp(-0.5 * self.prior_lv))


def kmeans(codes, K, seed, restarts=10, iterations=100):
    """Lloyd's k-means with k-means++ seeding, the restart with the least inertia (models/clustering.h);
    returns (centroids, assignment)."""
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


def initialize_components(model, x, seed, restarts):
    """Note [pretraining]: components at k-means clusters of mu(x), variances of each cluster's aggregate
    posterior, Var(mu) + mean(sigma^2) per dimension."""
    with torch.no_grad():
        mu, lv = model.encode_x(x)
        codes, variances = mu.double().numpy(), lv.double().exp().numpy()
        centroids, assignment = kmeans(codes, model.K, seed, restarts)
        spread = np.stack([((codes[assignment == k] - centroids[k]) ** 2 + variances[assignment == k]).mean(0)
                           for k in range(model.K)])
        model.prior_mu.copy_(torch.from_numpy(centroids))
        model.prior_lv.copy_(torch.from_numpy(np.log(spread)))
        if model.prior_tril is not None:  # Sigma_k = Cov(mu) + diag(mean sigma^2), P_k = chol(Sigma_k^-1)
            for k in range(model.K):
                d = codes[assignment == k] - centroids[k]
                sigma = d.T @ d / len(d) + np.diag(variances[assignment == k].mean(0))
                P = np.linalg.cholesky(np.linalg.inv(sigma))
                model.prior_lv[k].copy_(torch.from_numpy(-2 * np.log(np.diag(P))))
                model.prior_tril[k].copy_(torch.from_numpy(np.tril(P, -1)))


def max_matching(n):
    """Maximum-weight matching of rows to columns (rows <= cols), shortest augmenting paths with potentials
    (no scipy on the machine); returns the matched total."""
    if n.shape[0] > n.shape[1]:
        n = n.T
    rows, cols = n.shape
    cost = -n
    u, v = np.zeros(rows + 1), np.zeros(cols + 1)
    row_of, prev = np.zeros(cols + 1, dtype=int), np.zeros(cols + 1, dtype=int)
    for i in range(1, rows + 1):
        row_of[0], j0 = i, 0
        min_to, used = np.full(cols + 1, np.inf), np.zeros(cols + 1, dtype=bool)
        while True:
            used[j0] = True
            i0, delta, j1 = row_of[j0], np.inf, -1
            for j in range(1, cols + 1):
                if not used[j]:
                    r = cost[i0 - 1, j - 1] - u[i0] - v[j]
                    if r < min_to[j]:
                        min_to[j], prev[j] = r, j0
                    if min_to[j] < delta:
                        delta, j1 = min_to[j], j
            for j in range(cols + 1):
                if used[j]:
                    u[row_of[j]] += delta
                    v[j] -= delta
                else:
                    min_to[j] -= delta
            j0 = j1
            if row_of[j0] == 0:
                break
        while j0:
            j1 = prev[j0]
            row_of[j0] = row_of[j1]
            j0 = j1
    return sum(n[row_of[j] - 1, j - 1] for j in range(1, cols + 1) if row_of[j])


def scores(clusters, labels, K, C=10):
    n = np.zeros((K, C))
    np.add.at(n, (clusters, labels), 1)
    N = len(labels)
    pk, pc = n.sum(1) / N, n.sum(0) / N
    p = n / N
    nz = p > 0
    mi = (p[nz] * np.log(p[nz] / np.outer(pk, pc)[nz])).sum()
    h = lambda q: -(q[q > 0] * np.log(q[q > 0])).sum()
    return max_matching(n) / N, n.max(1).sum() / N, mi / (0.5 * (h(pk) + h(pc)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/digits")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--components", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--binarize", action="store_true", help="dynamic binarisation")
    ap.add_argument("--z-given", choices=["xy", "x"], default="xy", help="q(z|x, y) or q(z|x) (Note [q(z|x)])")
    ap.add_argument("--mi-weight", type=float, default=1.0, help="weight of I_q(x; y) in the categorical KL")
    ap.add_argument("--q-y", choices=["network", "closed-form"], default="network",
                    help="q(y|x) network, or closed form from q(z|x) (Note [closed-form q(y|x)])")
    ap.add_argument("--pretrain", type=int, default=0, help="plain-VAE epochs, then k-means components (Note [pretraining])")
    ap.add_argument("--covariance", choices=["diag", "full"], default="diag",
                    help="components' covariances (Note [full-covariance components])")
    ap.add_argument("--kmeans-restarts", type=int, default=10,
                    help="k-means++ starts of that k-means (the best is kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    folder = "/usr/share/datasets/fashion-mnist" if args.data == "fashion" else args.data
    xtr, _ = load(folder, "train")
    xte, yte = load(folder, "test")
    model = Gmvae(args.components, args.hidden, args.latent, z_given_y=args.z_given == "xy",
                  y_closed_form=args.q_y == "closed-form", full_covariance=args.covariance == "full")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, args.epochs + 1):
        if args.pretrain and epoch == args.pretrain + 1:
            initialize_components(model, xtr, args.seed, args.kmeans_restarts)
        start = time.perf_counter()
        perm = torch.randperm(len(xtr))
        total = 0.0
        for i in range(0, len(xtr), args.batch):
            x = xtr[perm[i:i + args.batch]]
            if args.binarize:
                x = torch.bernoulli(x)
            loss, _, _ = model.loss(x, args.mi_weight, standard_prior=epoch <= args.pretrain)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            xe = torch.bernoulli(xte, generator=torch.Generator().manual_seed(0)) if args.binarize else xte
            elbo, clusters = 0.0, []
            for i in range(0, len(xe), 500):
                _, per, logits = model.loss(xe[i:i + 500])
                elbo -= per.sum().item()
                clusters.append(logits.argmax(-1).numpy())
        acc, maj, nmi = scores(np.concatenate(clusters), yte, args.components)
        seconds_with_eval = time.perf_counter() - start  # what `gmvae train` logs as an epoch's seconds
        print(json.dumps({"impl": "torch", "epoch": epoch, "seconds": round(seconds, 3),
                          "seconds_with_eval": round(seconds_with_eval, 3), "threads": args.threads,
                          "train_loss": total / len(xtr), "test_elbo": elbo / len(xte), "hungarian": acc,
                          "majority": maj, "nmi": nmi}), flush=True)


if __name__ == "__main__":
    main()
