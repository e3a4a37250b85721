#!/usr/bin/python3
"""A PyTorch probe of one clustering idea for the GMVAE before building it into tapegrad (docs/gmvae.md,
"Probes"): the recipe of docs/gmvae.md (q(z|x), --mi-weight 0, binarised) plus a symmetric cross-entropy between
q(y|x) and q(y|shift(x)), shift = a random translation by up to --shift pixels, so that q(y|x) cannot split a
class by position (the consistency idea of IIC / UDA-style clustering). One seed; test-set scores (Hungarian,
majority, NMI) every 5 epochs.

  /usr/bin/python3 scripts/gmvae_consistency_probe.py --weight 1 --epochs 40 --seed 1
"""
import argparse, json, os, sys, time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
from gmvae_torch import Gmvae, load, scores  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def shift(x, pixels):
    """Each image translated by its own random offset in [-pixels, pixels]^2, zeros shifted in."""
    B = x.shape[0]
    padded = F.pad(x.view(B, 1, 28, 28), (pixels,) * 4)
    dx, dy = torch.randint(0, 2 * pixels + 1, (B,)), torch.randint(0, 2 * pixels + 1, (B,))
    return torch.stack([padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(B)]).view(B, 784)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "digits"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--weight", type=float, default=1.0, help="consistency weight (0: the plain recipe)")
    ap.add_argument("--shift", type=int, default=2, help="largest translation, pixels")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    xtr, _ = load(args.data, "train")
    xte, yte = load(args.data, "test")
    model = Gmvae(10, 512, 64, z_given_y=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    test = torch.bernoulli(xte, generator=torch.Generator().manual_seed(0))
    for epoch in range(1, args.epochs + 1):
        start, perm = time.perf_counter(), torch.randperm(len(xtr))
        for i in range(0, len(xtr), 100):
            x = torch.bernoulli(xtr[perm[i:i + 100]])
            loss, _, logits = model.loss(x, mi_weight=0.0)
            if args.weight > 0:
                log_q, log_q_shifted = F.log_softmax(logits, -1), F.log_softmax(model.qy(shift(x, args.shift)), -1)
                symmetric_ce = (-(log_q.exp().detach() * log_q_shifted).sum(-1)
                                - (log_q_shifted.exp().detach() * log_q).sum(-1))
                loss = loss + args.weight * symmetric_ce.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch == 1 or epoch % 5 == 0:
            with torch.no_grad():
                acc, majority, nmi = scores(model.loss(test)[2].argmax(-1).numpy(), yte, 10)
            print(json.dumps({"epoch": epoch, "seconds": round(time.perf_counter() - start, 1), "hungarian": round(acc, 3),
                              "majority": round(majority, 3), "nmi": round(nmi, 3)}), flush=True)


if __name__ == "__main__":
    main()
