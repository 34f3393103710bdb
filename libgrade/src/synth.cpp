// grade-synth: synthetic H&E slides with a known truth (see grade/synth.hpp for the method).
#include "grade/synth.hpp"

#include <algorithm>
#include <array>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <random>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "synth_detail.hpp"

namespace grade {

namespace fs = std::filesystem;
using detail::PyramidTiffWriter;

StainVectors SynthParams::synth_default_stains() {
  // Chosen so that rendered stroma and nuclei match the median colours of real 40x H&E tiles (MoNuSeg nuclei and
  // background, AMi-Br patches): between Ruifrok's vectors and the Macenko reference ones, eosin with some blue.
  auto unit = [](std::array<double, 3> v) {
    const double n = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    return std::array<double, 3>{v[0] / n, v[1] / n, v[2] / n};
  };
  return {unit({0.62, 0.73, 0.29}), unit({0.24, 0.86, 0.45})};
}

namespace {

constexpr double kPi = 3.14159265358979323846;

// ---------------------------------------------------------------------------------------------------------------
// Deterministic randomness: SplitMix64 streams keyed by (seed, tag, cell). Nothing depends on global state, so the
// same seed gives the same slide whatever the order in which cells are visited.
inline std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
inline std::uint64_t key(std::uint64_t seed, std::uint64_t tag, std::int64_t i, std::int64_t j) {
  return mix64(mix64(mix64(seed) ^ (tag * 0x632be59bd9b4e019ULL)) ^
               (static_cast<std::uint64_t>(i) * 0x8cb92ba72f3d8dd7ULL + static_cast<std::uint64_t>(j)));
}

struct Rng {
  std::uint64_t s;
  explicit Rng(std::uint64_t seed) : s(seed) {}
  std::uint64_t next() {
    s += 0x9e3779b97f4a7c15ULL;
    std::uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double u() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  double u(double a, double b) { return a + (b - a) * u(); }
  double normal() {
    double u1 = u();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u());
  }
  int poisson(double lambda) {
    if (lambda <= 0) return 0;
    if (lambda > 40) return std::max(0, static_cast<int>(std::lround(lambda + std::sqrt(lambda) * normal())));
    const double l = std::exp(-lambda);
    int k = 0;
    double p = 1.0;
    do {
      ++k;
      p *= u();
    } while (p > l);
    return k - 1;
  }
};

enum Tag : std::uint64_t { kTagNuclei = 1, kTagMitoses, kTagField, kTagLayout, kTagTexture, kTagFigure };

// Smooth value noise in [0, 1): a lattice of hashed values, smoothstep-interpolated.
double value_noise(std::uint64_t seed, std::uint64_t tag, double x, double y) {
  const double fx = std::floor(x), fy = std::floor(y);
  const auto ix = static_cast<std::int64_t>(fx), iy = static_cast<std::int64_t>(fy);
  double tx = x - fx, ty = y - fy;
  tx = tx * tx * (3 - 2 * tx);
  ty = ty * ty * (3 - 2 * ty);
  auto h = [&](std::int64_t a, std::int64_t b) {
    return static_cast<double>(key(seed, tag, a, b) >> 11) * (1.0 / 9007199254740992.0);
  };
  const double v00 = h(ix, iy), v10 = h(ix + 1, iy), v01 = h(ix, iy + 1), v11 = h(ix + 1, iy + 1);
  return (v00 * (1 - tx) + v10 * tx) * (1 - ty) + (v01 * (1 - tx) + v11 * tx) * ty;
}
// Two octaves, roughly in [0, 1), feature size `scale`.
double fbm(std::uint64_t seed, std::uint64_t tag, double x, double y, double scale) {
  return 0.65 * value_noise(seed, tag, x / scale, y / scale) +
         0.35 * value_noise(seed, tag + 101, 2.0 * x / scale + 17.3, 2.0 * y / scale + 5.1);
}

// ---------------------------------------------------------------------------------------------------------------
// Objects.
enum Kind : std::uint8_t { kSpindle, kRound, kPleomorphic, kLymphocyte, kGhost, kDust };
const char* kind_name(int k) {
  static const char* names[] = {"spindle", "round", "pleomorphic", "lymphocyte", "ghost", "dust"};
  return names[k];
}

struct Nucleus {
  double x = 0, y = 0;     // level-0 px
  float a = 0, b = 0;      // semi-axes, px
  float angle = 0;         // radians, major axis from +x towards +y
  float cs = 1, sn = 0;
  float peak = 0;          // hematoxylin concentration
  float h2c = 0, h2s = 0, h3c = 0, h3s = 0;  // outline harmonics (pleomorphic)
  float nucleolus = 0;     // radius px (0 = none)
  float priority = 0;      // for the hard-core thinning
  Kind kind = kSpindle;
  float ext = 0;           // bounding radius px
};

struct Rod {
  float x1, y1, x2, y2, r;  // px, relative to the figure's centre
};
enum Phase { kProphase, kMetaphase, kAnaphase, kTelophase, kAtypical };
const char* phase_name(int p) {
  static const char* names[] = {"prophase", "metaphase", "anaphase", "telophase", "atypical"};
  return names[p];
}
struct Mitosis {
  double x = 0, y = 0;
  Phase phase = kMetaphase;
  std::vector<Rod> rods;
  float peak = 2.0f;
  float halo_a = 0, halo_b = 0, halo_cs = 1, halo_sn = 0;
  float ext = 0;  // bounding radius px (halo included)
};

using Polygon = std::vector<cv::Point2f>;

struct Bbox {
  float x0, y0, x1, y1;
};
Bbox bbox_of(const Polygon& p) {
  Bbox b{1e30f, 1e30f, -1e30f, -1e30f};
  for (const auto& q : p) {
    b.x0 = std::min(b.x0, q.x);
    b.y0 = std::min(b.y0, q.y);
    b.x1 = std::max(b.x1, q.x);
    b.y1 = std::max(b.y1, q.y);
  }
  return b;
}

// Periodic textures, TEX x TEX, addressed with level-0 pixel coordinates modulo TEX so tiles join seamlessly.
constexpr int TEX = 512;
constexpr int NORI = 12;  // fibre orientations in the bank
struct Textures {
  std::vector<std::vector<float>> fibre;  // NORI oriented fibrillar noises, unit variance
  std::vector<float> chromatin;           // fine granular noise (~0.5 um), unit variance
  std::vector<float> mottle;              // mid-scale noise (~3 um), unit variance
  std::vector<float> pixel;               // white noise in [-1, 1]
};

// Gaussian-filtered white noise (filtered in the Fourier domain, hence periodic), normalised to unit variance.
// sigma_along/sigma_across are spatial standard deviations in px along `angle` and across it.
std::vector<float> filtered_noise(Rng& rng, double sigma_along, double sigma_across, double angle) {
  cv::Mat noise(TEX, TEX, CV_32F);
  for (int i = 0; i < TEX * TEX; ++i) noise.ptr<float>()[i] = static_cast<float>(rng.normal());
  cv::Mat spec;
  cv::dft(noise, spec, cv::DFT_COMPLEX_OUTPUT);
  const double c = std::cos(angle), s = std::sin(angle);
  for (int y = 0; y < TEX; ++y) {
    const double fy = (y <= TEX / 2 ? y : y - TEX) / static_cast<double>(TEX);
    auto* row = spec.ptr<cv::Vec2f>(y);
    for (int x = 0; x < TEX; ++x) {
      const double fx = (x <= TEX / 2 ? x : x - TEX) / static_cast<double>(TEX);
      const double fa = fx * c + fy * s, fc = -fx * s + fy * c;
      const double g = std::exp(-2.0 * kPi * kPi * (sigma_along * sigma_along * fa * fa + sigma_across * sigma_across * fc * fc));
      row[x] *= static_cast<float>(g);
    }
  }
  cv::Mat out;
  cv::idft(spec, out, cv::DFT_REAL_OUTPUT | cv::DFT_SCALE);
  cv::Scalar mean, sd;
  cv::meanStdDev(out, mean, sd);
  out = (out - mean[0]) / std::max(sd[0], 1e-12);
  return std::vector<float>(out.ptr<float>(), out.ptr<float>() + TEX * TEX);
}

// ---------------------------------------------------------------------------------------------------------------
class Synth {
 public:
  explicit Synth(const SynthParams& p);
  SynthSummary run(const fs::path& slide_path, const fs::path& truth_path, const SynthProgress& progress);

 private:
  double um(double v) const { return v / p_.mpp; }  // micrometres -> px
  double tissue_dist(double x, double y) const {
    return cv::pointPolygonTest(tissue_, cv::Point2f(static_cast<float>(x), static_cast<float>(y)), true);
  }
  // Signed distance to the nearest necrosis polygon (> 0 inside); -1e9 when far from all.
  double necrosis_dist(double x, double y, double reach) const;
  bool in_hotspot(double x, double y) const {
    const double dx = x - hot_x_, dy = y - hot_y_;
    return dx * dx + dy * dy <= hot_r_ * hot_r_;
  }
  double orientation(double x, double y) const;  // fascicle direction, radians (not wrapped)

  void make_layout();
  void make_mitoses();
  Mitosis make_figure(Rng& rng, double x, double y) const;
  void make_textures();
  std::vector<Nucleus> raw_cell(std::int64_t ci, std::int64_t cj) const;
  const std::vector<Nucleus>& cached_raw_cell(std::int64_t ci, std::int64_t cj) const;
  void evict_raw_rows_before(std::int64_t cj) const;
  std::vector<Nucleus> make_cell(std::int64_t ci, std::int64_t cj) const;
  void render_tile(std::int64_t tx, std::int64_t ty, const std::vector<const std::vector<Nucleus>*>& cells,
                   cv::Mat& rgb);

