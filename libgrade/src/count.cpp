// The mitotic count over the best 10-HPF window (see count.hpp for the definition and the method).
#include "grade/count.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>

#include <boost/math/special_functions/gamma.hpp>

#include "grade/error.hpp"
#include "grade/fnclcc.hpp"

namespace grade {

namespace detail {
namespace {

// Segment tree over x leaves: range add, global max, leftmost leaf holding the max.
class MaxTree {
 public:
  explicit MaxTree(std::size_t n, std::int64_t init) : n_(n), mx_(4 * n + 4, init), lz_(4 * n + 4, 0) {}
  void add(std::size_t l, std::size_t r, std::int64_t v) { add(1, 0, n_ - 1, l, r, v); }
  std::int64_t max() const { return mx_[1]; }
  std::size_t leftmost_max() {
    std::size_t node = 1, lo = 0, hi = n_ - 1;
    while (lo != hi) {
      push(node);
      const std::size_t mid = (lo + hi) / 2;
      if (mx_[2 * node] == mx_[node]) {
        node = 2 * node;
        hi = mid;
      } else {
        node = 2 * node + 1;
        lo = mid + 1;
      }
    }
    return lo;
  }

 private:
  void push(std::size_t node) {
    if (lz_[node] != 0) {
      for (std::size_t c : {2 * node, 2 * node + 1}) {
        mx_[c] += lz_[node];
        lz_[c] += lz_[node];
      }
      lz_[node] = 0;
    }
  }
  void add(std::size_t node, std::size_t lo, std::size_t hi, std::size_t l, std::size_t r, std::int64_t v) {
    if (r < lo || hi < l) return;
    if (l <= lo && hi <= r) {
      mx_[node] += v;
      lz_[node] += v;
      return;
    }
    push(node);
    const std::size_t mid = (lo + hi) / 2;
    add(2 * node, lo, mid, l, r, v);
    add(2 * node + 1, mid + 1, hi, l, r, v);
    mx_[node] = std::max(mx_[2 * node], mx_[2 * node + 1]);
  }
  std::size_t n_;
  std::vector<std::int64_t> mx_, lz_;
};

struct Point {
  std::int64_t x, y;  // floor of the detection's level-0 coordinates
};

struct Best {
  std::int64_t count = -1;
  std::int64_t x = 0, y = 0;
};

// Window positions are integers in [xlo, xhi] x [ylo, yhi]; the window is w x h. A point p is inside the window at x
// iff x <= p.x < x + w (p.x integer-floored: same for real coordinates), i.e. x in [p.x - w + 1, p.x].
// col(x) / row(y) give the region pixel under the window's centre.
struct Sweep {
  const cv::Mat& mask;
  double ds;
  std::int64_t x0, y0, w, h, xlo, xhi, ylo, yhi;

  std::int64_t col(std::int64_t x) const {
    return static_cast<std::int64_t>(std::floor((static_cast<double>(x) + 0.5 * static_cast<double>(w) -
                                                 static_cast<double>(x0)) / ds));
  }
  std::int64_t row(std::int64_t y) const {
    return static_cast<std::int64_t>(std::floor((static_cast<double>(y) + 0.5 * static_cast<double>(h) -
                                                 static_cast<double>(y0)) / ds));
  }
  // Smallest integer v in [lo, hi + 1] with f(v) >= target (f non-decreasing).
  template <class F>
  static std::int64_t first_at_least(F f, std::int64_t target, std::int64_t lo, std::int64_t hi) {
    while (lo < hi + 1) {
      const std::int64_t mid = lo + (hi + 1 - lo) / 2;
      if (f(mid) >= target)
        hi = mid - 1;
      else
        lo = mid + 1;
    }
    return lo;
  }

