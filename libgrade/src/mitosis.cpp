// Mitotic-figure detection (method and references in grade/mitosis.hpp).
#include "grade/mitosis.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <optional>
#include <string>

#include <opencv2/dnn.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "models.hpp"
#include "net_pool.hpp"

GRADE_DECLARE_MODEL(mitosis_cnn)
GRADE_DECLARE_MODEL(mitosis_screen)
GRADE_DECLARE_MODEL(mitosis_locate)
GRADE_DECLARE_MODEL(mitosis_verify)

namespace grade {

namespace detail {
namespace {

constexpr int kCrop = 64;     // classifier input side, pixels at working_mpp (16 um at 0.25 um/px)
constexpr int kLocateCrop = 128;  // locator crop side at working_mpp (32 um), averaged 2x2 into its input
constexpr int kLocateCell = 8;    // crop pixels per cell of the locator's output map (2 um)
constexpr int kVerifyCrop = 128;  // verifier crop side at working_mpp (32 um), averaged 2x2 into its input
constexpr int kBatch = 64;    // crops per forward pass

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void check_params(const MitosisParams& p) {
  auto positive = [](double v, const char* name) {
    if (!(v > 0.0) || !std::isfinite(v))
      throw Error(ErrorCode::invalid_argument, std::string("detect_mitoses: ") + name + " must be > 0, got " + num(v));
  };
  positive(p.working_mpp, "working_mpp");
  positive(p.candidate_mpp, "candidate_mpp");
  positive(p.candidate_sigma_um, "candidate_sigma_um");
  if (!(p.candidate_separation_um >= 0.0))
    throw Error(ErrorCode::invalid_argument,
                "detect_mitoses: candidate_separation_um must be >= 0, got " + num(p.candidate_separation_um));
  if (!(p.nms_radius_um >= 0.0))
    throw Error(ErrorCode::invalid_argument, "detect_mitoses: nms_radius_um must be >= 0, got " + num(p.nms_radius_um));
  if (!std::isfinite(p.threshold))
    throw Error(ErrorCode::invalid_argument, "detect_mitoses: threshold must be finite, got " + num(p.threshold));
  if (!(p.screen_threshold >= 0.0 && p.screen_threshold < 1.0))
    throw Error(ErrorCode::invalid_argument,
                "detect_mitoses: screen_threshold must be in [0, 1), got " + num(p.screen_threshold));
  if (p.orientations < 1 || p.orientations > 8)
    throw Error(ErrorCode::invalid_argument,
                "detect_mitoses: orientations must be in 1..8, got " + std::to_string(p.orientations));
  if (!(p.verify_from >= 0.0 && p.verify_from <= 1.0))
    throw Error(ErrorCode::invalid_argument, "detect_mitoses: verify_from must be in [0, 1], got " + num(p.verify_from));
  if (!(p.midpoint_min_score >= 0.0 && p.midpoint_min_score <= 1.0))
    throw Error(ErrorCode::invalid_argument,
                "detect_mitoses: midpoint_min_score must be in [0, 1], got " + num(p.midpoint_min_score));
  if (!(p.candidate_centroid_um >= 0.0 && p.candidate_centroid_um <= 50.0))
    throw Error(ErrorCode::invalid_argument,
                "detect_mitoses: candidate_centroid_um must be in [0, 50], got " + num(p.candidate_centroid_um));
  if (!(p.candidate_centroid_fraction >= 0.0 && p.candidate_centroid_fraction < 1.0))
    throw Error(ErrorCode::invalid_argument, "detect_mitoses: candidate_centroid_fraction must be in [0, 1), got " +
                                                 num(p.candidate_centroid_fraction));
  if (!std::isfinite(p.candidate_min_od))
    throw Error(ErrorCode::invalid_argument,
                "detect_mitoses: candidate_min_od must be finite, got " + num(p.candidate_min_od));
}

// Per-channel look-up tables whose sum is the hematoxylin optical density of an RGB pixel (Ruifrok & Johnston 2001:
// OD = -ln((I + 1) / 256), densities = M^-1 OD with M's rows the H, E and residual unit vectors).
std::array<std::array<float, 256>, 3> hematoxylin_luts(const StainVectors& s) {
  const auto& h = s.hematoxylin;
  const auto& e = s.eosin;
  std::array<double, 3> r{h[1] * e[2] - h[2] * e[1], h[2] * e[0] - h[0] * e[2], h[0] * e[1] - h[1] * e[0]};
  const double rn = std::sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2]);
  if (!(rn > 1e-9)) throw Error(ErrorCode::invalid_argument, "detect_mitoses: hematoxylin and eosin vectors are parallel");
  for (auto& v : r) v /= rn;
  const cv::Matx33d m(h[0], h[1], h[2], e[0], e[1], e[2], r[0], r[1], r[2]);  // rows: stains; OD = m^T c
  const cv::Matx33d inv = m.t().inv();                                        // c = inv * OD
  std::array<std::array<float, 256>, 3> lut{};
  for (int v = 0; v < 256; ++v) {
    const double od = -std::log((v + 1.0) / 256.0);
    for (int c = 0; c < 3; ++c) lut[c][v] = static_cast<float>(inv(0, c) * od);
  }
  return lut;
}

// The networks' input from square RGB crops: N x 3 x side x side floats in 0..1, where side = crop side / pool and
// each value is the mean of a pool x pool block (the screen sees the crop at half resolution: it was exported without
// its first layer, that 2x2 average; tools/train/train_mitosis.py, class Pooled). Written directly: cheaper than
// blobFromImages followed by a pooling layer, and the screen runs on every candidate.
cv::Mat crops_blob(const std::vector<cv::Mat>& crops, int pool) {
  const int side = crops.front().rows / pool;
  const int shape[] = {static_cast<int>(crops.size()), 3, side, side};
  cv::Mat blob(4, shape, CV_32F);
  const float scale = 1.0f / (255.0f * static_cast<float>(pool * pool));
  float* out = blob.ptr<float>();
  const size_t plane = static_cast<size_t>(side) * side;
  for (size_t n = 0; n < crops.size(); ++n) {
    const cv::Mat& c = crops[n];
    float* r = out + n * 3 * plane;
    float* g = r + plane;
    float* b = g + plane;
    for (int y = 0; y < side; ++y)
      for (int x = 0; x < side; ++x) {
        int sr = 0, sg = 0, sb = 0;
        for (int dy = 0; dy < pool; ++dy) {
          const unsigned char* p = c.ptr<unsigned char>(y * pool + dy) + 3 * x * pool;
          for (int dx = 0; dx < pool; ++dx, p += 3) {
            sr += p[0];
            sg += p[1];
            sb += p[2];
          }
        }
        const size_t i = static_cast<size_t>(y) * side + x;
        r[i] = static_cast<float>(sr) * scale;
        g[i] = static_cast<float>(sg) * scale;
        b[i] = static_cast<float>(sb) * scale;
      }
  }
  return blob;
}

struct Peak {
  int x, y;
  float density;
};

// The image at the networks' resolution, and its scale from the input's pixels.
struct Working {
  cv::Mat rgb;
  double sx = 1.0, sy = 1.0;  // working pixels per input pixel
};

Working working_image(const ImageView& image, const MitosisParams& params) {
  // The networks see 0.25 um/px; resample only when the input is at another resolution (more than 2 % off).
  const double scale = image.mpp / params.working_mpp;
  Working w{image.rgb};
  if (std::abs(scale - 1.0) > 0.02) {
    const int cols = std::max(1, static_cast<int>(std::lround(image.rgb.cols * scale)));
    const int rows = std::max(1, static_cast<int>(std::lround(image.rgb.rows * scale)));
    cv::resize(image.rgb, w.rgb, cv::Size(cols, rows), 0, 0, scale < 1.0 ? cv::INTER_AREA : cv::INTER_LINEAR);
  }
  w.sx = static_cast<double>(w.rgb.cols) / image.rgb.cols;
  w.sy = static_cast<double>(w.rgb.rows) / image.rgb.rows;
  return w;
}

// The side x side crop whose centre pixel (side / 2, side / 2) is working pixel (floor(u), floor(v)); near the image
// edge the pixels that exist are mirrored (as the training crops were made). A view into `work` where possible.
cv::Mat crop_at(const cv::Mat& work, double u, double v, int side) {
  const int left = static_cast<int>(std::floor(u)) - side / 2;
  const int top = static_cast<int>(std::floor(v)) - side / 2;
  const cv::Rect want(left, top, side, side);
  const cv::Rect have = want & cv::Rect(0, 0, work.cols, work.rows);
  if (have == want) return work(want);
  if (have.area() == 0) return cv::Mat(side, side, CV_8UC3, cv::Scalar(255, 255, 255));
  cv::Mat crop;
  cv::copyMakeBorder(work(have), crop, have.y - want.y, want.br().y - have.br().y, have.x - want.x,
                     want.br().x - have.br().x, cv::BORDER_REFLECT101);
  if (crop.rows != side || crop.cols != side) cv::resize(crop, crop, {side, side});
  return crop;
}

}  // namespace

}  // namespace detail