  SynthParams p_;
  std::int64_t W_, H_;
  int T_;
  Polygon tissue_;
  Bbox tissue_bb_{};
  std::vector<Polygon> necrosis_;
  std::vector<Bbox> necrosis_bb_;
  double tissue_area_px_ = 0, necrosis_area_px_ = 0;
  double hot_x_ = 0, hot_y_ = 0, hot_r_ = 0;
  std::vector<Mitosis> mitoses_;  // sorted by y
  std::unordered_map<std::uint64_t, std::vector<int>> mitosis_cells_;
  mutable std::unordered_map<std::uint64_t, std::vector<Nucleus>> raw_cache_;  // candidates of recent cell rows
  double mitosis_cell_px_ = 0;
  Textures tex_;
  std::vector<std::uint8_t> lut_;
  static constexpr double kLutScale = 2048.0;
  std::array<float, 3> h_{}, e_{};
  static constexpr int kMargin = 4;
  double blur_px_ = 0.8;
  // Per-tile scratch.
  std::vector<float> H_map_, E_map_, ori_, e0_, h0_, grid_;
  cv::Mat tissue_mask_, necrosis_mask_;
};

Synth::Synth(const SynthParams& p) : p_(p), W_(p.width_px), H_(p.height_px), T_(p.tile_px) {
  for (int c = 0; c < 3; ++c) {
    h_[c] = static_cast<float>(p_.stains.hematoxylin[c]);
    e_[c] = static_cast<float>(p_.stains.eosin[c]);
  }
  lut_.resize(static_cast<std::size_t>(6.0 * kLutScale) + 1);
  for (std::size_t i = 0; i < lut_.size(); ++i)
    lut_[i] = static_cast<std::uint8_t>(std::clamp(std::lround(255.0 * std::pow(10.0, -static_cast<double>(i) / kLutScale)), 0L, 255L));
  const std::size_t n = static_cast<std::size_t>(T_ + 2 * kMargin) * static_cast<std::size_t>(T_ + 2 * kMargin);
  blur_px_ = std::clamp(0.2 / p_.mpp, 0.4, 1.0);  // ~0.2 um, the blur of a 40x scan
  H_map_.resize(n);
  E_map_.resize(n);
  ori_.resize(n);
  e0_.resize(n);
  h0_.resize(n);
  make_textures();
  make_layout();
  make_mitoses();
}

double Synth::orientation(double x, double y) const {
  // Fascicles: the direction turns smoothly over a few hundred micrometres, with one broad sweep across the slide.
  const double xu = x * p_.mpp, yu = y * p_.mpp;
  return kPi * (1.6 * fbm(p_.seed, kTagField + 10, xu, yu, 220.0) + 0.25 * xu / 1000.0);
}

double Synth::necrosis_dist(double x, double y, double reach) const {
  double best = -1e9;
  for (std::size_t i = 0; i < necrosis_.size(); ++i) {
    const Bbox& b = necrosis_bb_[i];
    if (x < b.x0 - reach || x > b.x1 + reach || y < b.y0 - reach || y > b.y1 + reach) continue;
    best = std::max(best, cv::pointPolygonTest(necrosis_[i], cv::Point2f(static_cast<float>(x), static_cast<float>(y)), true));
  }
  return best;
}

void Synth::make_textures() {
  Rng rng(key(p_.seed, kTagTexture, 0, 0));
  tex_.fibre.resize(NORI);
  for (int k = 0; k < NORI; ++k) tex_.fibre[k] = filtered_noise(rng, um(5.0), um(0.55), kPi * k / NORI);
  tex_.chromatin = filtered_noise(rng, um(0.5), um(0.5), 0.0);
  tex_.mottle = filtered_noise(rng, um(2.5), um(2.5), 0.0);
  tex_.pixel.resize(TEX * TEX);
  for (auto& v : tex_.pixel) v = static_cast<float>(rng.u(-1.0, 1.0));
}

// Star-shaped polygon around (cx, cy): radius r(t) = superellipse(t; exponent) x (1 + sum of harmonics), scaled so
// that it just fits the box cx +- rx, cy +- ry; `n` vertices. Exponent 2 is an ellipse, 4 a rounded square.
Polygon star_polygon(Rng& rng, double cx, double cy, double rx, double ry, int n, double roughness, double exponent = 2.0) {
  std::array<double, 6> amp{}, ph{};
  const std::array<int, 6> freq{2, 3, 4, 6, 9, 15};
  for (int k = 0; k < 6; ++k) {
    amp[k] = roughness * rng.u(0.4, 1.0) / std::sqrt(static_cast<double>(freq[k]));
    ph[k] = rng.u(0, 2 * kPi);
  }
  std::vector<double> f(n);
  double fmax = 0;
  for (int i = 0; i < n; ++i) {
    const double t = 2 * kPi * i / n;
    double v = 1.0;
    for (int k = 0; k < 6; ++k) v += amp[k] * std::sin(freq[k] * t + ph[k]);
    const double base = std::pow(std::pow(std::abs(std::cos(t)), exponent) + std::pow(std::abs(std::sin(t)), exponent), -1.0 / exponent);
    f[i] = std::max(0.3, v) * base;
    fmax = std::max({fmax, std::abs(f[i] * std::cos(t)), std::abs(f[i] * std::sin(t))});
  }
  Polygon poly(n);
  for (int i = 0; i < n; ++i) {
    const double t = 2 * kPi * i / n;
    poly[i] = cv::Point2f(static_cast<float>(cx + rx * f[i] / fmax * std::cos(t)),
                          static_cast<float>(cy + ry * f[i] / fmax * std::sin(t)));
  }
  return poly;
}

// The part of `poly` on the side n.p >= d of a line whose position wavers by +-amp (a sine along the line, tapered
// to zero where the line leaves the polygon): Sutherland-Hodgman clipping by a half-plane, then the cut edge is
// resampled and displaced along the normal.
Polygon cut_polygon(const Polygon& poly, double angle, double d, double amp, double wavelength, double phase) {
  const double nx = std::cos(angle), ny = std::sin(angle);
  auto side = [&](const cv::Point2f& q) { return q.x * nx + q.y * ny - d; };
  Polygon out;
  std::vector<char> on_cut;
  for (std::size_t i = 0, m = poly.size(); i < m; ++i) {
    const cv::Point2f a = poly[i], b = poly[(i + 1) % m];
    const double sa = side(a), sb = side(b);
    if (sa >= 0) {
      out.push_back(a);
      on_cut.push_back(0);
    }
    if ((sa >= 0) != (sb >= 0)) {
      const double t = sa / (sa - sb);
      out.push_back(a + (b - a) * static_cast<float>(t));
      on_cut.push_back(1);
    }
  }
  if (out.size() < 3 || amp <= 0) return out;
  // Resample each cut segment (between two consecutive crossing points) and add the wave.
  Polygon waved;
  for (std::size_t i = 0, m = out.size(); i < m; ++i) {
    waved.push_back(out[i]);
    const std::size_t j = (i + 1) % m;
    if (!(on_cut[i] && on_cut[j])) continue;
    const cv::Point2f a = out[i], b = out[j];
    const double len = cv::norm(b - a);
    const int steps = std::max(2, static_cast<int>(len / (wavelength / 8)));
    for (int k = 1; k < steps; ++k) {
      const double t = static_cast<double>(k) / steps;
      const cv::Point2f q = a + (b - a) * static_cast<float>(t);
      const double along = q.x * -ny + q.y * nx;
      const double w = amp * std::sin(2 * kPi * along / wavelength + phase) * std::sin(kPi * t);
      waved.push_back(cv::Point2f(static_cast<float>(q.x + nx * w), static_cast<float>(q.y + ny * w)));
    }
  }
  return waved;
}

double polygon_area(const Polygon& p) { return std::abs(cv::contourArea(p)); }

void Synth::make_layout() {
  Rng rng(key(p_.seed, kTagLayout, 0, 0));
  const double cx = W_ / 2.0, cy = H_ / 2.0;
  // Tissue: an irregular rounded-square blob reaching tissue_fraction of the way to the edges.
  tissue_ = star_polygon(rng, cx, cy, p_.tissue_fraction * W_ / 2.0, p_.tissue_fraction * H_ / 2.0, 256, 0.08, 3.0);
  tissue_bb_ = bbox_of(tissue_);
  tissue_area_px_ = polygon_area(tissue_);

  // Necrosis: one side of the tumour cut off by a wavy line when extensive; else 1-3 separate irregular blobs.
  const double target = p_.necrosis_percent / 100.0 * tissue_area_px_;
  if (target > 0) {
    if (p_.necrosis_percent >= 20.0) {
      // Extensive necrosis: one side of the tumour, cut off by a wavy line (the viable rest is one block that can hold
      // the mitotic hotspot). The line's offset is found by bisection so that the area is the requested one.
      const double angle = rng.u(0, 2 * kPi), phase = rng.u(0, 2 * kPi);
      const double amp = um(60), wavelength = um(700);
      double lo = 1e30, hi = -1e30;
      for (const auto& q : tissue_) {
        const double v = q.x * std::cos(angle) + q.y * std::sin(angle);
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      Polygon poly;
      for (int it = 0; it < 60; ++it) {
        const double d = (lo + hi) / 2;
        poly = cut_polygon(tissue_, angle, d, amp, wavelength, phase);
        if ((poly.size() >= 3 ? polygon_area(poly) : 0.0) > target) lo = d; else hi = d;
      }
      if (poly.size() >= 3) necrosis_.push_back(poly);
    } else {
      const int k = 1 + static_cast<int>(rng.next() % 3);
      for (int b = 0; b < k; ++b) {
        const double area = target / k;
        Polygon unit = star_polygon(rng, 0, 0, 1.0, rng.u(0.6, 1.0), 96, 0.25);
        const double s = std::sqrt(area / polygon_area(unit));
        double rmax = 0;
        for (auto& q : unit) {
          q *= static_cast<float>(s);
          rmax = std::max(rmax, static_cast<double>(std::hypot(q.x, q.y)));
        }
        const double rot = rng.u(0, 2 * kPi);
        for (int attempt = 0; attempt < 2000; ++attempt) {
          const double x = rng.u(tissue_bb_.x0, tissue_bb_.x1), y = rng.u(tissue_bb_.y0, tissue_bb_.y1);
          if (tissue_dist(x, y) < rmax + um(30)) continue;
          bool clear = true;
          for (const auto& other : necrosis_) {
            const Bbox ob = bbox_of(other);
            const double ox = (ob.x0 + ob.x1) / 2, oy = (ob.y0 + ob.y1) / 2;
            const double orad = std::hypot(ob.x1 - ob.x0, ob.y1 - ob.y0) / 2;
            if (std::hypot(x - ox, y - oy) < rmax + orad + um(40)) clear = false;
          }
          if (!clear) continue;
          Polygon poly(unit.size());
          for (std::size_t i = 0; i < unit.size(); ++i) {
            const double ux = unit[i].x * std::cos(rot) - unit[i].y * std::sin(rot);
            const double uy = unit[i].x * std::sin(rot) + unit[i].y * std::cos(rot);
            poly[i] = cv::Point2f(static_cast<float>(x + ux), static_cast<float>(y + uy));
          }
          necrosis_.push_back(poly);
          break;
        }
      }
    }
  }
  for (const auto& poly : necrosis_) {
    necrosis_bb_.push_back(bbox_of(poly));
    necrosis_area_px_ += polygon_area(poly);
  }

  // Hotspot: the candidate disc (among 48) that holds the most viable tumour, estimated on 64 sample points.
  hot_r_ = um(p_.hotspot_diameter_mm * 1000.0) / 2.0;
  double best = -1;
  for (int c = 0; c < 48; ++c) {
    const double x = rng.u(tissue_bb_.x0, tissue_bb_.x1), y = rng.u(tissue_bb_.y0, tissue_bb_.y1);
    if (tissue_dist(x, y) <= 0) continue;
    Rng srng(key(p_.seed, kTagLayout, 1, c));
    int viable = 0;
    for (int sidx = 0; sidx < 64; ++sidx) {
      const double r = hot_r_ * std::sqrt(srng.u()), t = srng.u(0, 2 * kPi);
      const double sx = x + r * std::cos(t), sy = y + r * std::sin(t);
      if (tissue_dist(sx, sy) > 0 && necrosis_dist(sx, sy, 0) < 0) ++viable;
    }
    if (viable > best) {
      best = viable;
      hot_x_ = x;
      hot_y_ = y;
    }
  }
  if (best < 0) {
    hot_x_ = cx;
    hot_y_ = cy;
  }
}

Mitosis Synth::make_figure(Rng& rng, double x, double y) const {
  Mitosis m;
  m.x = x;
  m.y = y;
  const double w = rng.u();
  m.phase = w < 0.2 ? kProphase : w < 0.55 ? kMetaphase : w < 0.7 ? kAnaphase : w < 0.85 ? kTelophase : kAtypical;
  m.peak = static_cast<float>(rng.u(1.0, 1.2));
  const double phi = rng.u(0, kPi);
  const double c = std::cos(phi), s = std::sin(phi);
  // Rods in micrometres in the figure's frame (u along the spindle axis, v along the plate), rotated to the slide.
  auto rod = [&](double u1, double v1, double u2, double v2, double r) {
    m.rods.push_back(Rod{static_cast<float>(um(u1 * c - v1 * s)), static_cast<float>(um(u1 * s + v1 * c)),
                         static_cast<float>(um(u2 * c - v2 * s)), static_cast<float>(um(u2 * s + v2 * c)),
                         static_cast<float>(um(r))});
  };
  // A plate of chromosomes centred at u0: a dense core plus short arms sticking out (the "hairy" edge of a plate).
  auto plate = [&](double u0, double length, int arms) {
    rod(u0, -length * 0.4, u0, length * 0.4, rng.u(1.3, 1.7));
    for (int i = 0; i < arms; ++i) {
      const double v = rng.u(-length / 2, length / 2);
      const double uu = u0 + rng.normal() * 0.5;
      const double len = rng.u(1.0, 2.6), ang = rng.normal() * 0.5;
      rod(uu - len / 2 * std::cos(ang), v - len / 2 * std::sin(ang), uu + len / 2 * std::cos(ang),
          v + len / 2 * std::sin(ang), rng.u(0.45, 0.75));
    }
  };
  auto clump = [&](double u0, double v0, double radius, int n) {
    rod(u0, v0, u0 + 0.01, v0, radius * 0.65);
    for (int i = 0; i < n; ++i) {
      const double rr = radius * std::sqrt(rng.u()), t = rng.u(0, 2 * kPi);
      const double uu = u0 + rr * std::cos(t), vv = v0 + rr * std::sin(t);
      const double len = rng.u(0.8, 2.2), ang = rng.u(0, 2 * kPi);
      rod(uu, vv, uu + len * std::cos(ang), vv + len * std::sin(ang), rng.u(0.45, 0.8));
    }
  };
  double extent_um = 6;
  switch (m.phase) {
    case kMetaphase: {
      const double len = rng.u(8, 12);
      plate(0, len, 22);
      extent_um = len / 2 + 2;
      break;
    }
    case kAnaphase: {
      const double d = rng.u(5, 9) / 2, len = rng.u(7, 10);
      plate(-d, len, 14);
      plate(d, len, 14);
      extent_um = std::max(d + 2, len / 2 + 2);
      break;
    }
    case kTelophase: {
      const double d = rng.u(10, 15) / 2;
      clump(-d, 0, rng.u(2.2, 3.0), 9);
      clump(d, 0, rng.u(2.2, 3.0), 9);
      extent_um = d + 4;
      break;
    }
    case kProphase: {
      const double r = rng.u(3.5, 5.0);
      clump(0, 0, r, 26);
      extent_um = r + 2;
      break;
    }
    case kAtypical: {
      // Tripolar figure with lagging chromosomes.
      const double r = rng.u(3, 5);
      for (int k = 0; k < 3; ++k) {
        const double t = 2 * kPi * k / 3 + rng.normal() * 0.2;
        clump(r * std::cos(t), r * std::sin(t), rng.u(1.5, 2.2), 6);
      }
      for (int k = 0; k < 4; ++k) {
        const double rr = rng.u(0, r + 3), t = rng.u(0, 2 * kPi);
        rod(rr * std::cos(t), rr * std::sin(t), rr * std::cos(t) + 1.2, rr * std::sin(t) + 0.6, 0.55);
      }
      extent_um = r + 5;
      break;
    }
  }
  // The clear halo: the rounded-up mitotic cell's pale cytoplasm around the chromosomes.
  const double ha = extent_um + rng.u(1.5, 3.0), hb = std::max(ha * rng.u(0.75, 0.95), 6.0);
  m.halo_a = static_cast<float>(um(ha));
  m.halo_b = static_cast<float>(um(hb));
  m.halo_cs = static_cast<float>(c);
  m.halo_sn = static_cast<float>(s);
  m.ext = static_cast<float>(um(ha) + 2);
  return m;
}

void Synth::make_mitoses() {
  // A Poisson process: `hot` mitoses per 10 HPF inside the hotspot disc, `background` elsewhere, only in viable
  // tumour (thinning of the maximal-rate process), at least 25 um apart so that figures never overlap.
  const double window_mm2 = p_.hpf_fields * p_.hpf_area_mm2;
  const double px_mm2 = p_.mpp * p_.mpp * 1e-6;
  const double rate_hot = p_.hotspot_mitoses_per_10hpf / window_mm2 * px_mm2;
  const double rate_bg = p_.background_mitoses_per_10hpf / window_mm2 * px_mm2;
  const double rate_max = std::max(rate_hot, rate_bg);
  mitosis_cell_px_ = T_;
  if (rate_max <= 0) return;
  const double margin = um(18);
  const double min_sep = um(25);
  const std::int64_t nx = (W_ + T_ - 1) / T_, ny = (H_ + T_ - 1) / T_;
  auto cell_key = [](std::int64_t i, std::int64_t j) { return static_cast<std::uint64_t>(j) * 1000003ULL + static_cast<std::uint64_t>(i); };
  for (std::int64_t j = 0; j < ny; ++j) {
    for (std::int64_t i = 0; i < nx; ++i) {
      const double x0 = static_cast<double>(i * T_), y0 = static_cast<double>(j * T_);
      if (x0 > tissue_bb_.x1 || x0 + T_ < tissue_bb_.x0 || y0 > tissue_bb_.y1 || y0 + T_ < tissue_bb_.y0) continue;
      Rng rng(key(p_.seed, kTagMitoses, i, j));
      const int n = rng.poisson(rate_max * T_ * T_);
      for (int k = 0; k < n; ++k) {
        const double x = x0 + rng.u() * T_, y = y0 + rng.u() * T_;
        const double accept = rng.u();
        Rng frng(rng.next());
        if (x >= static_cast<double>(W_) || y >= static_cast<double>(H_)) continue;
        const double rate = in_hotspot(x, y) ? rate_hot : rate_bg;
        if (accept * rate_max >= rate) continue;
        if (tissue_dist(x, y) < margin) continue;
        if (necrosis_dist(x, y, margin + 1) > -margin) continue;
        bool clear = true;
        for (std::int64_t dj = -1; dj <= 1 && clear; ++dj)
          for (std::int64_t di = -1; di <= 1 && clear; ++di) {
            auto it = mitosis_cells_.find(cell_key(i + di, j + dj));
            if (it == mitosis_cells_.end()) continue;
            for (int idx : it->second)
              if (std::hypot(mitoses_[idx].x - x, mitoses_[idx].y - y) < min_sep) clear = false;
          }
        if (!clear) continue;
        mitosis_cells_[cell_key(i, j)].push_back(static_cast<int>(mitoses_.size()));
        mitoses_.push_back(make_figure(frng, x, y));
      }
    }
  }
  // Keep the index consistent after sorting by y (for the renderer's range queries).
  std::vector<int> order(mitoses_.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return mitoses_[a].y < mitoses_[b].y; });
  std::vector<Mitosis> sorted;
  std::vector<int> where(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) {
    where[order[i]] = static_cast<int>(i);
    sorted.push_back(std::move(mitoses_[order[i]]));
  }
  mitoses_ = std::move(sorted);
  for (auto& kv : mitosis_cells_)
    for (int& idx : kv.second) idx = where[idx];
}

std::vector<Nucleus> Synth::raw_cell(std::int64_t ci, std::int64_t cj) const {
  std::vector<Nucleus> out;
  const double x0 = static_cast<double>(ci * T_), y0 = static_cast<double>(cj * T_);
  if (ci < 0 || cj < 0 || x0 >= W_ || y0 >= H_) return out;
  if (x0 > tissue_bb_.x1 || x0 + T_ < tissue_bb_.x0 || y0 > tissue_bb_.y1 || y0 + T_ < tissue_bb_.y0) return out;
  const double cx = x0 + T_ / 2.0, cy = y0 + T_ / 2.0, half_diag = T_ * 0.7072;
  const double td = tissue_dist(cx, cy);
  if (td < -half_diag) return out;
  const bool all_tissue = td > half_diag + um(4);
  const double nd = necrosis_dist(cx, cy, half_diag + um(20));
  const bool no_necrosis = nd < -(half_diag + um(16));
  Rng rng(key(p_.seed, kTagNuclei, ci, cj));
  double cellularity = 0.55 + 0.9 * fbm(p_.seed, kTagField + 20, cx * p_.mpp, cy * p_.mpp, 180.0);
  if (in_hotspot(cx, cy)) cellularity *= 1.15;
  const double area_mm2 = T_ * T_ * p_.mpp * p_.mpp * 1e-6;
  // More candidates than the target density: the hard-core thinning in make_cell() removes about a third.
  const int n = rng.poisson(1.45 * p_.nuclei_per_mm2 * area_mm2 * cellularity);
  for (int k = 0; k < n; ++k) {
    Nucleus nu;
    nu.x = x0 + rng.u() * T_;
    nu.y = y0 + rng.u() * T_;
    const double kr = rng.u();
    double major, minor, angle;
    if (kr < p_.lymphocyte_fraction) {
      nu.kind = kLymphocyte;
      major = minor = rng.u(5.5, 7.0);
      angle = 0;
      nu.peak = static_cast<float>(rng.u(0.58, 0.7));
    } else if (rng.u() < p_.spindle_fraction) {
      nu.kind = kSpindle;
      major = rng.u(14, 24);
      minor = rng.u(3.0, 4.8);
      angle = orientation(nu.x, nu.y) + rng.normal() * 0.12;
      nu.peak = static_cast<float>(rng.u(0.48, 0.66));
    } else if (rng.u() < p_.pleomorphic_fraction) {
      nu.kind = kPleomorphic;
      major = rng.u(11, 20);
      minor = major * rng.u(0.6, 0.9);
      angle = rng.u(0, kPi);
      nu.peak = static_cast<float>(rng.u(0.5, 0.64));
      nu.h2c = static_cast<float>(rng.u(-0.12, 0.12));
      nu.h2s = static_cast<float>(rng.u(-0.12, 0.12));
      nu.h3c = static_cast<float>(rng.u(-0.1, 0.1));
      nu.h3s = static_cast<float>(rng.u(-0.1, 0.1));
    } else {
      nu.kind = kRound;
      major = rng.u(7, 11);
      minor = major * rng.u(0.75, 0.95);
      angle = rng.u(0, kPi);
      nu.peak = static_cast<float>(rng.u(0.42, 0.58));
      if (rng.u() < 0.6) nu.nucleolus = static_cast<float>(um(rng.u(0.6, 1.0)));
    }
    const double extra = rng.u();  // used by necrotic objects below
    nu.priority = static_cast<float>(rng.u());
    nu.a = static_cast<float>(um(major / 2));
    nu.b = static_cast<float>(um(minor / 2));
    angle = std::fmod(angle, kPi);
    if (angle < 0) angle += kPi;
    nu.angle = static_cast<float>(angle);
    nu.cs = static_cast<float>(std::cos(angle));
    nu.sn = static_cast<float>(std::sin(angle));
    nu.ext = nu.a * (nu.kind == kPleomorphic ? 1.3f : 1.0f) + 2.0f;
    if (nu.x >= W_ || nu.y >= H_) continue;
    if (!all_tissue && tissue_dist(nu.x, nu.y) < nu.ext * 0.5) continue;
    if (!no_necrosis) {
      const double d = necrosis_dist(nu.x, nu.y, nu.ext + um(12));
      if (d > um(3)) {
        // Inside necrosis: no intact nucleus; a ghost outline of the dead cell, or karyorrhectic dust.
        if (extra < 0.6) {
          // The dead cell's eosinophilic body and outline, with a pale smudge where its nucleus was.
          Nucleus g = nu;
          g.kind = kGhost;
          g.a = static_cast<float>(um(rng.u(5, 8)));
          g.b = g.a * static_cast<float>(rng.u(0.7, 0.95));
          g.peak = 0.045f;
          g.nucleolus = static_cast<float>(um(rng.u(2.0, 3.5)));
          g.h2c = static_cast<float>(rng.u(0.08, 0.17));
          g.ext = g.a + 2;
          out.push_back(g);
        } else if (extra < 0.85) {
          const int dots = 1 + static_cast<int>(rng.next() % 4);
          for (int q = 0; q < dots; ++q) {
            Nucleus dd;
            dd.kind = kDust;
            dd.x = nu.x + um(rng.normal() * 2.0);
            dd.y = nu.y + um(rng.normal() * 2.0);
            dd.a = dd.b = static_cast<float>(um(rng.u(0.35, 0.9)));
            dd.peak = static_cast<float>(rng.u(0.6, 0.95));
            dd.ext = dd.a + 2;
            if (necrosis_dist(dd.x, dd.y, um(10)) > um(2)) out.push_back(dd);
          }
        }
        continue;
      }
      if (d > -(nu.ext + um(2))) continue;  // intact nuclei keep clear of the necrosis border
    }
    bool clear = true;
    // Keep the mitotic figures' halos free of other nuclei.
    const auto mi = static_cast<std::int64_t>(nu.x / mitosis_cell_px_), mj = static_cast<std::int64_t>(nu.y / mitosis_cell_px_);
    for (std::int64_t dj = -1; dj <= 1 && clear; ++dj)
      for (std::int64_t di = -1; di <= 1 && clear; ++di) {
        auto it = mitosis_cells_.find(static_cast<std::uint64_t>(mj + dj) * 1000003ULL + static_cast<std::uint64_t>(mi + di));
        if (it == mitosis_cells_.end()) continue;
        for (int idx : it->second) {
          const Mitosis& m = mitoses_[idx];
          if (std::hypot(m.x - nu.x, m.y - nu.y) < m.halo_a + nu.ext * 0.6) clear = false;
        }
      }
    if (!clear) continue;
    out.push_back(nu);
  }
  return out;
}

const std::vector<Nucleus>& Synth::cached_raw_cell(std::int64_t ci, std::int64_t cj) const {
  const std::uint64_t k = (static_cast<std::uint64_t>(cj + 1) << 32) | static_cast<std::uint64_t>(ci + 1);
  auto it = raw_cache_.find(k);
  if (it == raw_cache_.end()) it = raw_cache_.emplace(k, raw_cell(ci, cj)).first;
  return it->second;
}

void Synth::evict_raw_rows_before(std::int64_t cj) const {
  for (auto it = raw_cache_.begin(); it != raw_cache_.end();) {
    if (static_cast<std::int64_t>(it->first >> 32) - 1 < cj) it = raw_cache_.erase(it); else ++it;
  }
}

// Radius of a nucleus's outline in the direction (ux, uy) (unit vector), as an ellipse.
double radius_towards(const Nucleus& n, double ux, double uy) {
  const double c = ux * n.cs + uy * n.sn, s = -ux * n.sn + uy * n.cs;
  const double a = n.a * (n.kind == kPleomorphic ? 1.12 : 1.0), b = n.b;
  return a * b / std::sqrt(b * b * c * c + a * a * s * s);
}

std::vector<Nucleus> Synth::make_cell(std::int64_t ci, std::int64_t cj) const {
  // Hard-core thinning (Matern type II): a nucleus is dropped when it overlaps one of higher priority among the
  // candidates of its own and the eight neighbouring cells. Sections cut nuclei apart rather than stacking them, and
  // the rule depends only on the candidates, so every cell gives the same answer whichever tile asks.
  const std::vector<Nucleus>& own = cached_raw_cell(ci, cj);
  std::vector<Nucleus> out;
  if (own.empty()) return out;
  std::vector<const std::vector<Nucleus>*> near;
  for (std::int64_t dj = -1; dj <= 1; ++dj)
    for (std::int64_t di = -1; di <= 1; ++di) near.push_back(&cached_raw_cell(ci + di, cj + dj));
  for (std::size_t i = 0; i < own.size(); ++i) {
    const Nucleus& a = own[i];
    bool keep = true;
    if (a.kind < kGhost) {
      for (std::size_t c = 0; c < near.size() && keep; ++c)
        for (std::size_t j = 0; j < near[c]->size(); ++j) {
          const Nucleus& b = (*near[c])[j];
          if (b.kind >= kGhost || &b == &a) continue;
          if (b.priority < a.priority || (b.priority == a.priority && &b < &a)) continue;
          const double dx = b.x - a.x, dy = b.y - a.y;
          const double reach = a.ext + b.ext;
          if (dx * dx + dy * dy > reach * reach) continue;
          const double d = std::sqrt(dx * dx + dy * dy) + 1e-9;
          if (d < 0.95 * (radius_towards(a, dx / d, dy / d) + radius_towards(b, -dx / d, -dy / d))) {
            keep = false;
            break;
          }
        }
    }
    if (keep) out.push_back(a);
  }
  return out;
}

// Bilinear upsampling of a grid of values sampled every g px, on the global lattice starting g px before the tile
// (n x n samples), to an S x S map whose first pixel sits `margin` px before the tile. Neighbouring tiles sample the
// same lattice points, so fields are continuous across tiles.
void upsample_grid(const float* grid, int n, int g, int margin, int S, float* out) {
  const float inv = 1.0f / static_cast<float>(g);
  const float off = static_cast<float>(g - margin) + 0.5f;
  std::vector<float> row(static_cast<std::size_t>(n));
  for (int y = 0; y < S; ++y) {
    const float fy = (static_cast<float>(y) + off) * inv;
    const int j = std::clamp(static_cast<int>(fy), 0, n - 2);
    const float ty = fy - static_cast<float>(j);
    for (int i = 0; i < n; ++i) row[i] = grid[j * n + i] * (1 - ty) + grid[(j + 1) * n + i] * ty;
    float* o = out + static_cast<std::size_t>(y) * S;
    for (int x = 0; x < S; ++x) {
      const float fx = (static_cast<float>(x) + off) * inv;
      const int i = std::clamp(static_cast<int>(fx), 0, n - 2);
      const float tx = fx - static_cast<float>(i);
      o[x] = row[i] * (1 - tx) + row[i + 1] * tx;
    }
  }
}

void Synth::render_tile(std::int64_t tx, std::int64_t ty, const std::vector<const std::vector<Nucleus>*>& cells,
                        cv::Mat& rgb) {
  const int T = T_, M = kMargin, S = T_ + 2 * kMargin;
  // The working area is the tile plus a margin, so that the optical blur at the end is seamless across tiles.
  const std::int64_t ox = tx - M, oy = ty - M;
  const double cx = tx + T / 2.0, cy = ty + T / 2.0, half_diag = S * 0.7072;
  const double td = tissue_dist(cx, cy);
  const float bg_od = 0.028f;  // clean glass, slightly grey
  auto to_rgb = [&](std::size_t t, float H, float E, float a, std::uint8_t* px) {
    const float noise = tex_.pixel[t] * 0.010f;
    for (int c = 0; c < 3; ++c) {
      const float od = bg_od + a * (H * h_[c] + E * e_[c]) + noise;
      const int idx = std::clamp(static_cast<int>(od * static_cast<float>(kLutScale)), 0, static_cast<int>(lut_.size()) - 1);
      px[c] = lut_[static_cast<std::size_t>(idx)];
    }
  };
  auto tex_index = [&](int x, int y) {  // x, y relative to the working area's origin
    return static_cast<std::size_t>(((oy + y) & (TEX - 1)) * TEX + ((ox + x) & (TEX - 1)));
  };
  if (td < -half_diag - 2) {
    for (int y = 0; y < T; ++y) {
      auto* row = rgb.ptr<std::uint8_t>(y);
      for (int x = 0; x < T; ++x) to_rgb(tex_index(x + M, y + M), 0, 0, 0, row + 3 * x);
    }
    return;
  }
  // Masks: tissue (anti-aliased polygon fill) and necrosis.
  const bool full_tissue = td > half_diag + 2;
  auto fill = [&](cv::Mat& mask, const Polygon& poly) {
    std::vector<cv::Point> pts(poly.size());
    for (std::size_t i = 0; i < poly.size(); ++i)
      pts[i] = cv::Point(static_cast<int>(std::lround((poly[i].x - static_cast<float>(ox)) * 16.0f - 8.0f)),
                         static_cast<int>(std::lround((poly[i].y - static_cast<float>(oy)) * 16.0f - 8.0f)));
    cv::fillPoly(mask, std::vector<std::vector<cv::Point>>{pts}, cv::Scalar(255), cv::LINE_AA, 4);
  };
  tissue_mask_.create(S, S, CV_8U);
  if (full_tissue) {
    tissue_mask_.setTo(255);
  } else {
    tissue_mask_.setTo(0);
    fill(tissue_mask_, tissue_);
  }
  necrosis_mask_.create(S, S, CV_8U);
  necrosis_mask_.setTo(0);
  bool any_necrosis = false;
  for (std::size_t i = 0; i < necrosis_.size(); ++i) {
    const Bbox& b = necrosis_bb_[i];
    if (b.x1 < ox || b.x0 > ox + S || b.y1 < oy || b.y0 > oy + S) continue;
    const double d = cv::pointPolygonTest(necrosis_[i], cv::Point2f(static_cast<float>(cx), static_cast<float>(cy)), true);
    if (d < -half_diag - 2) continue;
    any_necrosis = true;
    if (d > half_diag + 2) {
      necrosis_mask_.setTo(255);
      break;
    }
    fill(necrosis_mask_, necrosis_[i]);
  }

  // Smooth fields on a coarse lattice: fascicle orientation (as a fibre-bank index), eosin and hematoxylin levels.
  const int g = T / 8, n = 11;  // lattice points tx - g .. tx + T + 2g cover the margin
  const std::size_t nn = static_cast<std::size_t>(n * n);
  grid_.resize(nn * 3);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i) {
      const double x = static_cast<double>(tx + (i - 1) * g), y = static_cast<double>(ty + (j - 1) * g);
      const double xu = x * p_.mpp, yu = y * p_.mpp;
      const std::size_t k = static_cast<std::size_t>(j * n + i);
      grid_[k] = static_cast<float>(orientation(x, y) / kPi * NORI);
      grid_[k + nn] = static_cast<float>(0.17 + 0.14 * fbm(p_.seed, kTagField + 30, xu, yu, 150.0));
      grid_[k + 2 * nn] = static_cast<float>(0.012 + 0.035 * fbm(p_.seed, kTagField + 40, xu, yu, 120.0));
    }
  upsample_grid(grid_.data(), n, g, M, S, ori_.data());
  upsample_grid(grid_.data() + nn, n, g, M, S, e0_.data());
  upsample_grid(grid_.data() + 2 * nn, n, g, M, S, h0_.data());

