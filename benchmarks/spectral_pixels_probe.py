#!/usr/bin/python3
"""A probe, not a reference: spectral clustering of Fashion-MNIST's 60,000 training images by their *pixels*
(PCA to --components dimensions, then the same symmetric kNN graph and Ng-Jordan-Weiss embedding as
models/spectral.h), to see whether the pixel graph separates the classes better than the graph of the GMVAE's
codes that `gmvae train --component-start spectral` uses (docs/gmvae.md, Missing). Prints the kNN class purity and,
for three k-means seeds on the embedding, Hungarian accuracy, majority-vote accuracy and NMI on the training
labels. Needs python3-sklearn and python3-scipy (this probe only; nothing else uses them).

  /usr/bin/python3 benchmarks/spectral_pixels_probe.py [--components 50 --neighbours 10]
"""
import argparse
import os
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix, diags
from scipy.sparse.linalg import eigsh
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from m2_torch import load  # noqa: E402


def hungarian_accuracy(labels, clusters):
    K = max(clusters.max(), labels.max()) + 1
    counts = np.zeros((K, K))
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / len(labels)


def majority_accuracy(labels, clusters):
    return sum(np.bincount(labels[clusters == k]).max() for k in np.unique(clusters)) / len(labels)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--components", type=int, default=50, help="PCA dimensions (0: raw pixels)")
    p.add_argument("--neighbours", type=int, default=10)
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = p.parse_args()
    x, labels, _, _ = load(a.data)
    points = PCA(a.components, random_state=0).fit_transform(x) if a.components > 0 else x
    k = a.neighbours
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)[1][:, 1:]
    print(f"kNN purity {np.mean(labels[neighbours] == labels[:, None]):.4f}", flush=True)
    n = len(labels)
    graph = csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), neighbours.ravel())), shape=(n, n))
    graph = ((graph + graph.T) > 0).astype(float)
    inv_sqrt_degree = diags(1 / np.sqrt(np.asarray(graph.sum(1)).ravel()))
    # The leading eigenvectors of D^-1/2 A D^-1/2, rows scaled to unit length (Ng, Jordan & Weiss 2001).
    _, vectors = eigsh(inv_sqrt_degree @ graph @ inv_sqrt_degree, k=a.clusters, which="LA")
    embedding = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for seed in range(3):
        clusters = KMeans(a.clusters, n_init=10, random_state=seed).fit_predict(embedding)
        print(f"k-means seed {seed}: Hungarian {hungarian_accuracy(labels, clusters):.4f} "
              f"majority {majority_accuracy(labels, clusters):.4f} "
              f"NMI {normalized_mutual_info_score(labels, clusters):.4f}", flush=True)


if __name__ == "__main__":
    main()
