// conv2d's input gradient (and so conv_transpose2d's forward) by stride phases, with no col2im: the GEMM
// micro-kernel over the phases' taps where there are channels to fill its panels (Note [implicit input
// gradient]), and the pixels as vector lanes where there are not (Note [input gradient for few channels]).
// ops/conv.cpp decides which (Note [choosing the input gradient]); ops/conv.h has the equations.
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "ops/conv_detail.h"
#include "ops/gemm_kernel.h"
#include "ops/simd.h"

namespace tapegrad::ops::conv_detail {

// Note [implicit input gradient]: dx = A_w^T dy (conv.h) gathers, for input pixel ih, the taps kh with
// ih + p - kh*d = s*oh. Split the input pixels by phase r = ih mod s (ih = r + s*t): the taps that reach phase r
// are the kh with (r + p - kh*d) divisible by s, each reading dy at oh = t + e(kh), e(kh) = (r + p - kh*d) / s,
// the same shift for every pixel of the phase. So each phase (r_h, r_w) of dx is an ordinary stride-1
// correlation of dy with a sub-kernel of the taps (the sub-pixel view of a transposed convolution: Shi et al.
// 2016, "Is the deconvolution layer the same as a convolutional layer?"), one GEMM
//   dx_phase^T (pixels, C) = dy_patches (pixels, F * taps) * w_phase (F * taps, C)
// whose A operand is read straight from zero-margined dy planes, as in Note [implicit im2col forward]. Against
// GEMM + col2im this drops the (C*KH*KW, pixels) matrix and its scatter-add, and each dx element receives one
// FMA chain and one +=, the same bits for any thread count. A phase without taps (KH < s) receives nothing.
struct Phase {
  int64_t r_h, r_w, pixels_h, pixels_w;  // dx pixels (r_h + s_h t_h, r_w + s_w t_w), t < pixels
  int64_t depth;                         // K of its GEMM: F * taps_h * taps_w
  int64_t taps;                          // where its taps start in PhasePlan::tap_offsets and tap_weights
};

// One axis of Note [implicit input gradient]: input size `in` (dx), output size `out` (dy), and the conv's
// kernel, stride, padding and dilation along it.
struct PhaseAxis {
  int64_t in, out, kernel, stride, padding, dilation;
  // Whether tap k reaches the pixels of phase r, and the shift e: pixel t of the phase reads dy at t + e.
  bool is_tap(int64_t r, int64_t k) const { return (r + padding - k * dilation) % stride == 0; }
  int64_t shift(int64_t r, int64_t k) const { return floor_div(r + padding - k * dilation, stride); }
  int64_t pixels(int64_t r) const { return (in - r + stride - 1) / stride; }  // t < pixels(r)
  // Zero margins (before, after) around dy along this axis such that every tap of every phase reads inside.
  std::pair<int64_t, int64_t> margins() const {
    int64_t before = 0, after = 0;
    for (int64_t r = 0; r < std::min(stride, in); ++r)
      for (int64_t k = 0; k < kernel; ++k)
        if (is_tap(r, k)) {
          before = std::max(before, -shift(r, k));
          after = std::max(after, pixels(r) - 1 + shift(r, k) - (out - 1));
        }
    return {before, after};
  }
};

// The phases of one geometry and the margined dy planes they read (Hq x Wq per filter, dy at (top, left)).
// Tap i of a phase (f outer, then kh, kw) reads dy at tap_offsets[i] from the pixel's own position and weighs
// it by w(f, c, kh, kw) = w[tap_weights[i] + c * KH*KW].
struct PhasePlan {
  std::vector<Phase> phases;
  std::vector<int32_t> tap_offsets;
  std::vector<int64_t> tap_weights;
  int64_t top = 0, left = 0, Hq = 0, Wq = 0, plane_size = 0;
};

// Filled on the calling thread into thread_local storage (no allocation after the first call), read by all.
// row_multiple: Wq is rounded up to a multiple of it (a wider right margin), for kernels that step a whole row
// by whole vectors.
inline const PhasePlan& plan_phases(const Conv2dGeometry& g, int64_t row_multiple = 1) {
  thread_local PhasePlan plan;
  const PhaseAxis along_h{g.H, g.OH, g.KH, g.stride[0], g.padding[0], g.dilation[0]};
  const PhaseAxis along_w{g.W, g.OW, g.KW, g.stride[1], g.padding[1], g.dilation[1]};
  plan.top = along_h.margins().first;
  plan.left = along_w.margins().first;
  plan.Hq = plan.top + g.OH + along_h.margins().second;
  plan.Wq = (plan.left + g.OW + along_w.margins().second + row_multiple - 1) / row_multiple * row_multiple;
  // Planes 1 KiB apart (16 x 16 floats, the VAE's 14x14 with margins) would all map to the same few L1 sets,
  // and a tap loop that walks the filters' planes would evict its own data: a 16-value gap breaks the stride.
  plan.plane_size = plan.Hq * plan.Wq + (plan.Hq * plan.Wq % 256 == 0 ? 16 : 0);
  plan.phases.clear();
  plan.tap_offsets.clear();
  plan.tap_weights.clear();
  for (int64_t r_h = 0; r_h < std::min(g.stride[0], g.H); ++r_h)
    for (int64_t r_w = 0; r_w < std::min(g.stride[1], g.W); ++r_w) {
      Phase phase{r_h, r_w, along_h.pixels(r_h), along_w.pixels(r_w), 0, static_cast<int64_t>(plan.tap_offsets.size())};
      for (int64_t f = 0; f < g.F; ++f)
        for (int64_t kh = 0; kh < g.KH; ++kh)
          for (int64_t kw = 0; kw < g.KW; ++kw) {
            if (!along_h.is_tap(r_h, kh) || !along_w.is_tap(r_w, kw)) continue;
            plan.tap_offsets.push_back(static_cast<int32_t>(f * plan.plane_size + along_h.shift(r_h, kh) * plan.Wq +
                                                            along_w.shift(r_w, kw)));
            plan.tap_weights.push_back((f * g.C * g.KH + kh) * g.KW + kw);
            ++phase.depth;
          }
      if (phase.depth > 0) plan.phases.push_back(phase);  // a phase without taps (KH < s) receives nothing
    }
  return plan;
}

template <class T>
void conv2d_backward_input_implicit(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  using gemm_detail::Tile;
  constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
  const int64_t sh = g.stride[0], sw = g.stride[1];
  const int64_t c_panels = (g.C + NR - 1) / NR;
  const PhasePlan& plan = plan_phases(g);
  const int64_t top = plan.top, left = plan.left, Hq = plan.Hq, Wq = plan.Wq, plane_size = plan.plane_size;
  const int64_t image_size = g.F * plane_size;

  // Per phase, w_phase packed in panels of depth x NR channels (channels past C zero), from packed_w + weights[i]
  // for phase i. Built on the calling thread, read by all.
  T* packed_w = scratch<T>(g.F * g.KH * g.KW * c_panels * NR + 64 / sizeof(T), 4);
  packed_w += (64 - reinterpret_cast<uintptr_t>(packed_w) % 64) % 64 / sizeof(T);
  thread_local std::vector<int64_t> weights;
  weights.clear();
  int64_t weights_used = 0;
  for (const Phase& phase : plan.phases) {
    weights.push_back(weights_used);
    for (int64_t k = 0; k < phase.depth; ++k)
      for (int64_t p = 0; p < c_panels; ++p)
        for (int64_t j = 0; j < NR; ++j) {
          const int64_t c = p * NR + j;
          packed_w[weights_used + (p * phase.depth + k) * NR + j] =
              c < g.C ? w[plan.tap_weights[phase.taps + k] + c * g.KH * g.KW] : T(0);
        }
    weights_used += phase.depth * c_panels * NR;
  }

  const int64_t G = std::clamp<int64_t>(kImplicitGroupBytes / (image_size * int64_t{sizeof(T)}), 1, kMaxGroup);
  // Named here, not inside the loop body: there a thread_local name would mean the worker thread's own copy.
  const std::vector<int64_t>& phase_weights = weights;
  for_each_group(g.B, G, g.F * g.col_rows() * g.col_cols(), [&](int64_t first, int64_t count, int64_t) {
    T* planes = scratch<T>(count * image_size, 0);
    for (int64_t i = 0; i < count * g.F; ++i)
      pad_plane(dy + (first * g.F + i) * g.OH * g.OW, g.OH, g.OW, top, left, Hq, Wq, planes + i * plane_size);
    alignas(64) T tile[MR * NR];
    for (size_t index = 0; index < plan.phases.size(); ++index) {
      const Phase& phase = plan.phases[index];
      const int64_t pixels = phase.pixels_h * phase.pixels_w, rows = count * pixels;
      for (int64_t p = 0; p < c_panels; ++p) {
        const int64_t c0 = p * NR, nc = std::min(NR, g.C - c0);
        for (int64_t r0 = 0; r0 < rows; r0 += MR) {
          PatchA<T> a{{}, plan.tap_offsets.data() + phase.taps};
          for (int64_t i = 0; i < MR; ++i) {  // rows past the end repeat the last one; their results are dropped
            const int64_t r = std::min(r0 + i, rows - 1), t = r % pixels;
            a.row[i] = planes + (r / pixels) * image_size + (t / phase.pixels_w + top) * Wq + t % phase.pixels_w + left;
          }
          gemm_detail::micro_kernel<T, 2>(phase.depth, a, packed_w + phase_weights[index] + p * phase.depth * NR,
                                          tile, NR, T(1), T(0), /*first=*/true);
          for (int64_t i = 0; i < std::min(MR, rows - r0); ++i) {
            const int64_t image = first + (r0 + i) / pixels, t = (r0 + i) % pixels;
            const int64_t ih = phase.r_h + sh * (t / phase.pixels_w), iw = phase.r_w + sw * (t % phase.pixels_w);
            T* out = dx + ((image * g.C + c0) * g.H + ih) * g.W + iw;
            for (int64_t c = 0; c < nc; ++c) out[c * g.H * g.W] += tile[i * NR + c];
          }
        }
      }
    }
  });
}

// Note [input gradient for few channels]: with C below a panel's width (the decoder's last layer, 32 -> 1,
// is the input gradient of a conv with C = 1) the GEMM above would compute 15 zero columns of every 16. So the
// roles turn: the phase's pixels become the vector lanes. Row t_h of a phase reads dy row t_h + e_h, and
// consecutive t_w read consecutive addresses, so over the margined width Wq the whole phase of channel c is
//   out[q] = sum_taps w_phase[tap, c] * plane[q + tap_offset],   q = t_h * Wq + t_w
// one broadcast weight and one unaligned load per 8-lane FMA; the lanes with t_w >= pixels_w are computed and
// dropped. That first version was load-bound (~1.8 cycles per FMA on Zen 1). But two taps one row apart
// (offsets o and o + Wq, e.g. kh = 1 and 3 of a 4x4 kernel at stride 2) read the same data shifted by one row,
// and with Wq a multiple of the vector width (R vectors) that is a shift by R whole vectors: a TapPair loads
// U + R vectors for 2U FMAs instead of 2U (U = 8, R = 2 on the VAE: 10 loads for 16 FMAs). Each dx element
// gets one FMA chain in a fixed order (the pairs, upper tap first, then the unpaired taps) and one +=, whatever
// the thread count. Figures in docs/benchmarks-conv.md.
template <class T>
struct TapPair {
  int64_t offset;  // the upper tap's; the lower one reads offset + Wq
  T upper, lower;
};
template <class T>
struct Tap {
  int64_t offset;
  T weight;
};
template <class T>
struct PhaseTaps {  // one phase and channel
  const TapPair<T>* pairs;
  int64_t pair_count;
  const Tap<T>* singles;
  int64_t single_count;
};

// out[0 .. U*W) = the taps' sum for the U vectors of lanes from `at` (R: vectors per row; R = 0 without pairs).
template <class T, int U, int R>
inline void sum_taps(const T* at, const PhaseTaps<T>& taps, T* out) {
  using Batch = xsimd::batch<T>;
  constexpr int W = static_cast<int>(Batch::size);
  Batch acc[U];
  for (Batch& a : acc) a = Batch(T(0));
  if constexpr (R > 0) {
    for (int64_t i = 0; i < taps.pair_count; ++i) {
      const T* src = at + taps.pairs[i].offset;
      const Batch upper(taps.pairs[i].upper), lower(taps.pairs[i].lower);
#pragma GCC unroll 16
      for (int v = 0; v < U + R; ++v) {
        typename Batch::register_type loaded = Batch::load_unaligned(src + v * W);
        // An empty asm that "changes" the register: without it GCC 12 folds the load into both FMAs as a memory
        // operand, loading twice and undoing the pairing (seen in perf annotate).
        __asm__("" : "+x"(loaded));
        const Batch x(loaded);
        if (v < U) acc[v] = simd::fma(upper, x, acc[v]);
        if (v >= R) acc[v - R] = simd::fma(lower, x, acc[v - R]);
      }
    }
  }
  for (int64_t i = 0; i < taps.single_count; ++i) {
    const T* src = at + taps.singles[i].offset;
    const Batch weight(taps.singles[i].weight);
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) acc[u] = simd::fma(weight, Batch::load_unaligned(src + u * W), acc[u]);
  }
  for (int u = 0; u < U; ++u) acc[u].store_unaligned(out + u * W);
}

