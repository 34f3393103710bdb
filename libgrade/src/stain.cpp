// Stain estimation (Macenko et al., ISBI 2009) and colour deconvolution (Ruifrok & Johnston 2001).
#include "grade/stain.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <string>
#include <vector>

#include <Eigen/Dense>

#include "grade/error.hpp"
#include "stain_detail.hpp"

namespace grade {

namespace detail {

const std::array<float, 256>& od_lut() {
  // Optical density of one 8-bit channel: -ln((I + 1) / 256). The +1 keeps black finite; white gives ~0.
  static const std::array<float, 256> lut = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = static_cast<float>(-std::log((i + 1.0) / 256.0));
    return t;
  }();
  return lut;
}

double angle_deg(const std::array<double, 3>& a, const std::array<double, 3>& b) {
  const double dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const double na = std::sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2]);
  const double nb = std::sqrt(b[0] * b[0] + b[1] * b[1] + b[2] * b[2]);
  if (na <= 0.0 || nb <= 0.0) return 180.0;
  return std::acos(std::clamp(dot / (na * nb), -1.0, 1.0)) * 180.0 / std::numbers::pi;
}

std::array<std::array<float, 3>, 2> unmixing_rows(const StainVectors& s) {
  // Stain matrix rows: H, E, and a third "residual" vector orthogonal to both (Ruifrok & Johnston's completion), so
  // the matrix is invertible; the residual channel is discarded.
  Eigen::Vector3d h(s.hematoxylin[0], s.hematoxylin[1], s.hematoxylin[2]);
  Eigen::Vector3d e(s.eosin[0], s.eosin[1], s.eosin[2]);
  Eigen::Vector3d r = h.cross(e);
  if (r.norm() < 1e-9) throw Error(ErrorCode::invalid_argument, "deconvolve: the hematoxylin and eosin vectors are parallel");
  r.normalize();
  Eigen::Matrix3d m;  // OD (row vector) = C (row vector) * m
  m.row(0) = h.transpose();
  m.row(1) = e.transpose();
  m.row(2) = r.transpose();
  const Eigen::Matrix3d inv = m.inverse();  // C = OD * inv
  std::array<std::array<float, 3>, 2> out{};
  for (int k = 0; k < 2; ++k)
    for (int c = 0; c < 3; ++c) out[k][c] = static_cast<float>(inv(c, k));
  return out;
}

}  // namespace detail

StainVectors standard_stains() {
  // Ruifrok & Johnston 2001, H&E optical-density vectors (R, G, B), normalised to unit length.
  auto unit = [](std::array<double, 3> v) {
    const double n = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    return std::array<double, 3>{v[0] / n, v[1] / n, v[2] / n};
  };
  return {unit({0.650, 0.704, 0.286}), unit({0.072, 0.990, 0.105})};
}

namespace {

// Bounds the work on large inputs: at most this many pixels enter the estimate (a fixed stride, so deterministic).
constexpr std::int64_t kMaxSamples = 2'000'000;
// An estimate further than this from the standard vectors, or with H and E closer than kMinSeparationDeg, is treated
// as implausible (a stain other than H&E, a colour cast, or too little of one stain).
constexpr double kMaxDeviationDeg = 35.0;
constexpr double kMinSeparationDeg = 10.0;

StainEstimate fallback(std::int64_t used, std::string why) {
  StainEstimate e;
  e.vectors = standard_stains();
  e.fallback = true;
  e.warning = std::move(why);
  e.pixels_used = used;
  return e;
}

}  // namespace

