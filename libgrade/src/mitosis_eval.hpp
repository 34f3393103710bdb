#pragma once
// Header-only helpers shared by the mitosis benchmarks and quality tests (not part of the library): the list of
// development images in ../shared/data with their source-image groups, the held-out split used for training
// (tools/train/train_mitosis.py uses the same rule), and the metric of ../shared/eval/eval_mitosis.py (match within
// 30 px, greedy by score, one to one, 8 px border ignored, false positives per mm^2 over the evaluated area).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "grade/mitosis.hpp"

namespace grade::detail::mitosis_eval {

struct Figure {
  double x, y;
  std::string cls;  // normal | atypical
};

struct DevImage {
  std::string set;    // amibr | consep | monuseg | cpm15
  std::string name;   // stem
  std::string path;
  std::string group;  // source image: the unit of the train / held-out split
  std::string dataset;  // amibr: MIDOG21 | TUPAC16
  double mpp = 0.25;
  std::vector<Figure> figures;  // amibr only: every annotated figure in the patch
  bool held_out = false;
};

// A model from ONNX files (main network, optional screen, locator and verifier; empty path = none), for benchmarks
// that compare networks. Throws on an unreadable file or a model OpenCV cannot run.
inline std::shared_ptr<const MitosisModel> load_model(const std::string& main_onnx, const std::string& screen_onnx = {},
                                                      const std::string& locate_onnx = {},
                                                      const std::string& verify_onnx = {}) {
  auto bytes = [](const std::string& path) {
    if (path.empty()) return std::vector<unsigned char>{};
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + path);
    return std::vector<unsigned char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  return MitosisModel::from_onnx(bytes(main_onnx), bytes(screen_onnx), bytes(locate_onnx), bytes(verify_onnx));
}

inline std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : line) {
    if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else if (c != '\r') {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

inline std::vector<std::map<std::string, std::string>> read_csv(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::string line;
  std::vector<std::map<std::string, std::string>> rows;
  if (!std::getline(in, line)) return rows;
  const auto head = split_csv_line(line);
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto f = split_csv_line(line);
    std::map<std::string, std::string> r;
    for (size_t i = 0; i < head.size() && i < f.size(); ++i) r[head[i]] = f[i];
    rows.push_back(std::move(r));
  }
  return rows;
}

// Every development image, sorted by (set, name). Held out: per set, the sorted distinct groups with index % 4 == 3.
// `fold`: which quarter of each set's sorted source groups is held out (3 = the committed networks' split).
inline std::vector<DevImage> list_images(const std::filesystem::path& data, int fold = 3) {
  namespace fs = std::filesystem;
  std::vector<DevImage> v;
  {
    std::map<std::string, DevImage> patches;
    for (const auto& r : read_csv(data / "mitosis/amibr/mitoses.csv")) {
      auto& d = patches[r.at("patch")];
      d.set = "amibr";
      d.name = r.at("patch");
      d.path = (data / "mitosis/amibr/patches" / (d.name + ".png")).string();
      d.dataset = r.at("dataset");
      d.group = "amibr/" + r.at("dataset") + "/" + r.at("source_image");
      d.figures.push_back({std::stod(r.at("x")), std::stod(r.at("y")), r.at("class")});
    }
    for (auto& [k, d] : patches) v.push_back(std::move(d));
  }
  {
    std::vector<DevImage> c;
    const fs::path dir = data / "nuclei/consep/images";
    if (fs::exists(dir))
      for (const auto& e : fs::directory_iterator(dir)) {
        DevImage d;
        d.set = "consep";
        d.name = e.path().stem().string();
        d.path = e.path().string();
        d.group = "consep/" + d.name.substr(0, d.name.rfind('_'));
        c.push_back(d);
      }
    std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    v.insert(v.end(), c.begin(), c.end());
  }
  for (const auto& [set, col] : {std::pair<std::string, std::string>{"cpm15", "mpp_approx"}, {"monuseg", "mpp"}}) {
    std::vector<DevImage> c;
    for (const auto& r : read_csv(data / "nuclei" / set / "images.csv")) {
      DevImage d;
      d.set = set;
      d.name = r.at("image");
      d.path = (data / "nuclei" / set / "images" / (d.name + ".png")).string();
      d.group = set + "/" + d.name;
      d.mpp = r.at(col).empty() ? 0.25 : std::stod(r.at(col));  // one MoNuSeg image has no mpp: 40x
      c.push_back(d);
    }
    std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    v.insert(v.end(), c.begin(), c.end());
  }
  std::map<std::string, std::set<std::string>> groups;
  for (const auto& d : v) groups[d.set].insert(d.group);
  std::set<std::string> held;
  for (const auto& [set, gs] : groups) {
    int i = 0;
    for (const auto& g : gs)
      if (i++ % 4 == fold) held.insert(g);
  }
  for (auto& d : v) d.held_out = held.count(d.group) > 0;
  return v;
}

struct Det {
  size_t image;  // index into the evaluated patch list
  double x, y, score;
};

struct CurvePoint {
  double threshold;
  int tp, fp;
  double recall, fp_per_mm2;
};

struct PatchEval {
  int n_gt = 0;                      // figures in the evaluated region
  double area_mm2 = 0.0;
  std::vector<CurvePoint> curve;     // one point per distinct score, decreasing threshold
  std::vector<double> gt_score;      // per figure (evaluated ones): score of its match, -inf when unmatched
  std::vector<std::string> gt_class;
  std::vector<std::string> gt_dataset;

  // The point at a threshold (detections with score >= t).
  CurvePoint at(double t) const {
    CurvePoint best{t, 0, 0, 0.0, 0.0};
    for (const auto& p : curve)
      if (p.threshold >= t) best = {t, p.tp, p.fp, p.recall, p.fp_per_mm2};
    return best;
  }
  double recall_of(const std::string& key, const std::string& value, double t, bool by_class = true) const {
    int n = 0, hit = 0;
    for (size_t i = 0; i < gt_score.size(); ++i)
      if ((by_class ? gt_class[i] : gt_dataset[i]) == value) {
        ++n;
        hit += gt_score[i] >= t;
      }
    (void)key;
    return n ? static_cast<double>(hit) / n : NAN;
  }
};

// eval_mitosis.py on fully annotated patches (W x H each, at mpp): `dets` in patch pixels, in CSV order.
inline PatchEval evaluate_patches(const std::vector<const DevImage*>& patches, const std::vector<cv::Size>& sizes,
                                  const std::vector<Det>& dets, double mpp = 0.25, double radius = 30.0,
                                  double border = 8.0) {
  PatchEval e;
  struct G {
    size_t image;
    double x, y;
    bool inside;
    int eval_index;
  };
  std::vector<std::vector<int>> by_image(patches.size());
  std::vector<G> gts;
  auto inside = [&](size_t i, double x, double y) {
    return border <= x && x <= sizes[i].width - border && border <= y && y <= sizes[i].height - border;
  };
  for (size_t i = 0; i < patches.size(); ++i) {
    e.area_mm2 += (sizes[i].width - 2 * border) * (sizes[i].height - 2 * border) * mpp * mpp * 1e-6;
    for (const auto& f : patches[i]->figures) {
      const bool in = inside(i, f.x, f.y);
      by_image[i].push_back(static_cast<int>(gts.size()));
      gts.push_back({i, f.x, f.y, in, in ? e.n_gt : -1});
      if (in) {
        ++e.n_gt;
        e.gt_score.push_back(-INFINITY);
        e.gt_class.push_back(f.cls);
        e.gt_dataset.push_back(patches[i]->dataset);
      }
    }
  }
  std::vector<size_t> order(dets.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return dets[a].score > dets[b].score; });
  std::vector<char> taken(gts.size(), 0);
  int tp = 0, fp = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const auto& d = dets[order[k]];
    int best = -1;
    double bd = 0;
    for (int j : by_image[d.image]) {
      if (taken[j]) continue;
      const double dist = std::hypot(gts[j].x - d.x, gts[j].y - d.y);
      if (dist <= radius && (best < 0 || dist < bd)) {
        best = j;
        bd = dist;
      }
    }
    if (best >= 0) {
      taken[best] = 1;
      if (gts[best].inside) {
        ++tp;
        e.gt_score[gts[best].eval_index] = d.score;
      }
    } else if (inside(d.image, d.x, d.y)) {
      ++fp;
    }
    const bool last = k + 1 == order.size() || dets[order[k + 1]].score != d.score;
    if (last)
      e.curve.push_back({d.score, tp, fp, e.n_gt ? static_cast<double>(tp) / e.n_gt : 0.0, fp / e.area_mm2});
  }
  return e;
}