// out[0 .. vectors*W) for one phase and channel: blocks of 8 vectors, then 4, 2, 1 for the rest.
template <class T, int R>
void sum_phase(const T* base, int64_t vectors, const PhaseTaps<T>& taps, T* out) {
  constexpr int64_t W = static_cast<int64_t>(xsimd::batch<T>::size);
  int64_t v = 0;
  for (; v + 8 <= vectors; v += 8) sum_taps<T, 8, R>(base + v * W, taps, out + v * W);
  if (vectors - v >= 4) sum_taps<T, 4, R>(base + v * W, taps, out + v * W), v += 4;
  if (vectors - v >= 2) sum_taps<T, 2, R>(base + v * W, taps, out + v * W), v += 2;
  if (vectors - v >= 1) sum_taps<T, 1, R>(base + v * W, taps, out + v * W);
}

template <class T>
void conv2d_backward_input_few_channels(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  constexpr int64_t W = static_cast<int64_t>(xsimd::batch<T>::size);
  const PhasePlan& plan = plan_phases(g, /*row_multiple=*/W);
  const int64_t top = plan.top, left = plan.left, Hq = plan.Hq, Wq = plan.Wq, plane_size = plan.plane_size;
  const int64_t image_size = g.F * plane_size, R = Wq / W <= 4 ? Wq / W : 0;  // R = 0: no pairs
  // Per phase: its taps matched into pairs one row apart (in order of offset, each with the tap Wq below it
  // if that one is still free), then per channel the pairs' and the rest's weights.
  thread_local std::vector<TapPair<T>> pairs;
  thread_local std::vector<Tap<T>> singles;
  thread_local std::vector<PhaseTaps<T>> phase_taps;  // [phase * C + c]
  thread_local std::vector<std::pair<int32_t, int64_t>> by_offset;  // (offset, tap index within the phase)
  thread_local std::vector<int64_t> partner;  // the lower tap paired with tap k, -1 none, -2 k is a lower tap
  pairs.clear();
  singles.clear();
  phase_taps.clear();
  int64_t reach = 0;
  for (const Phase& phase : plan.phases) {
    by_offset.clear();
    for (int64_t k = 0; k < phase.depth; ++k) by_offset.emplace_back(plan.tap_offsets[phase.taps + k], k);
    std::sort(by_offset.begin(), by_offset.end());
    partner.assign(static_cast<size_t>(phase.depth), -1);
    for (const auto& [offset, k] : by_offset) {
      reach = std::max<int64_t>(reach, offset);
      if (R == 0 || partner[k] != -1) continue;
      const auto below = std::lower_bound(by_offset.begin(), by_offset.end(), std::make_pair(int32_t(offset + Wq), int64_t{0}));
      if (below != by_offset.end() && below->first == offset + Wq && partner[below->second] == -1) {
        partner[k] = below->second;
        partner[below->second] = -2;
      }
    }
    for (int64_t c = 0; c < g.C; ++c) {
      auto weight = [&](int64_t k) { return w[plan.tap_weights[phase.taps + k] + c * g.KH * g.KW]; };
      // Indices for now, turned into pointers once the vectors stop growing.
      PhaseTaps<T> taps{nullptr, static_cast<int64_t>(pairs.size()), nullptr, static_cast<int64_t>(singles.size())};
      for (int64_t k = 0; k < phase.depth; ++k) {
        const int64_t offset = plan.tap_offsets[phase.taps + k];
        if (partner[k] >= 0) pairs.push_back({offset, weight(k), weight(partner[k])});
        else if (partner[k] == -1) singles.push_back({offset, weight(k)});
      }
      phase_taps.push_back(taps);
    }
  }
  for (size_t i = 0; i < phase_taps.size(); ++i) {
    const int64_t pair_begin = phase_taps[i].pair_count, single_begin = phase_taps[i].single_count;
    const bool last = i + 1 == phase_taps.size();
    const int64_t pair_end = last ? static_cast<int64_t>(pairs.size()) : phase_taps[i + 1].pair_count;
    const int64_t single_end = last ? static_cast<int64_t>(singles.size()) : phase_taps[i + 1].single_count;
    phase_taps[i] = {pairs.data() + pair_begin, pair_end - pair_begin, singles.data() + single_begin,
                     single_end - single_begin};
  }
  // The dropped lanes read past the last row by at most one row of the taps' reach: zeros there, so that no
  // uninitialised value is ever loaded.
  const int64_t origin = top * Wq + left;
  int64_t longest = 0;
  for (const Phase& phase : plan.phases) longest = std::max(longest, phase.pixels_h * Wq);
  const int64_t slack = std::max<int64_t>(0, origin + longest + reach - image_size);
  const int64_t G = std::clamp<int64_t>(kImplicitGroupBytes / (image_size * int64_t{sizeof(T)}), 1, kMaxGroup);
  const std::vector<PhaseTaps<T>>& taps_of = phase_taps;  // the calling thread's, as in the kernel above
  for_each_group(g.B, G, g.F * g.col_rows() * g.col_cols(), [&](int64_t first, int64_t count, int64_t) {
    T* planes = scratch<T>(count * image_size + slack, 0);
    for (int64_t i = 0; i < count * g.F; ++i) {
      T* plane = planes + i * plane_size;
      pad_plane(dy + (first * g.F + i) * g.OH * g.OW, g.OH, g.OW, top, left, Hq, Wq, plane);
      std::fill(plane + Hq * Wq, plane + plane_size, T(0));  // the gap between planes, read by dropped lanes
    }
    std::fill(planes + count * image_size, planes + count * image_size + slack, T(0));
    T* out = scratch<T>(longest, 1);
    for (int64_t image = 0; image < count; ++image)
      for (size_t index = 0; index < plan.phases.size(); ++index) {
        const Phase& phase = plan.phases[index];
        const T* base = planes + image * image_size + origin;
        for (int64_t c = 0; c < g.C; ++c) {
          const PhaseTaps<T>& taps = taps_of[index * g.C + c];
          const int64_t vectors = phase.pixels_h * Wq / W;
          switch (R) {
            case 1: sum_phase<T, 1>(base, vectors, taps, out); break;
            case 2: sum_phase<T, 2>(base, vectors, taps, out); break;
            case 3: sum_phase<T, 3>(base, vectors, taps, out); break;
            case 4: sum_phase<T, 4>(base, vectors, taps, out); break;
            default: sum_phase<T, 0>(base, vectors, taps, out); break;
          }
          T* plane = dx + ((first + image) * g.C + c) * g.H * g.W;
          for (int64_t t_h = 0; t_h < phase.pixels_h; ++t_h) {
            T* row = plane + (phase.r_h + g.stride[0] * t_h) * g.W + phase.r_w;
            for (int64_t t_w = 0; t_w < phase.pixels_w; ++t_w) row[g.stride[1] * t_w] += out[t_h * Wq + t_w];
          }
        }
      }
  });
}

#define TAPEGRAD_INSTANTIATE_PHASE_CONV(T)                                                            \
  template void conv2d_backward_input_implicit<T>(const Conv2dGeometry&, const T*, const T*, T*);     \
  template void conv2d_backward_input_few_channels<T>(const Conv2dGeometry&, const T*, const T*, T*);
TAPEGRAD_INSTANTIATE_PHASE_CONV(float)
TAPEGRAD_INSTANTIATE_PHASE_CONV(double)
#undef TAPEGRAD_INSTANTIATE_PHASE_CONV

}  // namespace tapegrad::ops::conv_detail