  // Background: fibrillar eosinophilic stroma/cytoplasm with retraction clefts; pale granular necrosis.
  for (int y = 0; y < S; ++y) {
    const std::uint8_t* nm = necrosis_mask_.ptr<std::uint8_t>(y);
    for (int x = 0; x < S; ++x) {
      const std::size_t i = static_cast<std::size_t>(y) * S + x;
      const std::size_t t = tex_index(x, y);
      const float o = ori_[i];
      const float fo = std::floor(o);
      const float f = o - fo;
      int k = static_cast<int>(fo) % NORI;
      if (k < 0) k += NORI;
      const int k2 = (k + 1) % NORI;
      const float fib = tex_.fibre[static_cast<std::size_t>(k)][t] * (1 - f) + tex_.fibre[static_cast<std::size_t>(k2)][t] * f;
      const float mot = tex_.mottle[t];
      float E = e0_[i] * (1.0f + 0.10f * fib + 0.16f * mot + 0.07f * tex_.chromatin[t]);
      float H = h0_[i] * (1.0f + 0.35f * mot) + 0.008f * fib;
      const float gap = std::clamp((-fib - 1.8f) * 1.5f, 0.0f, 1.0f);  // white clefts between fibres
      E *= 1.0f - 0.8f * gap;
      H *= 1.0f - 0.8f * gap;
      if (any_necrosis && nm[x]) {
        const float w = nm[x] * (1.0f / 255.0f);
        const float ch = tex_.chromatin[t];
        const float En = 0.16f * (1.0f + 0.22f * mot + 0.12f * ch + 0.06f * fib);
        const float Hn = 0.025f * (1.0f + 0.3f * mot) + 0.006f * ch;
        const float hole = std::clamp((-mot - 1.5f) * 1.5f, 0.0f, 1.0f) * 0.8f;  // lysed, empty spaces
        E = E * (1 - w) + En * (1 - hole) * w;
        H = H * (1 - w) + Hn * (1 - hole) * w;
      }
      E_map_[i] = std::max(E, 0.0f);
      H_map_[i] = std::max(H, 0.0f);
    }
  }

