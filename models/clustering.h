// Scores for unsupervised clustering against known labels: accuracy under the best one-to-one mapping of
// clusters to classes (Hungarian matching), accuracy under majority vote per cluster, and normalised mutual
// information. Shape letters: N examples, K clusters, C classes.
//
//   contingency n_kc = #{i : cluster_i = k, label_i = c}
//   Hungarian accuracy = max over injective maps m (clusters <-> classes) of sum_k n_{k, m(k)} / N
//       (when K > C only C clusters are matched; the others' examples count as errors, which is why the
//       literature uses the majority vote for K > C)
//   majority accuracy  = sum_k max_c n_kc / N                    (every cluster takes its most common class)
//   NMI = I(cluster; label) / ((H(cluster) + H(label)) / 2)       (arithmetic normalisation, scikit-learn's
//       default since 0.22; NMI = 1 for identical partitions up to renaming, 0 for independent ones)
//
// The assignment solver is the O(n^2 m) shortest-augmenting-path form of the Kuhn-Munkres algorithm with row
// and column potentials (Jonker & Volgenant 1987; Burkard, Dell'Amico & Martello, "Assignment Problems",
// sec. 4.4), for rectangular n x m cost matrices with n <= m (larger n is solved on the transpose).
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace tapegrad {

// Minimum-cost assignment for a row-major (rows, cols) cost matrix: each row gets a distinct column when
// rows <= cols, each column a distinct row otherwise. Returns column_of_row (rows,), -1 for an unassigned row.
std::vector<int64_t> linear_assignment(std::span<const double> cost, int64_t rows, int64_t cols);

// n_kc as a row-major (K, C) matrix. Throws ValueError on out-of-range ids or different lengths.
std::vector<int64_t> contingency(std::span<const int32_t> clusters, std::span<const int32_t> labels, int64_t K,
                                 int64_t C);

struct ClusteringScores {
  double hungarian_accuracy = 0;
  double majority_accuracy = 0;
  double nmi = 0;
  std::vector<int64_t> cluster_to_class;  // (K,) Hungarian match, -1 for an unmatched cluster
  std::vector<int64_t> majority_class;    // (K,) most common class, -1 for an empty cluster
  std::vector<int64_t> cluster_sizes;     // (K,)
};

// All three scores. K and C are the numbers of possible cluster ids and classes (ids in [0, K), [0, C)).
ClusteringScores score_clustering(std::span<const int32_t> clusters, std::span<const int32_t> labels, int64_t K,
                                  int64_t C);

double hungarian_accuracy(std::span<const int32_t> clusters, std::span<const int32_t> labels, int64_t K, int64_t C);
double majority_accuracy(std::span<const int32_t> clusters, std::span<const int32_t> labels, int64_t K, int64_t C);
// k-means: K centroids minimising the inertia sum_i ||p_i - c_{a(i)}||^2 over row-major (n, dim) points.
// Each restart seeds with k-means++ (Arthur & Vassilvitskii 2007: each next centroid is a point drawn with
// probability proportional to its squared distance to the nearest centroid so far), then runs Lloyd's
// iterations (assign every point to its nearest centroid, ties to the lower index; move every centroid to the
// mean of its points, an empty cluster keeping its centroid) until no assignment changes (or max_iterations).
// The restart with the least inertia wins. Deterministic in `seed`. Throws ValueError on bad sizes or non-finite
// points.
struct KMeansResult {
  std::vector<double> centroids;    // (K, dim), row-major
  std::vector<int32_t> assignment;  // (n,)
  double inertia = 0;
};
KMeansResult kmeans(std::span<const double> points, int64_t n, int64_t dim, int64_t K, uint64_t seed,
                    int64_t restarts = 10, int64_t max_iterations = 100);

double normalized_mutual_information(std::span<const int32_t> clusters, std::span<const int32_t> labels, int64_t K,
                                     int64_t C);

}  // namespace tapegrad
