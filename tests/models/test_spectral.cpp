#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <tuple>
#include <vector>

#include "models/clustering.h"
#include "models/spectral.h"
#include "ops/error.h"
#include "ops/parallel.h"
#include "ops/random.h"
#include "ops/tensor.h"

using namespace tapegrad;

namespace {

std::vector<double> normal_points(int64_t n, int64_t dim, uint64_t seed) {
  Generator gen(seed);
  Tensor t = Tensor::empty({n, dim}, DType::f64);
  gen.normal(t);
  return {t.data<double>(), t.data<double>() + n * dim};
}

// The definition: sort every other point by (squared distance, index), keep the first k.
std::vector<int32_t> naive_neighbours(const std::vector<double>& points, int64_t n, int64_t dim, int64_t k) {
  std::vector<int32_t> result;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<std::pair<double, int32_t>> all;
    for (int64_t j = 0; j < n; ++j) {
      if (j == i) continue;
      double d = 0;
      for (int64_t c = 0; c < dim; ++c) d += std::pow(points[i * dim + c] - points[j * dim + c], 2);
      all.emplace_back(d, static_cast<int32_t>(j));
    }
    std::sort(all.begin(), all.end());
    for (int64_t m = 0; m < k; ++m) result.push_back(all[m].second);
  }
  return result;
}

// D^-1/2 A D^-1/2 as a dense row-major (n, n) matrix.
std::vector<double> dense_normalized_adjacency(const Graph& graph) {
  const int64_t n = graph.size();
  std::vector<double> m(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t e = graph.offsets[i]; e < graph.offsets[i + 1]; ++e) {
      const int64_t j = graph.adjacent[e];
      m[i * n + j] = 1 / std::sqrt(static_cast<double>((graph.offsets[i + 1] - graph.offsets[i]) *
                                                       (graph.offsets[j + 1] - graph.offsets[j])));
    }
  return m;
}

// max_c ||M u_c - lambda_c u_c|| for eigenpairs with unit vectors, and max |u_a . u_b - delta_ab|.
std::pair<double, double> residual_and_orthogonality(const std::vector<double>& matrix, int64_t n,
                                                     const Eigenpairs& pairs) {
  const int64_t count = static_cast<int64_t>(pairs.values.size());
  double residual = 0, orthogonality = 0;
  for (int64_t c = 0; c < count; ++c) {
    double norm2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      double mu = 0;
      for (int64_t j = 0; j < n; ++j) mu += matrix[i * n + j] * pairs.vectors[j * count + c];
      norm2 += std::pow(mu - pairs.values[c] * pairs.vectors[i * count + c], 2);
    }
    residual = std::max(residual, std::sqrt(norm2));
    for (int64_t d = 0; d < count; ++d) {
      double inner = 0;
      for (int64_t i = 0; i < n; ++i) inner += pairs.vectors[i * count + c] * pairs.vectors[i * count + d];
      orthogonality = std::max(orthogonality, std::abs(inner - (c == d ? 1.0 : 0.0)));
    }
  }
  return {residual, orthogonality};
}

// Two concentric noisy rings of radius 1 and 4, `per_ring` points each: no straight cut separates them.
std::vector<double> rings(int64_t per_ring, std::vector<int32_t>& labels) {
  Generator gen(11);
  Tensor noise = Tensor::empty({2 * per_ring, 2}, DType::f64);
  gen.normal(noise, 0.0, 0.05);
  std::vector<double> points;
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t i = 0; i < per_ring; ++i) {
      const double angle = 2 * std::numbers::pi * static_cast<double>(i) / static_cast<double>(per_ring);
      const double radius = r == 0 ? 1.0 : 4.0;
      points.push_back(radius * std::cos(angle) + noise.item((r * per_ring + i) * 2));
      points.push_back(radius * std::sin(angle) + noise.item((r * per_ring + i) * 2 + 1));
      labels.push_back(static_cast<int32_t>(r));
    }
  return points;
}

}  // namespace

TEST_CASE("nearest_neighbours: equals sorting by (distance, index), over sizes 2-40, dims 1-17, ties included") {
  for (auto [n, dim, k] : {std::tuple<int64_t, int64_t, int64_t>{2, 1, 1}, {3, 3, 2}, {17, 17, 5}, {40, 3, 39},
                           {40, 1, 7}}) {
    CAPTURE(n);
    CAPTURE(dim);
    CAPTURE(k);
    const std::vector<double> points = normal_points(n, dim, static_cast<uint64_t>(n * 100 + dim));
    CHECK(nearest_neighbours(points, n, dim, k) == naive_neighbours(points, n, dim, k));
  }
  // Integer grid points: many exactly equal distances (exact in double), so ties must go to the lower index.
  std::vector<double> grid;
  for (int x = 0; x < 5; ++x)
    for (int y = 0; y < 4; ++y) grid.push_back(x), grid.push_back(y);
  grid.push_back(2), grid.push_back(1);  // a duplicate of point 9: distance 0
  CHECK(nearest_neighbours(grid, 21, 2, 6) == naive_neighbours(grid, 21, 2, 6));
}