  // Object bounds in working-area pixels.
  struct Span {
    int x0, x1, y0, y1;
  };
  auto span = [&](double x, double y, double ext) {
    return Span{std::max(0, static_cast<int>(std::floor(x - ext - static_cast<double>(ox)))),
                std::min(S, static_cast<int>(std::ceil(x + ext - static_cast<double>(ox)))),
                std::max(0, static_cast<int>(std::floor(y - ext - static_cast<double>(oy)))),
                std::min(S, static_cast<int>(std::ceil(y + ext - static_cast<double>(oy))))};
  };

  // Mitoses touching the working area (sorted by y).
  std::vector<const Mitosis*> mits;
  {
    const double reach = um(30) + M;
    auto it = std::lower_bound(mitoses_.begin(), mitoses_.end(), static_cast<double>(ty) - reach,
                               [](const Mitosis& m, double v) { return m.y < v; });
    for (; it != mitoses_.end() && it->y < static_cast<double>(ty + T) + reach; ++it)
      if (it->x + it->ext >= ox && it->x - it->ext <= ox + S && it->y + it->ext >= oy && it->y - it->ext <= oy + S)
        mits.push_back(&*it);
  }
  // Halos first: the rounded-up mitotic cell's pale cytoplasm replaces the stroma around the figure.
  for (const Mitosis* m : mits) {
    const Span sp = span(m->x, m->y, m->ext);
    for (int y = sp.y0; y < sp.y1; ++y)
      for (int x = sp.x0; x < sp.x1; ++x) {
        const float dx = static_cast<float>(ox + x + 0.5 - m->x), dy = static_cast<float>(oy + y + 0.5 - m->y);
        const float u = (dx * m->halo_cs + dy * m->halo_sn) / m->halo_a, v = (-dx * m->halo_sn + dy * m->halo_cs) / m->halo_b;
        const float q = u * u + v * v;
        if (q >= 1.0f) continue;
        float w = std::clamp((1.0f - q) * 2.5f, 0.0f, 1.0f);
        w = w * w * (3 - 2 * w);
        const std::size_t i = static_cast<std::size_t>(y) * S + x;
        H_map_[i] = H_map_[i] * (1.0f - 0.35f * w) + 0.02f * w;
        E_map_[i] = E_map_[i] * (1.0f - 0.4f * w) + 0.05f * w;
      }
  }