using detail::NetPool;  // the classifier's networks (net_pool.hpp)

struct MitosisModel::Impl {
  NetPool main;
  NetPool screen;  // optional (empty bytes): the cheap network that runs first
  NetPool locate;  // optional (empty bytes): finds the centre of a detected figure
  NetPool verify;  // optional (empty bytes): second opinion, with more context, on the high-scoring candidates
};

MitosisModel::MitosisModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MitosisModel::~MitosisModel() = default;

std::shared_ptr<const MitosisModel> MitosisModel::from_onnx(const std::vector<unsigned char>& onnx_bytes,
                                                            const std::vector<unsigned char>& screen_onnx_bytes,
                                                            const std::vector<unsigned char>& locate_onnx_bytes,
                                                            const std::vector<unsigned char>& verify_onnx_bytes) {
  if (onnx_bytes.empty()) throw Error(ErrorCode::model, "mitosis classifier: empty ONNX model");
  auto impl = std::make_unique<Impl>();
  impl->main.bytes = onnx_bytes;
  impl->main.what = "mitosis classifier";
  impl->screen.bytes = screen_onnx_bytes;
  impl->screen.what = "mitosis screen";
  impl->locate.bytes = locate_onnx_bytes;
  impl->locate.what = "mitosis locator";
  impl->verify.bytes = verify_onnx_bytes;
  impl->verify.what = "mitosis verifier";
  // Load once now and run on blank crops, so that a bad model fails here and not mid-slide.
  impl->main.check(detail::kCrop);
  if (!impl->screen.bytes.empty()) impl->screen.check(detail::kCrop / 2);
  constexpr int cells = detail::kLocateCrop / detail::kLocateCell;
  if (!impl->locate.bytes.empty()) impl->locate.check(detail::kLocateCrop / 2, cells * cells);
  if (!impl->verify.bytes.empty()) impl->verify.check(detail::kVerifyCrop / 2);
  return std::make_shared<const MitosisModel>(std::move(impl));
}