  Best run(const std::vector<Point>& pts, bool centre_rule) const {
    constexpr std::int64_t kInvalid = std::int64_t{1} << 40;
    // x breakpoints: where a point enters or leaves, and where the centre moves to another mask column.
    std::vector<std::int64_t> bp{xlo, xhi + 1};
    bp.reserve(2 * pts.size() + 2);
    for (const auto& p : pts) {
      const std::int64_t a = std::max(p.x - w + 1, xlo), b = std::min(p.x, xhi);
      if (a <= b) {
        bp.push_back(a);
        bp.push_back(b + 1);
      }
    }
    const std::int64_t c_first = col(xlo), c_last = col(xhi);
    if (centre_rule)
      for (std::int64_t c = c_first + 1; c <= c_last; ++c)
        bp.push_back(first_at_least([this](std::int64_t x) { return col(x); }, c, xlo, xhi));
    std::sort(bp.begin(), bp.end());
    bp.erase(std::unique(bp.begin(), bp.end()), bp.end());
    const std::size_t leaves = bp.size() - 1;  // leaf k = [bp[k], bp[k+1])
    auto leaf_of = [&](std::int64_t x) {
      return static_cast<std::size_t>(std::upper_bound(bp.begin(), bp.end(), x) - bp.begin() - 1);
    };

    // Mask columns under the window centre, each with its leaf range.
    const std::int64_t cols = mask.cols;
    struct ColRange {
      std::int64_t col;
      std::size_t first, last;
    };
    std::vector<ColRange> col_ranges;
    if (centre_rule) {
      for (std::size_t k = 0; k < leaves; ++k) {
        const std::int64_t c = col(bp[k]);
        if (c < 0 || c >= cols) continue;
        if (!col_ranges.empty() && col_ranges.back().col == c)
          col_ranges.back().last = k;
        else
          col_ranges.push_back({c, k, k});
      }
    }
    std::vector<char> valid(col_ranges.size(), 0);
    MaxTree tree(leaves, centre_rule ? -kInvalid : 0);

    // y events: a point enters at max(p.y - h + 1, ylo) and leaves at p.y + 1.
    struct Event {
      std::int64_t y;
      std::size_t l, r;
      int delta;
    };
    std::vector<Event> events;
    events.reserve(2 * pts.size());
    std::vector<std::int64_t> ys{ylo};
    for (const auto& p : pts) {
      const std::int64_t a = std::max(p.x - w + 1, xlo), b = std::min(p.x, xhi);
      const std::int64_t ya = std::max(p.y - h + 1, ylo), yb = std::min(p.y, yhi);
      if (a > b || ya > yb) continue;
      const std::size_t l = leaf_of(a), r = leaf_of(b);
      events.push_back({ya, l, r, +1});
      ys.push_back(ya);
      if (yb + 1 <= yhi) {
        events.push_back({yb + 1, l, r, -1});
        ys.push_back(yb + 1);
      }
    }
    if (centre_rule)
      for (std::int64_t rr = row(ylo) + 1; rr <= row(yhi); ++rr)
        ys.push_back(first_at_least([this](std::int64_t y) { return row(y); }, rr, ylo, yhi));
    std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) { return a.y < b.y; });
    std::sort(ys.begin(), ys.end());
    ys.erase(std::unique(ys.begin(), ys.end()), ys.end());

    Best best;
    std::size_t e = 0;
    std::int64_t current_row = std::numeric_limits<std::int64_t>::min();
    for (std::int64_t y : ys) {
      if (y > yhi) break;
      for (; e < events.size() && events[e].y <= y; ++e) tree.add(events[e].l, events[e].r, events[e].delta);
      if (centre_rule) {
        const std::int64_t r = row(y);
        if (r != current_row) {
          current_row = r;
          for (std::size_t k = 0; k < col_ranges.size(); ++k) {
            const char now = (r >= 0 && r < mask.rows && mask.at<std::uint8_t>(static_cast<int>(r),
                                                                               static_cast<int>(col_ranges[k].col)) != 0)
                                 ? 1
                                 : 0;
            if (now != valid[k]) {
              tree.add(col_ranges[k].first, col_ranges[k].last, now ? kInvalid : -kInvalid);
              valid[k] = now;
            }
          }
        }
      }
      const std::int64_t m = tree.max();
      if (m >= 0 && m > best.count) {
        best.count = m;
        best.y = y;
        best.x = bp[tree.leftmost_max()];
      }
    }
    return best;
  }
};

}  // namespace
}  // namespace detail

HpfParams HpfParams::from_field_diameter_mm(double diameter_mm, int fields) {
  if (!(diameter_mm > 0.0) || !std::isfinite(diameter_mm))
    throw Error(ErrorCode::invalid_argument, "count: field diameter must be > 0 mm, got " + std::to_string(diameter_mm));
  if (fields < 1) throw Error(ErrorCode::invalid_argument, "count: fields must be >= 1, got " + std::to_string(fields));
  HpfParams p;
  p.hpf_area_mm2 = std::numbers::pi * 0.25 * diameter_mm * diameter_mm;
  p.fields = fields;
  return p;
}

std::int64_t hpf_window_side_px(const HpfParams& hpf, double mpp0) {
  if (!(hpf.hpf_area_mm2 > 0.0) || !std::isfinite(hpf.hpf_area_mm2))
    throw Error(ErrorCode::invalid_argument, "count: hpf_area_mm2 must be > 0, got " + std::to_string(hpf.hpf_area_mm2));
  if (hpf.fields < 1)
    throw Error(ErrorCode::invalid_argument, "count: fields must be >= 1, got " + std::to_string(hpf.fields));
  if (!(mpp0 > 0.0) || !std::isfinite(mpp0))
    throw Error(ErrorCode::invalid_argument, "count: mpp0 must be > 0 um/px, got " + std::to_string(mpp0));
  const double side_um = std::sqrt(hpf.fields * hpf.hpf_area_mm2) * 1000.0;
  return std::max<std::int64_t>(1, std::llround(side_um / mpp0));
}

void poisson_ci95(int count, double& low, double& high) {
  if (count < 0) throw Error(ErrorCode::invalid_argument, "count: Poisson count must be >= 0, got " + std::to_string(count));
  // Garwood (1936): chi-square quantiles chi2(0.025; 2k)/2 and chi2(0.975; 2k+2)/2, i.e. gamma quantiles.
  low = count == 0 ? 0.0 : boost::math::gamma_p_inv(static_cast<double>(count), 0.025);
  high = boost::math::gamma_p_inv(static_cast<double>(count) + 1.0, 0.975);
}