  // Nuclei and necrotic debris.
  for (const auto* cell : cells) {
    for (const Nucleus& nu : *cell) {
      if (nu.x + nu.ext < ox || nu.x - nu.ext > ox + S || nu.y + nu.ext < oy || nu.y - nu.ext > oy + S) continue;
      const Span sp = span(nu.x, nu.y, nu.ext);
      const float ia = 1.0f / nu.a, ib = 1.0f / nu.b;
      const float edge = std::max(nu.b * 0.5f, 0.5f);  // ~1 px anti-aliased rim in the normalised distance
      for (int y = sp.y0; y < sp.y1; ++y) {
        const float dy = static_cast<float>(oy + y + 0.5 - nu.y);
        for (int x = sp.x0; x < sp.x1; ++x) {
          const float dx = static_cast<float>(ox + x + 0.5 - nu.x);
          const float u = (dx * nu.cs + dy * nu.sn) * ia, v = (-dx * nu.sn + dy * nu.cs) * ib;
          const std::size_t i = static_cast<std::size_t>(y) * S + x;
          float q;
          switch (nu.kind) {
            case kSpindle: {
              // Blunt-ended "cigar": a superellipse with exponent 4 along the major axis.
              const float u2 = u * u;
              q = u2 * u2 + v * v;
              break;
            }
            case kPleomorphic: {
              const float r2 = u * u + v * v;
              if (r2 > 2.0f) continue;
              const float r = std::sqrt(r2) + 1e-6f;
              const float c1 = u / r, s1 = v / r;
              const float c2 = c1 * c1 - s1 * s1, s2 = 2 * c1 * s1;
              const float c3 = c1 * (4 * c1 * c1 - 3), s3 = s1 * (3 - 4 * s1 * s1);
              const float rad = 1.0f + nu.h2c * c2 + nu.h2s * s2 + nu.h3c * c3 + nu.h3s * s3;
              q = r2 / (rad * rad);
              break;
            }
            default:
              q = u * u + v * v;
          }
          if (nu.kind == kGhost) {
            // Ghost outline: a faint rim and an eosinophilic body, no chromatin.
            if (q > 1.3f) continue;
            const float dq = std::sqrt(q) - 1.0f;
            H_map_[i] += nu.peak * std::exp(-dq * dq * 60.0f);
            if (q < 1.0f) E_map_[i] += 0.09f;
            const float r2 = (dx * dx + dy * dy) / (nu.nucleolus * nu.nucleolus);
            if (r2 < 1.0f) H_map_[i] = std::max(H_map_[i], nu.h2c * std::min(1.0f, (1.0f - r2) * 2.0f));
            continue;
          }
          if (q >= 1.0f) continue;
          const float alpha = std::min(1.0f, (1.0f - q) * edge);
          const float ch = std::clamp(tex_.chromatin[tex_index(x, y)], -1.5f, 1.5f);
          float val;
          switch (nu.kind) {
            case kSpindle: val = nu.peak * (0.9f + 0.12f * q + 0.12f * ch); break;
            case kRound: {
              // Vesicular: darker membrane, lighter centre, a nucleolus.
              val = nu.peak * (0.8f + 0.3f * q + 0.16f * ch);
              if (nu.nucleolus > 0) {
                const float ddx = dx + nu.a * 0.2f, ddy = dy - nu.b * 0.15f;
                if (ddx * ddx + ddy * ddy < nu.nucleolus * nu.nucleolus) val += 0.25f;
              }
              break;
            }
            case kPleomorphic: val = nu.peak * (0.9f + 0.1f * q + 0.08f * ch); break;
            case kLymphocyte: val = nu.peak * (0.97f + 0.06f * q + 0.04f * ch); break;
            default: val = nu.peak;  // dust
          }
          H_map_[i] = std::max(H_map_[i], val * alpha + H_map_[i] * (1 - alpha));
          E_map_[i] *= 1.0f - 0.15f * alpha;
        }
      }
    }
  }