std::shared_ptr<const MitosisModel> MitosisModel::embedded() {
  static const std::shared_ptr<const MitosisModel> model =
      from_onnx(GRADE_MODEL_BYTES(mitosis_cnn), GRADE_MODEL_BYTES(mitosis_screen), GRADE_MODEL_BYTES(mitosis_locate),
                GRADE_MODEL_BYTES(mitosis_verify));
  return model;
}

std::vector<MitosisCandidate> find_mitosis_candidates(const ImageView& image, const MitosisParams& params) {
  check_view(image, "detect_mitoses image");
  detail::check_params(params);
  const cv::Mat& rgb = image.rgb;
  // Area-average to candidate_mpp: cheap (one pass over the level-0 pixels) and it suppresses JPEG noise and
  // single dark pixels. The scale is rounded to the pixel grid so that a tile aligned on it sees the same blocks.
  const double factor = std::max(1.0, params.candidate_mpp / image.mpp);
  const int sw = std::max(1, static_cast<int>(std::lround(rgb.cols / factor)));
  const int sh = std::max(1, static_cast<int>(std::lround(rgb.rows / factor)));
  cv::Mat small;
  if (sw == rgb.cols && sh == rgb.rows)
    small = rgb;
  else
    cv::resize(rgb, small, cv::Size(sw, sh), 0, 0, cv::INTER_AREA);
  const double fx = static_cast<double>(rgb.cols) / sw;
  const double fy = static_cast<double>(rgb.rows) / sh;

  const auto lut = detail::hematoxylin_luts(params.stains);
  cv::Mat h(sh, sw, CV_32F);
  for (int y = 0; y < sh; ++y) {
    const auto* s = small.ptr<cv::Vec3b>(y);
    auto* d = h.ptr<float>(y);
    for (int x = 0; x < sw; ++x) d[x] = lut[0][s[x][0]] + lut[1][s[x][1]] + lut[2][s[x][2]];
  }
  const double pixel_um = image.mpp * fx;
  cv::GaussianBlur(h, h, cv::Size(), params.candidate_sigma_um / pixel_um, 0, cv::BORDER_REFLECT101);
  cv::Mat dil;
  cv::dilate(h, dil, cv::Mat(), cv::Point(-1, -1), 1, cv::BORDER_REFLECT101);

  std::vector<detail::Peak> peaks;
  const float tmin = static_cast<float>(params.candidate_min_od);
  for (int y = 0; y < sh; ++y) {
    const float* a = h.ptr<float>(y);
    const float* b = dil.ptr<float>(y);
    for (int x = 0; x < sw; ++x)
      if (a[x] >= tmin && a[x] >= b[x]) peaks.push_back({x, y, a[x]});
  }
  // Merge peaks closer than the separation into the densest (ties: raster order), so a plateau or a lumpy chromatin
  // mass gives one candidate. Greedy, on a grid of separation-sized cells.
  std::stable_sort(peaks.begin(), peaks.end(), [](const auto& p, const auto& q) { return p.density > q.density; });
  const double sep_px = params.candidate_separation_um / pixel_um;
  const double sep2 = sep_px * sep_px;
  const int cell = std::max(1, static_cast<int>(std::ceil(sep_px)));
  const int gw = sw / cell + 1, gh = sh / cell + 1;
  std::vector<std::vector<int>> grid(static_cast<size_t>(gw) * gh);
  std::vector<detail::Peak> kept;
  for (const auto& p : peaks) {
    const int cx = p.x / cell, cy = p.y / cell;
    bool close = false;
    for (int yy = std::max(0, cy - 1); yy <= std::min(gh - 1, cy + 1) && !close; ++yy)
      for (int xx = std::max(0, cx - 1); xx <= std::min(gw - 1, cx + 1) && !close; ++xx)
        for (int k : grid[static_cast<size_t>(yy) * gw + xx]) {
          const double dx = kept[k].x - p.x, dy = kept[k].y - p.y;
          if (dx * dx + dy * dy < sep2) {
            close = true;
            break;
          }
        }
    if (close) continue;
    grid[static_cast<size_t>(cy) * gw + cx].push_back(static_cast<int>(kept.size()));
    kept.push_back(p);
  }
  std::sort(kept.begin(), kept.end(), [](const auto& p, const auto& q) { return p.y != q.y ? p.y < q.y : p.x < q.x; });
  std::vector<MitosisCandidate> out;
  out.reserve(kept.size());
  // Each candidate moves from its peak to the centroid of the dark mass around it: the density above
  // candidate_centroid_fraction of the peak's, within candidate_centroid_um, weighted by its excess. A metaphase plate
  // or an anaphase peaks off its centre, and the classifier scores a figure best with the figure centred (its
  // positives include crops centred on the annotated figures).
  const int rad = static_cast<int>(std::lround(params.candidate_centroid_um / pixel_um));
  for (const auto& p : kept) {
    double cx = p.x + 0.5, cy = p.y + 0.5;
    if (rad > 0) {
      const auto base = static_cast<float>(params.candidate_centroid_fraction * p.density);
      // Offsets from the peak, rounded to 1/64 pixel: the same candidate gets bit-identical coordinates in a tile and
      // in the whole image (tiling must not move detections).
      double wsum = 0.0, wx = 0.0, wy = 0.0;
      for (int y = std::max(0, p.y - rad); y <= std::min(sh - 1, p.y + rad); ++y) {
        const float* a = h.ptr<float>(y);
        for (int x = std::max(0, p.x - rad); x <= std::min(sw - 1, p.x + rad); ++x) {
          const double w = a[x] - base;
          if (w <= 0.0 || (x - p.x) * (x - p.x) + (y - p.y) * (y - p.y) > rad * rad) continue;
          wsum += w;
          wx += w * (x - p.x);
          wy += w * (y - p.y);
        }
      }
      if (wsum > 0.0) {
        cx += std::round(wx / wsum * 64.0) / 64.0;
        cy += std::round(wy / wsum * 64.0) / 64.0;
      }
    }
    out.push_back({image.to_level0_x(cx * fx), image.to_level0_y(cy * fy), p.density});
  }
  return out;
}