TEST_CASE("symmetric_knn_graph: symmetric, sorted, no self-loops, every kNN edge present") {
  const int64_t n = 30, k = 4;
  const std::vector<int32_t> table = nearest_neighbours(normal_points(n, 3, 5), n, 3, k);
  const Graph graph = symmetric_knn_graph(table, n, k);
  REQUIRE(graph.size() == n);
  const auto has_edge = [&](int64_t i, int64_t j) {
    return std::binary_search(graph.adjacent.begin() + graph.offsets[i], graph.adjacent.begin() + graph.offsets[i + 1],
                              static_cast<int32_t>(j));
  };
  int64_t edges = 0;
  for (int64_t i = 0; i < n; ++i) {
    const auto first = graph.adjacent.begin() + graph.offsets[i], last = graph.adjacent.begin() + graph.offsets[i + 1];
    CHECK(std::is_sorted(first, last));
    CHECK(std::adjacent_find(first, last) == last);  // no repeated edge
    CHECK(graph.offsets[i + 1] - graph.offsets[i] >= k);
    for (int64_t e = graph.offsets[i]; e < graph.offsets[i + 1]; ++e) {
      CHECK(graph.adjacent[e] != i);
      CHECK(has_edge(graph.adjacent[e], i));
    }
    for (int64_t m = 0; m < k; ++m) CHECK(has_edge(i, table[i * k + m]));
    edges += graph.offsets[i + 1] - graph.offsets[i];
  }
  CHECK(edges % 2 == 0);
  std::vector<int32_t> bad = table;
  bad[7] = 1;  // point 1's neighbour 3 is itself
  CHECK_THROWS_WITH_AS(symmetric_knn_graph(bad, n, k), doctest::Contains("symmetric_knn_graph"), ValueError);
  CHECK_THROWS_AS(symmetric_knn_graph(table, n, k + 1), ValueError);
}

TEST_CASE("symmetric_eigenpairs: A u = lambda u, orthonormal vectors, values descending, trace kept; m = 1, 3, 17") {
  for (int64_t m : {1, 3, 17}) {
    CAPTURE(m);
    std::vector<double> a = normal_points(m, m, static_cast<uint64_t>(m));
    for (int64_t p = 0; p < m; ++p)
      for (int64_t q = 0; q < p; ++q) a[q * m + p] = a[p * m + q];
    const Eigenpairs pairs = symmetric_eigenpairs(a, m);
    const auto [residual, orthogonality] = residual_and_orthogonality(a, m, pairs);
    CHECK(residual < 1e-12);
    CHECK(orthogonality < 1e-12);
    CHECK(std::is_sorted(pairs.values.rbegin(), pairs.values.rend()));
    double trace = 0, sum = 0;
    for (int64_t p = 0; p < m; ++p) trace += a[p * m + p], sum += pairs.values[p];
    CHECK(sum == doctest::Approx(trace).epsilon(1e-12));
  }
  const std::vector<double> asymmetric = {1, 2, 3, 4};
  CHECK_THROWS_WITH_AS(symmetric_eigenpairs(asymmetric, 2), doctest::Contains("not symmetric"), ValueError);
  CHECK_THROWS_AS(symmetric_eigenpairs(asymmetric, 3), ValueError);
}