  // Mitotic figures: union of chromosome rods, darker than any nucleus.
  for (const Mitosis* m : mits) {
    const Span sp = span(m->x, m->y, m->ext);
    for (int y = sp.y0; y < sp.y1; ++y)
      for (int x = sp.x0; x < sp.x1; ++x) {
        const float px = static_cast<float>(ox + x + 0.5 - m->x), py = static_cast<float>(oy + y + 0.5 - m->y);
        float best = 1e9f;
        for (const Rod& r : m->rods) {
          const float vx = r.x2 - r.x1, vy = r.y2 - r.y1;
          const float wx = px - r.x1, wy = py - r.y1;
          const float l2 = vx * vx + vy * vy;
          const float t = l2 > 0 ? std::clamp((wx * vx + wy * vy) / l2, 0.0f, 1.0f) : 0.0f;
          const float ex = wx - t * vx, ey = wy - t * vy;
          best = std::min(best, std::sqrt(ex * ex + ey * ey) - r.r);
        }
        // A soft edge (~2 px): condensed chromatin is fuzzy at the scanner's resolution.
        const float alpha = std::clamp((0.8f - best) * 0.6f, 0.0f, 1.0f);
        if (alpha <= 0) continue;
        const std::size_t i = static_cast<std::size_t>(y) * S + x;
        const float ch = std::clamp(tex_.chromatin[tex_index(x, y)], -1.0f, 1.0f);
        const float val = m->peak * (0.93f + 0.07f * ch);
        H_map_[i] = val * alpha + H_map_[i] * (1 - alpha);
        E_map_[i] = E_map_[i] * (1 - alpha) + 0.3f * alpha;
      }
  }