namespace {

// Stages 2 and 3 on the working image `work` of `image` (detail::working_image), which detect_mitoses makes once for
// all its calls; parameters already checked.
std::vector<double> score_on(const ImageView& image, const detail::Working& work,
                             const std::vector<MitosisCandidate>& candidates, const MitosisParams& params) {
  std::vector<double> scores(candidates.size(), 0.0);
  if (candidates.empty()) return scores;
  const auto model = params.model ? params.model : MitosisModel::embedded();

  NetPool::Lease net(model->impl().main);
  std::unique_ptr<NetPool::Lease> screen, verify;
  const bool use_verify = !model->impl().verify.bytes.empty() && params.verify_from < 1.0;
  if (use_verify) verify = std::make_unique<NetPool::Lease>(model->impl().verify);
  const double verify_logit =
      use_verify ? (params.verify_from > 0.0 ? std::log(params.verify_from / (1.0 - params.verify_from)) : -HUGE_VAL)
                 : 0.0;
  const bool use_screen = !model->impl().screen.bytes.empty() && params.screen_threshold > 0.0;
  if (use_screen) screen = std::make_unique<NetPool::Lease>(model->impl().screen);
  const double screen_logit =
      use_screen ? std::log(params.screen_threshold / (1.0 - params.screen_threshold)) : 0.0;

  std::vector<cv::Mat> crops;
  std::vector<cv::Point2d> at;  // working-pixel position of each crop (for the verifier's wider crop)
  crops.reserve(detail::kBatch);
  auto forward = [](cv::dnn::Net& n, const std::vector<cv::Mat>& images, int pool) {
    const cv::Mat blob = detail::crops_blob(images, pool);
    try {
      n.setInput(blob);
      return cv::Mat(n.forward().reshape(1, 1).clone());
    } catch (const cv::Exception& e) {
      throw Error(ErrorCode::model, std::string("mitosis classifier: forward pass failed: ") + e.what());
    }
  };
  auto flush = [&](size_t first) {
    if (crops.empty()) return;
    std::vector<int> pass;  // indices into crops that go to the main classifier
    if (use_screen) {
      const cv::Mat p = forward(*screen->net, crops, 2);
      for (size_t i = 0; i < crops.size(); ++i)
        if (p.at<float>(0, static_cast<int>(i)) >= screen_logit) pass.push_back(static_cast<int>(i));
    } else {
      for (size_t i = 0; i < crops.size(); ++i) pass.push_back(static_cast<int>(i));
    }
    if (!pass.empty()) {
      std::vector<cv::Mat> chosen;
      for (int i : pass) chosen.push_back(crops[static_cast<size_t>(i)]);
      // Test-time augmentation: the mean logit over the first `orientations` of the 8 turns / mirror images.
      cv::Mat sum = forward(*net.net, chosen, 1);
      for (int o = 1; o < params.orientations; ++o) {
        std::vector<cv::Mat> turned(chosen.size());
        for (size_t j = 0; j < chosen.size(); ++j) {
          // Never in place: a crop may be a view into the image.
          cv::Mat t;
          if (o >= 4)
            cv::flip(chosen[j], t, 1);
          else
            t = chosen[j];
          if (o % 4 == 0) turned[j] = t.clone();
          if (o % 4 == 1) cv::rotate(t, turned[j], cv::ROTATE_90_CLOCKWISE);
          if (o % 4 == 2) cv::rotate(t, turned[j], cv::ROTATE_180);
          if (o % 4 == 3) cv::rotate(t, turned[j], cv::ROTATE_90_COUNTERCLOCKWISE);
        }
        sum += forward(*net.net, turned, 1);
      }
      cv::Mat out = sum / params.orientations;
      // The verifier: a second opinion on the candidates the main network scores >= verify_from, from the 32 um
      // around each at 0.5 um/px; their score is the mean of the two logits.
      std::vector<int> high;  // indices into pass
      for (size_t j = 0; use_verify && j < pass.size(); ++j)
        if (out.at<float>(0, static_cast<int>(j)) >= verify_logit) high.push_back(static_cast<int>(j));
      if (!high.empty()) {
        std::vector<cv::Mat> wide;
        for (int j : high) {
          const auto& c = at[static_cast<size_t>(pass[static_cast<size_t>(j)])];
          wide.push_back(detail::crop_at(work.rgb, c.x, c.y, detail::kVerifyCrop));
        }
        const cv::Mat v = forward(*verify->net, wide, 2);
        for (size_t k = 0; k < high.size(); ++k)
          out.at<float>(0, high[k]) = 0.5f * (out.at<float>(0, high[k]) + v.at<float>(0, static_cast<int>(k)));
      }
      for (size_t j = 0; j < pass.size(); ++j)
        scores[first + static_cast<size_t>(pass[j])] = 1.0 / (1.0 + std::exp(-out.at<float>(0, static_cast<int>(j))));
    }
    crops.clear();
    at.clear();
  };
  size_t first = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const double u = (candidates[i].x - static_cast<double>(image.x0)) / image.downsample * work.sx;
    const double v = (candidates[i].y - static_cast<double>(image.y0)) / image.downsample * work.sy;
    crops.push_back(detail::crop_at(work.rgb, u, v, detail::kCrop));
    at.emplace_back(u, v);
    if (crops.size() == static_cast<size_t>(detail::kBatch)) {
      flush(first);
      first = i + 1;
    }
  }
  flush(first);
  return scores;
}

