#include "models/spectral.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "models/clustering.h"
#include "models/data.h"
#include "ops/error.h"
#include "ops/gemm.h"
#include "ops/parallel.h"
#include "ops/random.h"

namespace tapegrad {

std::vector<int32_t> nearest_neighbours(std::span<const double> points, int64_t n, int64_t dim, int64_t k) {
  if (n < 2 || dim < 1 || k < 1 || k >= n || points.size() != static_cast<size_t>(n * dim))
    fail<ValueError>("nearest_neighbours: expected n >= 2 points of dim >= 1 (", n, " x ", dim, " = ", n * dim,
                     " values) and 1 <= k < n; found ", points.size(), " values and k = ", k);
  for (double v : points)
    if (!std::isfinite(v)) fail<ValueError>("nearest_neighbours: points must be finite, found ", v);
  std::vector<double> squared_norm(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < dim; ++j) squared_norm[i] += points[i * dim + j] * points[i * dim + j];
  std::vector<int32_t> result(static_cast<size_t>(n * k));
  // Rows in blocks, so the (rows, n) table of cross terms stays near 60 MB for n = 60,000.
  const int64_t block = std::clamp<int64_t>((int64_t{1} << 23) / n, 1, n);
  std::vector<double> cross(static_cast<size_t>(block * n));
  for (int64_t first = 0; first < n; first += block) {
    const int64_t rows = std::min(block, n - first);
    ops::gemm(ops::Trans::no, ops::Trans::yes, rows, n, dim, 1.0, points.data() + first * dim, dim, points.data(),
              dim, 0.0, cross.data(), n);
    parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
      std::vector<std::pair<double, int32_t>> best;  // the k nearest so far, sorted by (distance, index)
      for (int64_t r = begin; r < end; ++r) {
        const int64_t i = first + r;
        best.clear();
        for (int64_t j = 0; j < n; ++j) {
          if (j == i) continue;
          const std::pair<double, int32_t> candidate{
              squared_norm[i] + squared_norm[j] - 2 * cross[r * n + j], static_cast<int32_t>(j)};
          if (static_cast<int64_t>(best.size()) == k && !(candidate < best.back())) continue;
          if (static_cast<int64_t>(best.size()) == k) best.pop_back();
          best.insert(std::upper_bound(best.begin(), best.end(), candidate), candidate);
        }
        for (int64_t m = 0; m < k; ++m) result[i * k + m] = best[m].second;
      }
    }, n * dim);
  }
  return result;
}

Graph symmetric_knn_graph(std::span<const int32_t> neighbours, int64_t n, int64_t k) {
  if (n < 1 || k < 1 || neighbours.size() != static_cast<size_t>(n * k))
    fail<ValueError>("symmetric_knn_graph: expected an (n, k) = (", n, ", ", k, ") table, found ", neighbours.size(),
                     " indices");
  std::vector<std::vector<int32_t>> lists(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t m = 0; m < k; ++m) {
      const int32_t j = neighbours[i * k + m];
      if (j < 0 || j >= n || j == i)
        fail<ValueError>("symmetric_knn_graph: neighbour ", m, " of point ", i, " is ", j, ", expected another point "
                         "in [0, ", n, ")");
      lists[i].push_back(j);
      lists[j].push_back(static_cast<int32_t>(i));
    }
  Graph graph;
  graph.offsets.push_back(0);
  for (std::vector<int32_t>& list : lists) {
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());
    graph.adjacent.insert(graph.adjacent.end(), list.begin(), list.end());
    graph.offsets.push_back(static_cast<int64_t>(graph.adjacent.size()));
  }
  return graph;
}

namespace {

// Eigenpairs sorted by descending value; `columns` holds the eigenvectors as columns of a row-major (rows, m) matrix.
Eigenpairs sorted_eigenpairs(const std::vector<double>& values, const std::vector<double>& columns, int64_t rows,
                             int64_t m, int64_t count) {
  std::vector<int64_t> order(static_cast<size_t>(m));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return values[a] > values[b]; });
  Eigenpairs result;
  result.vectors.resize(static_cast<size_t>(rows * count));
  for (int64_t c = 0; c < count; ++c) {
    result.values.push_back(values[order[c]]);
    for (int64_t r = 0; r < rows; ++r) result.vectors[r * count + c] = columns[r * m + order[c]];
  }
  return result;
}

double dot(const double* a, const double* b, int64_t n) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += a[i] * b[i];
  return total;
}

