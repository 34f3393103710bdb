// The necrosis stage: map, areas and polygons (method in necrosis.hpp; features and model in necrosis_model.cpp).
#include "grade/necrosis.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "necrosis_model.hpp"

namespace grade {

namespace detail {

namespace {

void check_params(const NecrosisParams& p) {
  if (!(p.working_mpp >= 0.5 && p.working_mpp <= 8.0))
    throw Error(ErrorCode::invalid_argument,
                "necrosis: working_mpp must be in 0.5..8 um/px, got " + std::to_string(p.working_mpp));
  if (!(p.threshold >= 0.0 && p.threshold <= 1.0))
    throw Error(ErrorCode::invalid_argument, "necrosis: threshold must be in 0..1, got " + std::to_string(p.threshold));
  if (!(p.refine_reach_um >= 0.0 && p.refine_reach_um <= 1000.0))
    throw Error(ErrorCode::invalid_argument,
                "necrosis: refine_reach_um must be in 0..1000 um, got " + std::to_string(p.refine_reach_um));
}

}  // namespace

cv::Mat necrosis_working_image(const ImageView& image, const NecrosisParams& params, double* working_mpp) {
  const double scale = image.mpp / params.working_mpp;  // < 1: shrink
  // Within 5 % of the working resolution the image is used as it is (no resampling blur, no cost).
  if (std::abs(scale - 1.0) <= 0.05) {
    if (working_mpp) *working_mpp = image.mpp;
    return image.rgb;
  }
  const int w = std::max(1, static_cast<int>(std::lround(image.rgb.cols * scale)));
  const int h = std::max(1, static_cast<int>(std::lround(image.rgb.rows * scale)));
  cv::Mat out;
  cv::resize(image.rgb, out, cv::Size(w, h), 0, 0, scale < 1.0 ? cv::INTER_AREA : cv::INTER_LINEAR);
  if (working_mpp) *working_mpp = image.mpp * static_cast<double>(image.rgb.cols) / w;
  return out;
}

NecrosisMap map_necrosis_with(const ImageView& image, const NecrosisParams& params, const NecrosisModel& model) {
  check_view(image, "necrosis", true);
  check_params(params);
  double mpp = 0.0;
  const cv::Mat work = necrosis_working_image(image, params, &mpp);
  cv::Mat tissue;
  const NecrosisFeatures f = necrosis_features(work, mpp, params.stains, &tissue);

  // Per-cell probability from the logistic model.
  const int gh = f.cell_tissue.rows, gw = f.cell_tissue.cols, nf = f.values.cols;
  if (model.weights.size() != static_cast<size_t>(nf))
    throw Error(ErrorCode::model, "necrosis: the model has " + std::to_string(model.weights.size()) +
                                      " weights, the features are " + std::to_string(nf));
  if (model.fine_weights.size() != static_cast<size_t>(necrosis_fine_feature_count()))
    throw Error(ErrorCode::model, "necrosis: the model has " + std::to_string(model.fine_weights.size()) +
                                      " refinement weights, expected " + std::to_string(necrosis_fine_feature_count()));
  // Fold the standardisation into the weights: z = b + sum w'_k x_k over the first w.size() features.
  auto fold = [&](const std::vector<double>& w, double bias, std::vector<float>& wk, double& b) {
    wk.assign(w.size(), 0.0f);
    b = bias;
    for (size_t k = 0; k < w.size(); ++k) {
      wk[k] = static_cast<float>(w[k] / model.scale[k]);
      b -= w[k] * model.mean[k] / model.scale[k];
    }
  };
  auto probability = [](const float* x, const std::vector<float>& w, double b) {
    double z = b;
    for (size_t k = 0; k < w.size(); ++k) z += static_cast<double>(w[k] * x[k]);
    return static_cast<float>(1.0 / (1.0 + std::exp(-z)));
  };
  std::vector<float> wf;
  double bf = 0;
  fold(model.weights, model.bias, wf, bf);
  cv::Mat cell_p(gh, gw, CV_32F);
  for (int r = 0; r < gh * gw; ++r) cell_p.ptr<float>()[r] = probability(f.values.ptr<float>(r), wf, bf);

  // Border refinement. The full model finds necrosis (it needs the ~400 um context to tell it from bone, cartilage
  // and oedema) but blurs its border: it erodes every necrotic region by up to half its widest window along viable
  // tumour, and a ~300 um focus keeps under a third of its area. So its necrotic cells are seeds of a region that
  // grows, one cell (8-connected) per step and up to refine_reach_um, through tissue cells the refinement model (the
  // ~48 and ~208 um scales only) calls necrotic; in the grown region, seeds included, the refinement model's
  // probability replaces the full model's (so it may trim a seed as well as extend it). Growth never starts a region:
  // tissue without a seed keeps the full model's probability, below the threshold.
  const float thr = static_cast<float>(params.threshold);
  const int steps = static_cast<int>(std::lround(params.refine_reach_um / (f.cell_px * mpp)));
  if (steps > 0) {
    std::vector<float> wfine;
    double bfine = 0;
    fold(model.fine_weights, model.fine_bias, wfine, bfine);
    cv::Mat fine_p(gh, gw, CV_32F), passable(gh, gw, CV_8U);
    for (int r = 0; r < gh * gw; ++r) {
      fine_p.ptr<float>()[r] = probability(f.values.ptr<float>(r), wfine, bfine);
      // At least half tissue, as in training (neither model has seen mostly-glass cells).
      passable.ptr<unsigned char>()[r] =
          fine_p.ptr<float>()[r] >= thr && f.cell_tissue.ptr<float>()[r] >= 0.5f ? 255 : 0;
    }
    cv::Mat grown = cell_p >= thr, next;
    for (int s = 0; s < steps; ++s) {
      cv::dilate(grown, next, cv::Mat());  // 3x3: one cell in every direction
      next &= passable;
      next |= grown;
      if (cv::countNonZero(next != grown) == 0) break;
      std::swap(grown, next);
    }
    for (int r = 0; r < gh * gw; ++r)
      if (grown.ptr<unsigned char>()[r]) cell_p.ptr<float>()[r] = fine_p.ptr<float>()[r];
  }

  // Interpolate between cell centres (resize of the cell grid by the cell size puts cell centres right), crop.
  const int c = f.cell_px;
  cv::Mat prob;
  if (c > 1) {
    cv::resize(cell_p, prob, cv::Size(gw * c, gh * c), 0, 0, cv::INTER_LINEAR);
    prob = prob(cv::Rect(0, 0, work.cols, work.rows));
  } else {
    prob = cell_p;
  }

  NecrosisMap out;
  out.mpp = image.mpp;
  out.downsample = image.downsample;
  out.x0 = image.x0;
  out.y0 = image.y0;
  if (work.size() != image.rgb.size()) {
    cv::resize(prob, out.probability, image.rgb.size(), 0, 0, cv::INTER_LINEAR);
    cv::resize(tissue, out.tissue, image.rgb.size(), 0, 0, cv::INTER_NEAREST);
  } else {
    out.probability = prob.isContinuous() ? prob : prob.clone();
    out.tissue = tissue;
  }
  // One pass: probability 0 outside tissue, the necrosis mask, and the counts.
  out.necrosis.create(out.tissue.size(), CV_8U);
  std::int64_t tissue_px = 0, necrotic_px = 0;
  for (int y = 0; y < out.tissue.rows; ++y) {
    float* pp = out.probability.ptr<float>(y);
    const unsigned char* tp = out.tissue.ptr<unsigned char>(y);
    unsigned char* np = out.necrosis.ptr<unsigned char>(y);
    for (int x = 0; x < out.tissue.cols; ++x) {
      const bool t = tp[x] != 0;
      if (!t) pp[x] = 0.0f;
      const bool n = t && pp[x] >= thr;
      np[x] = n ? 255 : 0;
      tissue_px += t;
      necrotic_px += n;
    }
  }
  const double total_px = static_cast<double>(out.tissue.total());
  out.tissue_fraction = total_px > 0 ? static_cast<double>(tissue_px) / total_px : 0.0;
  out.necrotic_fraction = tissue_px > 0 ? static_cast<double>(necrotic_px) / static_cast<double>(tissue_px) : 0.0;
  return out;
}

}  // namespace detail

NecrosisMap map_necrosis(const ImageView& image, const NecrosisParams& params) {
  return detail::map_necrosis_with(image, params, detail::embedded_necrosis_model());
}

NecrosisArea necrosis_area(const NecrosisMap& map, const cv::Mat& region) {
  if (!(map.mpp > 0.0)) throw Error(ErrorCode::invalid_argument, "necrosis_area: the map's mpp must be > 0, got " + std::to_string(map.mpp));
  if (map.tissue.empty() || map.necrosis.size() != map.tissue.size())
    throw Error(ErrorCode::invalid_argument, "necrosis_area: the map has no tissue mask or its masks differ in size");
  cv::Mat tumour = map.tissue, necrotic = map.necrosis;
  if (!region.empty()) {
    if (region.type() != CV_8U || region.size() != map.tissue.size())
      throw Error(ErrorCode::invalid_argument,
                  "necrosis_area: the region must be CV_8U of the map's size " + std::to_string(map.tissue.cols) + "x" +
                      std::to_string(map.tissue.rows) + ", got type " + std::to_string(region.type()) + " " +
                      std::to_string(region.cols) + "x" + std::to_string(region.rows));
    cv::Mat in = region != 0;
    tumour = map.tissue & in;
    necrotic = map.necrosis & in;
  }
  const double px_mm2 = (map.mpp * 1e-3) * (map.mpp * 1e-3);
  NecrosisArea a;
  a.tumour_mm2 = cv::countNonZero(tumour) * px_mm2;
  a.necrotic_mm2 = cv::countNonZero(necrotic) * px_mm2;
  return a;
}

std::vector<NecrosisPolygon> necrosis_polygons(const NecrosisMap& map, const NecrosisPolygonParams& params) {
  if (!(map.mpp > 0.0))
    throw Error(ErrorCode::invalid_argument, "necrosis_polygons: the map's mpp must be > 0, got " + std::to_string(map.mpp));
  if (!(params.min_area_um2 >= 0.0) || !(params.simplify_um >= 0.0))
    throw Error(ErrorCode::invalid_argument, "necrosis_polygons: min_area_um2 and simplify_um must be >= 0, got " +
                                                 std::to_string(params.min_area_um2) + ", " + std::to_string(params.simplify_um));
  std::vector<NecrosisPolygon> out;
  if (map.necrosis.empty()) return out;
  std::vector<std::vector<cv::Point>> contours;
  std::vector<cv::Vec4i> hierarchy;
  cv::Mat m = map.necrosis.clone();
  cv::findContours(m, contours, hierarchy, cv::RETR_CCOMP, cv::CHAIN_APPROX_SIMPLE);
  const double min_px = params.min_area_um2 / (map.mpp * map.mpp);
  const double eps_px = params.simplify_um / map.mpp;
  // Contour points are centres of boundary pixels; +0.5 puts them at the pixel centre in level-0 coordinates.
  auto ring = [&](const std::vector<cv::Point>& c) {
    std::vector<cv::Point> s;
    if (eps_px > 0.0) cv::approxPolyDP(c, s, eps_px, true);
    else s = c;
    std::vector<cv::Point2d> r;
    r.reserve(s.size());
    for (const auto& p : s)
      r.emplace_back(static_cast<double>(map.x0) + (p.x + 0.5) * map.downsample,
                     static_cast<double>(map.y0) + (p.y + 0.5) * map.downsample);
    return r;
  };
  for (int i = 0; i < static_cast<int>(contours.size()); ++i) {
    if (hierarchy[static_cast<size_t>(i)][3] >= 0) continue;  // a hole: handled with its outline
    const auto& outer = contours[static_cast<size_t>(i)];
    // Pixel-count area (contourArea of the centre line undercounts thin pieces).
    if (std::max(cv::contourArea(outer), static_cast<double>(outer.size())) < min_px) continue;
    NecrosisPolygon poly;
    poly.rings.push_back(ring(outer));
    for (int h = hierarchy[static_cast<size_t>(i)][2]; h >= 0; h = hierarchy[static_cast<size_t>(h)][0])
      if (cv::contourArea(contours[static_cast<size_t>(h)]) >= min_px) poly.rings.push_back(ring(contours[static_cast<size_t>(h)]));
    if (poly.rings[0].size() >= 3) out.push_back(std::move(poly));
  }
  std::sort(out.begin(), out.end(), [](const NecrosisPolygon& a, const NecrosisPolygon& b) {
    auto key = [](const NecrosisPolygon& p) {
      cv::Point2d m = p.rings[0][0];
      for (const auto& q : p.rings[0])
        if (q.y < m.y || (q.y == m.y && q.x < m.x)) m = q;
      return m;
    };
    const auto ka = key(a), kb = key(b);
    return ka.y < kb.y || (ka.y == kb.y && ka.x < kb.x);
  });
  return out;
}

}  // namespace grade
