// NucleiNet run by our own AVX-512 / AVX2 kernels; see direct_unet.hpp for why and when.
#include "direct_unet.hpp"

#if defined(__x86_64__) && !defined(GRADE_NO_DIRECT_UNET)
#include <immintrin.h>
#define GRADE_DIRECT_UNET 1  // the kernels exist (x86-64 only; elsewhere OpenCV dnn runs the network)
#endif

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>

namespace grade::detail {

namespace {

using Conv = DirectUnet::Conv;

// Channels-last activations: pixel (y, x), channel c at at(y, x)[c]. Buffers keep a one-pixel border of zeros around
// the h x w pixels, so a 3x3 convolution with zero padding reads rows and columns -1 and h / w directly. A view can
// also be a slice of a wider buffer's channels (the skip connections live in the second half of their concatenation).
struct View {
  float* data = nullptr;  // pixel (0, 0), channel 0
  int h = 0, w = 0;
  std::ptrdiff_t px = 0, row = 0;  // floats per pixel and per row
  float* at(int y, int x) const { return data + y * row + x * px; }
  View channels_from(int c) const {
    View v = *this;
    v.data += c;
    return v;
  }
};

#ifdef GRADE_DIRECT_UNET  // (the buffers, the kernels and the steps between them)
// A bordered h x w x channels buffer (grown as needed, kept between calls) and its view. Only the border is zeroed:
// every interior value is written before it is read.
View bordered(std::vector<float>& buf, int h, int w, int channels) {
  const std::ptrdiff_t px = channels, row = static_cast<std::ptrdiff_t>(w + 2) * px;
  const std::size_t size = static_cast<std::size_t>(row) * static_cast<std::size_t>(h + 2);
  if (buf.size() < size) buf.resize(size);
  View v{buf.data() + row + px, h, w, px, row};
  std::fill(v.at(-1, -1), v.at(-1, w + 1), 0.0f);
  std::fill(v.at(h, -1), v.at(h, w + 1), 0.0f);
  for (int y = 0; y < h; ++y) {
    std::fill(v.at(y, -1), v.at(y, 0), 0.0f);
    std::fill(v.at(y, w), v.at(y, w + 1), 0.0f);
  }
  return v;
}

// The most tiles a Winograd chunk holds (wino_rows: two blocks of P tiles, P at most 24).
constexpr int wino_chunk = 48;

// How a 3x3 stride-1 convolution with output `out` runs with this instruction set: 4 for Winograd's F(4x4, 3x3) where
// both output sides are multiples of 4, else 2 for F(2x2, 3x3) where they are even, else 0 (directly, as every other
// convolution). F(2x2, 3x3) does not pay with AVX-512 for 16 output channels (the fast network's finest level), where
// the direct kernel's longer runs over the taps win. The network alone on a 1040 px tile, 1 thread (twenty-fourth
// session; direct / F(2x2) only / with F(4x4)): AVX-512 fast 68 / 67 / 51-57 ms, accurate 184 / 160 / 120; AVX2 fast
// 91 / 71 / 68, accurate 306 / 212 / 169.
int wino_tile(DirectUnet::Isa isa, const Conv& c, const View& out) {
  if (c.wino.empty()) return 0;
  if (out.h % 4 == 0 && out.w % 4 == 0) return 4;
  if (out.h % 2 == 0 && out.w % 2 == 0 && (isa == DirectUnet::Isa::avx2 || c.cout_p % 32 == 0)) return 2;
  return 0;
}

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
using vec = __m512;
constexpr int lanes = 16;
inline vec load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, vec a) { _mm512_storeu_ps(p, a); }
inline vec splat(float x) { return _mm512_set1_ps(x); }
inline vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
inline vec relu_of(vec a) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ), a); }
inline vec max_of(vec a, vec b) { return _mm512_maskz_max_ps(0xffff, a, b); }  // (GCC 12 warns on _mm512_max_ps)
inline vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
inline vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
inline vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
#include "direct_unet_kernels.inc"
void rows(const Conv& c, bool relu, const View& in, const View& out, int y0, int y1) {
  if (c.cout_p % 32 == 0) conv_rows<2, 14>(c, relu, in, out, y0, y1);
  else conv_rows<1, 24>(c, relu, in, out, y0, y1);
}
void wino(const Conv& c, bool relu, const View& in, const View& out, int ty0, int ty1, float* scratch, int tile) {
  if (c.cout_p % 32 != 0) wino_rows<1, 24, 4>(c, relu, in, out, ty0, ty1, scratch);  // (wino_tile: not F(2x2) here)
  else if (tile == 4) wino_rows<2, 14, 4>(c, relu, in, out, ty0, ty1, scratch);
  else wino_rows<2, 14, 2>(c, relu, in, out, ty0, ty1, scratch);
}
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
using vec = __m256;
constexpr int lanes = 8;
inline vec load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, vec a) { _mm256_storeu_ps(p, a); }
inline vec splat(float x) { return _mm256_set1_ps(x); }
inline vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
inline vec relu_of(vec a) { return _mm256_max_ps(a, _mm256_setzero_ps()); }
inline vec max_of(vec a, vec b) { return _mm256_max_ps(a, b); }
inline vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
inline vec sub(vec a, vec b) { return _mm256_sub_ps(a, b); }
inline vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
#include "direct_unet_kernels.inc"
void rows(const Conv& c, bool relu, const View& in, const View& out, int y0, int y1) {
  conv_rows<2, 6>(c, relu, in, out, y0, y1);
}
void wino(const Conv& c, bool relu, const View& in, const View& out, int ty0, int ty1, float* scratch, int tile) {
  if (tile == 4) wino_rows<2, 6, 4>(c, relu, in, out, ty0, ty1, scratch);
  else wino_rows<2, 6, 2>(c, relu, in, out, ty0, ty1, scratch);
}
}  // namespace avx2
#pragma GCC pop_options

