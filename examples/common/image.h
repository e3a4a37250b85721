// Pictures for the example programs, written with stb_image_write: grids of grey images and scatter plots.
// Every file is written atomically (a temporary file in the same folder, then rename), so a killed run never
// leaves a half-written PNG behind.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "ops/tensor.h"

namespace tapegrad::image {

// An 8-bit RGB canvas.
struct Canvas {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // row-major, 3 bytes a pixel
  Canvas(int w, int h, std::array<uint8_t, 3> background = {255, 255, 255});
  void set(int x, int y, std::array<uint8_t, 3> color);
  void fill_rect(int x0, int y0, int x1, int y1, std::array<uint8_t, 3> color);  // [x0, x1) x [y0, y1)
  void disc(double cx, double cy, double radius, std::array<uint8_t, 3> color);
  // Text in a built-in 5x7 pixel font (digits, letters, a few signs), scaled by `scale`.
  void text(int x, int y, const std::string& s, std::array<uint8_t, 3> color, int scale = 2);
};

void write_png(const std::string& path, const Canvas& canvas);

// images: (N, H*W) or (N, 1, H, W) values in [0, 1]; laid out in `columns` columns with a 2-pixel border.
void write_grid(const std::string& path, const Tensor& images, int64_t height, int64_t width, int64_t columns);

// A scatter plot of 2-D points coloured by integer label, with axes ranges, a title and a legend.
void write_scatter(const std::string& path, const std::vector<std::array<double, 2>>& points,
                   const std::vector<int>& labels, const std::string& title);

// Ten distinguishable colours (Tableau 10), indexed by label.
std::array<uint8_t, 3> label_color(int label);

}  // namespace tapegrad::image
