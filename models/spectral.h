// Spectral clustering on a k-nearest-neighbour graph (Ng, Jordan & Weiss 2001, "On Spectral Clustering: Analysis
// and an algorithm"): the GMVAE's other start, for data whose classes are curved sheets in code space rather than
// round blobs (models/gmvae.h Note [spectral start]). Shape letters: n points of dimension dim, K clusters.
//
//   A_ij = 1 if j is one of i's `neighbours` nearest points or i one of j's (the symmetric kNN graph), A_ii = 0
//   D    = diag(sum_j A_ij)
//   M    = D^-1/2 A D^-1/2              (eigenvalues in [-1, 1]; the eigenvalue 1 once per connected component)
//   U    = the m eigenvectors of M with the largest eigenvalues, as the columns of an (n, m) matrix; m = K unless
//          SpectralOptions::eigenvectors says otherwise (Note [more eigenvectors than clusters])
//   every row of U scaled to unit length, then k-means on the rows                       (NJW, sec. 2)
//
// Points of one densely connected part of the graph get nearly the same row of U however curved that part is
// in the original space, which k-means on the points themselves cannot do (two rings, two moons).
//
// The eigenvectors come from the Lanczos iteration with full reorthogonalisation (Golub & Van Loan, "Matrix
// Computations", 4th ed., sec. 10.1-10.3). One Krylov space holds one direction of each eigenspace, so when it
// becomes invariant (a graph with several components) the iteration restarts from a fresh random direction
// orthogonal to the space so far. The small projected problem is solved by cyclic Jacobi rotations (ibid.,
// sec. 8.5.3). Everything is deterministic in the seed and independent of the thread count.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tapegrad {

// The `k` nearest other points of every point (Euclidean, nearest first, ties to the lower index), as a
// row-major (n, k) table of indices. Distances are ||a||^2 + ||b||^2 - 2 a.b with the cross terms from one GEMM per
// block of rows. Throws ValueError unless 1 <= k < n, the sizes agree and every value is finite.
std::vector<int32_t> nearest_neighbours(std::span<const double> points, int64_t n, int64_t dim, int64_t k);

// An undirected graph as sorted adjacency lists: the neighbours of i are adjacent[offsets[i] .. offsets[i + 1]).
struct Graph {
  std::vector<int64_t> offsets;  // (n + 1,)
  std::vector<int32_t> adjacent;
  int64_t size() const { return static_cast<int64_t>(offsets.size()) - 1; }
};

// A = kNN + kNN^T > 0 from nearest_neighbours' (n, k) table.
Graph symmetric_knn_graph(std::span<const int32_t> neighbours, int64_t n, int64_t k);

// Eigenvalues in descending order (ties: the order found), and the matching unit eigenvectors as the columns of a
// row-major (n, count) matrix.
struct Eigenpairs {
  std::vector<double> values;
  std::vector<double> vectors;
};

// Every eigenpair of a dense symmetric row-major (m, m) matrix, by cyclic Jacobi sweeps until the off-diagonal
// mass is below 1e-15 of the total. Throws ValueError on a wrong size or an asymmetric matrix.
Eigenpairs symmetric_eigenpairs(std::span<const double> matrix, int64_t m);

// The `count` largest eigenpairs of M = D^-1/2 A D^-1/2 from min(steps, n) Lanczos steps started at a random
// direction drawn from `seed`. Throws ValueError unless 1 <= count <= min(steps, n) and every vertex has an edge.
Eigenpairs normalized_adjacency_eigenpairs(const Graph& graph, int64_t count, int64_t steps, uint64_t seed);

struct SpectralOptions {
  int64_t neighbours = 10;      // k of the kNN graph
  int64_t eigenvectors = 0;     // columns of U; 0: K, NJW's choice (Note [more eigenvectors than clusters])
  int64_t lanczos_steps = 0;    // Krylov dimension; 0: max(200, 30 per eigenvector) (below)
  int64_t restarts = 10;        // k-means++ restarts of the k-means on the rows of U
};

// Lanczos steps: on Fashion-MNIST's 60,000 codes (10-NN graph, eigenvalues 0.96-1 packed within 4e-3 of each
// other) 200 steps leave the 10th eigenvalue 4e-4 off, 300 give the first 10 to 1e-13 and the first 15 to 3e-5
// (against scipy's eigsh); hence 30 steps per eigenvector, and at least 200 for slowly mixing graphs (a ring needs
// about as many steps as it has points before its Krylov space closes).
//
// Note [more eigenvectors than clusters]. NJW take exactly K eigenvectors, which is right when the graph has K
// nearly disconnected parts: then each part owns one of the K leading eigenvectors. Where two classes form one
// connected sheet (Fashion-MNIST's pullovers, coats and shirts), the K leading eigenvectors spend themselves on
// splits inside other classes (two kinds of bag) before they reach that sheet, and k-means on them cannot cut it.
// A few more eigenvectors (`eigenvectors` > K) describe the sheet's own low-frequency directions, and k-means
// with K centres then chooses among more cuts; docs/gmvae.md measures the effect.

// Cluster ids in [0, K) for the n points, by the steps above. Deterministic in `seed`.
std::vector<int32_t> spectral_clustering(std::span<const double> points, int64_t n, int64_t dim, int64_t K,
                                         uint64_t seed, const SpectralOptions& options = {});

}  // namespace tapegrad
