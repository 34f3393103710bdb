#pragma once
// Nucleus segmentation metrics, exactly as ../shared/eval/eval_nuclei.py defines them (header-only; used by
// benchmarks/bench_nuclei_quality.cpp and tests/test_quality_nuclei.cpp):
//   AJI (Kumar et al., IEEE TMI 2017; each GT nucleus paired with the predicted instance of highest IoU, ties to the
//   lowest predicted id; unpaired predictions add to the union), pixel Dice, detection P/R/F1 at IoU > 0.5, PQ
//   (Kirillov et al. 2019), and spindle P/R/F1 (GT type 4 vs predicted spindle flag, on IoU > 0.5 matches).
// Sums are pooled over images before dividing, as MoNuSeg does.
#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <opencv2/core.hpp>

namespace grade::detail {

struct NucleiEvalSums {
  std::int64_t n_gt = 0, n_pred = 0, C = 0, U = 0, fg_inter = 0, fg_gt = 0, fg_pred = 0, tp = 0, fp = 0, fn = 0;
  double sum_iou = 0.0;
  std::int64_t sp_gt = 0, sp_pred = 0, sp_tp = 0, sp_fp = 0, sp_fn = 0;

  NucleiEvalSums& operator+=(const NucleiEvalSums& o) {
    n_gt += o.n_gt; n_pred += o.n_pred; C += o.C; U += o.U; fg_inter += o.fg_inter; fg_gt += o.fg_gt;
    fg_pred += o.fg_pred; tp += o.tp; fp += o.fp; fn += o.fn; sum_iou += o.sum_iou;
    sp_gt += o.sp_gt; sp_pred += o.sp_pred; sp_tp += o.sp_tp; sp_fp += o.sp_fp; sp_fn += o.sp_fn;
    return *this;
  }
};

struct NucleiMetrics {
  double aji = 0, dice = 0, precision = 0, recall = 0, f1 = 0, pq = 0, sp_precision = 0, sp_recall = 0, sp_f1 = 0;
};

inline double safe_div(double a, double b) { return b > 0 ? a / b : 0.0; }

inline NucleiMetrics nuclei_metrics(const NucleiEvalSums& s) {
  NucleiMetrics m;
  m.aji = safe_div(static_cast<double>(s.C), static_cast<double>(s.U));
  m.dice = safe_div(2.0 * static_cast<double>(s.fg_inter), static_cast<double>(s.fg_gt + s.fg_pred));
  const double tp = static_cast<double>(s.tp), fp = static_cast<double>(s.fp), fn = static_cast<double>(s.fn);
  m.precision = safe_div(tp, tp + fp);
  m.recall = safe_div(tp, tp + fn);
  m.f1 = safe_div(2 * tp, 2 * tp + fp + fn);
  m.pq = safe_div(s.sum_iou, tp + 0.5 * fp + 0.5 * fn);
  const double a = static_cast<double>(s.sp_tp), b = static_cast<double>(s.sp_fp), c = static_cast<double>(s.sp_fn);
  m.sp_precision = safe_div(a, a + b);
  m.sp_recall = safe_div(a, a + c);
  m.sp_f1 = safe_div(2 * a, 2 * a + b + c);
  return m;
}

// The overlap of two instance maps (CV_32S or CV_16U, one size): dense indices 1..n in increasing id order
// (eval_nuclei.py's relabel), instance areas (index 0: background) and every non-empty intersection.
struct InstanceOverlap {
  std::vector<int> gids, pids;        // original ids of dense indices 1..n (element k is index k + 1)
  std::vector<std::int64_t> ga, pa;   // areas by dense index
  std::map<std::pair<int, int>, std::int64_t> inter;  // (gt index, pred index) -> pixels, ordered by gt then pred
  std::int64_t fg_gt = 0, fg_pred = 0, fg_inter = 0;