// A convolution over all of `out`'s rows, in stripes of rows over OpenCV's threads (rows of tiles for Winograd's
// method, where wino_tile says it applies and pays), else directly.
void conv(DirectUnet::Isa isa, const Conv& c, bool relu, const View& in, const View& out) {
  if (const int tile = wino_tile(isa, c, out); tile > 0) {
    const int tile_rows = out.h / tile;
    cv::parallel_for_(cv::Range(0, tile_rows), [&](const cv::Range& r) {
      thread_local std::vector<float> scratch;
      const auto need = static_cast<std::size_t>((tile + 2) * (tile + 2) * wino_chunk * (c.cin + c.cout_p));
      if (scratch.size() < need) scratch.resize(need);
      if (isa == DirectUnet::Isa::avx512) avx512::wino(c, relu, in, out, r.start, r.end, scratch.data(), tile);
      else avx2::wino(c, relu, in, out, r.start, r.end, scratch.data(), tile);
    }, std::max(1, tile_rows / 16));
    return;
  }
  const int rows = out.h;
  cv::parallel_for_(cv::Range(0, rows), [&](const cv::Range& r) {
    if (isa == DirectUnet::Isa::avx512) avx512::rows(c, relu, in, out, r.start, r.end);
    else avx2::rows(c, relu, in, out, r.start, r.end);
  }, std::max(1, rows / 16));
}

void max_pool(DirectUnet::Isa isa, const View& in, const View& out, int channels) {
  if (isa == DirectUnet::Isa::avx512) avx512::max_pool(in, out, channels);
  else avx2::max_pool(in, out, channels);
}

void upsample_nearest(DirectUnet::Isa isa, const View& in, const View& out, int channels) {
  if (isa == DirectUnet::Isa::avx512) avx512::upsample_nearest(in, out, channels);
  else avx2::upsample_nearest(in, out, channels);
}

