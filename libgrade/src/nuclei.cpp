// Nucleus instance segmentation: network (foreground, normalised distance, spindle) + marker-controlled watershed,
// then per-nucleus features and the spindle rule. See grade/nuclei.hpp for the method and its references.
#include "grade/nuclei.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <numbers>
#include <optional>
#include <queue>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <opencv2/dnn.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "direct_unet.hpp"
#include "models.hpp"
#include "net_pool.hpp"

GRADE_DECLARE_MODEL(nuclei_unet)
GRADE_DECLARE_MODEL(nuclei_unet_accurate)

namespace grade {

namespace {

thread_local std::vector<unsigned char> t_model_override;
thread_local detail::NucleiEngine t_engine = detail::NucleiEngine::best;

// A nucleus network: its pool of OpenCV dnn networks and, where it can run them, the same network on our own kernels
// (built once, from one of the pool's networks, on first use).
struct NucleiModel {
  detail::NetPool pool;
  mutable std::once_flag direct_once;
  mutable std::unique_ptr<const detail::DirectUnet> direct;
  const detail::DirectUnet* direct_unet() const {
    std::call_once(direct_once, [this] {
      const detail::NetPool::Lease lease(pool);
      direct = detail::DirectUnet::from(*lease.net);
    });
    return direct.get();
  }
  // What runs it for the calling thread (detail::set_thread_nuclei_engine): the direct network with this instruction
  // set, or OpenCV dnn when `direct` is null. The one place that decides, for predict and nuclei_engine_name alike.
  struct Runner {
    const detail::DirectUnet* direct = nullptr;
    detail::DirectUnet::Isa isa = detail::DirectUnet::Isa::avx2;
  };
  Runner runner() const {
    using Isa = detail::DirectUnet::Isa;
    if (t_engine == detail::NucleiEngine::opencv) return {};
    const bool avx512 = t_engine == detail::NucleiEngine::best && detail::DirectUnet::cpu_isa() == Isa::avx512;
    return {direct_unet(), avx512 ? Isa::avx512 : Isa::avx2};
  }
};

// The networks: one per embedded model (shared by all threads, kept for the life of the process so a new worker
// thread or the next slide reuses a loaded network and its buffers; loaded on first use), and a per-thread one for a
// model set by detail::set_thread_nuclei_model.
const NucleiModel& nuclei_model(NucleiNetwork network) {
  auto make = [](std::vector<unsigned char> bytes) {
    auto p = std::make_unique<NucleiModel>();
    p->pool.bytes = std::move(bytes);
    p->pool.what = "nuclei: the segmentation network";
    return p;
  };
  if (t_model_override.empty()) {
    if (network == NucleiNetwork::accurate) {
      static const std::unique_ptr<NucleiModel> accurate = make(GRADE_MODEL_BYTES(nuclei_unet_accurate));
      return *accurate;
    }
    static const std::unique_ptr<NucleiModel> fast = make(GRADE_MODEL_BYTES(nuclei_unet));
    return *fast;
  }
  thread_local std::unique_ptr<NucleiModel> custom;
  if (!custom || custom->pool.bytes != t_model_override) custom = make(t_model_override);
  return *custom;
}

// A 1 x C x H x W blob's plane c (a header on its data, no copy).
cv::Mat plane(const cv::Mat& blob, int c) {
  return cv::Mat(blob.size[2], blob.size[3], CV_32F, const_cast<float*>(blob.ptr<float>(0, c)));
}

// Test-time flips: the network's logits for `blob` (`first`, already computed) averaged with those of flips - 1
// copies of it: mirrored left-right, up-down, both, then (flips = 8) the same of its transpose. Each copy's outputs
// are turned back before they are added: planes mirrored and transposed back, and the offset maps' sign and axis
// restored (in the copy's frame a left-right mirror negates the horizontal offset, whose logit is that of
// (offset + 1) / 2, and an up-down one the vertical; a transpose then swaps the two maps).
template <class Run>
cv::Mat average_flips(const Run& run, const cv::Mat& blob, const cv::Mat& first, int flips) {
  thread_local cv::Mat copy, sum, turned;
  const int h = blob.size[2], w = blob.size[3], nc = first.size[1];
  first.copyTo(sum);
  for (int t = 1; t < flips; ++t) {
    const bool transpose = t >= 4, lr = (t & 1) != 0, ud = (t & 2) != 0;
    const int flip_code = lr && ud ? -1 : (lr ? 1 : 0);
    const int th = transpose ? w : h, tw = transpose ? h : w;
    const int shape[4] = {1, 3, th, tw};
    copy.create(4, shape, CV_32F);
    for (int c = 0; c < 3; ++c) {
      cv::Mat dst = plane(copy, c);
      if (transpose) cv::transpose(plane(blob, c), dst);
      else plane(blob, c).copyTo(dst);
      if (lr || ud) cv::flip(dst, dst, flip_code);
    }
    const cv::Mat out = run(copy);
    if (out.dims != 4 || out.size[1] != nc || out.size[2] != th || out.size[3] != tw)
      throw Error(ErrorCode::model, "nuclei: unexpected network output shape");
    for (int c = 0; c < nc; ++c) {
      cv::Mat p = plane(out, c);
      if (lr || ud) cv::flip(p, p, flip_code);
      if (transpose) {
        cv::transpose(p, turned);
        p = turned;
      }
      cv::Mat acc = plane(sum, transpose && c >= 3 ? 7 - c : c);
      if ((c == 3 && lr) || (c == 4 && ud)) acc -= p;
      else acc += p;
    }
  }
  sum *= 1.0 / flips;
  return sum;  // this thread's buffer: valid until its next call
}

// Runs the network over `rgb` (at working mpp) in fixed tiles, returning its CV_32F probability maps at that size:
// three (foreground, distance, spindle), or five with the offset maps (horizontal, vertical; 0..1 for -1..1).
// The input blob is filled in place (one pass: mirror padding, uint8 -> float, planar) and kept per thread, so a tile
// costs no large allocation or extra copy besides the network's own (fresh multi-megabyte buffers cost page faults).
// With flips > 1 the network also runs on mirrored and transposed copies of each tile (average_flips).
std::vector<cv::Mat> predict(const cv::Mat& rgb, NucleiNetwork network, int tile, int margin, int flips) {
  std::vector<cv::Mat> maps;
  const NucleiModel& model = nuclei_model(network);
  const auto [direct, isa] = model.runner();
  std::optional<detail::NetPool::Lease> lease;
  if (!direct) lease.emplace(model.pool);
  thread_local cv::Mat blob, logit, direct_out;
  auto run = [&](const cv::Mat& in) {
    try {
      if (direct) {
        direct->forward(in, direct_out, isa);
        return direct_out;
      }
      lease->net->setInput(in);
      return lease->net->forward();
    } catch (const cv::Exception& e) {
      throw Error(ErrorCode::model, std::string("nuclei: the segmentation network failed: ") + e.what());
    }
  };
  for (int ty = 0; ty < rgb.rows; ty += tile) {
    for (int tx = 0; tx < rgb.cols; tx += tile) {
      const int cw = std::min(tile, rgb.cols - tx), ch = std::min(tile, rgb.rows - ty);
      // Context margin on every side (mirrored at the image border), then padded to a multiple of 8 (three 2x
      // down-samplings in the network).
      const int w = ((cw + 2 * margin + 7) / 8) * 8, h = ((ch + 2 * margin + 7) / 8) * 8;
      const int x0 = tx - margin, y0 = ty - margin;
      const int shape[4] = {1, 3, h, w};
      blob.create(4, shape, CV_32F);
      std::vector<int> col(static_cast<std::size_t>(w));
      for (int x = 0; x < w; ++x) col[static_cast<std::size_t>(x)] = cv::borderInterpolate(x0 + x, rgb.cols, cv::BORDER_REFLECT_101);
      for (int y = 0; y < h; ++y) {
        const auto* src = rgb.ptr<cv::Vec3b>(cv::borderInterpolate(y0 + y, rgb.rows, cv::BORDER_REFLECT_101));
        float* r = blob.ptr<float>(0, 0, y);
        float* g = blob.ptr<float>(0, 1, y);
        float* b = blob.ptr<float>(0, 2, y);
        for (int x = 0; x < w; ++x) {
          const cv::Vec3b& p = src[col[static_cast<std::size_t>(x)]];
          // (I - 127.5) / 255 = I / 255 - 0.5, as in training.
          r[x] = (static_cast<float>(p[0]) - 127.5f) * (1.0f / 255.0f);
          g[x] = (static_cast<float>(p[1]) - 127.5f) * (1.0f / 255.0f);
          b[x] = (static_cast<float>(p[2]) - 127.5f) * (1.0f / 255.0f);
        }
      }
      cv::Mat out = run(blob);
      if (out.dims != 4 || (out.size[1] != 3 && out.size[1] != 5) || out.size[2] != h || out.size[3] != w)
        throw Error(ErrorCode::model, "nuclei: unexpected network output shape");
      if (flips > 1) out = average_flips(run, blob, out, flips);
      if (maps.empty()) {
        maps.resize(static_cast<std::size_t>(out.size[1]));
        for (auto& m : maps) m.create(rgb.size(), CV_32F);
      } else if (static_cast<int>(maps.size()) != out.size[1]) {
        throw Error(ErrorCode::model, "nuclei: the network's output channels changed between tiles");
      }
      // Sigmoid of the core, 1 / (1 + exp(-logit)): negated, exp (OpenCV's, vectorised), then one pass.
      for (int c = 0; c < out.size[1]; ++c) {
        cv::Mat dst = maps[static_cast<std::size_t>(c)](cv::Rect(tx, ty, cw, ch));
        plane(out, c)(cv::Rect(margin, margin, cw, ch)).convertTo(logit, CV_32F, -1.0);
        cv::exp(logit, logit);
        for (int y = 0; y < ch; ++y) {
          const float* e = logit.ptr<float>(y);
          float* d = dst.ptr<float>(y);
          for (int x = 0; x < cw; ++x) d[x] = 1.0f / (1.0f + e[x]);
        }
      }
    }
  }
  return maps;
}

// Union-find over labels 0..n (path halving); which root a union keeps is the caller's choice.
struct Roots {
  std::vector<int> parent;
  explicit Roots(int n) : parent(static_cast<std::size_t>(n) + 1) {
    for (int i = 0; i <= n; ++i) parent[static_cast<std::size_t>(i)] = i;
  }
  int& of(int x) { return parent[static_cast<std::size_t>(x)]; }
  int find(int x) {
    while (of(x) != x) x = of(x) = of(of(x));
    return x;
  }
};

// Marker-controlled watershed on the normalised distance inside the foreground, by a bucketed priority flood (256
// levels, FIFO within a level: deterministic). Markers whose basins meet at a saddle less than `merge_depth` below the
// lower of their two peaks are merged (the "dynamics" criterion, Grimaud 1992): it keeps one nucleus whole when the
// predicted distance has two shallow peaks in it. Returns CV_32S labels numbered 1..n (with gaps after merging).
//
// With a network that predicts offset maps, `contact` (if not empty) is the evidence that two nuclei touch there (see
// segment_nuclei); `contact_weight` times it is taken off the distance before seeds and levels are computed, so that
// touching nuclei whose predicted distances blur into one ridge still get a seed each and a valley between them.
cv::Mat watershed(const cv::Mat& fg, const cv::Mat& dist_in, float fg_thr, float marker_thr, float merge_depth,
                  const cv::Mat& contact, float contact_weight, int* count) {
  cv::Mat dist = dist_in;
  if (!contact.empty() && contact_weight > 0.0f) {
    cv::Mat cut;  // a new matrix: the caller's distance stays as it was
    cv::scaleAdd(contact, -contact_weight, dist_in, cut);
    dist = cv::max(cut, 0.0);
  }
  const int rows = fg.rows, cols = fg.cols;
  cv::Mat mask = fg > fg_thr;
  // Seeds: the regional maxima of the distance above marker_thr (then merged by dynamics during the flood).
  cv::Mat dil;
  cv::dilate(dist, dil, cv::getStructuringElement(cv::MORPH_RECT, {3, 3}));
  cv::Mat seeds = (dist >= dil) & (dist > marker_thr) & mask;
  cv::Mat labels;
  int n = cv::connectedComponents(seeds, labels, 8, CV_32S) - 1;
  // Foreground components without any marker (small or faint nuclei) become nuclei of their own.
  {
    cv::Mat comp;
    const int nc = cv::connectedComponents(mask, comp, 8, CV_32S);
    std::vector<int> has(static_cast<std::size_t>(nc), 0);
    for (int y = 0; y < rows; ++y) {
      const int* c = comp.ptr<int>(y);
      const int* l = labels.ptr<int>(y);
      for (int x = 0; x < cols; ++x)
        if (l[x] > 0) has[static_cast<std::size_t>(c[x])] = 1;
    }
    std::vector<int> newid(static_cast<std::size_t>(nc), 0);
    for (int y = 0; y < rows; ++y) {
      const int* c = comp.ptr<int>(y);
      int* l = labels.ptr<int>(y);
      for (int x = 0; x < cols; ++x) {
        const int k = c[x];
        if (k > 0 && !has[static_cast<std::size_t>(k)]) {
          if (newid[static_cast<std::size_t>(k)] == 0) newid[static_cast<std::size_t>(k)] = ++n;
          l[x] = newid[static_cast<std::size_t>(k)];
        }
      }
    }
  }
  // Flood level of every pixel (256 buckets), computed once.
  cv::Mat levels(rows, cols, CV_8U);
  for (int y = 0; y < rows; ++y) {
    const float* d = dist.ptr<float>(y);
    uchar* lv = levels.ptr<uchar>(y);
    for (int x = 0; x < cols; ++x) lv[x] = static_cast<uchar>(std::clamp(static_cast<int>(d[x] * 255.0f), 0, 255));
  }
  const uchar* LV = levels.ptr<uchar>(0);
  auto level = [LV](int idx) { return static_cast<int>(LV[idx]); };
  int* L = labels.ptr<int>(0);
  const uchar* M = mask.ptr<uchar>(0);
  // Peak level of every marker.
  std::vector<int> peak(static_cast<std::size_t>(n) + 1, 0);
  for (int i = 0; i < rows * cols; ++i)
    if (L[i] > 0) peak[static_cast<std::size_t>(L[i])] = std::max(peak[static_cast<std::size_t>(L[i])], level(i));
  Roots roots(n);
  const int depth = static_cast<int>(merge_depth * 255.0f);
  auto meet = [&](int a, int b, int lv) {  // basins a and b touch at level lv
    int ra = roots.find(a), rb = roots.find(b);
    if (ra == rb) return;
    if (lv >= std::min(peak[static_cast<std::size_t>(ra)], peak[static_cast<std::size_t>(rb)]) - depth) {
      if (ra > rb) std::swap(ra, rb);
      roots.of(rb) = ra;
      peak[static_cast<std::size_t>(ra)] = std::max(peak[static_cast<std::size_t>(ra)], peak[static_cast<std::size_t>(rb)]);
    }
  };
  // Flood: pixels adjacent to a label enter the queue at their distance level; higher distance first.
  // One FIFO per level: a vector and a read position (pixels pushed to the level being flooded are appended to it).
  std::array<std::vector<int>, 256> q;
  std::array<std::size_t, 256> head{};
  cv::Mat queued = cv::Mat::zeros(rows, cols, CV_8U);
  uchar* Q = queued.ptr<uchar>(0);
  const int dx[4] = {1, -1, 0, 0}, dy[4] = {0, 0, 1, -1};
  for (int y = 0; y < rows; ++y)
    for (int x = 0; x < cols; ++x) {
      const int i = y * cols + x;
      if (L[i] <= 0) continue;
      for (int k = 0; k < 4; ++k) {
        const int nx = x + dx[k], ny = y + dy[k];
        if (nx < 0 || ny < 0 || nx >= cols || ny >= rows) continue;
        const int j = ny * cols + nx;
        if (L[j] > 0 && L[j] != L[i]) meet(L[i], L[j], std::min(level(i), level(j)));
        if (M[j] && L[j] == 0 && !Q[j]) {
          Q[j] = 1;
          q[static_cast<std::size_t>(level(j))].push_back(j);
        }
      }
    }
  for (int lv = 255; lv >= 0;) {
    auto& bucket = q[static_cast<std::size_t>(lv)];
    if (head[static_cast<std::size_t>(lv)] == bucket.size()) {
      --lv;
      continue;
    }
    const int i = bucket[head[static_cast<std::size_t>(lv)]++];
    const int y = i / cols, x = i % cols;
    // Take the label of the first labelled neighbour in a fixed order; note the basins this pixel joins.
    int lab = 0;
    for (int k = 0; k < 4; ++k) {
      const int nx = x + dx[k], ny = y + dy[k];
      if (nx < 0 || ny < 0 || nx >= cols || ny >= rows) continue;
      const int o = L[ny * cols + nx];
      if (o <= 0) continue;
      if (lab == 0) lab = o;
      else if (o != lab) meet(lab, o, lv);
    }
    L[i] = lab;
    for (int k = 0; k < 4; ++k) {
      const int nx = x + dx[k], ny = y + dy[k];
      if (nx < 0 || ny < 0 || nx >= cols || ny >= rows) continue;
      const int j = ny * cols + nx;
      if (M[j] && L[j] == 0 && !Q[j]) {
        Q[j] = 1;
        q[static_cast<std::size_t>(std::min(level(j), lv))].push_back(j);  // never back up: monotone flood order
      }
    }
  }
  for (int i = 0; i < rows * cols; ++i)
    if (L[i] > 0) L[i] = roots.find(L[i]);
  *count = n;
  return labels;
}

struct Accum {
  std::int64_t n = 0;
  double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
  double sh = 0, shh = 0, sp = 0;
  int x0 = INT32_MAX, y0 = INT32_MAX, x1 = -1, y1 = -1;
};

}  // namespace

namespace detail {
void set_thread_nuclei_model(std::vector<unsigned char> onnx) { t_model_override = std::move(onnx); }
void set_thread_nuclei_engine(NucleiEngine engine) { t_engine = engine; }
const char* nuclei_engine_name(NucleiNetwork network) {
  const auto runner = nuclei_model(network).runner();
  if (!runner.direct) return "OpenCV dnn";
  return runner.isa == DirectUnet::Isa::avx512 ? "direct AVX-512" : "direct AVX2";
}

std::vector<cv::Mat> network_maps(const cv::Mat& rgb, const NucleiParams& params) {
  return predict(rgb, params.network, params.tile_px, params.tile_margin_px, params.flips);
}

// Merges touching instances that are parts of one nucleus, by the offset maps (HoVer-Net's horizontal and vertical
// maps, Graham et al., Medical Image Analysis 2019): within a nucleus the horizontal offset h runs from -1 to 1 across
// it, so x = cx + rx * h, and likewise y = cy + ry * v. Lines fitted by least squares over the union of two touching
// instances explain their pixels' positions well when both are parts of one nucleus, and badly when they are two
// nuclei (the offsets then run from -1 to 1 twice). Pairs are merged best fit first while the union's score (below) is
// under `tolerance`; a merged pair's sums are added, so a chain merges only while the whole still fits one nucleus.
// `h` and `v` are the network's maps (0..1 for -1..1); only pairs that touch along two or more pixel edges count.
// Merged labels take the smaller number.
void merge_by_offsets(cv::Mat& labels, const cv::Mat& h, const cv::Mat& v, double tolerance) {
  double top = 0;
  cv::minMaxLoc(labels, nullptr, &top);
  const int n = static_cast<int>(top);
  struct Fit {
    double n = 0, sx = 0, sy = 0, sh = 0, sv = 0, shh = 0, svv = 0, sxh = 0, syv = 0, sxx = 0, syy = 0;
    Fit& operator+=(const Fit& o) {
      n += o.n, sx += o.sx, sy += o.sy, sh += o.sh, sv += o.sv, shh += o.shh, svv += o.svv, sxh += o.sxh, syv += o.syv;
      sxx += o.sxx, syy += o.syy;
      return *this;
    }
  };
  std::vector<Fit> fit(static_cast<std::size_t>(n) + 1);
  std::unordered_map<std::uint64_t, int> contact;  // (smaller label << 32 | larger) -> touching pixel pairs
  auto touch = [&](int a, int b) {
    if (a <= 0 || b <= 0 || a == b) return;
    if (a > b) std::swap(a, b);
    ++contact[(static_cast<std::uint64_t>(a) << 32) | static_cast<std::uint32_t>(b)];
  };
  for (int y = 0; y < labels.rows; ++y) {
    const int* l = labels.ptr<int>(y);
    const int* below = y + 1 < labels.rows ? labels.ptr<int>(y + 1) : nullptr;
    const float* hp = h.ptr<float>(y);
    const float* vp = v.ptr<float>(y);
    for (int x = 0; x < labels.cols; ++x) {
      if (l[x] <= 0) continue;
      Fit& f = fit[static_cast<std::size_t>(l[x])];
      const double hh = 2.0 * hp[x] - 1.0, vv = 2.0 * vp[x] - 1.0;
      f.n += 1, f.sx += x, f.sy += y, f.sh += hh, f.sv += vv, f.shh += hh * hh, f.svv += vv * vv;
      f.sxh += x * hh, f.syv += y * vv, f.sxx += static_cast<double>(x) * x, f.syy += static_cast<double>(y) * y;
      if (x + 1 < labels.cols) touch(l[x], l[x + 1]);
      if (below != nullptr) touch(l[x], below[x]);
    }
  }
  // How badly a union fits one nucleus: per axis, the share of the position's variance that the offset does not
  // explain (1 - r^2 of the line fit: 0 for one nucleus, 0.75 along the axis on which two equal nuclei lie side by
  // side, whatever the maps' contrast); the worse axis counts. Infinite when a fit is degenerate (offsets that hardly
  // vary or run the wrong way).
  auto unexplained = [](double cnt, double s_p, double s_o, double s_oo, double s_po, double s_pp) {
    const double mo = s_o / cnt, mp = s_p / cnt;
    const double var_o = s_oo / cnt - mo * mo, var_p = s_pp / cnt - mp * mp, cov = s_po / cnt - mp * mo;
    if (var_o < 0.02 || var_p <= 0 || cov <= 0) return HUGE_VAL;
    return std::max(0.0, 1.0 - cov * cov / (var_o * var_p));
  };
  auto score = [&](const Fit& f) {
    return std::max(unexplained(f.n, f.sx, f.sh, f.shh, f.sxh, f.sxx),
                    unexplained(f.n, f.sy, f.sv, f.svv, f.syv, f.syy));
  };
  Roots roots(n);
  // Best-first agglomeration with a lazy heap: an entry is stale once either side has merged since it was pushed.
  std::vector<std::vector<int>> adj(static_cast<std::size_t>(n) + 1);
  for (const auto& [key, count] : contact) {
    if (count < 2) continue;
    const int a = static_cast<int>(key >> 32), b = static_cast<int>(key & 0xffffffffu);
    adj[static_cast<std::size_t>(a)].push_back(b);
    adj[static_cast<std::size_t>(b)].push_back(a);
  }
  struct Entry {
    double score;
    int a, b, va, vb;
    bool operator>(const Entry& o) const { return std::tie(score, a, b) > std::tie(o.score, o.a, o.b); }
  };
  std::vector<int> version(static_cast<std::size_t>(n) + 1, 0);
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  auto offer = [&](int a, int b) {
    if (a > b) std::swap(a, b);
    Fit u = fit[static_cast<std::size_t>(a)];
    u += fit[static_cast<std::size_t>(b)];
    const double sc = score(u);
    if (sc < tolerance)
      heap.push({sc, a, b, version[static_cast<std::size_t>(a)], version[static_cast<std::size_t>(b)]});
  };
  for (int a = 1; a <= n; ++a) {
    auto& nb = adj[static_cast<std::size_t>(a)];
    std::sort(nb.begin(), nb.end());
    for (const int b : nb)
      if (a < b) offer(a, b);
  }
  while (!heap.empty()) {
    const Entry e = heap.top();
    heap.pop();
    if (version[static_cast<std::size_t>(e.a)] != e.va || version[static_cast<std::size_t>(e.b)] != e.vb ||
        roots.find(e.a) != e.a || roots.find(e.b) != e.b)
      continue;
    roots.of(e.b) = e.a;
    ++version[static_cast<std::size_t>(e.a)];
    fit[static_cast<std::size_t>(e.a)] += fit[static_cast<std::size_t>(e.b)];
    // The merged instance's neighbours: both sides' (as current roots), once each.
    auto& na = adj[static_cast<std::size_t>(e.a)];
    for (const int c : adj[static_cast<std::size_t>(e.b)]) na.push_back(c);
    adj[static_cast<std::size_t>(e.b)].clear();
    for (int& c : na) c = roots.find(c);
    std::sort(na.begin(), na.end());
    na.erase(std::unique(na.begin(), na.end()), na.end());
    na.erase(std::remove(na.begin(), na.end(), e.a), na.end());
    for (const int c : na) offer(e.a, c);
  }
  for (int y = 0; y < labels.rows; ++y) {
    int* l = labels.ptr<int>(y);
    for (int x = 0; x < labels.cols; ++x)
      if (l[x] > 0) l[x] = roots.find(l[x]);
  }
}
}  // namespace detail

const char* nuclei_network_name(NucleiNetwork network) {
  return network == NucleiNetwork::accurate ? "accurate" : "fast";
}

bool parse_nuclei_network(const std::string& name, NucleiNetwork* network) {
  for (const NucleiNetwork n : {NucleiNetwork::fast, NucleiNetwork::accurate})
    if (name == nuclei_network_name(n)) {
      *network = n;
      return true;
    }
  return false;
}

NucleiResult segment_nuclei(const ImageView& image, const NucleiParams& params) {
  check_view(image, "segment_nuclei");
  if (!valid_network(params.network))
    throw Error(ErrorCode::invalid_argument, "segment_nuclei: network must be fast or accurate, got " +
                                                 std::to_string(static_cast<int>(params.network)));
  auto positive = [](double v, const char* name) {
    if (!(v > 0.0) || !std::isfinite(v))
      throw Error(ErrorCode::invalid_argument, std::string("segment_nuclei: ") + name + " must be > 0, got " + std::to_string(v));
  };
  positive(params.working_mpp, "working_mpp");
  positive(params.spindle_neighbourhood_um, "spindle_neighbourhood_um");
  if (!(params.foreground_threshold > 0.0 && params.foreground_threshold < 1.0))
    throw Error(ErrorCode::invalid_argument,
                "segment_nuclei: foreground_threshold must be in (0, 1), got " + std::to_string(params.foreground_threshold));
  if (!(params.marker_threshold > 0.0 && params.marker_threshold < 1.0))
    throw Error(ErrorCode::invalid_argument,
                "segment_nuclei: marker_threshold must be in (0, 1), got " + std::to_string(params.marker_threshold));
  if (!valid_flips(params.flips))
    throw Error(ErrorCode::invalid_argument, "segment_nuclei: flips must be 1, 2, 4 or 8, got " + std::to_string(params.flips));
  if (params.tile_px < 64 || params.tile_px % 8 != 0 || params.tile_margin_px < 0 || params.tile_margin_px % 8 != 0)
    throw Error(ErrorCode::invalid_argument, "segment_nuclei: tile_px must be a multiple of 8 >= 64 and tile_margin_px a "
                                             "multiple of 8 >= 0, got " + std::to_string(params.tile_px) + " and " +
                                                 std::to_string(params.tile_margin_px));

  const cv::Mat& rgb = image.rgb;
  const double scale = image.mpp / params.working_mpp;  // working pixels per input pixel
  const bool resample = std::abs(scale - 1.0) > 1e-3;
  cv::Mat work = rgb;
  if (resample) {
    const cv::Size ws(std::max(1, static_cast<int>(std::lround(rgb.cols * scale))),
                      std::max(1, static_cast<int>(std::lround(rgb.rows * scale))));
    cv::resize(rgb, work, ws, 0, 0, scale < 1.0 ? cv::INTER_AREA : cv::INTER_LINEAR);
  }
  auto maps = predict(work, params.network, params.tile_px, params.tile_margin_px, params.flips);
  // A light smoothing of the distance removes single-pixel ripples that would seed extra markers.
  cv::GaussianBlur(maps[1], maps[1], cv::Size(3, 3), 0.8, 0.8, cv::BORDER_REFLECT_101);
  const double contact_weight = params.contact_weight.value_or(default_contact_weight(params.network));
  const double merge_tolerance = params.offset_merge_tolerance.value_or(default_offset_merge_tolerance(params.network));
  cv::Mat contact;                  // evidence that two nuclei touch (offset networks, contact_weight > 0 only)
  std::array<cv::Mat, 2> offsets;   // horizontal, vertical (offset networks, offset_merge_tolerance > 0 only)
  if (maps.size() == 5 && contact_weight > 0.0) {
    // Contact evidence from the offset maps, at the working scale (so that it does not depend on the input's mpp):
    // inside a nucleus the horizontal offset rises along x and the vertical one along y; where two nuclei touch, one
    // of them falls (from +1 in one nucleus to -1 in the next). The evidence is that fall in offset units per pixel,
    // smoothed as the training loss measured it (3x3 Sobel / 4; the maps are 0..1 for -1..1, hence -0.5).
    cv::Mat gx, gy;
    cv::Sobel(maps[3], gx, CV_32F, 1, 0, 3, -0.5, 0.0, cv::BORDER_REFLECT_101);
    cv::Sobel(maps[4], gy, CV_32F, 0, 1, 3, -0.5, 0.0, cv::BORDER_REFLECT_101);
    contact = cv::max(cv::max(gx, gy), 0.0);
  }
  if (maps.size() == 5 && merge_tolerance > 0.0) offsets = {maps[3], maps[4]};
  maps.resize(3);
  if (resample) {  // segment at the input's resolution: finer boundaries than nearest-upsampled labels
    for (auto& m : maps) cv::resize(m, m, rgb.size(), 0, 0, cv::INTER_LINEAR);
    for (auto* m : {&contact, &offsets[0], &offsets[1]})
      if (!m->empty()) cv::resize(*m, *m, rgb.size(), 0, 0, cv::INTER_LINEAR);
  }

  int n = 0;
  cv::Mat labels = watershed(maps[0], maps[1], static_cast<float>(params.foreground_threshold),
                             static_cast<float>(params.marker_threshold), static_cast<float>(params.merge_depth),
                             contact, static_cast<float>(contact_weight), &n);
  if (!offsets[0].empty()) detail::merge_by_offsets(labels, offsets[0], offsets[1], merge_tolerance);

  // Hematoxylin density for the features and the boundary refinement.
  const StainDensities dens = deconvolve(image, params.stains);

  // Boundary refinement (one pixel, half-maximum rule): a background pixel next to exactly one nucleus joins it when
  // its hematoxylin density is at least half the nucleus's mean. The network's boundaries come from 1 um/px features
  // and sit slightly inside the stained edge; an edge pixel half covered by the nucleus has about half its density.
  {
    std::vector<double> hs(static_cast<std::size_t>(n) + 1, 0.0);
    std::vector<std::int64_t> hc(static_cast<std::size_t>(n) + 1, 0);
    for (int y = 0; y < labels.rows; ++y) {
      const int* l = labels.ptr<int>(y);
      const float* h = dens.hematoxylin.ptr<float>(y);
      for (int x = 0; x < labels.cols; ++x)
        if (l[x] > 0) {
          hs[static_cast<std::size_t>(l[x])] += h[x];
          ++hc[static_cast<std::size_t>(l[x])];
        }
    }
    const cv::Mat before = labels.clone();
    for (int y = 0; y < labels.rows; ++y) {
      const int* b = before.ptr<int>(y);
      int* l = labels.ptr<int>(y);
      const float* h = dens.hematoxylin.ptr<float>(y);
      for (int x = 0; x < labels.cols; ++x) {
        if (b[x] != 0) continue;
        int lab = 0;
        bool unique = true;
        auto see = [&](int v) {
          if (v <= 0) return;
          if (lab == 0) lab = v;
          else if (v != lab) unique = false;
        };
        if (x > 0) see(b[x - 1]);
        if (x + 1 < labels.cols) see(b[x + 1]);
        if (y > 0) see(before.ptr<int>(y - 1)[x]);
        if (y + 1 < labels.rows) see(before.ptr<int>(y + 1)[x]);
        if (lab > 0 && unique &&
            h[x] >= 0.5 * hs[static_cast<std::size_t>(lab)] / static_cast<double>(hc[static_cast<std::size_t>(lab)]))
          l[x] = lab;
      }
    }
  }

  std::vector<Accum> acc(static_cast<std::size_t>(n) + 1);
  for (int y = 0; y < labels.rows; ++y) {
    const int* l = labels.ptr<int>(y);
    const float* h = dens.hematoxylin.ptr<float>(y);
    const float* s = maps[2].ptr<float>(y);
    for (int x = 0; x < labels.cols; ++x) {
      if (l[x] <= 0) continue;
      Accum& a = acc[static_cast<std::size_t>(l[x])];
      ++a.n;
      a.sx += x;
      a.sy += y;
      a.sxx += static_cast<double>(x) * x;
      a.syy += static_cast<double>(y) * y;
      a.sxy += static_cast<double>(x) * y;
      a.sh += h[x];
      a.shh += static_cast<double>(h[x]) * h[x];
      a.sp += s[x];
      a.x0 = std::min(a.x0, x);
      a.x1 = std::max(a.x1, x);
      a.y0 = std::min(a.y0, y);
      a.y1 = std::max(a.y1, y);
    }
  }
  const double mpp = image.mpp;
  const auto min_px = static_cast<std::int64_t>(std::ceil(params.min_area_um2 / (mpp * mpp)));
  // Keep the instances large enough; renumber 1..m in order of first appearance in raster order (deterministic).
  std::vector<int> remap(static_cast<std::size_t>(n) + 1, 0);
  int m = 0;
  for (int y = 0; y < labels.rows; ++y) {
    int* l = labels.ptr<int>(y);
    for (int x = 0; x < labels.cols; ++x) {
      const int k = l[x];
      if (k <= 0) {
        l[x] = 0;
        continue;
      }
      int& r = remap[static_cast<std::size_t>(k)];
      if (r == 0) r = acc[static_cast<std::size_t>(k)].n >= std::max<std::int64_t>(min_px, 3) ? ++m : -1;
      l[x] = r > 0 ? r : 0;
    }
  }
  NucleiResult result;
  result.labels = labels;
  result.nuclei.resize(static_cast<std::size_t>(m));
  for (int k = 1; k <= n; ++k) {
    const int r = remap[static_cast<std::size_t>(k)];
    if (r <= 0) continue;
    const Accum& a = acc[static_cast<std::size_t>(k)];
    Nucleus& nu = result.nuclei[static_cast<std::size_t>(r - 1)];
    const double cnt = static_cast<double>(a.n);
    const double cx = a.sx / cnt, cy = a.sy / cnt;
    // Central second moments (+1/12: a pixel is a unit square, not a point), moment-equivalent ellipse axes.
    const double mxx = a.sxx / cnt - cx * cx + 1.0 / 12, myy = a.syy / cnt - cy * cy + 1.0 / 12,
                 mxy = a.sxy / cnt - cx * cy;
    const double tr = mxx + myy, det = std::sqrt(std::max(0.0, (mxx - myy) * (mxx - myy) / 4 + mxy * mxy));
    const double l1 = tr / 2 + det, l2 = std::max(1e-12, tr / 2 - det);
    nu.id = r;
    nu.x = image.to_level0_x(cx);
    nu.y = image.to_level0_y(cy);
    nu.area_um2 = cnt * mpp * mpp;
    nu.major_axis_um = 4.0 * std::sqrt(l1) * mpp;
    nu.minor_axis_um = 4.0 * std::sqrt(l2) * mpp;
    nu.elongation = std::max(1.0, nu.major_axis_um / nu.minor_axis_um);
    // Image y points down; counter-clockwise on screen is atan2(-dy, dx).
    double th = 0.5 * std::atan2(-2.0 * mxy, mxx - myy) * 180.0 / std::numbers::pi;
    if (th < 0) th += 180.0;
    if (th >= 180.0) th -= 180.0;
    nu.orientation_deg = th;
    nu.bluntness = cnt / (std::numbers::pi * 4.0 * std::sqrt(l1 * l2));
    nu.mean_h_od = a.sh / cnt;
    nu.std_h_od = std::sqrt(std::max(0.0, a.shh / cnt - nu.mean_h_od * nu.mean_h_od));
    nu.spindle_probability = a.sp / cnt;
    // Perimeter and convex hull from the outer contour of the instance.
    const cv::Rect box(a.x0, a.y0, a.x1 - a.x0 + 1, a.y1 - a.y0 + 1);
    cv::Mat bin = labels(box) == r;
    cv::Mat padded;
    cv::copyMakeBorder(bin, padded, 1, 1, 1, 1, cv::BORDER_CONSTANT, 0);
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(padded, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
    double perim = 0.0;
    std::vector<cv::Point> all;
    for (const auto& c : contours) {
      perim += cv::arcLength(c, true);
      all.insert(all.end(), c.begin(), c.end());
    }
    nu.perimeter_um = perim * mpp;
    if (all.size() >= 3) {
      std::vector<cv::Point> hull;
      cv::convexHull(all, hull);
      // The hull runs through boundary pixel centres; add half its perimeter + 1 to compare it with a pixel count.
      const double hull_px = cv::contourArea(hull) + cv::arcLength(hull, true) / 2.0 + 1.0;
      nu.solidity = std::clamp(cnt / hull_px, 0.0, 1.0);
    }
  }
  // Alignment with neighbours: elongation-weighted mean of cos(2 * angle difference) over the nuclei within the
  // neighbourhood (a grid of cells keeps this linear in the number of nuclei).
  const double rad_px = params.spindle_neighbourhood_um / mpp;
  const double cell = std::max(1.0, rad_px);
  const int gw = static_cast<int>(labels.cols / cell) + 1, gh = static_cast<int>(labels.rows / cell) + 1;
  std::vector<std::vector<int>> grid(static_cast<std::size_t>(gw) * static_cast<std::size_t>(gh));
  auto px_x = [&](const Nucleus& nu) { return (nu.x - static_cast<double>(image.x0)) / image.downsample; };
  auto px_y = [&](const Nucleus& nu) { return (nu.y - static_cast<double>(image.y0)) / image.downsample; };
  for (int i = 0; i < m; ++i) {
    const auto& nu = result.nuclei[static_cast<std::size_t>(i)];
    const int gx = std::clamp(static_cast<int>(px_x(nu) / cell), 0, gw - 1), gy = std::clamp(static_cast<int>(px_y(nu) / cell), 0, gh - 1);
    grid[static_cast<std::size_t>(gy) * static_cast<std::size_t>(gw) + static_cast<std::size_t>(gx)].push_back(i);
  }
  for (int i = 0; i < m; ++i) {
    auto& nu = result.nuclei[static_cast<std::size_t>(i)];
    const double x = px_x(nu), y = px_y(nu);
    const int gx = std::clamp(static_cast<int>(x / cell), 0, gw - 1), gy = std::clamp(static_cast<int>(y / cell), 0, gh - 1);
    double sw = 0, sc = 0;
    for (int yy = std::max(0, gy - 1); yy <= std::min(gh - 1, gy + 1); ++yy)
      for (int xx = std::max(0, gx - 1); xx <= std::min(gw - 1, gx + 1); ++xx)
        for (int j : grid[static_cast<std::size_t>(yy) * static_cast<std::size_t>(gw) + static_cast<std::size_t>(xx)]) {
          if (j == i) continue;
          const auto& o = result.nuclei[static_cast<std::size_t>(j)];
          const double ddx = px_x(o) - x, ddy = px_y(o) - y;
          if (ddx * ddx + ddy * ddy > rad_px * rad_px) continue;
          const double w = o.elongation - 1.0;  // round neighbours carry no orientation
          sw += w;
          sc += w * std::cos(2.0 * (o.orientation_deg - nu.orientation_deg) * std::numbers::pi / 180.0);
        }
    nu.alignment = sw > 1e-9 ? sc / sw : 0.0;
    nu.spindle = nu.elongation >= params.spindle_min_elongation && nu.solidity >= params.spindle_min_solidity &&
                 nu.spindle_probability >= params.spindle_min_probability &&
                 (nu.alignment >= params.spindle_min_alignment ||
                  nu.spindle_probability >= params.spindle_confident_probability);
  }
  return result;
}

cv::Mat render_nuclei_overlay(const ImageView& image, const NucleiResult& result) {
  if (image.rgb.empty() || image.rgb.type() != CV_8UC3)
    throw Error(ErrorCode::invalid_argument, "render_nuclei_overlay: the image must be non-empty RGB (CV_8UC3)");
  if (result.labels.type() != CV_32S || result.labels.size() != image.rgb.size())
    throw Error(ErrorCode::invalid_argument,
                "render_nuclei_overlay: the labels (" + std::to_string(result.labels.cols) + "x" +
                    std::to_string(result.labels.rows) + ") are not this image's (" + std::to_string(image.rgb.cols) +
                    "x" + std::to_string(image.rgb.rows) + "): segment this image first");
  int max_id = 0;
  for (const Nucleus& n : result.nuclei) max_id = std::max(max_id, n.id);
  std::vector<std::uint8_t> spindle(static_cast<std::size_t>(max_id) + 1, 0);
  for (const Nucleus& n : result.nuclei)
    if (n.id > 0 && n.spindle) spindle[static_cast<std::size_t>(n.id)] = 1;
  cv::Mat out = image.rgb.clone();
  const cv::Mat& lab = result.labels;
  for (int y = 0; y < lab.rows; ++y) {
    const int* l = lab.ptr<int>(y);
    const int* up = y > 0 ? lab.ptr<int>(y - 1) : nullptr;
    const int* down = y + 1 < lab.rows ? lab.ptr<int>(y + 1) : nullptr;
    auto* o = out.ptr<cv::Vec3b>(y);
    for (int x = 0; x < lab.cols; ++x) {
      const int k = l[x];
      if (k <= 0) continue;
      const bool edge = x == 0 || l[x - 1] != k || x + 1 == lab.cols || l[x + 1] != k || !up || up[x] != k || !down ||
                        down[x] != k;
      if (edge)
        o[x] = k <= max_id && spindle[static_cast<std::size_t>(k)] ? kSpindleOutline : kOtherOutline;
    }
  }
  return out;
}

}  // namespace grade