  std::int64_t union_of(int gi, int pi, std::int64_t in) const {
    return ga[static_cast<std::size_t>(gi)] + pa[static_cast<std::size_t>(pi)] - in;
  }
};

inline InstanceOverlap instance_overlap(const cv::Mat& gt_in, const cv::Mat& pred_in) {
  cv::Mat gt, pred;
  gt_in.convertTo(gt, CV_32S);
  pred_in.convertTo(pred, CV_32S);
  auto dense = [](const cv::Mat& a, std::vector<int>& ids) {
    std::set<int> u;
    for (int y = 0; y < a.rows; ++y) {
      const int* p = a.ptr<int>(y);
      for (int x = 0; x < a.cols; ++x)
        if (p[x] > 0) u.insert(p[x]);
    }
    ids.assign(u.begin(), u.end());
    std::unordered_map<int, int> idx;
    for (std::size_t i = 0; i < ids.size(); ++i) idx[ids[i]] = static_cast<int>(i) + 1;
    return idx;
  };
  InstanceOverlap o;
  auto gidx = dense(gt, o.gids);
  auto pidx = dense(pred, o.pids);
  o.ga.assign(o.gids.size() + 1, 0);
  o.pa.assign(o.pids.size() + 1, 0);
  for (int y = 0; y < gt.rows; ++y) {
    const int* g = gt.ptr<int>(y);
    const int* p = pred.ptr<int>(y);
    for (int x = 0; x < gt.cols; ++x) {
      const int gi = g[x] > 0 ? gidx[g[x]] : 0, pi = p[x] > 0 ? pidx[p[x]] : 0;
      ++o.ga[static_cast<std::size_t>(gi)];
      ++o.pa[static_cast<std::size_t>(pi)];
      if (gi && pi) ++o.inter[{gi, pi}];
      o.fg_gt += gi > 0;
      o.fg_pred += pi > 0;
      o.fg_inter += (gi > 0 && pi > 0);
    }
  }
  return o;
}

// One image's sums, from the overlap of its GT and predicted maps. gt_spindle / pred_spindle: the ids flagged spindle.
inline NucleiEvalSums nuclei_image_sums(const InstanceOverlap& o, const std::set<int>& gt_spindle = {},
                                        const std::set<int>& pred_spindle = {}) {
  const std::size_t ng = o.gids.size(), np = o.pids.size();
  NucleiEvalSums s;
  s.fg_gt = o.fg_gt;
  s.fg_pred = o.fg_pred;
  s.fg_inter = o.fg_inter;
  s.n_gt = static_cast<std::int64_t>(ng);
  s.n_pred = static_cast<std::int64_t>(np);
  // AJI: best IoU per GT nucleus (ties: lowest predicted index).
  std::vector<int> best(ng + 1, 0);
  std::vector<double> best_iou(ng + 1, -1.0);
  std::vector<std::int64_t> best_i(ng + 1, 0), best_u(ng + 1, 0);
  std::vector<char> pused(np + 1, 0);
  std::vector<char> g_sp(ng + 1, 0), p_sp(np + 1, 0);
  for (std::size_t i = 0; i < ng; ++i) g_sp[i + 1] = gt_spindle.count(o.gids[i]) > 0;
  for (std::size_t i = 0; i < np; ++i) p_sp[i + 1] = pred_spindle.count(o.pids[i]) > 0;
  for (const auto& [key, in] : o.inter) {  // ordered by (gt, pred): strict > keeps the lowest pred index on ties
    const auto [gi, pi] = key;
    const std::int64_t un = o.union_of(gi, pi, in);
    const double iou = static_cast<double>(in) / static_cast<double>(std::max<std::int64_t>(un, 1));
    if (iou > best_iou[static_cast<std::size_t>(gi)]) {
      best_iou[static_cast<std::size_t>(gi)] = iou;
      best[static_cast<std::size_t>(gi)] = pi;
      best_i[static_cast<std::size_t>(gi)] = in;
      best_u[static_cast<std::size_t>(gi)] = un;
    }
    if (iou > 0.5) {
      ++s.tp;
      s.sum_iou += iou;
      if (g_sp[static_cast<std::size_t>(gi)] && p_sp[static_cast<std::size_t>(pi)]) ++s.sp_tp;
    }
  }
  for (std::size_t g = 1; g <= ng; ++g) {
    if (best[g] > 0) {
      s.C += best_i[g];
      s.U += best_u[g];
      pused[static_cast<std::size_t>(best[g])] = 1;
    } else {
      s.U += o.ga[g];
    }
  }
  for (std::size_t p = 1; p <= np; ++p)
    if (!pused[p]) s.U += o.pa[p];
  s.fp = s.n_pred - s.tp;
  s.fn = s.n_gt - s.tp;
  for (std::size_t g = 1; g <= ng; ++g) s.sp_gt += g_sp[g];
  for (std::size_t p = 1; p <= np; ++p) s.sp_pred += p_sp[p];
  s.sp_fp = s.sp_pred - s.sp_tp;
  s.sp_fn = s.sp_gt - s.sp_tp;
  return s;
}

// gt, pred: CV_32S (or CV_16U) instance maps of one size.
inline NucleiEvalSums nuclei_image_sums(const cv::Mat& gt, const cv::Mat& pred, const std::set<int>& gt_spindle = {},
                                        const std::set<int>& pred_spindle = {}) {
  return nuclei_image_sums(instance_overlap(gt, pred), gt_spindle, pred_spindle);
}

// For each predicted id 1..max(pred), the GT id it matches at IoU > 0.5 (0 when none).
inline std::vector<int> match_predictions(const InstanceOverlap& o) {
  std::vector<int> out(o.pids.empty() ? 1 : static_cast<std::size_t>(o.pids.back()) + 1, 0);
  for (const auto& [k, in] : o.inter)
    if (2 * in > o.union_of(k.first, k.second, in))
      out[static_cast<std::size_t>(o.pids[static_cast<std::size_t>(k.second) - 1])] =
          o.gids[static_cast<std::size_t>(k.first) - 1];
  return out;
}

// Where the detection errors are (bench_nuclei_quality --errors): every GT nucleus and every prediction falls in one
// class, tested in this order.
//   GT nucleus:  matched (a prediction at IoU > 0.5); missed (predictions cover < 20 % of it); merged (its best
//                prediction covers more than half of two or more GT nuclei); split (two or more predictions cover
//                >= 20 % of it each); outline (found in one piece, best IoU 0.3-0.5); other.
//   prediction:  matched; unlabelled (< 20 % of its pixels on GT nuclei: a false detection or a nucleus the
//                annotators did not outline); merge (covers more than half of two or more GT nuclei); split (its
//                best GT nucleus is also >= 20 % covered by another prediction); outline (best IoU 0.3-0.5); other.
// spindle_gt: the same classes for the GT nuclei of gt_spindle only.
struct NucleiErrorCounts {
  static constexpr std::array<const char*, 6> gt_names{"matched", "missed", "merged", "split", "outline", "other"};
  static constexpr std::array<const char*, 6> pred_names{"matched", "unlabelled", "merge", "split", "outline", "other"};
  std::array<std::int64_t, 6> gt{}, spindle_gt{}, pred{};