// Bilinear 2x up-sampling of the first `n` channels of `in` into planes 0 .. n - 1 of the 1 x n x 2h x 2w blob `out`,
// with half-pixel centres and edges clamped (PyTorch's align_corners=False, ONNX Resize's half_pixel): output pixel
// 2i samples input i - 1/4 (weights 1/4, 3/4 on inputs i - 1, i) and 2i + 1 samples i + 1/4 (3/4, 1/4 on i, i + 1).
// The channels are first made planar, so that both passes run along contiguous rows.
void upsample_bilinear(const View& in, int n, cv::Mat& out) {
  const int h = in.h, w = in.w, W = 2 * w;
  thread_local std::vector<float> planar, tmp;
  planar.resize(static_cast<std::size_t>(n) * static_cast<std::size_t>(h) * static_cast<std::size_t>(w));
  tmp.resize(static_cast<std::size_t>(w));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float* p = in.at(y, x);
      for (int ch = 0; ch < n; ++ch) planar[(static_cast<std::size_t>(ch) * h + y) * w + x] = p[ch];
    }
  for (int ch = 0; ch < n; ++ch) {
    const float* src = planar.data() + static_cast<std::size_t>(ch) * h * w;
    for (int Y = 0; Y < 2 * h; ++Y) {
      // Rows i - 1 and i (3/4 on i) for Y = 2i, rows i and i + 1 (3/4 on i) for Y = 2i + 1, clamped at the edges.
      const int i = Y / 2, j = std::clamp(Y % 2 == 0 ? i - 1 : i + 1, 0, h - 1);
      const float* a = src + static_cast<std::ptrdiff_t>(i) * w;
      const float* b = src + static_cast<std::ptrdiff_t>(j) * w;
      float* t = tmp.data();
      for (int x = 0; x < w; ++x) t[x] = 0.75f * a[x] + 0.25f * b[x];
      float* o = out.ptr<float>(0, ch, Y);
      o[0] = t[0];
      for (int x = 0; x + 1 < w; ++x) {
        o[2 * x + 1] = 0.75f * t[x] + 0.25f * t[x + 1];
        o[2 * x + 2] = 0.25f * t[x] + 0.75f * t[x + 1];
      }
      o[W - 1] = t[w - 1];
    }
  }
}

#endif  // GRADE_DIRECT_UNET

// G g G^T for every 3x3 kernel g of `src` (Cout x Cin x 3 x 3), as [S * S][cin][cout_p] (S = G's rows; zero beyond
// cout): Winograd's weight transform.
std::vector<float> winograd_weights(const float* src, int cin, int cout, int cout_p,
                                    const std::vector<std::array<double, 3>>& G) {
  const int S = static_cast<int>(G.size());
  std::vector<float> out(static_cast<std::size_t>(S * S * cin * cout_p), 0.0f);
  for (int o = 0; o < cout; ++o)
    for (int i = 0; i < cin; ++i) {
      const float* g = src + (o * cin + i) * 9;
      for (int r = 0; r < S; ++r)
        for (int col = 0; col < S; ++col) {
          double v = 0.0;
          for (int a = 0; a < 3; ++a)
            for (int b = 0; b < 3; ++b) v += G[r][a] * g[a * 3 + b] * G[col][b];
          out[static_cast<std::size_t>(((S * r + col) * cin + i) * cout_p + o)] = static_cast<float>(v);
        }
    }
  return out;
}

