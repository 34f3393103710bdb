// Necrosis features, the logistic model and its training (see necrosis.hpp for the method, necrosis_model.hpp for
// why training lives in the library).
#include "necrosis_model.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "models.hpp"

GRADE_DECLARE_MODEL(necrosis)

namespace grade::detail {

namespace {

// Thresholds on optical density, -ln((I + 1) / 256) per channel as in grade::deconvolve. Glass is brighter than ~235
// in every channel (OD sum < 0.25); pale necrotic eosin is still above that.
constexpr float tissue_od_sum = 0.25f;
// A pixel whose haematoxylin density exceeds its ~14 um surroundings by this much is counted as crisp nuclear
// chromatin. A plain threshold on H is not used: cartilage matrix is as haematoxylin-dense as nuclei.
constexpr float crisp_h_od = 0.45f;
// Neighbourhoods over which cell sums are pooled, in cells (16 um): ~48, ~208 and ~400 um.
constexpr std::array<int, 3> scales_cells = {3, 13, 25};
constexpr int per_scale = 7;
constexpr float log_eps = 0.01f;

enum Acc { acc_pixels, acc_tissue, acc_h, acc_e, acc_e2, acc_grad, acc_crisp, acc_sat, acc_count };

const std::array<float, 256>& lut() {
  static const std::array<float, 256> t = [] {
    std::array<float, 256> a{};
    for (int i = 0; i < 256; ++i) a[static_cast<size_t>(i)] = static_cast<float>(-std::log((i + 1.0) / 256.0));
    return a;
  }();
  return t;
}

// Rows of the pseudo-inverse of the 2x3 stain matrix: density_k = rows[k] . od.
std::array<std::array<float, 3>, 2> unmix(const StainVectors& s) {
  const std::array<double, 3>& h = s.hematoxylin;
  const std::array<double, 3>& e = s.eosin;
  const double hh = h[0] * h[0] + h[1] * h[1] + h[2] * h[2];
  const double ee = e[0] * e[0] + e[1] * e[1] + e[2] * e[2];
  const double he = h[0] * e[0] + h[1] * e[1] + h[2] * e[2];
  const double det = hh * ee - he * he;
  if (!(std::abs(det) > 1e-9))
    throw Error(ErrorCode::invalid_argument, "necrosis: the haematoxylin and eosin stain vectors are parallel or zero");
  std::array<std::array<float, 3>, 2> r{};
  for (int c = 0; c < 3; ++c) {
    r[0][static_cast<size_t>(c)] = static_cast<float>((ee * h[static_cast<size_t>(c)] - he * e[static_cast<size_t>(c)]) / det);
    r[1][static_cast<size_t>(c)] = static_cast<float>((hh * e[static_cast<size_t>(c)] - he * h[static_cast<size_t>(c)]) / det);
  }
  return r;
}

// Sum of `integral` (CV_64F, (gh+1) x (gw+1)) over the window of side k centred on cell (i, j), clipped to the grid.
inline double window_sum(const cv::Mat& integral, int i, int j, int k, int gh, int gw) {
  const int r = k / 2;
  const int i0 = std::max(0, i - r), i1 = std::min(gh, i + r + 1);
  const int j0 = std::max(0, j - r), j1 = std::min(gw, j + r + 1);
  return integral.at<double>(i1, j1) - integral.at<double>(i0, j1) - integral.at<double>(i1, j0) +
         integral.at<double>(i0, j0);
}

// L2-penalised logistic regression by Newton's method (IRLS) on the first `d` columns of `x` (column 0 is the
// constant 1, not penalised). Deterministic: plain sums in a fixed order.
std::vector<double> fit_logistic(const cv::Mat& x, const std::vector<double>& y, const std::vector<double>& wt, int d,
                                 double lambda, int iterations) {
  const size_t n = y.size();
  cv::Mat beta = cv::Mat::zeros(d, 1, CV_64F);
  for (int it = 0; it < iterations; ++it) {
    cv::Mat grad = cv::Mat::zeros(d, 1, CV_64F), hess = cv::Mat::zeros(d, d, CV_64F);
    for (size_t i = 0; i < n; ++i) {
      const double* xr = x.ptr<double>(static_cast<int>(i));
      double z = 0;
      for (int k = 0; k < d; ++k) z += xr[k] * beta.at<double>(k);
      const double p = 1.0 / (1.0 + std::exp(-z));
      const double g = wt[i] * (p - y[i]), hw = wt[i] * std::max(p * (1.0 - p), 1e-9);
      for (int a = 0; a < d; ++a) {
        grad.at<double>(a) += g * xr[a];
        double* hr = hess.ptr<double>(a);
        for (int b = a; b < d; ++b) hr[b] += hw * xr[a] * xr[b];
      }
    }
    for (int a = 0; a < d; ++a)
      for (int b = 0; b < a; ++b) hess.at<double>(a, b) = hess.at<double>(b, a);
    for (int a = 1; a < d; ++a) {
      grad.at<double>(a) += lambda * beta.at<double>(a);
      hess.at<double>(a, a) += lambda;
    }
    cv::Mat step;
    cv::solve(hess, grad, step, cv::DECOMP_CHOLESKY);
    beta -= step;
    if (cv::norm(step, cv::NORM_INF) < 1e-7) break;
  }
  return std::vector<double>(beta.begin<double>(), beta.end<double>());
}

}  // namespace

int necrosis_feature_count() { return static_cast<int>(scales_cells.size()) * per_scale; }

// The two finer neighbourhoods (~48 and ~208 um): the 48 um scale alone places the border best on grade-synth but
// cannot tell cartilage or oedema from necrosis next to a wrongly seeded region (cross-validated accuracy 0.83 on the
// osteosarcoma tiles, against 0.87 with both; benchmarks/README.md).
int necrosis_fine_feature_count() { return 2 * per_scale; }

std::vector<std::string> necrosis_feature_names() {
  std::vector<std::string> n;
  for (int k : scales_cells) {
    std::string s = "@";
    s += std::to_string(k * static_cast<int>(necrosis_cell_um));
    s += "um";
    for (const char* f : {"tissue_fraction", "log_mean_h", "log_mean_e", "log_sd_e", "log_grad", "crisp_nuclear_fraction",
                          "saturation"}) {
      std::string name = f;
      name += s;
      n.push_back(name);
    }
  }
  return n;
}

NecrosisFeatures necrosis_features(const cv::Mat& rgb, double mpp, const StainVectors& stains, cv::Mat* tissue) {
  CV_Assert(rgb.type() == CV_8UC3 && mpp > 0.0);
  NecrosisFeatures out;
  out.cell_px = std::max(1, static_cast<int>(std::lround(necrosis_cell_um / mpp)));
  const int c = out.cell_px;
  const int h = rgb.rows, w = rgb.cols;
  const int gh = (h + c - 1) / c, gw = (w + c - 1) / c;
  const auto& od = lut();
  const auto m = unmix(stains);

  // One full-size float map only (haematoxylin, for its local background); everything else is computed on the fly
  // from the 8-bit pixels through look-up tables, row by row (memory traffic, not arithmetic, is the cost here).
  cv::Mat hmap(h, w, CV_32F);
  for (int y = 0; y < h; ++y) {
    const unsigned char* p = rgb.ptr<unsigned char>(y);
    float* hp = hmap.ptr<float>(y);
    for (int x = 0; x < w; ++x)
      hp[x] = std::max(0.0f, m[0][0] * od[p[3 * x]] + m[0][1] * od[p[3 * x + 1]] + m[0][2] * od[p[3 * x + 2]]);
  }
  // Local haematoxylin background (~14 um): a crisp nucleus stands out of it; cartilage matrix and ghost cells do not.
  cv::Mat hbg;
  const int kb = std::max(3, static_cast<int>(std::lround(14.0 / mpp)) | 1);
  cv::boxFilter(hmap, hbg, CV_32F, cv::Size(kb, kb), cv::Point(-1, -1), true, cv::BORDER_REFLECT);
  // Tissue: the image smoothed over ~6 um has an OD sum above the glass level, so pale tissue is not riddled with
  // one-pixel holes. The texture feature is taken on the same smoothed image: at pixel scale it measured the
  // resampling chain as much as the tissue (a slide's JPEG-compressed pyramid level against the same pixels
  // area-averaged from level 0 moved a grade-synth slide's necrosis by ~1 point); over ~6 um it keeps the
  // granularity of debris and ghost cells against smooth matrix (benchmarks/README.md, "Necrosis map").
  cv::Mat smooth;
  const int ks = std::max(1, static_cast<int>(std::lround(6.0 / mpp)) | 1);
  if (ks > 1) cv::blur(rgb, smooth, cv::Size(ks, ks), cv::Point(-1, -1), cv::BORDER_REFLECT);
  else smooth = rgb;
  static const std::array<float, 256> inv = [] {
    std::array<float, 256> a{};
    for (int i = 1; i < 256; ++i) a[static_cast<size_t>(i)] = 1.0f / static_cast<float>(i);
    return a;
  }();

  std::vector<double> acc(static_cast<size_t>(gh) * static_cast<size_t>(gw) * acc_count, 0.0);
  if (tissue) tissue->create(h, w, CV_8U);
  std::vector<float> sum_prev(static_cast<size_t>(w), 0.0f), sum_cur(static_cast<size_t>(w), 0.0f);
  for (int y = 0; y < h; ++y) {
    const unsigned char* p = rgb.ptr<unsigned char>(y);
    const unsigned char* q = smooth.ptr<unsigned char>(y);
    const float* hp = hmap.ptr<float>(y);
    const float* bp = hbg.ptr<float>(y);
    unsigned char* tp = tissue ? tissue->ptr<unsigned char>(y) : nullptr;
    double* dst = &acc[static_cast<size_t>(y / c) * static_cast<size_t>(gw) * acc_count];
    for (int x = 0; x < w; ++x) sum_cur[static_cast<size_t>(x)] = od[q[3 * x]] + od[q[3 * x + 1]] + od[q[3 * x + 2]];
    for (int j = 0; j < gw; ++j) {
      const int x0 = j * c, x1 = std::min(w, x0 + c);
      float nt = 0, sh = 0, se = 0, se2 = 0, ng = 0, ncr = 0, ss = 0;
      for (int x = x0; x < x1; ++x) {
        const bool t = od[q[3 * x]] + od[q[3 * x + 1]] + od[q[3 * x + 2]] > tissue_od_sum;
        if (tp) tp[x] = t ? 255 : 0;
        if (!t) continue;
        const unsigned char r8 = p[3 * x], g8 = p[3 * x + 1], b8 = p[3 * x + 2];
        const float ed = std::max(0.0f, m[1][0] * od[r8] + m[1][1] * od[g8] + m[1][2] * od[b8]);
        const float s = sum_cur[static_cast<size_t>(x)];
        // Texture: OD differences of the smoothed image to the left and upper neighbours.
        ng += (x > 0 ? std::abs(s - sum_cur[static_cast<size_t>(x - 1)]) : 0.0f) +
              (y > 0 ? std::abs(s - sum_prev[static_cast<size_t>(x)]) : 0.0f);
        const int mx = std::max(r8, std::max(g8, b8)), mn = std::min(r8, std::min(g8, b8));
        ss += static_cast<float>(mx - mn) * inv[static_cast<size_t>(mx)];
        nt += 1.0f;
        sh += hp[x];
        se += ed;
        se2 += ed * ed;
        ncr += hp[x] - bp[x] > crisp_h_od ? 1.0f : 0.0f;
      }
      double* a = dst + static_cast<size_t>(j) * acc_count;
      a[acc_pixels] += x1 - x0;
      a[acc_tissue] += nt;
      a[acc_h] += sh;
      a[acc_e] += se;
      a[acc_e2] += se2;
      a[acc_grad] += ng;
      a[acc_crisp] += ncr;
      a[acc_sat] += ss;
    }
    std::swap(sum_prev, sum_cur);
  }

  out.cell_tissue.create(gh, gw, CV_32F);
  for (int i = 0; i < gh; ++i)
    for (int j = 0; j < gw; ++j) {
      const double* a = &acc[(static_cast<size_t>(i) * static_cast<size_t>(gw) + static_cast<size_t>(j)) * acc_count];
      out.cell_tissue.at<float>(i, j) = static_cast<float>(a[acc_tissue] / std::max(1.0, a[acc_pixels]));
    }

  // Integral images of each accumulator over the cell grid, for the neighbourhood sums.
  std::array<cv::Mat, acc_count> integ;
  for (int k = 0; k < acc_count; ++k) {
    cv::Mat grid(gh, gw, CV_64F);
    for (int i = 0; i < gh; ++i)
      for (int j = 0; j < gw; ++j)
        grid.at<double>(i, j) = acc[(static_cast<size_t>(i) * static_cast<size_t>(gw) + static_cast<size_t>(j)) * acc_count +
                                    static_cast<size_t>(k)];
    cv::integral(grid, integ[static_cast<size_t>(k)], CV_64F);
  }

  const int nf = necrosis_feature_count();
  out.values.create(gh * gw, nf, CV_32F);
  for (int i = 0; i < gh; ++i)
    for (int j = 0; j < gw; ++j) {
      float* f = out.values.ptr<float>(i * gw + j);
      for (size_t s = 0; s < scales_cells.size(); ++s) {
        const int k = scales_cells[s];
        auto sum = [&](int a) { return window_sum(integ[static_cast<size_t>(a)], i, j, k, gh, gw); };
        const double px = std::max(1.0, sum(acc_pixels));
        const double t = std::max(1.0, sum(acc_tissue));
        const double mh = sum(acc_h) / t, me = sum(acc_e) / t;
        const double var_e = std::max(0.0, sum(acc_e2) / t - me * me);
        float* g = f + s * per_scale;
        g[0] = static_cast<float>(sum(acc_tissue) / px);
        g[1] = std::log(static_cast<float>(mh) + log_eps);
        g[2] = std::log(static_cast<float>(me) + log_eps);
        g[3] = std::log(static_cast<float>(std::sqrt(var_e)) + log_eps);
        g[4] = std::log(static_cast<float>(sum(acc_grad) / t) + log_eps);
        g[5] = static_cast<float>(sum(acc_crisp) / t);
        g[6] = static_cast<float>(sum(acc_sat) / t);
      }
    }
  return out;
}

NecrosisModel read_necrosis_model(const std::string& yaml_text) {
  NecrosisModel m;
  try {
    cv::FileStorage fs(yaml_text, cv::FileStorage::READ | cv::FileStorage::MEMORY);
    if (!fs.isOpened()) throw Error(ErrorCode::model, "necrosis model: cannot parse the YAML");
    fs["mean"] >> m.mean;
    fs["scale"] >> m.scale;
    fs["weights"] >> m.weights;
    fs["bias"] >> m.bias;
    fs["fine_weights"] >> m.fine_weights;
    fs["fine_bias"] >> m.fine_bias;
    fs["provenance"] >> m.provenance;
    std::vector<std::string> names;
    fs["features"] >> names;
    if (names != necrosis_feature_names())
      throw Error(ErrorCode::model, "necrosis model: its feature list does not match this library's");
  } catch (const cv::Exception& e) {
    throw Error(ErrorCode::model, std::string("necrosis model: ") + e.what());
  }
  const size_t n = static_cast<size_t>(necrosis_feature_count());
  if (m.mean.size() != n || m.scale.size() != n || m.weights.size() != n)
    throw Error(ErrorCode::model, "necrosis model: expected " + std::to_string(n) + " features, got " +
                                      std::to_string(m.weights.size()));
  if (m.fine_weights.size() != static_cast<size_t>(necrosis_fine_feature_count()))
    throw Error(ErrorCode::model, "necrosis model: expected " + std::to_string(necrosis_fine_feature_count()) +
                                      " fine_weights (border refinement model), got " +
                                      std::to_string(m.fine_weights.size()));
  return m;
}

void write_necrosis_model(const NecrosisModel& model, const std::string& path) {
  cv::FileStorage fs(path, cv::FileStorage::WRITE);
  if (!fs.isOpened()) throw Error(ErrorCode::io, "necrosis model: cannot write " + path);
  fs << "features" << necrosis_feature_names();
  fs << "mean" << model.mean << "scale" << model.scale << "weights" << model.weights << "bias" << model.bias;
  fs << "fine_weights" << model.fine_weights << "fine_bias" << model.fine_bias;
  fs << "provenance" << model.provenance;
}

const NecrosisModel& embedded_necrosis_model() {
  static const NecrosisModel m = [] {
    const auto bytes = GRADE_MODEL_BYTES(necrosis);
    return read_necrosis_model(std::string(bytes.begin(), bytes.end()));
  }();
  return m;
}

NecrosisModel train_necrosis_model(const std::vector<NecrosisTrainingTile>& tiles, const NecrosisTrainParams& params) {
  const int nf = necrosis_feature_count();
  // Gather the usable cells with their weights.
  std::vector<const float*> rows;
  std::vector<double> y, wt;
  double tiles_pos = 0, tiles_neg = 0;
  std::vector<int> used(tiles.size(), 0);
  auto usable = [&](size_t t, int r) {
    const auto& tile = tiles[t];
    return tile.features.cell_tissue.ptr<float>()[r] >= params.min_cell_tissue &&
           (tile.cells.empty() || tile.cells.ptr<unsigned char>()[r] != 0);
  };
  for (size_t t = 0; t < tiles.size(); ++t) {
    const auto& f = tiles[t].features;
    if (!tiles[t].cells.empty() && (tiles[t].cells.type() != CV_8U || tiles[t].cells.size() != f.cell_tissue.size()))
      throw Error(ErrorCode::invalid_argument, "necrosis training: a tile's cell mask does not match its cell grid");
    for (int r = 0; r < f.values.rows; ++r)
      if (usable(t, r)) ++used[t];
    if (used[t] > 0) (tiles[t].necrotic ? tiles_pos : tiles_neg) += tiles[t].weight;
  }
  if (tiles_pos == 0 || tiles_neg == 0)
    throw Error(ErrorCode::invalid_argument, "necrosis training: need tissue tiles of both classes");
  for (size_t t = 0; t < tiles.size(); ++t) {
    if (used[t] == 0) continue;
    const auto& f = tiles[t].features;
    const double tw = 0.5 * tiles[t].weight / ((tiles[t].necrotic ? tiles_pos : tiles_neg) * used[t]);
    for (int r = 0; r < f.values.rows; ++r)
      if (usable(t, r)) {
        rows.push_back(f.values.ptr<float>(r));
        y.push_back(tiles[t].necrotic ? 1.0 : 0.0);
        wt.push_back(tw);
      }
  }
  const size_t n = rows.size();
  NecrosisModel m;
  m.mean.assign(static_cast<size_t>(nf), 0.0);
  m.scale.assign(static_cast<size_t>(nf), 0.0);
  for (size_t i = 0; i < n; ++i)
    for (int k = 0; k < nf; ++k) m.mean[static_cast<size_t>(k)] += wt[i] * rows[i][k];
  for (size_t i = 0; i < n; ++i)
    for (int k = 0; k < nf; ++k) {
      const double d = rows[i][k] - m.mean[static_cast<size_t>(k)];
      m.scale[static_cast<size_t>(k)] += wt[i] * d * d;
    }
  for (auto& s : m.scale) s = std::max(1e-6, std::sqrt(s));

  // Standardised design matrix with a leading 1 for the bias.
  const int d = nf + 1;
  cv::Mat x(static_cast<int>(n), d, CV_64F);
  for (size_t i = 0; i < n; ++i) {
    double* xr = x.ptr<double>(static_cast<int>(i));
    xr[0] = 1.0;
    for (int k = 0; k < nf; ++k)
      xr[k + 1] = (rows[i][k] - m.mean[static_cast<size_t>(k)]) / m.scale[static_cast<size_t>(k)];
  }
  const double lambda = params.l2 * 1e-3;
  const std::vector<double> beta = fit_logistic(x, y, wt, d, lambda, params.iterations);
  m.bias = beta[0];
  m.weights.assign(beta.begin() + 1, beta.end());
  // The refinement model on the same cells: the finest scales' features are the design matrix's first columns after
  // the constant, and fit_logistic uses the first d columns.
  const std::vector<double> fine = fit_logistic(x, y, wt, 1 + necrosis_fine_feature_count(), lambda, params.iterations);
  m.fine_bias = fine[0];
  m.fine_weights.assign(fine.begin() + 1, fine.end());
  return m;
}

}  // namespace grade::detail