  NucleiErrorCounts& operator+=(const NucleiErrorCounts& o) {
    for (std::size_t k = 0; k < 6; ++k) {
      gt[k] += o.gt[k];
      spindle_gt[k] += o.spindle_gt[k];
      pred[k] += o.pred[k];
    }
    return *this;
  }
};

inline NucleiErrorCounts nuclei_error_counts(const InstanceOverlap& o, const std::set<int>& gt_spindle = {}) {
  const std::size_t ng = o.gids.size(), np = o.pids.size();
  std::vector<double> g_best(ng + 1, 0.0), p_best(np + 1, 0.0);  // best IoU
  std::vector<int> g_arg(ng + 1, 0), p_arg(np + 1, 0);              // partner of the best IoU
  std::vector<std::int64_t> g_cov(ng + 1, 0), p_on_gt(np + 1, 0);  // pixels covered by predictions / on GT nuclei
  std::vector<int> g_pieces(ng + 1, 0), p_halves(np + 1, 0);       // predictions >= 20 % of it / GT > half covered
  for (const auto& [key, in] : o.inter) {
    const auto [gi, pi] = key;
    const auto g = static_cast<std::size_t>(gi), p = static_cast<std::size_t>(pi);
    const double iou = static_cast<double>(in) / static_cast<double>(std::max<std::int64_t>(o.union_of(gi, pi, in), 1));
    if (iou > g_best[g]) g_best[g] = iou, g_arg[g] = pi;
    if (iou > p_best[p]) p_best[p] = iou, p_arg[p] = gi;
    g_cov[g] += in;
    p_on_gt[p] += in;
    g_pieces[g] += 5 * in >= o.ga[g];
    p_halves[p] += 2 * in > o.ga[g];
  }
  NucleiErrorCounts c;
  for (std::size_t g = 1; g <= ng; ++g) {
    const std::size_t k = g_best[g] > 0.5                              ? 0
                          : 5 * g_cov[g] < o.ga[g]                     ? 1
                          : p_halves[static_cast<std::size_t>(g_arg[g])] >= 2 ? 2
                          : g_pieces[g] >= 2                           ? 3
                          : g_best[g] > 0.3                            ? 4
                                                                       : 5;
    ++c.gt[k];
    if (gt_spindle.count(o.gids[g - 1])) ++c.spindle_gt[k];
  }
  for (std::size_t p = 1; p <= np; ++p) {
    const std::size_t k = p_best[p] > 0.5                                     ? 0
                          : 5 * p_on_gt[p] < o.pa[p]                          ? 1
                          : p_halves[p] >= 2                                  ? 2
                          : g_pieces[static_cast<std::size_t>(p_arg[p])] >= 2 ? 3
                          : p_best[p] > 0.3                                   ? 4
                                                                              : 5;
    ++c.pred[k];
  }
  return c;
}

// One labelled image of ../shared/data/nuclei/<dataset>: paths, its mpp, and the GT spindle ids (CoNSeP type 4).
struct NucleiSample {
  std::string dataset, name, image_path, label_path;
  double mpp = 0.25;
  std::set<int> gt_spindle;
};

inline std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string cell;
  while (std::getline(ss, cell, ',')) out.push_back(cell);
  if (!out.empty() && !out.back().empty() && out.back().back() == '\r') out.back().pop_back();
  return out;
}