// Stage 3: the locator network sees the 32 um crop around each detection (tools/train/train_mitosis_locate.py); the
// figure's centre is the soft-argmax of its map of 2 um cells, i.e. the softmax-weighted mean of the cell centres.
// Offsets are rounded to 1/64 working pixel, so that a detection found in a tile and in the whole image lands on the
// same point.
void locate_on(const ImageView& image, const detail::Working& work, std::vector<MitosisDetection>& dets,
               const MitosisParams& params) {
  const auto model = params.model ? params.model : MitosisModel::embedded();
  const NetPool& pool = model->impl().locate;
  if (!params.locate || pool.bytes.empty() || dets.empty()) return;
  constexpr int side = detail::kLocateCrop, cells = side / detail::kLocateCell;
  NetPool::Lease net(pool);
  for (size_t first = 0; first < dets.size(); first += detail::kBatch) {
    const size_t n = std::min(dets.size() - first, static_cast<size_t>(detail::kBatch));
    std::vector<cv::Mat> crops;
    std::vector<cv::Point2d> at;  // working-pixel position of each crop's centre pixel
    for (size_t i = first; i < first + n; ++i) {
      const double u = (dets[i].x - static_cast<double>(image.x0)) / image.downsample * work.sx;
      const double v = (dets[i].y - static_cast<double>(image.y0)) / image.downsample * work.sy;
      crops.push_back(detail::crop_at(work.rgb, u, v, side));
      at.emplace_back(std::floor(u), std::floor(v));
    }
    cv::Mat maps;
    try {
      net.net->setInput(detail::crops_blob(crops, 2));
      maps = net.net->forward().reshape(1, static_cast<int>(n)).clone();
    } catch (const cv::Exception& e) {
      throw Error(ErrorCode::model, std::string("mitosis locator: forward pass failed: ") + e.what());
    }
    for (size_t k = 0; k < n; ++k) {
      const float* m = maps.ptr<float>(static_cast<int>(k));
      const float top = *std::max_element(m, m + cells * cells);
      double sum = 0.0, ex = 0.0, ey = 0.0;
      for (int cy = 0; cy < cells; ++cy)
        for (int cx = 0; cx < cells; ++cx) {
          const double p = std::exp(static_cast<double>(m[cy * cells + cx] - top));
          sum += p;
          ex += p * (cx * detail::kLocateCell + (detail::kLocateCell - 1) / 2.0 - side / 2);
          ey += p * (cy * detail::kLocateCell + (detail::kLocateCell - 1) / 2.0 - side / 2);
        }
      // Never outside the image: near its edge the crop is mirrored, and the mirror image is not tissue.
      const double u = std::clamp(at[k].x + std::round(ex / sum * 64.0) / 64.0, 0.0, work.rgb.cols - 1.0);
      const double v = std::clamp(at[k].y + std::round(ey / sum * 64.0) / 64.0, 0.0, work.rgb.rows - 1.0);
      dets[first + k].x = image.to_level0_x(u / work.sx);
      dets[first + k].y = image.to_level0_y(v / work.sy);
    }
  }
}

}  // namespace