  // The scanner's optical blur, then Beer-Lambert: OD = c_H h + c_E e (+ glass), RGB = 255 10^-OD.
  cv::Mat Hm(S, S, CV_32F, H_map_.data()), Em(S, S, CV_32F, E_map_.data());
  cv::GaussianBlur(Hm, Hm, cv::Size(5, 5), blur_px_, blur_px_, cv::BORDER_REPLICATE);
  cv::GaussianBlur(Em, Em, cv::Size(5, 5), blur_px_, blur_px_, cv::BORDER_REPLICATE);
  for (int y = 0; y < T; ++y) {
    auto* row = rgb.ptr<std::uint8_t>(y);
    const std::uint8_t* tm = tissue_mask_.ptr<std::uint8_t>(y + M) + M;
    for (int x = 0; x < T; ++x) {
      const std::size_t i = static_cast<std::size_t>(y + M) * S + x + M;
      to_rgb(tex_index(x + M, y + M), H_map_[i], E_map_[i], tm[x] * (1.0f / 255.0f), row + 3 * x);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Truth JSON helpers.
nlohmann::json polygon_json(const Polygon& p) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& q : p) a.push_back({std::round(q.x * 10.0) / 10.0, std::round(q.y * 10.0) / 10.0});
  return a;
}

int score_mitoses(int count) { return count >= 20 ? 3 : count >= 10 ? 2 : 1; }
int score_necrosis(double percent) { return percent <= 0.0 ? 0 : percent < 50.0 ? 1 : 2; }

SynthSummary Synth::run(const fs::path& slide_path, const fs::path& truth_path, const SynthProgress& progress) {
  SynthSummary sum;
  sum.width_px = W_;
  sum.height_px = H_;
  sum.tissue_area_mm2 = tissue_area_px_ * p_.mpp * p_.mpp * 1e-6;
  sum.necrosis_percent = tissue_area_px_ > 0 ? 100.0 * necrosis_area_px_ / tissue_area_px_ : 0.0;
  sum.mitoses = static_cast<std::int64_t>(mitoses_.size());

  // The densest 10-HPF window.
  const double window_mm2 = p_.hpf_fields * p_.hpf_area_mm2;
  const auto side = static_cast<std::int64_t>(std::llround(std::sqrt(window_mm2) * 1000.0 / p_.mpp));
  std::vector<std::pair<double, double>> pts;
  for (const auto& m : mitoses_) pts.emplace_back(m.x, m.y);
  nlohmann::json hotspot;
  if (W_ >= side && H_ >= side) {
    const HotspotWindow hw = brute_force_hotspot(pts, W_, H_, side);
    sum.hotspot_count = hw.count;
    hotspot = {{"count", hw.count},
               {"window", {{"x", hw.x}, {"y", hw.y}, {"width", side}, {"height", side}}},
               {"hpf_area_mm2", p_.hpf_area_mm2},
               {"fields", p_.hpf_fields},
               {"scaled", false}};
  } else {
    // The slide cannot hold a full window: the window is the tissue's bounding box and the count is scaled to 10 HPF.
    const auto bx = static_cast<std::int64_t>(std::max(0.0f, std::floor(tissue_bb_.x0)));
    const auto by = static_cast<std::int64_t>(std::max(0.0f, std::floor(tissue_bb_.y0)));
    const auto bw = std::min(W_, static_cast<std::int64_t>(std::ceil(tissue_bb_.x1)) + 1) - bx;
    const auto bh = std::min(H_, static_cast<std::int64_t>(std::ceil(tissue_bb_.y1)) + 1) - by;
    int raw = 0;
    for (const auto& q : pts)
      if (q.first >= bx && q.first < bx + bw && q.second >= by && q.second < by + bh) ++raw;
    const double area_mm2 = static_cast<double>(bw) * static_cast<double>(bh) * p_.mpp * p_.mpp * 1e-6;
    sum.hotspot_count = static_cast<int>(std::lround(raw * window_mm2 / area_mm2));
    hotspot = {{"count", sum.hotspot_count},
               {"window", {{"x", bx}, {"y", by}, {"width", bw}, {"height", bh}}},
               {"hpf_area_mm2", p_.hpf_area_mm2},
               {"fields", p_.hpf_fields},
               {"scaled", true},
               {"raw_count", raw},
               {"window_area_mm2", area_mm2},
               {"note", "the slide is smaller than a 10-HPF window: the window is the tissue's bounding box and the "
                        "count is scaled to 10 HPF"}};
  }
  sum.mitosis_score = score_mitoses(sum.hotspot_count);
  sum.necrosis_score = score_necrosis(sum.necrosis_percent);

  // Outputs go to temporary names beside the targets and are renamed at the end.
  std::random_device rd;
  const std::string tag = std::to_string(rd());
  const fs::path tmp_slide = slide_path.parent_path() / (".tmp-" + tag + "-" + slide_path.filename().string());
  const fs::path tmp_truth = truth_path.parent_path() / (".tmp-" + tag + "-" + truth_path.filename().string());
  struct Cleanup {
    std::vector<fs::path> paths;
    ~Cleanup() {
      for (const auto& p : paths) {
        std::error_code ec;
        fs::remove(p, ec);
      }
    }
  } cleanup{{tmp_slide, tmp_truth}};

  std::vector<char> iobuf(1 << 20);  // outlives the FILE that uses it
  std::FILE* tf = std::fopen(tmp_truth.c_str(), "wb");
  if (!tf) throw Error(ErrorCode::io, truth_path.string() + ": cannot create the truth file");
  struct FileCloser {
    std::FILE*& f;
    ~FileCloser() {
      if (f) std::fclose(f);
    }
  } closer{tf};
  std::setvbuf(tf, iobuf.data(), _IOFBF, iobuf.size());

  nlohmann::json params = {{"width_px", W_},
                           {"height_px", H_},
                           {"mpp", p_.mpp},
                           {"seed", p_.seed},
                           {"hotspot_mitoses_per_10hpf", p_.hotspot_mitoses_per_10hpf},
                           {"background_mitoses_per_10hpf", p_.background_mitoses_per_10hpf},
                           {"hotspot_diameter_mm", p_.hotspot_diameter_mm},
                           {"hpf_area_mm2", p_.hpf_area_mm2},
                           {"hpf_fields", p_.hpf_fields},
                           {"necrosis_percent", p_.necrosis_percent},
                           {"spindle_fraction", p_.spindle_fraction},
                           {"pleomorphic_fraction", p_.pleomorphic_fraction},
                           {"lymphocyte_fraction", p_.lymphocyte_fraction},
                           {"nuclei_per_mm2", p_.nuclei_per_mm2},
                           {"tissue_fraction", p_.tissue_fraction},
                           {"stains", {{"hematoxylin", p_.stains.hematoxylin}, {"eosin", p_.stains.eosin}}},
                           {"tile_px", p_.tile_px},
                           {"jpeg_quality", p_.jpeg_quality}};
  std::string head = "{\"width\":" + std::to_string(W_) + ",\"height\":" + std::to_string(H_) +
                     ",\"mpp\":" + nlohmann::json(p_.mpp).dump() + ",\"seed\":" + std::to_string(p_.seed) +
                     ",\"generator\":\"grade-synth\",\"params\":" + params.dump() + ",\n\"nuclei\":[";
  std::fputs(head.c_str(), tf);

  // Level-0 tiles, row by row; cell rows r-1, r, r+1 are kept (a nucleus never reaches beyond its neighbour cells).
  const int app_mag = p_.mpp <= 0.3 ? 40 : p_.mpp <= 0.6 ? 20 : 10;
  char desc[256];
  std::snprintf(desc, sizeof desc,
                "Aperio Image Library v10.0 \n%" PRId64 "x%" PRId64 " -> %" PRId64 "x%" PRId64
                " - |AppMag = %d|MPP = %.6g|Generator = grade-synth|Seed = %" PRIu64,
                W_, H_, W_, H_, app_mag, p_.mpp, p_.seed);
  PyramidTiffWriter writer(tmp_slide, W_, H_, T_, p_.jpeg_quality, p_.mpp, desc);
  sum.levels = writer.levels();
  const std::int64_t ncols = (W_ + T_ - 1) / T_, nrows = (H_ + T_ - 1) / T_;
  std::deque<std::vector<std::vector<Nucleus>>> rows;  // cell rows r-1, r, r+1
  auto make_row = [&](std::int64_t r) {
    std::vector<std::vector<Nucleus>> row(static_cast<std::size_t>(ncols));
    for (std::int64_t c = 0; c < ncols; ++c) row[static_cast<std::size_t>(c)] = make_cell(c, r);
    evict_raw_rows_before(r - 1);
    return row;
  };
  rows.push_back(make_row(-1));
  rows.push_back(make_row(0));
  cv::Mat rgb(T_, T_, CV_8UC3);
  std::vector<const std::vector<Nucleus>*> cells;
  const std::vector<Nucleus> empty;
  bool first = true;
  char line[320];
  for (std::int64_t r = 0; r < nrows; ++r) {
    rows.push_back(make_row(r + 1 < nrows ? r + 1 : -1));
    // Truth: the nuclei whose cells are in this row.
    for (const auto& cell : rows[1])
      for (const Nucleus& nu : cell) {
        if (nu.kind >= kGhost) continue;
        double ang = nu.angle * 180.0 / kPi;
        if (ang >= 180.0) ang -= 180.0;
        const int len = std::snprintf(
            line, sizeof line,
            "%s{\"x\":%.1f,\"y\":%.1f,\"major_um\":%.2f,\"minor_um\":%.2f,\"angle_deg\":%.1f,\"spindle\":%s,\"kind\":\"%s\"}",
            first ? "\n" : ",\n", nu.x, nu.y, 2.0 * nu.a * p_.mpp, 2.0 * nu.b * p_.mpp, ang,
            nu.kind == kSpindle ? "true" : "false", kind_name(nu.kind));
        std::fwrite(line, 1, static_cast<std::size_t>(len), tf);
        first = false;
        ++sum.nuclei;
      }
    for (std::int64_t c = 0; c < ncols; ++c) {
      cells.clear();
      for (int dr = 0; dr < 3; ++dr)
        for (std::int64_t dc = -1; dc <= 1; ++dc) {
          const std::int64_t cc = c + dc;
          cells.push_back(cc >= 0 && cc < ncols ? &rows[static_cast<std::size_t>(dr)][static_cast<std::size_t>(cc)] : &empty);
        }
      render_tile(c * T_, r * T_, cells, rgb);
      writer.write_tile(static_cast<int>(c), static_cast<int>(r), rgb);
    }
    rows.pop_front();
    if (progress) progress(static_cast<double>(r + 1) / static_cast<double>(nrows) * 0.97);
  }
  writer.finish();

  // The rest of the truth.
  std::string tail = "\n],\n\"mitoses\":[";
  for (std::size_t i = 0; i < mitoses_.size(); ++i) {
    const Mitosis& m = mitoses_[i];
    std::snprintf(line, sizeof line, "%s{\"x\":%.1f,\"y\":%.1f,\"phase\":\"%s\",\"in_hotspot_disc\":%s}", i ? ",\n" : "\n",
                  m.x, m.y, phase_name(m.phase), in_hotspot(m.x, m.y) ? "true" : "false");
    tail += line;
  }
  nlohmann::json tissue_polys = nlohmann::json::array({polygon_json(tissue_)});
  nlohmann::json necrosis_polys = nlohmann::json::array();
  for (const auto& poly : necrosis_) necrosis_polys.push_back(polygon_json(poly));
  nlohmann::json rest = {
      {"tissue_polygons", tissue_polys},
      {"necrosis_polygons", necrosis_polys},
      {"hotspot", hotspot},
      {"hotspot_disc", {{"x", hot_x_}, {"y", hot_y_}, {"radius", hot_r_}}},
      {"necrosis_percent", sum.necrosis_percent},
      {"tissue_area_mm2", sum.tissue_area_mm2},
      {"necrotic_area_mm2", necrosis_area_px_ * p_.mpp * p_.mpp * 1e-6},
      {"mitosis_score", sum.mitosis_score},
      {"necrosis_score", sum.necrosis_score},
      {"nuclei_count", sum.nuclei},
      {"mitoses_count", sum.mitoses},
      {"levels", sum.levels}};
  tail += "\n]";
  for (auto it = rest.begin(); it != rest.end(); ++it) tail += ",\n" + nlohmann::json(it.key()).dump() + ":" + it.value().dump();
  tail += "\n}\n";
  std::fwrite(tail.data(), 1, tail.size(), tf);
  const bool write_failed = std::fflush(tf) != 0 || std::ferror(tf);
  std::fclose(tf);
  tf = nullptr;
  if (write_failed) throw Error(ErrorCode::io, truth_path.string() + ": cannot write the truth file");

  std::error_code ec;
  fs::rename(tmp_slide, slide_path, ec);
  if (ec) throw Error(ErrorCode::io, slide_path.string() + ": cannot write (" + ec.message() + ")");
  fs::rename(tmp_truth, truth_path, ec);
  if (ec) {
    fs::remove(slide_path, ec);
    throw Error(ErrorCode::io, truth_path.string() + ": cannot write (" + ec.message() + ")");
  }
  if (progress) progress(1.0);
  return sum;
}

}  // namespace

void validate(const SynthParams& p) {
  auto bad = [](const std::string& what, const std::string& value, const std::string& range) {
    throw Error(ErrorCode::invalid_argument, "grade-synth: " + what + " must be " + range + ", got " + value);
  };
  auto num = [](double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  };
  if (p.width_px < 64 || p.width_px > 2'000'000) bad("width_px", std::to_string(p.width_px), "in [64, 2000000]");
  if (p.height_px < 64 || p.height_px > 2'000'000) bad("height_px", std::to_string(p.height_px), "in [64, 2000000]");
  if (!(p.mpp >= 0.1 && p.mpp <= 2.0)) bad("mpp", num(p.mpp), "in [0.1, 2] um/px");
  if (!(p.hotspot_mitoses_per_10hpf >= 0 && p.hotspot_mitoses_per_10hpf <= 500))
    bad("hotspot_mitoses_per_10hpf", num(p.hotspot_mitoses_per_10hpf), "in [0, 500]");
  if (!(p.background_mitoses_per_10hpf >= 0 && p.background_mitoses_per_10hpf <= 500))
    bad("background_mitoses_per_10hpf", num(p.background_mitoses_per_10hpf), "in [0, 500]");
  if (!(p.hotspot_diameter_mm > 0 && p.hotspot_diameter_mm <= 100)) bad("hotspot_diameter_mm", num(p.hotspot_diameter_mm), "in (0, 100]");
  if (!(p.hpf_area_mm2 > 0 && p.hpf_area_mm2 <= 10)) bad("hpf_area_mm2", num(p.hpf_area_mm2), "in (0, 10]");
  if (p.hpf_fields < 1 || p.hpf_fields > 100) bad("hpf_fields", std::to_string(p.hpf_fields), "in [1, 100]");
  if (!(p.necrosis_percent >= 0 && p.necrosis_percent <= 80)) bad("necrosis_percent", num(p.necrosis_percent), "in [0, 80]");
  if (!(p.spindle_fraction >= 0 && p.spindle_fraction <= 1)) bad("spindle_fraction", num(p.spindle_fraction), "in [0, 1]");
  if (!(p.pleomorphic_fraction >= 0 && p.pleomorphic_fraction <= 1)) bad("pleomorphic_fraction", num(p.pleomorphic_fraction), "in [0, 1]");
  if (!(p.lymphocyte_fraction >= 0 && p.lymphocyte_fraction <= 1)) bad("lymphocyte_fraction", num(p.lymphocyte_fraction), "in [0, 1]");
  if (!(p.nuclei_per_mm2 >= 0 && p.nuclei_per_mm2 <= 20000)) bad("nuclei_per_mm2", num(p.nuclei_per_mm2), "in [0, 20000]");
  if (!(p.tissue_fraction >= 0.3 && p.tissue_fraction <= 1.0)) bad("tissue_fraction", num(p.tissue_fraction), "in [0.3, 1]");
  if (p.tile_px < 128 || p.tile_px > 1024 || p.tile_px % 16 != 0) bad("tile_px", std::to_string(p.tile_px), "a multiple of 16 in [128, 1024]");
  if (p.jpeg_quality < 1 || p.jpeg_quality > 100) bad("jpeg_quality", std::to_string(p.jpeg_quality), "in [1, 100]");
  for (const auto* v : {&p.stains.hematoxylin, &p.stains.eosin}) {
    const double n = std::sqrt((*v)[0] * (*v)[0] + (*v)[1] * (*v)[1] + (*v)[2] * (*v)[2]);
    if (!(std::abs(n - 1.0) < 1e-3) || (*v)[0] < 0 || (*v)[1] < 0 || (*v)[2] < 0)
      bad("stains", "a vector of norm " + num(n), "unit optical-density vectors with non-negative components");
  }
}

HotspotWindow brute_force_hotspot(const std::vector<std::pair<double, double>>& points, std::int64_t width_px,
                                  std::int64_t height_px, std::int64_t side_px) {
  HotspotWindow best;
  best.side_px = side_px;
  if (side_px <= 0 || width_px < side_px || height_px < side_px) return best;
  const std::int64_t max_x = width_px - side_px, max_y = height_px - side_px;
  auto candidates = [&](bool use_x, std::int64_t max_v) {
    std::vector<std::int64_t> v;
    for (std::int64_t g = 0; g <= max_v; g += 32) v.push_back(g);
    v.push_back(max_v);
    for (const auto& q : points) {
      // A best window can be slid until a point sits on its first row/column (f) or on its last (f - side + 1);
      // the latter gives the smallest coordinate, which the tie rule asks for.
      const auto f = static_cast<std::int64_t>(std::floor(use_x ? q.first : q.second));
      v.push_back(std::clamp<std::int64_t>(f, 0, max_v));
      v.push_back(std::clamp<std::int64_t>(f - side_px + 1, 0, max_v));
    }
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
  };
  const auto xs = candidates(true, max_x), ys = candidates(false, max_y);
  best.count = -1;
  std::vector<double> in_row;
  for (const std::int64_t y : ys) {
    in_row.clear();
    for (const auto& q : points)
      if (q.second >= static_cast<double>(y) && q.second < static_cast<double>(y + side_px)) in_row.push_back(q.first);
    std::sort(in_row.begin(), in_row.end());
    std::size_t lo = 0, hi = 0;
    for (const std::int64_t x : xs) {
      while (lo < in_row.size() && in_row[lo] < static_cast<double>(x)) ++lo;
      if (hi < lo) hi = lo;
      while (hi < in_row.size() && in_row[hi] < static_cast<double>(x + side_px)) ++hi;
      const int count = static_cast<int>(hi - lo);
      if (count > best.count) {
        best.count = count;
        best.x = x;
        best.y = y;
      }
    }
  }
  return best;
}

SynthSummary synthesize_slide(const SynthParams& params, const fs::path& slide_path, const fs::path& truth_path,
                              const SynthProgress& progress) {
  validate(params);
  for (const auto* p : {&slide_path, &truth_path}) {
    const fs::path dir = p->parent_path().empty() ? fs::path(".") : p->parent_path();
    if (!fs::is_directory(dir)) throw Error(ErrorCode::io, p->string() + ": the directory " + dir.string() + " does not exist");
  }
  if (fs::absolute(slide_path) == fs::absolute(truth_path))
    throw Error(ErrorCode::invalid_argument, slide_path.string() + ": the slide and the truth must be different files");
  Synth synth(params);
  return synth.run(slide_path, truth_path, progress);
}

}  // namespace grade
