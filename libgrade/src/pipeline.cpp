// The whole-slide pipeline (pipeline.hpp). The orchestration lives here: tiling, threads, progress, cancellation and
// the deterministic merge. The stages (tissue, stain, nuclei, mitosis, necrosis) stay pure functions.
#include "grade/pipeline.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <mutex>
#include <sstream>
#include <thread>

#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "grade/version.hpp"

namespace grade {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

void check_params(const GradeParams& p) {
  auto bad = [](const std::string& what) { throw Error(ErrorCode::invalid_argument, "grade_slide: " + what); };
  if (p.differentiation && (*p.differentiation < 1 || *p.differentiation > 3))
    bad("differentiation must be 1, 2 or 3 (got " + std::to_string(*p.differentiation) + ")");
  if (p.threads < 0) bad("threads must be >= 0 (got " + std::to_string(p.threads) + ")");
  if (!(p.tile_um >= 32.0 && p.tile_um <= 8192.0)) bad("tile_um must be in [32, 8192] (got " + fmt(p.tile_um) + ")");
  if (!(p.tile_margin_um >= 0.0 && p.tile_margin_um <= 1024.0))
    bad("tile_margin_um must be in [0, 1024] (got " + fmt(p.tile_margin_um) + ")");
  if (!(p.necrosis_margin_um >= 0.0 && p.necrosis_margin_um <= 2048.0))
    bad("necrosis_margin_um must be in [0, 2048] (got " + fmt(p.necrosis_margin_um) + ")");
  if (!(p.grid_um >= 1.0 && p.grid_um <= 64.0)) bad("grid_um must be in [1, 64] (got " + fmt(p.grid_um) + ")");
  if (!(p.thumbnail_mpp >= 1.0 && p.thumbnail_mpp <= 64.0))
    bad("thumbnail_mpp must be in [1, 64] (got " + fmt(p.thumbnail_mpp) + ")");
  if (!(p.stain_mpp >= 0.25 && p.stain_mpp <= 64.0)) bad("stain_mpp must be in [0.25, 64] (got " + fmt(p.stain_mpp) + ")");
  if (p.stain_max_pixels < 10'000) bad("stain_max_pixels must be >= 10000 (got " + std::to_string(p.stain_max_pixels) + ")");
  if (p.nuclei_sampling == NucleiSampling::sample && !(p.nuclei_sample_fraction > 0.0 && p.nuclei_sample_fraction <= 1.0))
    bad("nuclei_sample_fraction must be in (0, 1] (got " + fmt(p.nuclei_sample_fraction) + ")");
  if (p.nuclei_sampling == NucleiSampling::sample && p.nuclei_min_tiles < 1)
    bad("nuclei_min_tiles must be >= 1 (got " + std::to_string(p.nuclei_min_tiles) + ")");
  if (p.nuclei_sampling != NucleiSampling::none && !valid_flips(p.nuclei.flips))
    bad("nuclei.flips must be 1, 2, 4 or 8 (got " + std::to_string(p.nuclei.flips) + ")");
  if (p.nuclei_sampling != NucleiSampling::none && !valid_network(p.nuclei.network))
    bad("nuclei.network must be fast or accurate (got " + std::to_string(static_cast<int>(p.nuclei.network)) + ")");
  if (!(p.hpf.hpf_area_mm2 > 0.0 && p.hpf.hpf_area_mm2 < 10.0))
    bad("hpf_area_mm2 must be in (0, 10) (got " + fmt(p.hpf.hpf_area_mm2) + ")");
  if (p.hpf.fields < 1) bad("fields must be >= 1 (got " + std::to_string(p.hpf.fields) + ")");
  for (std::size_t i = 0; i < p.roi.size(); ++i)
    if (p.roi[i].rings.empty() || p.roi[i].rings[0].size() < 3)
      bad("ROI polygon " + std::to_string(i) + " has fewer than 3 points");
}

// Even-odd point in ring test (ring not necessarily closed).
bool in_ring(const std::vector<cv::Point2d>& ring, double x, double y) {
  bool inside = false;
  const std::size_t n = ring.size();
  for (std::size_t i = 0, j = n - 1; i < n; j = i++) {
    const cv::Point2d& a = ring[i];
    const cv::Point2d& b = ring[j];
    if ((a.y > y) != (b.y > y) && x < (b.x - a.x) * (y - a.y) / (b.y - a.y) + a.x) inside = !inside;
  }
  return inside;
}

// Rasterises the ROI union onto the grid: a cell is inside when its centre is (fillPoly's rule, in grid coordinates
// whose pixel centres are the integers).
cv::Mat rasterise_roi(const std::vector<Polygon>& roi, cv::Size size, double cell_px) {
  cv::Mat out = cv::Mat::zeros(size, CV_8U);
  constexpr int shift = 4;
  constexpr double scale = 1 << shift;
  auto to_grid = [&](const std::vector<cv::Point2d>& ring) {
    std::vector<cv::Point> pts;
    pts.reserve(ring.size());
    for (const auto& p : ring)
      pts.emplace_back(static_cast<int>(std::lround((p.x / cell_px - 0.5) * scale)),
                       static_cast<int>(std::lround((p.y / cell_px - 0.5) * scale)));
    return pts;
  };
  for (const Polygon& poly : roi) {
    cv::Mat one = cv::Mat::zeros(size, CV_8U);
    std::vector<std::vector<cv::Point>> outer{to_grid(poly.rings[0])};
    cv::fillPoly(one, outer, cv::Scalar(255), cv::LINE_8, shift);
    for (std::size_t r = 1; r < poly.rings.size(); ++r) {
      if (poly.rings[r].size() < 3) continue;
      std::vector<std::vector<cv::Point>> hole{to_grid(poly.rings[r])};
      cv::fillPoly(one, hole, cv::Scalar(0), cv::LINE_8, shift);
    }
    cv::bitwise_or(out, one, out);
  }
  return out;
}

// Resamples a level-0-anchored view to a coarser mpp (area averaging); returns the view itself when it is already at
// or coarser than `mpp`.
ImageView resample_to(const ImageView& v, double mpp) {
  if (mpp <= v.mpp * (1.0 + 1e-6)) return v;
  const double f = v.mpp / mpp;
  const int w = std::max(1, static_cast<int>(std::lround(v.rgb.cols * f)));
  const int h = std::max(1, static_cast<int>(std::lround(v.rgb.rows * f)));
  ImageView out;
  cv::resize(v.rgb, out.rgb, cv::Size(w, h), 0, 0, cv::INTER_AREA);
  out.x0 = v.x0;
  out.y0 = v.y0;
  // The exact scale of the resized image (sizes are rounded), so level-0 coordinates stay exact.
  out.downsample = v.downsample * static_cast<double>(v.rgb.cols) / w;
  out.mpp = v.mpp * static_cast<double>(v.rgb.cols) / w;
  return out;
}

struct Tile {
  Rect64 core;       // level-0 pixels; cores partition the slide
  Rect64 read;       // core plus margin, clipped to the slide
  int gx0, gy0, gx1, gy1;  // grid cells of the core: [gx0, gx1) x [gy0, gy1)
  bool nuclei = false;
};

struct TileResult {
  std::vector<MitosisDetection> mitoses;
  std::int64_t nuclei = 0, spindle = 0;
  double sum_area = 0.0, sum_elong = 0.0, sum_hod = 0.0;
  std::int64_t nuclei_cells = 0;  // tumour cells of the core when nuclei were analysed
  bool nuclei_done = false;
  double read_s = 0.0, mitosis_s = 0.0, nuclei_s = 0.0, necrosis_s = 0.0;
};

}  // namespace

const char* nuclei_sampling_name(NucleiSampling sampling) {
  switch (sampling) {
    case NucleiSampling::all_tissue: return "all_tissue";
    case NucleiSampling::sample: return "sample";
    case NucleiSampling::none: return "none";
  }
  return "?";
}

bool roi_contains(const std::vector<Polygon>& roi, double x, double y) {
  for (const Polygon& poly : roi) {
    if (poly.rings.empty() || !in_ring(poly.rings[0], x, y)) continue;
    bool in_hole = false;
    for (std::size_t r = 1; r < poly.rings.size() && !in_hole; ++r)
      if (poly.rings[r].size() >= 3 && in_ring(poly.rings[r], x, y)) in_hole = true;
    if (!in_hole) return true;
  }
  return false;
}

SlideReport grade_slide(const std::filesystem::path& path, const GradeParams& params, const ProgressCallback& progress,
                        const std::atomic<bool>* cancel) {
  SlideOpenParams op;
  op.mpp_override = params.mpp_override;
  const Slide slide = Slide::open(path, op);
  return grade_slide(slide, params, progress, cancel);
}

SlideReport grade_slide(const Slide& slide, const GradeParams& params_in, const ProgressCallback& progress,
                        const std::atomic<bool>* cancel) {
  const auto t_start = Clock::now();
  check_params(params_in);
  const std::string name = slide.path().string();
  auto cancelled = [&] { return cancel != nullptr && cancel->load(std::memory_order_relaxed); };
  auto throw_if_cancelled = [&] {
    if (cancelled()) throw Error(ErrorCode::cancelled, name + ": grading cancelled");
  };

  SlideReport rep;
  rep.params = params_in;
  rep.software_version = version_string;
  rep.slide_path = name;
  rep.vendor = slide.vendor();
  rep.width = slide.width();
  rep.height = slide.height();
  rep.mpp = slide.require_mpp();
  rep.mpp_source = slide.mpp_source();
  rep.objective_power = slide.objective_power();
  const double mpp0 = rep.mpp;
  const double um2_to_mm2 = 1e-6;

  // Differentiation: the score wins over the subtype; an unknown subtype is an error (a typo would otherwise
  // silently make the report incomplete).
  if (params_in.differentiation) {
    rep.differentiation = params_in.differentiation;
    rep.differentiation_source = "pathologist";
  } else if (!params_in.subtype.empty()) {
    rep.differentiation = differentiation_from_subtype(params_in.subtype);
    if (!rep.differentiation)
      throw Error(ErrorCode::invalid_argument,
                  "unknown subtype '" + params_in.subtype +
                      "': give the differentiation score (1, 2 or 3) instead, or one of the known subtypes");
    rep.differentiation_source = "subtype";
  }

  auto report_progress = [&](const std::string& phase, std::int64_t done, std::int64_t total, double fraction) {
    if (!progress) return;
    Progress p;
    p.phase = phase;
    p.tiles_done = done;
    p.tiles_total = total;
    p.fraction = fraction;
    progress(p);
  };

  // 1. Thumbnail, tissue, stains.
  report_progress("thumbnail", 0, 0, 0.0);
  const ImageView thumb = slide.read_thumbnail(params_in.thumbnail_mpp);
  throw_if_cancelled();
  const TissueMask tissue = detect_tissue(thumb, params_in.tissue);
  {
    // Stains on a finer overview, restricted to the tissue mask (resampled to it).
    const ImageView fine = slide.read_thumbnail(std::max(params_in.stain_mpp, mpp0), params_in.stain_max_pixels);
    cv::Mat mask;
    cv::resize(tissue.mask, mask, fine.rgb.size(), 0, 0, cv::INTER_NEAREST);
    throw_if_cancelled();
    rep.stains = estimate_stains(fine, params_in.stain, mask);
  }
  if (rep.stains.fallback)
    rep.warnings.push_back("stain vectors: standard H&E vectors used (" + rep.stains.warning + ")");
  rep.thumbnail = thumb.rgb;
  rep.thumbnail_downsample = thumb.downsample;

  GradeParams params = params_in;
  params.nuclei.stains = rep.stains.vectors;
  params.mitosis.stains = rep.stains.vectors;
  // Not necrosis: its model was trained on densities from the standard vectors and the slide's own shift every feature
  // (necrosis.hpp); it keeps params.necrosis.stains as given (default standard_stains()).

  // 2. The grid: cells of an integer number of level-0 pixels, so tile cores (whole numbers of cells) partition the
  // slide exactly and every cell belongs to one tile.
  const double cell_px = std::max(1.0, std::round(params.grid_um / mpp0));
  const int gw = static_cast<int>((rep.width + static_cast<std::int64_t>(cell_px) - 1) / static_cast<std::int64_t>(cell_px));
  const int gh = static_cast<int>((rep.height + static_cast<std::int64_t>(cell_px) - 1) / static_cast<std::int64_t>(cell_px));
  rep.grid_px = cell_px;
  rep.tissue_grid = cv::Mat::zeros(gh, gw, CV_8U);
  for (int i = 0; i < gh; ++i) {
    const int ty = std::clamp(static_cast<int>(((i + 0.5) * cell_px) / tissue.downsample), 0, tissue.mask.rows - 1);
    const std::uint8_t* src = tissue.mask.ptr<std::uint8_t>(ty);
    std::uint8_t* dst = rep.tissue_grid.ptr<std::uint8_t>(i);
    for (int j = 0; j < gw; ++j) {
      const int tx = std::clamp(static_cast<int>(((j + 0.5) * cell_px) / tissue.downsample), 0, tissue.mask.cols - 1);
      dst[j] = src[tx] ? 255 : 0;
    }
  }
  if (params.roi.empty()) {
    rep.tumour_grid = rep.tissue_grid.clone();
  } else {
    cv::bitwise_and(rep.tissue_grid, rasterise_roi(params.roi, rep.tissue_grid.size(), cell_px), rep.tumour_grid);
  }
  const double cell_mm2 = cell_px * cell_px * mpp0 * mpp0 * um2_to_mm2;
  rep.tissue_area_mm2 = cv::countNonZero(rep.tissue_grid) * cell_mm2;
  const int tumour_cells = cv::countNonZero(rep.tumour_grid);
  rep.tumour_area_mm2 = tumour_cells * cell_mm2;
  if (tumour_cells == 0) {
    if (params.roi.empty())
      throw Error(ErrorCode::invalid_argument,
                  name + ": no tissue found (tissue detection at " + fmt(thumb.mpp) + " um/px); nothing to grade");
    throw Error(ErrorCode::invalid_argument,
                name + ": the region of interest contains no tissue (" + std::to_string(params.roi.size()) +
                    " polygon(s); check that its coordinates are level-0 pixels of this slide)");
  }

  // 3. Tiles over the tumour region, in raster order.
  const int k = std::max(1, static_cast<int>(std::lround(params.tile_um / params.grid_um)));
  const std::int64_t margin_px = static_cast<std::int64_t>(std::ceil(params.tile_margin_um / mpp0));
  std::vector<Tile> tiles;
  for (int gy = 0; gy < gh; gy += k) {
    for (int gx = 0; gx < gw; gx += k) {
      const int gx1 = std::min(gw, gx + k), gy1 = std::min(gh, gy + k);
      if (cv::countNonZero(rep.tumour_grid(cv::Range(gy, gy1), cv::Range(gx, gx1))) == 0) continue;
      Tile t;
      t.gx0 = gx;
      t.gy0 = gy;
      t.gx1 = gx1;
      t.gy1 = gy1;
      const auto c = static_cast<std::int64_t>(cell_px);
      t.core.x = gx * c;
      t.core.y = gy * c;
      t.core.width = std::min<std::int64_t>(rep.width, gx1 * c) - t.core.x;
      t.core.height = std::min<std::int64_t>(rep.height, gy1 * c) - t.core.y;
      const std::int64_t rx0 = std::max<std::int64_t>(0, t.core.x - margin_px);
      const std::int64_t ry0 = std::max<std::int64_t>(0, t.core.y - margin_px);
      const std::int64_t rx1 = std::min<std::int64_t>(rep.width, t.core.x + t.core.width + margin_px);
      const std::int64_t ry1 = std::min<std::int64_t>(rep.height, t.core.y + t.core.height + margin_px);
      t.read = Rect64{rx0, ry0, rx1 - rx0, ry1 - ry0};
      tiles.push_back(t);
    }
  }
  rep.tiles = static_cast<std::int64_t>(tiles.size());
  std::int64_t nuclei_stride = 0;
  if (params.nuclei_sampling == NucleiSampling::all_tissue) {
    nuclei_stride = 1;
    rep.nuclei.sampling = "all_tissue";
  } else if (params.nuclei_sampling == NucleiSampling::sample) {
    const auto n = static_cast<std::int64_t>(tiles.size());
    nuclei_stride = std::clamp<std::int64_t>(n / params.nuclei_min_tiles, 1,
                                             std::max<std::int64_t>(1, std::llround(1.0 / params.nuclei_sample_fraction)));
    rep.nuclei.sampling = nuclei_stride == 1 ? "all_tissue" : "sample 1/" + std::to_string(nuclei_stride);
  } else {
    rep.nuclei.sampling = "none";
  }
  for (std::size_t i = 0; i < tiles.size(); ++i)
    tiles[i].nuclei = nuclei_stride > 0 && static_cast<std::int64_t>(i) % nuclei_stride == 0;
  rep.timings.thumbnail_s = seconds_since(t_start);

  // The finest resolution any stage needs, but never finer than the slide: each tile is decoded once at it and the
  // coarser inputs are area-averaged from it.
  const double read_mpp = std::max(mpp0, std::min({params.mitosis.working_mpp, params.nuclei.working_mpp,
                                                   params.necrosis.working_mpp}));
  if (mpp0 > params.mitosis.working_mpp * 1.2)
    rep.warnings.push_back("the slide's resolution (" + fmt(mpp0) + " um/px) is coarser than the " +
                           fmt(params.mitosis.working_mpp) +
                           " um/px the mitosis detector works at: mitoses may be missed (scan at 40x if possible)");
  if (rep.mpp_source == "caller") rep.warnings.push_back("resolution given by the caller (" + fmt(mpp0) + " um/px)");

  rep.necrosis_fraction = cv::Mat::zeros(gh, gw, CV_32F);
  const double nec_mpp = std::max(mpp0, params.necrosis.working_mpp);
  const std::int64_t nec_margin_px = static_cast<std::int64_t>(std::ceil(params.necrosis_margin_um / mpp0));
  std::vector<TileResult> results(tiles.size());
  const auto t_tiles = Clock::now();

  // 4. The tile pass. Workers take tiles in order from an atomic counter; each result lands in its own slot (and
  // necrosis in the tile's own grid cells), so the merge below is independent of which thread did what.
  auto process = [&](std::size_t index) {
    const Tile& t = tiles[index];
    TileResult& out = results[index];
    auto t0 = Clock::now();
    const ImageView fine = slide.read_region_at_mpp(t.read, read_mpp);
    out.read_s = seconds_since(t0);
    auto in_tumour = [&](double x, double y) {
      const int gx = static_cast<int>(x / cell_px), gy = static_cast<int>(y / cell_px);
      return gx >= 0 && gy >= 0 && gx < gw && gy < gh && rep.tumour_grid.at<std::uint8_t>(gy, gx) != 0;
    };
    auto in_core_tumour = [&](double x, double y) {
      return x >= static_cast<double>(t.core.x) && y >= static_cast<double>(t.core.y) &&
             x < static_cast<double>(t.core.x + t.core.width) && y < static_cast<double>(t.core.y + t.core.height) &&
             in_tumour(x, y);
    };

    // Necrosis first (the mitosis stage skips what it marks): the necrotic share of each core cell, from the map at the
    // necrosis stage's resolution. Its features look at ~50 and ~200 um neighbourhoods (necrosis.hpp), far more than
    // the mitosis margin, so it gets its own read at its own resolution (from a coarse pyramid level: cheap) with a
    // wider margin.
    t0 = Clock::now();
    const std::int64_t nx0 = std::max<std::int64_t>(0, t.core.x - nec_margin_px);
    const std::int64_t ny0 = std::max<std::int64_t>(0, t.core.y - nec_margin_px);
    const std::int64_t nx1 = std::min<std::int64_t>(rep.width, t.core.x + t.core.width + nec_margin_px);
    const std::int64_t ny1 = std::min<std::int64_t>(rep.height, t.core.y + t.core.height + nec_margin_px);
    const ImageView coarse =
        nec_mpp > read_mpp * (1.0 + 1e-6)
            ? slide.read_region_at_mpp(Rect64{nx0, ny0, nx1 - nx0, ny1 - ny0}, nec_mpp)
            : resample_to(fine, params.necrosis.working_mpp);
    const NecrosisMap nm = map_necrosis(coarse, params.necrosis);
    for (int gy = t.gy0; gy < t.gy1; ++gy) {
      for (int gx = t.gx0; gx < t.gx1; ++gx) {
        if (rep.tumour_grid.at<std::uint8_t>(gy, gx) == 0) continue;
        const double lx0 = gx * cell_px, ly0 = gy * cell_px;
        int x0 = static_cast<int>(std::floor((lx0 - static_cast<double>(coarse.x0)) / coarse.downsample));
        int y0 = static_cast<int>(std::floor((ly0 - static_cast<double>(coarse.y0)) / coarse.downsample));
        int x1 = static_cast<int>(std::ceil((lx0 + cell_px - static_cast<double>(coarse.x0)) / coarse.downsample));
        int y1 = static_cast<int>(std::ceil((ly0 + cell_px - static_cast<double>(coarse.y0)) / coarse.downsample));
        x0 = std::clamp(x0, 0, nm.necrosis.cols);
        x1 = std::clamp(x1, x0, nm.necrosis.cols);
        y0 = std::clamp(y0, 0, nm.necrosis.rows);
        y1 = std::clamp(y1, y0, nm.necrosis.rows);
        if (x1 <= x0 || y1 <= y0) continue;
        const cv::Mat cell = nm.necrosis(cv::Range(y0, y1), cv::Range(x0, x1));
        rep.necrosis_fraction.at<float>(gy, gx) =
            static_cast<float>(cv::countNonZero(cell)) / static_cast<float>(cell.total());
      }
    }
    out.necrosis_s = seconds_since(t0);

    // Mitoses, in viable tumour only: candidates outside the tumour cells or in this tile's necrosis map are not
    // classified (a mitosis is never counted there, and necrotic debris is the commonest look-alike).
    t0 = Clock::now();
    MitosisParams mp = params.mitosis;
    mp.region = t.core;  // the margin is context only: its candidates are not classified
    mp.exclude = [&](double x, double y) {
      if (!in_tumour(x, y)) return true;
      const int u = static_cast<int>(std::floor((x - static_cast<double>(nm.x0)) / nm.downsample));
      const int v = static_cast<int>(std::floor((y - static_cast<double>(nm.y0)) / nm.downsample));
      return u >= 0 && v >= 0 && u < nm.necrosis.cols && v < nm.necrosis.rows && nm.necrosis.at<std::uint8_t>(v, u) != 0;
    };
    // Only the core's detections come back (region), none outside the tumour cells (exclude): all are the tile's.
    out.mitoses = detect_mitoses(resample_to(fine, mp.working_mpp), mp);
    out.mitosis_s = seconds_since(t0);

    // Nuclei (sampled tiles).
    if (t.nuclei) {
      t0 = Clock::now();
      const NucleiResult nr = segment_nuclei(resample_to(fine, params.nuclei.working_mpp), params.nuclei);
      for (const Nucleus& n : nr.nuclei) {
        if (!in_core_tumour(n.x, n.y)) continue;
        ++out.nuclei;
        if (n.spindle) ++out.spindle;
        out.sum_area += n.area_um2;
        out.sum_elong += n.elongation;
        out.sum_hod += n.mean_h_od;
      }
      out.nuclei_cells = cv::countNonZero(rep.tumour_grid(cv::Range(t.gy0, t.gy1), cv::Range(t.gx0, t.gx1)));
      out.nuclei_done = true;
      out.nuclei_s = seconds_since(t0);
    }
  };

  int threads = params.threads > 0 ? params.threads : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::clamp(threads, 1, std::max<int>(1, static_cast<int>(tiles.size())));
  rep.threads_used = threads;
  // The workers run the network as the library's default does (they do not set detail::set_thread_nuclei_engine).
  if (params.nuclei_sampling != NucleiSampling::none)
    rep.nuclei_engine = detail::nuclei_engine_name(params.nuclei.network);
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;  // guards done, first_error and the progress callback
  std::int64_t done = 0;
  std::exception_ptr first_error;
  std::size_t first_error_tile = tiles.size();
  const auto total = static_cast<std::int64_t>(tiles.size());
  report_progress("tiles", 0, total, 0.05);

  auto worker = [&] {
    for (;;) {
      if (failed.load() || cancelled()) return;
      const std::size_t i = next.fetch_add(1);
      if (i >= tiles.size()) return;
      try {
        process(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        // Keep the error of the earliest tile so the message does not depend on scheduling.
        if (i < first_error_tile) {
          first_error_tile = i;
          first_error = std::current_exception();
        }
        failed = true;
        return;
      }
      std::lock_guard<std::mutex> lock(mutex);
      ++done;
      report_progress("tiles", done, total, 0.05 + 0.9 * static_cast<double>(done) / static_cast<double>(total));
    }
  };
  if (threads == 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(static_cast<std::size_t>(threads));
    for (int i = 0; i < threads; ++i) pool.emplace_back(worker);
    for (auto& th : pool) th.join();
  }
  if (first_error) {
    try {
      std::rethrow_exception(first_error);
    } catch (const Error& e) {
      const std::string msg = e.what();
      // Name the slide when the stage did not (stages do not know files).
      if (msg.find(name) == std::string::npos) throw Error(e.code(), name + ": " + msg);
      throw;
    } catch (const cv::Exception& e) {
      throw Error(ErrorCode::internal, name + ": OpenCV error in tile " + std::to_string(first_error_tile) + ": " + e.what());
    }
  }
  throw_if_cancelled();
  rep.timings.tiles_s = seconds_since(t_tiles);

  // 5. Aggregation, in tile order.
  const auto t_agg = Clock::now();
  report_progress("aggregate", total, total, 0.95);
  for (const TileResult& r : results) {
    rep.timings.read_s += r.read_s;
    rep.timings.mitosis_s += r.mitosis_s;
    rep.timings.nuclei_s += r.nuclei_s;
    rep.timings.necrosis_s += r.necrosis_s;
    rep.mitoses.insert(rep.mitoses.end(), r.mitoses.begin(), r.mitoses.end());
    if (r.nuclei_done) {
      rep.nuclei.count += r.nuclei;
      rep.nuclei.spindle += r.spindle;
      rep.nuclei.mean_area_um2 += r.sum_area;
      rep.nuclei.mean_elongation += r.sum_elong;
      rep.nuclei.mean_h_od += r.sum_hod;
      rep.nuclei.analysed_area_mm2 += static_cast<double>(r.nuclei_cells) * cell_mm2;
      ++rep.nuclei.tiles_analysed;
    }
  }
  auto by_position = [](const MitosisDetection& a, const MitosisDetection& b) {
    if (a.y != b.y) return a.y < b.y;
    if (a.x != b.x) return a.x < b.x;
    return a.score > b.score;
  };
  std::sort(rep.mitoses.begin(), rep.mitoses.end(), by_position);
  if (rep.nuclei.count > 0) {
    const auto n = static_cast<double>(rep.nuclei.count);
    rep.nuclei.spindle_fraction = static_cast<double>(rep.nuclei.spindle) / n;
    rep.nuclei.mean_area_um2 /= n;
    rep.nuclei.mean_elongation /= n;
    rep.nuclei.mean_h_od /= n;
  }
  if (rep.nuclei.analysed_area_mm2 > 0.0)
    rep.nuclei.density_per_mm2 = static_cast<double>(rep.nuclei.count) / rep.nuclei.analysed_area_mm2;

  // The grid's last cells may reach past the slide's edge: bound the window to the slide (the convention).
  rep.mitotic_count = count_mitoses(rep.mitoses, rep.tumour_grid, cell_px, 0, 0, mpp0, params.hpf,
                                    Rect64{0, 0, rep.width, rep.height});
  const Rect64& w = rep.mitotic_count.window;
  for (const MitosisDetection& d : rep.mitoses)
    if (d.x >= static_cast<double>(w.x) && d.x < static_cast<double>(w.x + w.width) && d.y >= static_cast<double>(w.y) &&
        d.y < static_cast<double>(w.y + w.height))
      rep.hotspot_mitoses.push_back(d);
  const double full_window_mm2 = params.hpf.hpf_area_mm2 * params.hpf.fields;
  // count_mitoses says whether it had to shrink the window. (Comparing areas instead flagged every large tumour on a
  // coarse slide, where the window's side rounds down to whole pixels: 329 px at 4 um/px is 1.7319 mm^2.)
  if (rep.mitotic_count.scaled) {
    rep.count_scaled = true;
    rep.warnings.push_back("the tumour region is smaller than " + std::to_string(params.hpf.fields) + " HPF (" +
                           fmt(full_window_mm2) + " mm2): the count in its bounding box (" +
                           fmt(rep.mitotic_count.window_area_mm2) + " mm2) was scaled to " +
                           std::to_string(params.hpf.fields) + " HPF");
  }

  // Necrosis: summed in raster order over tumour cells.
  double necrotic_cells = 0.0;
  rep.necrosis_grid = cv::Mat::zeros(gh, gw, CV_8U);
  for (int i = 0; i < gh; ++i) {
    const std::uint8_t* tum = rep.tumour_grid.ptr<std::uint8_t>(i);
    const float* f = rep.necrosis_fraction.ptr<float>(i);
    std::uint8_t* ng = rep.necrosis_grid.ptr<std::uint8_t>(i);
    for (int j = 0; j < gw; ++j) {
      if (!tum[j]) continue;
      necrotic_cells += f[j];
      if (f[j] >= 0.5f) ng[j] = 255;
    }
  }
  rep.necrosis.area_mm2 = necrotic_cells * cell_mm2;
  rep.necrosis.percent = std::clamp(100.0 * necrotic_cells / tumour_cells, 0.0, 100.0);

  FnclccInput fin;
  fin.differentiation = params.differentiation;  // fnclcc_grade resolves the subtype itself (and notes it)
  fin.subtype = params.subtype;
  fin.mitotic_count = rep.mitotic_count.count;
  fin.mitotic_ci95_low = rep.mitotic_count.ci95_low;
  fin.mitotic_ci95_high = rep.mitotic_count.ci95_high;
  fin.necrosis_percent = rep.necrosis.percent;
  rep.fnclcc = fnclcc_grade(fin);
  if (!rep.differentiation)
    rep.warnings.push_back("no differentiation score given: the grade is the set of grades it could be");
  rep.timings.aggregate_s = seconds_since(t_agg);
  rep.timings.total_s = seconds_since(t_start);
  report_progress("aggregate", total, total, 1.0);
  return rep;
}

}  // namespace grade