// Detections on images without annotated figures (the nucleus sets, where figures are rare), counted by the same rule
// as the patches' false positives: eval_mitosis.py's border (8 px at 0.25 um/px, i.e. 2 um) is "don't care", and the
// area is the evaluated region inside it. A detection there is mostly a nucleus cut by the image edge (CoNSeP's 256 px
// tiles are cut from larger images), which a slide, read with a margin, never shows. The whole-image count is kept too.
struct OpenImages {
  int images = 0;
  double area_mm2 = 0.0, whole_mm2 = 0.0;
  std::vector<double> scores, whole_scores;  // detections inside the evaluated region; all detections

  void add(cv::Size size, double mpp, const std::vector<MitosisDetection>& found, double border_um = 2.0) {
    const double b = border_um / mpp;
    ++images;
    area_mm2 += (size.width - 2 * b) * (size.height - 2 * b) * mpp * mpp * 1e-6;
    whole_mm2 += static_cast<double>(size.area()) * mpp * mpp * 1e-6;
    for (const auto& k : found) {
      whole_scores.push_back(k.score);
      if (b <= k.x && k.x <= size.width - b && b <= k.y && k.y <= size.height - b) scores.push_back(k.score);
    }
  }
  // Detections per mm^2 with score >= t: in the evaluated region (the number), or over whole images.
  double rate(double t) const { return count(scores, t) / area_mm2; }
  double whole_rate(double t) const { return count(whole_scores, t) / whole_mm2; }

 private:
  static double count(const std::vector<double>& v, double t) {
    return static_cast<double>(std::count_if(v.begin(), v.end(), [t](double s) { return s >= t; }));
  }
};

}  // namespace grade::detail::mitosis_eval