// w -= (v_i . w) v_i over the stored Lanczos vectors, twice: one classical Gram-Schmidt pass loses orthogonality
// when w is nearly inside their span; the second restores it to rounding ("twice is enough", Giraud et al. 2005).
void orthogonalize(std::vector<double>& w, const std::vector<double>& basis, int64_t vectors, int64_t n) {
  for (int pass = 0; pass < 2; ++pass)
    for (int64_t i = 0; i < vectors; ++i) {
      const double* v = basis.data() + i * n;
      const double c = dot(v, w.data(), n);
      for (int64_t j = 0; j < n; ++j) w[j] -= c * v[j];
    }
}

}  // namespace

Eigenpairs symmetric_eigenpairs(std::span<const double> matrix, int64_t m) {
  if (m < 1 || matrix.size() != static_cast<size_t>(m * m))
    fail<ValueError>("symmetric_eigenpairs: expected an (m, m) matrix with m >= 1, found ", matrix.size(),
                     " values for m = ", m);
  std::vector<double> a(matrix.begin(), matrix.end()), vectors(static_cast<size_t>(m * m), 0.0);
  double total = 0;
  for (int64_t p = 0; p < m; ++p) {
    vectors[p * m + p] = 1;
    for (int64_t q = 0; q < m; ++q) {
      total += a[p * m + q] * a[p * m + q];
      if (std::abs(a[p * m + q] - a[q * m + p]) > 1e-12 * (std::abs(a[p * m + q]) + std::abs(a[q * m + p]) + 1e-300))
        fail<ValueError>("symmetric_eigenpairs: matrix is not symmetric at (", p, ", ", q, "): ", a[p * m + q],
                         " against ", a[q * m + p]);
    }
  }
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int64_t p = 0; p < m; ++p)
      for (int64_t q = p + 1; q < m; ++q) off += 2 * a[p * m + q] * a[p * m + q];
    if (off <= 1e-30 * total) break;
    for (int64_t p = 0; p < m; ++p)
      for (int64_t q = p + 1; q < m; ++q) {
        const double apq = a[p * m + q];
        if (apq == 0) continue;
        // The rotation J(p, q, theta) that zeroes a_pq (Golub & Van Loan, Alg. 8.5.1): t = tan(theta), the root
        // of t^2 + 2 tau t - 1 = 0 of smaller magnitude, so the rotation angle is at most pi/4.
        const double tau = (a[q * m + q] - a[p * m + p]) / (2 * apq);
        const double t = (tau >= 0 ? 1.0 : -1.0) / (std::abs(tau) + std::sqrt(1 + tau * tau));
        const double c = 1 / std::sqrt(1 + t * t), s = t * c;
        for (int64_t r = 0; r < m; ++r) {  // A <- A J (columns p and q)
          const double arp = a[r * m + p], arq = a[r * m + q];
          a[r * m + p] = c * arp - s * arq;
          a[r * m + q] = s * arp + c * arq;
        }
        for (int64_t r = 0; r < m; ++r) {  // A <- J^T A (rows p and q)
          const double apr = a[p * m + r], aqr = a[q * m + r];
          a[p * m + r] = c * apr - s * aqr;
          a[q * m + r] = s * apr + c * aqr;
        }
        for (int64_t r = 0; r < m; ++r) {  // V <- V J
          const double vrp = vectors[r * m + p], vrq = vectors[r * m + q];
          vectors[r * m + p] = c * vrp - s * vrq;
          vectors[r * m + q] = s * vrp + c * vrq;
        }
      }
  }
  std::vector<double> values(static_cast<size_t>(m));
  for (int64_t p = 0; p < m; ++p) values[p] = a[p * m + p];
  return sorted_eigenpairs(values, vectors, m, m, m);
}