TEST_CASE("normalized_adjacency_eigenpairs: Lanczos equals dense Jacobi, one eigenvalue 1 per graph component") {
  for (int64_t n : {3, 17, 61}) {
    CAPTURE(n);
    const int64_t k = std::min<int64_t>(5, n - 1), count = std::min<int64_t>(4, n);
    const Graph graph = symmetric_knn_graph(nearest_neighbours(normal_points(n, 2, 3), n, 2, k), n, k);
    const std::vector<double> dense = dense_normalized_adjacency(graph);
    const Eigenpairs exact = symmetric_eigenpairs(dense, n);
    const Eigenpairs lanczos = normalized_adjacency_eigenpairs(graph, count, n, /*seed=*/2);
    for (int64_t c = 0; c < count; ++c) CHECK(lanczos.values[c] == doctest::Approx(exact.values[c]).epsilon(1e-10));
    const auto [residual, orthogonality] = residual_and_orthogonality(dense, n, lanczos);
    CHECK(residual < 1e-8);
    CHECK(orthogonality < 1e-10);
    CHECK(lanczos.values[0] == doctest::Approx(1.0).epsilon(1e-12));  // D^1/2 1 on a connected graph
  }
  // Three far-apart clumps of 9 points with k = 4: the kNN graph has three components, eigenvalue 1 three times,
  // which one Krylov space cannot hold; the restarts find all three.
  std::vector<double> points = normal_points(27, 2, 9);
  for (int64_t i = 0; i < 27; ++i) points[i * 2] += 100.0 * static_cast<double>(i / 9);
  const Graph graph = symmetric_knn_graph(nearest_neighbours(points, 27, 2, 4), 27, 4);
  const Eigenpairs pairs = normalized_adjacency_eigenpairs(graph, 4, 27, 1);
  for (int64_t c = 0; c < 3; ++c) CHECK(pairs.values[c] == doctest::Approx(1.0).epsilon(1e-10));
  CHECK(pairs.values[3] < 1 - 1e-6);
  CHECK(residual_and_orthogonality(dense_normalized_adjacency(graph), 27, pairs).first < 1e-8);
  CHECK_THROWS_WITH_AS(normalized_adjacency_eigenpairs(graph, 5, 4, 1), doctest::Contains("count"), ValueError);
}

TEST_CASE("spectral_clustering: separates two rings, which k-means cannot; same bits at 1 and 2 threads") {
  std::vector<int32_t> labels;
  const std::vector<double> points = rings(100, labels);
  const std::vector<int32_t> spectral = spectral_clustering(points, 200, 2, 2, /*seed=*/3);
  CHECK(normalized_mutual_information(spectral, labels, 2, 2) == doctest::Approx(1.0));
  CHECK(normalized_mutual_information(kmeans(points, 200, 2, 2, 3).assignment, labels, 2, 2) < 0.2);
  // Large enough for the kNN search and the graph products to run in parallel.
  const std::vector<double> many = normal_points(3000, 5, 4);
  const int previous = set_num_threads(1);
  const std::vector<int32_t> one = spectral_clustering(many, 3000, 5, 6, 1, {.lanczos_steps = 40, .restarts = 2});
  set_num_threads(2);
  const std::vector<int32_t> two = spectral_clustering(many, 3000, 5, 6, 1, {.lanczos_steps = 40, .restarts = 2});
  set_num_threads(previous);
  CHECK(one == two);
  CHECK_THROWS_WITH_AS(spectral_clustering(points, 200, 2, 201, 1), doctest::Contains("spectral_clustering"),
                       ValueError);
  CHECK_THROWS_WITH_AS(spectral_clustering(points, 200, 2, 2, 1, {.eigenvectors = 201}),
                       doctest::Contains("201 eigenvectors"), ValueError);
  CHECK_THROWS_WITH_AS(nearest_neighbours(points, 200, 2, 200), doctest::Contains("1 <= k < n"), ValueError);
  std::vector<double> bad = points;
  bad[5] = std::nan("");
  CHECK_THROWS_WITH_AS(spectral_clustering(bad, 200, 2, 2, 1), doctest::Contains("finite"), ValueError);
}

TEST_CASE("spectral_clustering: more eigenvectors than clusters (Note [more eigenvectors than clusters])") {
  std::vector<int32_t> labels;
  const std::vector<double> points = rings(100, labels);
  // eigenvectors = K is NJW's default, bit for bit.
  CHECK(spectral_clustering(points, 200, 2, 2, 3, {.eigenvectors = 2}) == spectral_clustering(points, 200, 2, 2, 3));
  // Three separated blobs of 40, 60 and 80 points, found again with 3 (the default) and with 6 eigenvectors.
  std::vector<double> blobs = normal_points(180, 3, 9);
  std::vector<int32_t> blob_labels;
  for (int64_t i = 0; i < 180; ++i) {
    const int32_t b = i < 40 ? 0 : i < 100 ? 1 : 2;
    blobs[i * 3 + b] += 25.0;
    blob_labels.push_back(b);
  }
  for (int64_t m : {0, 6}) {
    CAPTURE(m);
    CHECK(normalized_mutual_information(spectral_clustering(blobs, 180, 3, 3, 2, {.eigenvectors = m}), blob_labels, 3,
                                        3) == doctest::Approx(1.0));
  }
}
