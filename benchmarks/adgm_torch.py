#!/usr/bin/python3
"""A probe, not a reference: the auxiliary deep generative model (ADGM; Maaloe, Sonderby, Sonderby & Winther 2016,
"Auxiliary Deep Generative Models") in PyTorch, to see whether an auxiliary variable a opens the Fashion-MNIST
margin that M2 does not (docs/m2.md, Fashion-MNIST). Same protocol as benchmarks/m2_torch.py (class-balanced
1,000-image validation split, class-balanced label draw, 6,900 unlabelled images evenly spaced through the pool,
50 labelled + 100 unlabelled images a step, model selection on validation) and the same networks as tapegrad's M2
(hidden 500, softplus, Bernoulli decoder p(x|y, z) on grey levels). What ADGM adds:

  inference   q(a|x) q(y|a, x) q(z|a, y, x)      generative   p(y) p(z) p(x|y, z) p(a|x, y, z)
  -L(x, y) = E_q(a|x) q(z|a,y,x)[-log p(x|y, z) - log p(a|x, y, z) + log q(a|x)] + KL(q(z|a,y,x) || p(z)) + log K
  -U(x)    = E_q(a|x)[sum_y q(y|a, x) (-L(x, y, a)) - H(q(y|a, x))]          (paper, eqs. 10-11)

and the classifier q(y|a, x) reads the sampled a beside x, a stochastic classifier whose extra input is shaped
by the generative model. --no-aux drops a (M2 itself); --supervised-only trains the classifier on the labelled
images alone. Test accuracy uses a = the mean of q(a|x).

--class-prior replaces p(z) = N(0, I) by a learned Gaussian per class, p(z|y) = N(mu_y, diag sigma_y^2) (the
Gaussian-mixture prior of docs/gmvae.md, here with y observed or summed over), so that the bound's dependence on
y comes through the code's fit to each class's Gaussian as well as through the decoder; the KL term becomes
KL(q(z|x, y) || p(z|y)). --z-given-x makes the encoder ignore y, q(z|x) (the GMVAE's main recipe). The means
start uniform in +-0.29 (docs/gmvae.md, initialisation), the log-variances at 0.

  /usr/bin/python3 benchmarks/adgm_torch.py --seed 1 [--no-aux] [--class-prior [--z-given-x]]
  /usr/bin/python3 benchmarks/adgm_torch.py --seed 1 --no-aux --supervised-only --epochs 60
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


def gaussian_nll(value, mu, log_var):
    """-log N(value; mu, exp(log_var)), summed over the last dimension."""
    return 0.5 * ((value - mu) ** 2 / log_var.exp() + log_var + math.log(2 * math.pi)).sum(-1)


class Adgm(nn.Module):
    def __init__(self, D=784, K=10, H=500, Z=4, A=50, auxiliary=True, class_prior=False, z_given_x=False):
        super().__init__()
        self.K, self.auxiliary, self.class_prior, self.z_given_x = K, auxiliary, class_prior, z_given_x
        if class_prior:
            self.prior_mu = nn.Parameter(torch.empty(K, Z).uniform_(-0.29, 0.29))
            self.prior_log_var = nn.Parameter(torch.zeros(K, Z))
        self.q_a = mlp([D, H, 2 * A])
        self.classifier = mlp([D + (A if auxiliary else 0), H, K])
        self.encoder_x = nn.Linear(D, H)
        self.encoder_y = nn.Linear(K, H, bias=False)
        self.encoder_a = nn.Linear(A, H, bias=False)
        self.mu = nn.Linear(H, Z)
        self.log_var = nn.Linear(H, Z)
        self.decoder = mlp([Z + K, H, D])
        self.p_a = mlp([D + K + Z, H, 2 * A])

    def sample_a(self, x, use_mean=False):
        mu, log_var = self.q_a(x).chunk(2, 1)
        a = mu if use_mean else mu + (0.5 * log_var).exp() * torch.randn_like(mu)
        return a, (-gaussian_nll(a, mu, log_var) if self.auxiliary else 0)

    def class_logits(self, x, a):
        return self.classifier(torch.cat([x, a], 1) if self.auxiliary else x)

    def neg_elbo(self, x, y, a, x_features):
        """-L(x, y) given a, without the log q(a|x) term (shared by every y)."""
        y_in = 0 if self.z_given_x else self.encoder_y(y)
        h = F.softplus(x_features + y_in + (self.encoder_a(a) if self.auxiliary else 0))
        mu, log_var = self.mu(h), self.log_var(h)
        z = mu + (0.5 * log_var).exp() * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(self.decoder(torch.cat([z, y], 1)), x, reduction="none").sum(-1)
        if self.class_prior:  # KL(N(mu, s^2) || N(m_y, s_y^2)) per dimension, summed
            p_mu, p_log_var = y @ self.prior_mu, y @ self.prior_log_var
            kl = 0.5 * (p_log_var - log_var + (log_var.exp() + (mu - p_mu) ** 2) / p_log_var.exp() - 1).sum(-1)
        else:
            kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
        out = rec + kl + math.log(self.K)
        if self.auxiliary:
            p_mu, p_log_var = self.p_a(torch.cat([x, y, z], 1)).chunk(2, 1)
            out = out + gaussian_nll(a, p_mu, p_log_var)
        return out

    def loss(self, x_l, y_l, x_u, w_l, w_u, w_c):
        K, B = self.K, x_u.shape[0]
        a_l, log_q_a_l = self.sample_a(x_l)
        neg_l = self.neg_elbo(x_l, F.one_hot(y_l, K).float(), a_l, self.encoder_x(x_l)) + log_q_a_l
        cross_entropy = F.cross_entropy(self.class_logits(x_l, a_l), y_l)
        a_u, log_q_a_u = self.sample_a(x_u)
        y = torch.eye(K).repeat_interleave(B, 0)  # row k * B + b: class k
        neg_l_all = self.neg_elbo(x_u.repeat(K, 1), y, a_u.repeat(K, 1), self.encoder_x(x_u).repeat(K, 1))
        log_q_y = F.log_softmax(self.class_logits(x_u, a_u), 1)
        neg_u = (log_q_y.exp() * (neg_l_all.view(K, B).t() + log_q_y)).sum(1) + log_q_a_u
        return w_l * neg_l.mean() + w_c * cross_entropy + w_u * neg_u.mean()


def accuracy(model, x, y):
    with torch.no_grad():
        a, _ = model.sample_a(x, use_mean=True)
        return (model.class_logits(x, a).argmax(1) == y).float().mean().item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--alpha", type=float, default=3e6, help="paper units; weight alpha / N on the mean cross-entropy")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent", type=int, default=4)
    p.add_argument("--aux-latent", type=int, default=50)
    p.add_argument("--no-aux", action="store_true", help="drop a: M2")
    p.add_argument("--class-prior", action="store_true", help="p(z|y) a learned Gaussian per class")
    p.add_argument("--z-given-x", action="store_true", help="encoder q(z|x), without y")
    p.add_argument("--supervised-only", action="store_true")
    p.add_argument("--unlabelled", type=int, default=6900)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    x_train, y_train, x_test, y_test = load(a.data)
    val, pool = balanced_split(y_train, 100, np.random.default_rng(12345))
    lab_in_pool, unl_in_pool = balanced_split(y_train[pool], a.labels // 10, rng)
    lab, unl = pool[lab_in_pool], pool[unl_in_pool]
    if 0 < a.unlabelled < len(unl):
        unl = unl[np.linspace(0, len(unl) - 1, a.unlabelled).round().astype(int)]
    B_l, B = 50, 100
    w_l, w_u, w_c = B_l / (B_l + B), B / (B_l + B), a.alpha / (len(lab) + len(unl))
    X, Y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    xv, yv, xt, yt = X[val], Y[val], torch.from_numpy(x_test), torch.from_numpy(y_test)
    model = Adgm(Z=a.latent, A=a.aux_latent, auxiliary=not a.no_aux, class_prior=a.class_prior,
                 z_given_x=a.z_given_x)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    best = (-1.0, 0.0, 0)
    lab_order, lab_pos = rng.permutation(lab), 0
    for epoch in range(1, a.epochs + 1):
        start = time.perf_counter()
        unl_order = rng.permutation(unl)
        for s in range(len(unl) // B):
            if lab_pos + B_l > len(lab):
                lab_order, lab_pos = rng.permutation(lab), 0
            il = lab_order[lab_pos:lab_pos + B_l]
            lab_pos += B_l
            opt.zero_grad()
            if a.supervised_only:
                a_l, _ = model.sample_a(X[il])
                loss = F.cross_entropy(model.class_logits(X[il], a_l), Y[il])
            else:
                loss = model.loss(X[il], Y[il], X[unl_order[s * B:(s + 1) * B]], w_l, w_u, w_c)
            loss.backward()
            opt.step()
        acc_v, acc_t = accuracy(model, xv, yv), accuracy(model, xt, yt)
        if acc_v > best[0]:
            best = (acc_v, acc_t, epoch)
        print(f"epoch {epoch} loss {loss.item():.2f} {time.perf_counter() - start:.1f}s val {acc_v:.4f} "
              f"test {acc_t:.4f}", flush=True)
    print(json.dumps({"probe": "adgm_torch", "args": vars(a), "best_epoch": best[2], "validation": best[0],
                      "test_at_best": best[1]}))


if __name__ == "__main__":
    main()