MitoticCount count_mitoses(const std::vector<MitosisDetection>& detections, const cv::Mat& region, double region_ds,
                           std::int64_t region_x0, std::int64_t region_y0, double mpp0, const HpfParams& hpf,
                           const Rect64& bounds) {
  if (region.empty() || region.type() != CV_8UC1)
    throw Error(ErrorCode::invalid_argument, "count: the region mask must be a non-empty CV_8U image, got type " +
                                                 std::to_string(region.type()) + " (" + std::to_string(region.cols) +
                                                 "x" + std::to_string(region.rows) + ")");
  if (!(region_ds > 0.0) || !std::isfinite(region_ds))
    throw Error(ErrorCode::invalid_argument, "count: region downsample must be > 0, got " + std::to_string(region_ds));
  const std::int64_t side = hpf_window_side_px(hpf, mpp0);  // also checks hpf and mpp0

  MitoticCount r;
  r.hpf_area_mm2 = hpf.hpf_area_mm2;
  r.fields = hpf.fields;
  const double px_mm2 = mpp0 * mpp0 * 1e-6;

  // The region's bounding box, in mask pixels and in level-0 pixels.
  int i0 = region.rows, i1 = -1, j0 = region.cols, j1 = -1;
  std::int64_t on = 0;
  for (int i = 0; i < region.rows; ++i) {
    const auto* row = region.ptr<std::uint8_t>(i);
    for (int j = 0; j < region.cols; ++j)
      if (row[j]) {
        ++on;
        i0 = std::min(i0, i);
        i1 = std::max(i1, i);
        j0 = std::min(j0, j);
        j1 = std::max(j1, j);
      }
  }
  r.region_area_mm2 = static_cast<double>(on) * region_ds * region_ds * px_mm2;
  std::int64_t bx = 0, by = 0, bw = 0, bh = 0;
  if (on > 0) {
    bx = region_x0 + static_cast<std::int64_t>(std::floor(j0 * region_ds));
    by = region_y0 + static_cast<std::int64_t>(std::floor(i0 * region_ds));
    std::int64_t bx1 = region_x0 + static_cast<std::int64_t>(std::ceil((j1 + 1) * region_ds));
    std::int64_t by1 = region_y0 + static_cast<std::int64_t>(std::ceil((i1 + 1) * region_ds));
    if (bounds.width > 0 && bounds.height > 0) {
      bx = std::max(bx, bounds.x);
      by = std::max(by, bounds.y);
      bx1 = std::min(bx1, bounds.x + bounds.width);
      by1 = std::min(by1, bounds.y + bounds.height);
    }
    bw = std::max<std::int64_t>(0, bx1 - bx);
    bh = std::max<std::int64_t>(0, by1 - by);
  }
  if (bw == 0 || bh == 0) {
    r.score = mitosis_score(0);
    poisson_ci95(0, r.ci95_low, r.ci95_high);
    return r;
  }

  // Detections inside the region.
  std::vector<detail::Point> pts;
  pts.reserve(detections.size());
  for (const auto& d : detections) {
    if (!std::isfinite(d.x) || !std::isfinite(d.y))
      throw Error(ErrorCode::invalid_argument, "count: detection coordinates must be finite, got (" +
                                                   std::to_string(d.x) + ", " + std::to_string(d.y) + ")");
    const double j = std::floor((d.x - static_cast<double>(region_x0)) / region_ds);
    const double i = std::floor((d.y - static_cast<double>(region_y0)) / region_ds);
    if (j < 0 || i < 0 || j >= region.cols || i >= region.rows) continue;
    if (!region.at<std::uint8_t>(static_cast<int>(i), static_cast<int>(j))) continue;
    pts.push_back({static_cast<std::int64_t>(std::floor(d.x)), static_cast<std::int64_t>(std::floor(d.y))});
  }
  r.total_detected = static_cast<int>(pts.size());

  const std::int64_t w = std::min(side, bw), h = std::min(side, bh);
  detail::Sweep sweep{region, region_ds, region_x0, region_y0, w, h, bx, bx + bw - w, by, by + bh - h};
  detail::Best best = sweep.run(pts, true);
  if (best.count < 0) {
    r.centre_rule_relaxed = true;
    best = sweep.run(pts, false);
  }

  r.raw_count = static_cast<int>(best.count);
  r.window = Rect64{best.x, best.y, w, h};
  r.window_area_mm2 = static_cast<double>(w) * static_cast<double>(h) * px_mm2;
  r.scaled = (w < side || h < side);
  r.scale = r.scaled ? static_cast<double>(side) * static_cast<double>(side) / (static_cast<double>(w) * static_cast<double>(h))
                     : 1.0;
  r.count = r.scaled ? static_cast<int>(std::llround(r.raw_count * r.scale)) : r.raw_count;
  r.per_mm2 = r.raw_count / r.window_area_mm2;
  poisson_ci95(r.raw_count, r.ci95_low, r.ci95_high);
  r.ci95_low *= r.scale;
  r.ci95_high *= r.scale;
  r.score = mitosis_score(r.count);
  return r;
}

}  // namespace grade