std::vector<double> score_mitosis_candidates(const ImageView& image, const std::vector<MitosisCandidate>& candidates,
                                             const MitosisParams& params) {
  check_view(image, "detect_mitoses image");
  detail::check_params(params);
  if (candidates.empty()) return {};
  return score_on(image, detail::working_image(image, params), candidates, params);
}

void locate_mitoses(const ImageView& image, std::vector<MitosisDetection>& dets, const MitosisParams& params) {
  check_view(image, "detect_mitoses image");
  detail::check_params(params);
  if (!params.locate || dets.empty()) return;
  locate_on(image, detail::working_image(image, params), dets, params);
}

std::vector<MitosisDetection> detect_mitoses(const ImageView& image, const MitosisParams& params) {
  auto candidates = find_mitosis_candidates(image, params);
  // The image at the networks' resolution, made once (a resample when the input is not at working_mpp) for every
  // classification round and the locator.
  std::optional<detail::Working> work;
  auto working = [&]() -> const detail::Working& {
    if (!work) work = detail::working_image(image, params);
    return *work;
  };
  const double r = params.nms_radius_um / (image.mpp / image.downsample);  // level-0 pixels
  const Rect64& region = params.region;
  const bool whole = region.width <= 0 || region.height <= 0;
  auto inside = [&](double x, double y, double pad) {
    return x >= static_cast<double>(region.x) - pad && y >= static_cast<double>(region.y) - pad &&
           x < static_cast<double>(region.x + region.width) + pad &&
           y < static_cast<double>(region.y + region.height) + pad;
  };
  if (params.exclude)
    candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                    [&](const MitosisCandidate& c) { return params.exclude(c.x, c.y); }),
                     candidates.end());
  // Detections are kept down to `lowest`: the threshold, or lower when a partner for the midpoint rule may score less.
  const bool midpoints = params.midpoint_min_score > 0.0;
  const double lowest = midpoints ? std::min(params.threshold, params.midpoint_min_score) : params.threshold;
  std::vector<MitosisDetection> dets;
  auto classify = [&](const std::vector<MitosisCandidate>& cs) {
    if (cs.empty()) return;
    const auto scores = score_on(image, working(), cs, params);
    for (size_t i = 0; i < cs.size(); ++i)
      if (scores[i] >= lowest) dets.push_back({cs[i].x, cs[i].y, scores[i]});
  };
  if (whole) {
    classify(candidates);
  } else {
    // The region's candidates first. A candidate outside it matters only as a detection that suppresses one inside,
    // directly or through a chain of detections each within the NMS radius of the next; so candidates in the ring
    // of that radius around the region are classified only when they lie within the radius of a detection already
    // found, until no new one is. Detections never linked to the region's can be left out: greedy NMS treats groups
    // with no pair closer than the radius independently. The result is that of classifying the whole ring, for a
    // fraction of its cost (on 512 um tiles the ring holds ~13 % of the candidates; detections are a few per mm^2).
    std::vector<MitosisCandidate> core, ring;
    for (const auto& c : candidates) {
      if (inside(c.x, c.y, 0.0))
        core.push_back(c);
      else if (inside(c.x, c.y, r))
        ring.push_back(c);
    }
    classify(core);
    for (size_t linked_from = 0; !ring.empty() && linked_from < dets.size();) {
      const size_t found = dets.size();
      std::vector<MitosisCandidate> near, rest;
      for (const auto& c : ring) {
        bool close = false;
        for (size_t k = linked_from; k < found && !close; ++k)
          close = (dets[k].x - c.x) * (dets[k].x - c.x) + (dets[k].y - c.y) * (dets[k].y - c.y) < r * r;
        (close ? near : rest).push_back(c);
      }
      ring.swap(rest);
      linked_from = found;
      classify(near);
    }
  }
  // Greedy non-maximum suppression by score (ties: y, then x, so the result does not depend on candidate order).
  // Suppression only comes from higher scores, so the detections kept at any threshold are those kept at a lower one
  // and scoring above it: a CSV written at a low threshold gives the whole recall / false-positive curve.
  std::sort(dets.begin(), dets.end(), [](const auto& a, const auto& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.y != b.y ? a.y < b.y : a.x < b.x;
  });
  // partner[k]: the highest-scoring detection that kept[k] suppressed first, if it scores >= midpoint_min_score.
  std::vector<MitosisDetection> kept;
  std::vector<std::optional<MitosisDetection>> partner;
  for (const auto& d : dets) {
    size_t by = kept.size();
    for (size_t k = 0; k < kept.size() && by == kept.size(); ++k)
      if ((kept[k].x - d.x) * (kept[k].x - d.x) + (kept[k].y - d.y) * (kept[k].y - d.y) < r * r) by = k;
    if (by == kept.size()) {
      kept.push_back(d);
      partner.emplace_back();
    } else if (midpoints && !partner[by] && d.score >= params.midpoint_min_score) {
      partner[by] = d;
    }
  }
  // Which detections are returned is decided at their own positions (the threshold; the region, so that tiles
  // neither lose nor repeat one); the reported position is then the midpoint with the partner.
  std::vector<MitosisDetection> out;
  for (size_t k = 0; k < kept.size(); ++k) {
    MitosisDetection d = kept[k];
    if (d.score < params.threshold || (!whole && !inside(d.x, d.y, 0.0))) continue;
    if (partner[k]) {
      d.x = 0.5 * (d.x + partner[k]->x);
      d.y = 0.5 * (d.y + partner[k]->y);
    }
    out.push_back(d);
  }
  if (params.locate && !out.empty()) locate_on(image, working(), out, params);
  return out;
}

}  // namespace grade