StainEstimate estimate_stains(const ImageView& image, const StainParams& params, const cv::Mat& mask) {
  check_view(image, "estimate_stains", false);
  if (!(params.od_threshold >= 0.0))
    throw Error(ErrorCode::invalid_argument, "estimate_stains: od_threshold must be >= 0, got " + std::to_string(params.od_threshold));
  if (!(params.angle_percentile >= 0.0 && params.angle_percentile < 50.0))
    throw Error(ErrorCode::invalid_argument,
                "estimate_stains: angle_percentile must be in [0, 50), got " + std::to_string(params.angle_percentile));
  if (!mask.empty() && (mask.type() != CV_8UC1 || mask.size() != image.rgb.size()))
    throw Error(ErrorCode::invalid_argument, "estimate_stains: mask must be CV_8U of the image's size (" +
                                                 std::to_string(image.rgb.cols) + "x" + std::to_string(image.rgb.rows) + ")");
  const auto& lut = detail::od_lut();
  const cv::Mat& rgb = image.rgb;
  const std::int64_t total = static_cast<std::int64_t>(rgb.total());
  const std::int64_t stride = std::max<std::int64_t>(1, (total + kMaxSamples - 1) / kMaxSamples);
  const float thr = static_cast<float>(params.od_threshold);

  // Pass 1: OD of the retained pixels (tissue: at least one channel above the threshold; not saturated black).
  std::vector<std::array<float, 3>> od;
  od.reserve(static_cast<std::size_t>(std::min<std::int64_t>(total / stride + 1, kMaxSamples + 1)));
  for (std::int64_t i = 0; i < total; i += stride) {
    const int y = static_cast<int>(i / rgb.cols), x = static_cast<int>(i % rgb.cols);
    if (!mask.empty() && mask.at<uchar>(y, x) == 0) continue;
    const cv::Vec3b p = rgb.at<cv::Vec3b>(y, x);
    const std::array<float, 3> v{lut[p[0]], lut[p[1]], lut[p[2]]};
    if (v[0] < thr && v[1] < thr && v[2] < thr) continue;
    od.push_back(v);
  }
  const auto n = static_cast<std::int64_t>(od.size());
  if (n < params.min_pixels)
    return fallback(n, "too few tissue pixels for a stain estimate (" + std::to_string(n) + " < " +
                           std::to_string(params.min_pixels) + "); standard H&E vectors used");

  // Covariance of OD; its two leading eigenvectors span the plane that holds both stain vectors.
  Eigen::Vector3d mean = Eigen::Vector3d::Zero();
  for (const auto& v : od) mean += Eigen::Vector3d(v[0], v[1], v[2]);
  mean /= static_cast<double>(n);
  Eigen::Matrix3d cov = Eigen::Matrix3d::Zero();
  for (const auto& v : od) {
    const Eigen::Vector3d d = Eigen::Vector3d(v[0], v[1], v[2]) - mean;
    cov += d * d.transpose();
  }
  cov /= static_cast<double>(std::max<std::int64_t>(1, n - 1));
  const Eigen::SelfAdjointEigenSolver<Eigen::Matrix3d> eig(cov);
  if (eig.info() != Eigen::Success) return fallback(n, "stain eigen-decomposition failed; standard H&E vectors used");
  Eigen::Vector3d e1 = eig.eigenvectors().col(2), e2 = eig.eigenvectors().col(1);
  // Orient the plane's axes so that tissue OD projects positively on the first and the angles are well defined.
  if (e1.dot(mean) < 0) e1 = -e1;
  if (e2.dot(Eigen::Vector3d(1.0, -1.0, 0.0)) < 0) e2 = -e2;

  std::vector<double> phi(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < od.size(); ++i) {
    const Eigen::Vector3d v(od[i][0], od[i][1], od[i][2]);
    phi[i] = std::atan2(v.dot(e2), v.dot(e1));
  }
  auto percentile = [&](double p) {
    std::vector<double> tmp = phi;
    const auto k = static_cast<std::size_t>(std::clamp(p / 100.0 * static_cast<double>(n - 1), 0.0, static_cast<double>(n - 1)));
    std::nth_element(tmp.begin(), tmp.begin() + static_cast<std::ptrdiff_t>(k), tmp.end());
    return tmp[k];
  };
  const double lo = percentile(params.angle_percentile), hi = percentile(100.0 - params.angle_percentile);
  Eigen::Vector3d va = e1 * std::cos(lo) + e2 * std::sin(lo);
  Eigen::Vector3d vb = e1 * std::cos(hi) + e2 * std::sin(hi);
  va.normalize();
  vb.normalize();
  if (va.sum() < 0) va = -va;
  if (vb.sum() < 0) vb = -vb;
  // Hematoxylin absorbs more red than eosin does.
  if (va[0] < vb[0]) std::swap(va, vb);

  StainEstimate est;
  est.pixels_used = n;
  est.vectors.hematoxylin = {va[0], va[1], va[2]};
  est.vectors.eosin = {vb[0], vb[1], vb[2]};
  const StainVectors std_v = standard_stains();
  const double dh = detail::angle_deg(est.vectors.hematoxylin, std_v.hematoxylin);
  const double de = detail::angle_deg(est.vectors.eosin, std_v.eosin);
  const double sep = detail::angle_deg(est.vectors.hematoxylin, est.vectors.eosin);
  const double min_comp = std::min({va.minCoeff(), vb.minCoeff()});
  if (dh > kMaxDeviationDeg || de > kMaxDeviationDeg || sep < kMinSeparationDeg || min_comp < -0.05) {
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "implausible stain estimate (H %.1f deg and E %.1f deg from standard, %.1f deg apart); standard H&E "
                  "vectors used",
                  dh, de, sep);
    return fallback(n, buf);
  }
  for (auto* v : {&est.vectors.hematoxylin, &est.vectors.eosin})
    for (double& c : *v) c = std::max(c, 0.0);
  return est;
}

StainDensities deconvolve(const ImageView& image, const StainVectors& stains) {
  check_view(image, "deconvolve", false);
  const auto rows = detail::unmixing_rows(stains);
  const auto& lut = detail::od_lut();
  // Per-channel tables: the stain density is a linear function of the three channel ODs.
  std::array<std::array<float, 256>, 3> th{}, te{};
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 256; ++i) {
      th[c][i] = rows[0][c] * lut[i];
      te[c][i] = rows[1][c] * lut[i];
    }
  StainDensities out;
  out.hematoxylin.create(image.rgb.size(), CV_32F);
  out.eosin.create(image.rgb.size(), CV_32F);
  for (int y = 0; y < image.rgb.rows; ++y) {
    const auto* p = image.rgb.ptr<cv::Vec3b>(y);
    auto* h = out.hematoxylin.ptr<float>(y);
    auto* e = out.eosin.ptr<float>(y);
    for (int x = 0; x < image.rgb.cols; ++x) {
      const cv::Vec3b v = p[x];
      // Negative densities are noise around zero stain; clipping them (as scikit-image does) keeps means meaningful.
      h[x] = std::max(0.0f, th[0][v[0]] + th[1][v[1]] + th[2][v[2]]);
      e[x] = std::max(0.0f, te[0][v[0]] + te[1][v[1]] + te[2][v[2]]);
    }
  }
  return out;
}

}  // namespace grade
