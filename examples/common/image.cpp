#include "examples/common/image.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <unistd.h>

#include <stb/stb_image_write.h>

#include "ops/error.h"

namespace tapegrad::image {

Canvas::Canvas(int w, int h, std::array<uint8_t, 3> background) : width(w), height(h), rgb(3 * size_t(w) * h) {
  for (size_t i = 0; i < rgb.size(); i += 3) std::copy(background.begin(), background.end(), rgb.begin() + i);
}

void Canvas::set(int x, int y, std::array<uint8_t, 3> color) {
  if (x < 0 || y < 0 || x >= width || y >= height) return;
  std::copy(color.begin(), color.end(), rgb.begin() + 3 * (size_t(y) * width + x));
}

void Canvas::fill_rect(int x0, int y0, int x1, int y1, std::array<uint8_t, 3> color) {
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) set(x, y, color);
}

void Canvas::disc(double cx, double cy, double r, std::array<uint8_t, 3> color) {
  for (int y = int(cy - r); y <= int(cy + r) + 1; ++y)
    for (int x = int(cx - r); x <= int(cx + r) + 1; ++x)
      if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r) set(x, y, color);
}

namespace {
// 5x7 glyphs, one byte a row (low 5 bits, leftmost pixel = bit 4).
struct Glyph {
  char c;
  uint8_t rows[7];
};
constexpr Glyph kFont[] = {
    {'0', {14, 17, 19, 21, 25, 17, 14}}, {'1', {4, 12, 4, 4, 4, 4, 14}},     {'2', {14, 17, 1, 2, 4, 8, 31}},
    {'3', {31, 2, 4, 2, 1, 17, 14}},     {'4', {2, 6, 10, 18, 31, 2, 2}},    {'5', {31, 16, 30, 1, 1, 17, 14}},
    {'6', {6, 8, 16, 30, 17, 17, 14}},   {'7', {31, 1, 2, 4, 8, 8, 8}},      {'8', {14, 17, 17, 14, 17, 17, 14}},
    {'9', {14, 17, 17, 15, 1, 2, 12}},   {'-', {0, 0, 0, 31, 0, 0, 0}},      {'.', {0, 0, 0, 0, 0, 12, 12}},
    {':', {0, 12, 12, 0, 12, 12, 0}},    {'=', {0, 0, 31, 0, 31, 0, 0}},     {'(', {2, 4, 8, 8, 8, 4, 2}},
    {')', {8, 4, 2, 2, 2, 4, 8}},        {',', {0, 0, 0, 0, 12, 4, 8}},      {'/', {1, 1, 2, 4, 8, 16, 16}},
    {'a', {0, 0, 14, 1, 15, 17, 15}},    {'b', {16, 16, 22, 25, 17, 17, 30}}, {'c', {0, 0, 14, 16, 16, 17, 14}},
    {'d', {1, 1, 13, 19, 17, 17, 15}},   {'e', {0, 0, 14, 17, 31, 16, 14}},  {'f', {6, 9, 8, 28, 8, 8, 8}},
    {'g', {0, 15, 17, 17, 15, 1, 14}},   {'h', {16, 16, 22, 25, 17, 17, 17}}, {'i', {4, 0, 12, 4, 4, 4, 14}},
    {'j', {2, 0, 6, 2, 2, 18, 12}},      {'k', {16, 16, 18, 20, 24, 20, 18}}, {'l', {12, 4, 4, 4, 4, 4, 14}},
    {'m', {0, 0, 26, 21, 21, 17, 17}},   {'n', {0, 0, 22, 25, 17, 17, 17}},  {'o', {0, 0, 14, 17, 17, 17, 14}},
    {'p', {0, 0, 30, 17, 30, 16, 16}},   {'q', {0, 0, 13, 19, 15, 1, 1}},    {'r', {0, 0, 22, 25, 16, 16, 16}},
    {'s', {0, 0, 14, 16, 14, 1, 30}},    {'t', {8, 8, 28, 8, 8, 9, 6}},      {'u', {0, 0, 17, 17, 17, 19, 13}},
    {'v', {0, 0, 17, 17, 17, 10, 4}},    {'w', {0, 0, 17, 17, 21, 21, 10}},  {'x', {0, 0, 17, 10, 4, 10, 17}},
    {'y', {0, 0, 17, 17, 15, 1, 14}},    {'z', {0, 0, 31, 2, 4, 8, 31}},
};
const Glyph* find_glyph(char c) {
  if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');  // one case is enough for labels
  for (const Glyph& g : kFont)
    if (g.c == c) return &g;
  return nullptr;
}

// A temp name in the same folder, so that the rename is atomic on one file system.
std::string temp_name(const std::string& path) { return path + ".tmp." + std::to_string(::getpid()); }
}  // namespace