Eigenpairs normalized_adjacency_eigenpairs(const Graph& graph, int64_t count, int64_t steps, uint64_t seed) {
  const int64_t n = graph.size();
  steps = std::min(steps, n);
  if (n < 1 || count < 1 || count > steps)
    fail<ValueError>("normalized_adjacency_eigenpairs: expected 1 <= count <= min(steps, n); found count = ", count,
                     ", steps = ", steps, ", n = ", n);
  std::vector<double> inv_sqrt_degree(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t degree = graph.offsets[i + 1] - graph.offsets[i];
    if (degree == 0) fail<ValueError>("normalized_adjacency_eigenpairs: vertex ", i, " has no edge");
    inv_sqrt_degree[i] = 1 / std::sqrt(static_cast<double>(degree));
  }
  const auto multiply = [&](const double* x, std::vector<double>& y) {  // y = D^-1/2 A D^-1/2 x
    parallel_for(n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        double total = 0;
        for (int64_t e = graph.offsets[i]; e < graph.offsets[i + 1]; ++e)
          total += inv_sqrt_degree[graph.adjacent[e]] * x[graph.adjacent[e]];
        y[i] = inv_sqrt_degree[i] * total;
      }
    }, 16);
  };
  Generator gen(hash64(seed, 0x6c616e637a6f73));
  // A unit direction orthogonal to the first `vectors` Lanczos vectors; false when they already span R^n.
  const auto fresh_direction = [&](std::vector<double>& w, const std::vector<double>& basis, int64_t vectors) {
    for (double& v : w) v = static_cast<double>(gen.next_u64() >> 11) * 0x1p-53 - 0.5;
    orthogonalize(w, basis, vectors, n);
    const double norm = std::sqrt(dot(w.data(), w.data(), n));
    if (norm < 1e-8) return false;
    for (double& v : w) v /= norm;
    return true;
  };
  // basis row j = Lanczos vector v_j; projected (steps, steps) = V^T M V, tridiagonal up to rounding.
  std::vector<double> basis(static_cast<size_t>(steps * n)), w(static_cast<size_t>(n));
  std::vector<double> projected(static_cast<size_t>(steps * steps), 0.0);
  fresh_direction(w, basis, 0);
  int64_t built = 0;
  for (int64_t j = 0; j < steps; ++j) {
    std::copy(w.begin(), w.end(), basis.begin() + j * n);
    built = j + 1;
    multiply(basis.data() + j * n, w);
    // alpha_j = v_j^T M v_j, beta_{j-1} = v_{j-1}^T M v_j; full reorthogonalisation then removes every component
    // along v_0..v_j, the three-term recurrence's two among them (Golub & Van Loan, Alg. 10.1.1 with sec. 10.3.1).
    projected[j * steps + j] = dot(basis.data() + j * n, w.data(), n);
    orthogonalize(w, basis, j + 1, n);
    if (j + 1 == steps) break;
    const double beta = std::sqrt(dot(w.data(), w.data(), n));
    if (beta > 1e-10) {
      for (double& v : w) v /= beta;
      projected[j * steps + j + 1] = projected[(j + 1) * steps + j] = beta;
    } else if (!fresh_direction(w, basis, j + 1)) {  // invariant subspace: go on in a new one, coupling 0
      break;
    }
  }
  std::vector<double> small(static_cast<size_t>(built * built));
  for (int64_t a = 0; a < built; ++a)
    for (int64_t b = 0; b < built; ++b) small[a * built + b] = projected[a * steps + b];
  if (count > built)
    fail<ValueError>("normalized_adjacency_eigenpairs: asked for ", count, " eigenpairs of a graph on ", n,
                     " vertices whose Krylov spaces span only ", built, " dimensions");
  const Eigenpairs ritz = symmetric_eigenpairs(small, built);
  // Ritz vectors u_c = sum_j s_jc v_j.
  Eigenpairs result{std::vector<double>(ritz.values.begin(), ritz.values.begin() + count),
                    std::vector<double>(static_cast<size_t>(n * count), 0.0)};
  for (int64_t j = 0; j < built; ++j)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < count; ++c)
        result.vectors[i * count + c] += ritz.vectors[j * built + c] * basis[j * n + i];
  return result;
}

std::vector<int32_t> spectral_clustering(std::span<const double> points, int64_t n, int64_t dim, int64_t K,
                                         uint64_t seed, const SpectralOptions& options) {
  const int64_t m = options.eigenvectors > 0 ? options.eigenvectors : K;
  if (K < 1 || K > n || m > n)
    fail<ValueError>("spectral_clustering: expected 1 <= K <= n = ", n, " points and at most n eigenvectors, found ",
                     "K = ", K, " and ", m, " eigenvectors");
  const int64_t k = std::min(options.neighbours, n - 1);
  const Graph graph = symmetric_knn_graph(nearest_neighbours(points, n, dim, k), n, k);
  const int64_t steps =
      options.lanczos_steps > 0 ? std::max(options.lanczos_steps, m) : std::max<int64_t>(200, 30 * m);
  Eigenpairs top = normalized_adjacency_eigenpairs(graph, m, steps, seed);
  for (int64_t i = 0; i < n; ++i) {  // NJW's row normalisation: each point's row onto the unit sphere
    double* row = top.vectors.data() + i * m;
    const double norm = std::sqrt(dot(row, row, m));
    if (norm > 0)
      for (int64_t c = 0; c < m; ++c) row[c] /= norm;
  }
  return kmeans(top.vectors, n, m, K, hash64(seed, 0x6b6d65616e73), options.restarts).assignment;
}

}  // namespace tapegrad