// The weights of an OpenCV convolution layer (blobs: Cout x Cin x k x k, and the bias Cout x 1) rearranged for
// conv_block, or an empty Conv if the shapes are not as expected.
Conv conv_from(const cv::Ptr<cv::dnn::Layer>& layer, int cin, int k, int stride, int cout = -1) {
  if (layer->blobs.size() != 2) return {};
  const cv::Mat& w = layer->blobs[0];
  const cv::Mat& b = layer->blobs[1];
  if (w.type() != CV_32F || b.type() != CV_32F || w.dims != 4 || w.size[1] != cin || w.size[2] != k ||
      w.size[3] != k || (cout >= 0 && w.size[0] != cout) || static_cast<int>(b.total()) != w.size[0])
    return {};
  Conv c;
  c.k = k;
  c.stride = stride;
  c.cin = cin;
  c.cout = w.size[0];
  c.cout_p = (c.cout + 15) / 16 * 16;
  c.w.assign(static_cast<std::size_t>(k * k * cin * c.cout_p), 0.0f);
  c.b.assign(static_cast<std::size_t>(c.cout_p), 0.0f);
  const float* src = w.ptr<float>();
  for (int o = 0; o < c.cout; ++o)
    for (int i = 0; i < cin; ++i)
      for (int t = 0; t < k * k; ++t)
        c.w[static_cast<std::size_t>((t * cin + i) * c.cout_p + o)] = src[(o * cin + i) * k * k + t];
  std::copy_n(b.ptr<float>(), c.cout, c.b.begin());
  if (k == 3 && stride == 1) {
    // Winograd's transformed weights G g G^T, in double. F(2x2, 3x3): G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1];
    // F(4x4, 3x3): G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1].
    const std::vector<std::array<double, 3>> g2 = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
    const std::vector<std::array<double, 3>> g4 = {{0.25, 0, 0},
                                                   {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                                   {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                                   {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                                   {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                                   {0, 0, 1}};
    c.wino = winograd_weights(src, cin, c.cout, c.cout_p, g2);
    c.wino4 = winograd_weights(src, cin, c.cout, c.cout_p, g4);
  }
  return c;
}

}  // namespace

std::optional<DirectUnet::Isa> DirectUnet::cpu_isa() {
#ifdef GRADE_DIRECT_UNET
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return std::nullopt;
  return __builtin_cpu_supports("avx512f") ? Isa::avx512 : Isa::avx2;  // (with AVX2 too, as every such CPU has)
#endif
  return std::nullopt;
}

std::unique_ptr<const DirectUnet> DirectUnet::from(cv::dnn::Net& net) {
  const std::optional<Isa> best = cpu_isa();
  if (!best) return nullptr;
  // The layer sequence NucleiNet exports to (ReLU after every convolution but the head; the output Identity aside).
  const std::vector<std::string> expected = {
      "Convolution", "ReLU",    "Convolution", "ReLU",   "Pooling",     "Convolution", "ReLU",   "Convolution",
      "ReLU",        "Pooling", "Convolution", "ReLU",   "Convolution", "ReLU",        "Convolution", "ReLU",
      "Resize",      "Concat",  "Convolution", "ReLU",   "Convolution", "ReLU",        "Resize", "Concat",
      "Convolution", "ReLU",    "Convolution", "Resize"};
  std::vector<cv::Ptr<cv::dnn::Layer>> convs;
  std::size_t i = 0;
  for (const auto& name : net.getLayerNames()) {
    const cv::Ptr<cv::dnn::Layer> layer = net.getLayer(name);
    if (layer->type == "Identity" && i == expected.size()) continue;
    if (i >= expected.size() || layer->type != expected[i]) return nullptr;
    if (layer->type == "Convolution") convs.push_back(layer);
    ++i;
  }
  if (i != expected.size() || convs.size() != 11 || convs[0]->blobs.empty() || convs[2]->blobs.empty() ||
      convs[4]->blobs.empty())
    return nullptr;
  auto u = std::unique_ptr<DirectUnet>(new DirectUnet);
  u->b_ = convs[0]->blobs[0].size[0];
  u->c_ = convs[2]->blobs[0].size[0];
  u->d_ = convs[4]->blobs[0].size[0];
  const int b = u->b_, c = u->c_, d = u->d_;
  if (b % 16 != 0 || c % 16 != 0 || d % 16 != 0 || b == 0 || c == 0 || d == 0) return nullptr;
  u->convs_ = {conv_from(convs[0], 3, 3, 2, b),     conv_from(convs[1], b, 3, 1, b),  conv_from(convs[2], b, 3, 1, c),
               conv_from(convs[3], c, 3, 1, c),     conv_from(convs[4], c, 3, 1, d),  conv_from(convs[5], d, 3, 1, d),
               conv_from(convs[6], d, 1, 1, c),     conv_from(convs[7], 2 * c, 3, 1, c),
               conv_from(convs[8], c, 1, 1, b),     conv_from(convs[9], 2 * b, 3, 1, b),
               conv_from(convs[10], b, 1, 1)};
  for (const Conv& k : u->convs_)
    if (k.cout == 0) return nullptr;
  u->outputs_ = u->convs_[10].cout;
  if (u->outputs_ > 16) return nullptr;

  // The same function as OpenCV's? Two test inputs (fixed noise), every output within float rounding: 64 x 64 runs
  // every 3x3 layer but the stem by F(4x4, 3x3); 72 x 72 runs the finest level by F(4x4, 3x3), the second by
  // F(2x2, 3x3) (with AVX-512 where it has 32-multiple channels) and the coarsest (9 x 9) directly.
  for (const int side : {64, 72}) {
    const int shape[4] = {1, 3, side, side};
    cv::Mat in(4, shape, CV_32F), ours;
    cv::RNG rng(23);
    rng.fill(in, cv::RNG::UNIFORM, -0.5, 0.5);
    cv::Mat ref;
    try {
      net.setInput(in);
      ref = net.forward().clone();
    } catch (const cv::Exception&) {
      return nullptr;
    }
    if (ref.dims != 4 || ref.size[1] != u->outputs_ || ref.size[2] != side || ref.size[3] != side) return nullptr;
    const double scale = std::max(1.0, cv::norm(ref, cv::NORM_INF));
    for (const Isa isa : {Isa::avx2, Isa::avx512}) {
      if (isa == Isa::avx512 && *best != Isa::avx512) continue;
      u->forward(in, ours, isa);
      if (cv::norm(ref, ours, cv::NORM_INF) > 1e-4 * scale) return nullptr;
    }
  }
  return u;
}

void DirectUnet::forward(const cv::Mat& in, cv::Mat& out, Isa isa) const {
#ifndef GRADE_DIRECT_UNET
  (void)in, (void)out, (void)isa;
  CV_Error(cv::Error::StsNotImplemented, "the direct nucleus network needs x86-64");  // from() never builds one there
#else
  CV_Assert(in.dims == 4 && in.size[0] == 1 && in.size[1] == 3 && in.type() == CV_32F && in.isContinuous());
  const int H = in.size[2], W = in.size[3];
  CV_Assert(H % 8 == 0 && W % 8 == 0 && H > 0 && W > 0);
  const int b = b_, c = c_, d = d_;
  const int h1 = H / 2, w1 = W / 2, h2 = H / 4, w2 = W / 4, h3 = H / 8, w3 = W / 8;
  thread_local std::vector<float> bx0, bt1, bcat1, bp1, bt2, bcat2, bp2, bt3, bx3, br3, by2, br2;

  // The input, channels last.
  const View x0 = bordered(bx0, H, W, 3);
  for (int y = 0; y < H; ++y) {
    const float* r = in.ptr<float>(0, 0, y);
    const float* g = in.ptr<float>(0, 1, y);
    const float* b = in.ptr<float>(0, 2, y);
    float* o = x0.at(y, 0);
    for (int x = 0; x < W; ++x) {
      o[3 * x] = r[x];
      o[3 * x + 1] = g[x];
      o[3 * x + 2] = b[x];
    }
  }
  // Encoder. The skip connections are written straight into the second half of their concatenation buffers.
  const View t1 = bordered(bt1, h1, w1, b);
  const View cat1 = bordered(bcat1, h1, w1, 2 * b);
  const View x1 = cat1.channels_from(b);
  conv(isa, convs_[0], true, x0, t1);
  conv(isa, convs_[1], true, t1, x1);
  const View p1 = bordered(bp1, h2, w2, b);
  max_pool(isa, x1, p1, b);
  const View t2 = bordered(bt2, h2, w2, c);
  const View cat2 = bordered(bcat2, h2, w2, 2 * c);
  const View x2 = cat2.channels_from(c);
  conv(isa, convs_[2], true, p1, t2);
  conv(isa, convs_[3], true, t2, x2);
  const View p2 = bordered(bp2, h3, w3, c);
  max_pool(isa, x2, p2, c);
  const View t3 = bordered(bt3, h3, w3, d);
  const View x3 = bordered(bx3, h3, w3, d);
  conv(isa, convs_[4], true, p2, t3);
  conv(isa, convs_[5], true, t3, x3);
  // Decoder: reduce, up-sample into the first half of the concatenation, convolve.
  const View r3 = bordered(br3, h3, w3, c);
  conv(isa, convs_[6], true, x3, r3);
  upsample_nearest(isa, r3, cat2, c);
  const View y2 = bordered(by2, h2, w2, c);
  conv(isa, convs_[7], true, cat2, y2);
  const View r2 = bordered(br2, h2, w2, b);
  conv(isa, convs_[8], true, y2, r2);
  upsample_nearest(isa, r2, cat1, b);
  const View y1 = t1;  // s0's output is no longer needed
  conv(isa, convs_[9], true, cat1, y1);
  const View hd = bordered(bcat1, h1, w1, convs_[10].cout_p);  // the concatenation is no longer needed either
  conv(isa, convs_[10], false, y1, hd);
  const int shape[4] = {1, outputs_, H, W};
  out.create(4, shape, CV_32F);
  upsample_bilinear(hd, outputs_, out);
#endif
}

}  // namespace grade::detail