void Canvas::text(int x, int y, const std::string& s, std::array<uint8_t, 3> color, int scale) {
  for (char c : s) {
    if (const Glyph* g = find_glyph(c))
      for (int row = 0; row < 7; ++row)
        for (int col = 0; col < 5; ++col)
          if (g->rows[row] & (16 >> col)) fill_rect(x + col * scale, y + row * scale, x + (col + 1) * scale, y + (row + 1) * scale, color);
    x += 6 * scale;
  }
}

void write_png(const std::string& path, const Canvas& canvas) {
  const std::string tmp = temp_name(path);
  if (!stbi_write_png(tmp.c_str(), canvas.width, canvas.height, 3, canvas.rgb.data(), canvas.width * 3))
    fail<FileError>(path, ": cannot write PNG, expected a writable folder, found none");
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail<FileError>(path, ": cannot rename temporary file: ", ec.message());
}

void write_grid(const std::string& path, const Tensor& images, int64_t height, int64_t width, int64_t columns) {
  const int64_t n = images.dim(0), per_image = images.numel() / std::max<int64_t>(n, 1);
  if (per_image != height * width)
    fail<ShapeError>("write_grid: images must hold ", height, "x", width, " pixels each, got shape ", images.shape());
  const int64_t rows = (n + columns - 1) / columns, border = 2;
  Canvas canvas(int(columns * (width + border) + border), int(rows * (height + border) + border), {40, 40, 40});
  for (int64_t k = 0; k < n; ++k) {
    const int64_t x0 = border + (k % columns) * (width + border), y0 = border + (k / columns) * (height + border);
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x) {
        const double v = std::clamp(images.item(k * per_image + y * width + x), 0.0, 1.0);
        const auto g = static_cast<uint8_t>(std::lround(v * 255));
        canvas.set(int(x0 + x), int(y0 + y), {g, g, g});
      }
  }
  write_png(path, canvas);
}

std::array<uint8_t, 3> label_color(int label) {
  static constexpr std::array<std::array<uint8_t, 3>, 10> kTableau = {{{31, 119, 180}, {255, 127, 14}, {44, 160, 44},
      {214, 39, 40}, {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}}};
  return kTableau[static_cast<size_t>(((label % 10) + 10) % 10)];
}

void write_scatter(const std::string& path, const std::vector<std::array<double, 2>>& points,
                   const std::vector<int>& labels, const std::string& title) {
  const int size = 640, margin = 60, legend = 110;
  Canvas canvas(size + legend, size);
  double lo[2] = {1e300, 1e300}, hi[2] = {-1e300, -1e300};
  for (auto& p : points)
    for (int d = 0; d < 2; ++d) lo[d] = std::min(lo[d], p[d]), hi[d] = std::max(hi[d], p[d]);
  for (int d = 0; d < 2; ++d)
    if (!(hi[d] > lo[d])) lo[d] -= 1, hi[d] += 1;
  auto to_pixel = [&](double v, int d) {
    const double t = (v - lo[d]) / (hi[d] - lo[d]);
    return d == 0 ? margin + t * (size - 2 * margin) : size - margin - t * (size - 2 * margin);
  };
  // Axes box with the data range written at its corners.
  const std::array<uint8_t, 3> black = {0, 0, 0};
  canvas.fill_rect(margin - 5, size - margin + 5, size - margin + 5, size - margin + 6, black);
  canvas.fill_rect(margin - 6, margin - 5, margin - 5, size - margin + 6, black);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", lo[0]);
  canvas.text(margin - 5, size - margin + 12, buf, black);
  std::snprintf(buf, sizeof buf, "%.1f", hi[0]);
  canvas.text(size - margin - 30, size - margin + 12, buf, black);
  std::snprintf(buf, sizeof buf, "%.1f", lo[1]);
  canvas.text(4, size - margin - 10, buf, black);
  std::snprintf(buf, sizeof buf, "%.1f", hi[1]);
  canvas.text(4, margin - 4, buf, black);
  canvas.text(margin, 16, title, black);
  for (size_t i = 0; i < points.size(); ++i)
    canvas.disc(to_pixel(points[i][0], 0), to_pixel(points[i][1], 1), 2.2, label_color(labels[i]));
  // Legend: one swatch per label present.
  int max_label = 0;
  for (int l : labels) max_label = std::max(max_label, l);
  for (int l = 0; l <= std::min(max_label, 9); ++l) {
    const int y = margin + 30 * l;
    canvas.fill_rect(size + 10, y, size + 30, y + 20, label_color(l));
    canvas.text(size + 40, y + 3, std::to_string(l), black);
  }
  write_png(path, canvas);
}

}  // namespace tapegrad::image
