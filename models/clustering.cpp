#include "models/clustering.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/error.h"
#include "ops/random.h"

namespace tapegrad {

namespace {

// Rows <= cols. Row potentials u, column potentials v keep reduced costs c_ij - u_i - v_j >= 0, zero on the
// matching; each row is added by a Dijkstra-like search for the cheapest augmenting path (index 0 is a virtual
// column that holds the row being inserted).
std::vector<int64_t> assign_wide(std::span<const double> cost, int64_t n, int64_t m) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(n + 1, 0.0), v(m + 1, 0.0), min_to(m + 1);
  std::vector<int64_t> row_of(m + 1, 0), prev(m + 1, 0);  // row_of[j]: 1-based row matched to column j
  std::vector<char> used(m + 1);
  for (int64_t i = 1; i <= n; ++i) {
    row_of[0] = i;
    int64_t j0 = 0;
    std::fill(min_to.begin(), min_to.end(), inf);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[j0] = 1;
      const int64_t i0 = row_of[j0];
      double delta = inf;
      int64_t j1 = -1;
      for (int64_t j = 1; j <= m; ++j) {
        if (used[j]) continue;
        const double reduced = cost[(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
        if (reduced < min_to[j]) min_to[j] = reduced, prev[j] = j0;
        if (min_to[j] < delta) delta = min_to[j], j1 = j;
      }
      for (int64_t j = 0; j <= m; ++j) {
        if (used[j]) u[row_of[j]] += delta, v[j] -= delta;
        else min_to[j] -= delta;
      }
      j0 = j1;
    } while (row_of[j0] != 0);
    do {  // flip the augmenting path
      const int64_t j1 = prev[j0];
      row_of[j0] = row_of[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int64_t> col_of(n, -1);
  for (int64_t j = 1; j <= m; ++j)
    if (row_of[j] != 0) col_of[row_of[j] - 1] = j - 1;
  return col_of;
}

void check_ids(std::span<const int32_t> clusters, std::span<const int32_t> labels, int64_t K, int64_t C) {
  if (clusters.size() != labels.size())
    fail<ValueError>("score_clustering: clusters and labels must have the same length, got ", clusters.size(), " and ",
                     labels.size());
  if (K <= 0 || C <= 0) fail<ValueError>("score_clustering: K and C must be > 0, got K=", K, " C=", C);
  for (size_t i = 0; i < clusters.size(); ++i) {
    if (clusters[i] < 0 || clusters[i] >= K)
      fail<ValueError>("score_clustering: cluster ids must be in [0, ", K, "), got ", clusters[i], " at ", i);
    if (labels[i] < 0 || labels[i] >= C)
      fail<ValueError>("score_clustering: labels must be in [0, ", C, "), got ", labels[i], " at ", i);
  }
}

}  // namespace

std::vector<int64_t> linear_assignment(std::span<const double> cost, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0 || static_cast<int64_t>(cost.size()) != rows * cols)
    fail<ValueError>("linear_assignment: cost must hold rows * cols = ", rows * cols, " values, got ", cost.size());
  for (double c : cost)
    if (!std::isfinite(c)) fail<ValueError>("linear_assignment: costs must be finite, got ", c);
  if (rows == 0 || cols == 0) return std::vector<int64_t>(rows, -1);
  if (rows <= cols) return assign_wide(cost, rows, cols);
  std::vector<double> transposed(cost.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) transposed[j * rows + i] = cost[i * cols + j];
  const std::vector<int64_t> row_of_col = assign_wide(transposed, cols, rows);
  std::vector<int64_t> col_of(rows, -1);
  for (int64_t j = 0; j < cols; ++j) col_of[row_of_col[j]] = j;
  return col_of;
}

std::vector<int64_t> contingency(std::span<const int32_t> clusters, std::span<const int32_t> labels, int64_t K,
                                 int64_t C) {
  check_ids(clusters, labels, K, C);
  std::vector<int64_t> n(K * C, 0);
  for (size_t i = 0; i < clusters.size(); ++i) ++n[clusters[i] * C + labels[i]];
  return n;
}

ClusteringScores score_clustering(std::span<const int32_t> clusters, std::span<const int32_t> labels, int64_t K,
                                  int64_t C) {
  const std::vector<int64_t> n = contingency(clusters, labels, K, C);
  const double N = static_cast<double>(clusters.size());
  ClusteringScores s;
  if (clusters.empty()) return s;
  // Hungarian: maximise matched counts = minimise their negatives.
  std::vector<double> cost(n.size());
  for (size_t i = 0; i < n.size(); ++i) cost[i] = -static_cast<double>(n[i]);
  s.cluster_to_class = linear_assignment(cost, K, C);
  int64_t matched = 0, majority = 0;
  for (int64_t k = 0; k < K; ++k) {
    if (s.cluster_to_class[k] >= 0) matched += n[k * C + s.cluster_to_class[k]];
    int64_t best = -1, size = 0;
    for (int64_t c = 0; c < C; ++c) {
      size += n[k * C + c];
      if (n[k * C + c] > 0 && (best < 0 || n[k * C + c] > n[k * C + best])) best = c;
    }
    s.majority_class.push_back(best);
    s.cluster_sizes.push_back(size);
    if (best >= 0) majority += n[k * C + best];
  }
  s.hungarian_accuracy = matched / N;
  s.majority_accuracy = majority / N;
  // Mutual information and entropies in nats; the base cancels in the ratio.
  std::vector<double> pk(K, 0.0), pc(C, 0.0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) pk[k] += n[k * C + c] / N, pc[c] += n[k * C + c] / N;
  double mi = 0, hk = 0, hc = 0;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c)
      if (n[k * C + c] > 0) {
        const double p = n[k * C + c] / N;
        mi += p * std::log(p / (pk[k] * pc[c]));
      }
  for (double p : pk) hk -= p > 0 ? p * std::log(p) : 0.0;
  for (double p : pc) hc -= p > 0 ? p * std::log(p) : 0.0;
  // Both partitions trivial (one block each): identical, NMI 1 by convention, as scikit-learn.
  s.nmi = hk + hc > 0 ? std::max(0.0, mi) / (0.5 * (hk + hc)) : 1.0;
  return s;
}

double hungarian_accuracy(std::span<const int32_t> clusters, std::span<const int32_t> labels, int64_t K, int64_t C) {
  return score_clustering(clusters, labels, K, C).hungarian_accuracy;
}
double majority_accuracy(std::span<const int32_t> clusters, std::span<const int32_t> labels, int64_t K, int64_t C) {
  return score_clustering(clusters, labels, K, C).majority_accuracy;
}
double normalized_mutual_information(std::span<const int32_t> clusters, std::span<const int32_t> labels, int64_t K,
                                     int64_t C) {
  return score_clustering(clusters, labels, K, C).nmi;
}

namespace {

double squared_distance(const double* a, const double* b, int64_t dim) {
  double total = 0;
  for (int64_t j = 0; j < dim; ++j) total += (a[j] - b[j]) * (a[j] - b[j]);
  return total;
}

// Index of the nearest centroid (the lower index on ties) and its squared distance.
std::pair<int32_t, double> nearest(const double* point, const std::vector<double>& centroids, int64_t K, int64_t dim) {
  std::pair<int32_t, double> best{0, squared_distance(point, centroids.data(), dim)};
  for (int64_t k = 1; k < K; ++k) {
    const double d = squared_distance(point, centroids.data() + k * dim, dim);
    if (d < best.second) best = {static_cast<int32_t>(k), d};
  }
  return best;
}

double uniform01(Generator& gen) { return static_cast<double>(gen.next_u64() >> 11) * 0x1p-53; }

// k-means++ seeding: the first centroid uniformly, each next one with probability d(p)^2 / sum d^2.
std::vector<double> seed_centroids(std::span<const double> points, int64_t n, int64_t dim, int64_t K, Generator& gen) {
  std::vector<double> centroids;
  centroids.reserve(static_cast<size_t>(K * dim));
  const auto add = [&](int64_t i) { centroids.insert(centroids.end(), &points[i * dim], &points[i * dim] + dim); };
  add(static_cast<int64_t>(uniform01(gen) * static_cast<double>(n)));
  std::vector<double> d2(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) d2[i] = squared_distance(&points[i * dim], centroids.data(), dim);
  for (int64_t k = 1; k < K; ++k) {
    double total = 0;
    for (double d : d2) total += d;
    int64_t chosen = n - 1;
    if (total > 0) {  // all points on the centroids so far: any point will do, take the last
      double target = uniform01(gen) * total;
      for (int64_t i = 0; i < n; ++i)
        if ((target -= d2[i]) < 0) {
          chosen = i;
          break;
        }
    }
    add(chosen);
    for (int64_t i = 0; i < n; ++i)
      d2[i] = std::min(d2[i], squared_distance(&points[i * dim], centroids.data() + k * dim, dim));
  }
  return centroids;
}

}  // namespace

KMeansResult kmeans(std::span<const double> points, int64_t n, int64_t dim, int64_t K, uint64_t seed,
                    int64_t restarts, int64_t max_iterations) {
  if (n < 1 || dim < 1 || K < 1 || K > n || restarts < 1 || max_iterations < 1 ||
      points.size() != static_cast<size_t>(n * dim))
    fail<ValueError>("kmeans: expected 1 <= K <= n points of dim >= 1 (", n, " x ", dim, " = ", n * dim,
                     " values), restarts, max_iterations >= 1; found K=", K, ", ", points.size(), " values, restarts=",
                     restarts, ", max_iterations=", max_iterations);
  for (double v : points)
    if (!std::isfinite(v)) fail<ValueError>("kmeans: points must be finite, found ", v);
  Generator gen(seed);
  KMeansResult best;
  best.inertia = std::numeric_limits<double>::infinity();
  for (int64_t restart = 0; restart < restarts; ++restart) {
    KMeansResult run{seed_centroids(points, n, dim, K, gen), std::vector<int32_t>(static_cast<size_t>(n), -1), 0};
    std::vector<double> sums(static_cast<size_t>(K * dim));
    std::vector<int64_t> counts(static_cast<size_t>(K));
    for (int64_t iteration = 0; iteration < max_iterations; ++iteration) {
      bool changed = false;
      run.inertia = 0;
      std::fill(sums.begin(), sums.end(), 0.0);
      std::fill(counts.begin(), counts.end(), 0);
      for (int64_t i = 0; i < n; ++i) {
        const auto [k, d] = nearest(&points[i * dim], run.centroids, K, dim);
        changed |= run.assignment[i] != k;
        run.assignment[i] = k;
        run.inertia += d;
        ++counts[k];
        for (int64_t j = 0; j < dim; ++j) sums[k * dim + j] += points[i * dim + j];
      }
      if (!changed) break;  // the centroids are already the means of their points
      for (int64_t k = 0; k < K; ++k)
        if (counts[k] > 0)
          for (int64_t j = 0; j < dim; ++j) run.centroids[k * dim + j] = sums[k * dim + j] / counts[k];
    }
    if (run.inertia < best.inertia) best = std::move(run);
  }
  return best;
}

}  // namespace tapegrad