// The images of one data set in name order: consep (0.25 um/px, types from nuclei.csv), monuseg (images.csv mpp,
// 0.25 where blank), cpm15 (images.csv mpp_approx).
inline std::vector<NucleiSample> nuclei_dataset(const std::string& root, const std::string& dataset) {
  std::vector<NucleiSample> out;
  std::map<std::string, double> mpp;
  std::map<std::string, std::set<int>> sp;
  std::vector<std::string> names;
  if (dataset == "consep") {
    std::ifstream in(root + "/consep/nuclei.csv");
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      const auto c = split_csv_line(line);
      if (c.size() < 3) continue;
      if (c[2] == "4") sp[c[0]].insert(std::stoi(c[1]));
    }
    // Every labelled tile (some have no nucleus, hence no row in nuclei.csv).
    for (const auto& e : std::filesystem::directory_iterator(root + "/consep/labels"))
      if (e.path().extension() == ".png") names.push_back(e.path().stem().string());
  } else {
    std::ifstream in(root + "/" + dataset + "/images.csv");
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      const auto c = split_csv_line(line);
      if (c.empty()) continue;
      names.push_back(c[0]);
      mpp[c[0]] = c.size() > 1 && !c[1].empty() ? std::stod(c[1]) : 0.25;
    }
  }
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    NucleiSample s;
    s.dataset = dataset;
    s.name = n;
    s.image_path = root + "/" + dataset + "/images/" + n + (dataset == "consep" ? ".jpg" : ".png");
    s.label_path = root + "/" + dataset + "/labels/" + n + ".png";
    s.mpp = dataset == "consep" ? 0.25 : mpp[n];
    if (sp.count(n)) s.gt_spindle = sp[n];
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace grade::detail
