// overlay.png and hotspot.png: the evidence a pathologist checks by eye.
#include <algorithm>
#include <cmath>
#include <string>

#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "grade/report.hpp"
#include "report_detail.hpp"

namespace grade {

namespace {

const cv::Scalar kTissue(0, 170, 0);     // RGB
const cv::Scalar kNecrosis(255, 210, 0);
const cv::Scalar kMitosis(230, 0, 0);
const cv::Scalar kHotspot(0, 80, 255);
const cv::Scalar kRoi(200, 0, 200);

}  // namespace

cv::Mat render_overlay(const SlideReport& rep) {
  if (rep.thumbnail.empty()) return {};
  // Small slides give small thumbnails: draw on an enlarged copy so outlines and labels stay legible.
  cv::Mat out;
  double ds = rep.thumbnail_downsample > 0 ? rep.thumbnail_downsample : 1.0;
  const int long_side = std::max(rep.thumbnail.cols, rep.thumbnail.rows);
  if (long_side < 1200) {
    const double f = 1200.0 / long_side;
    cv::resize(rep.thumbnail, out, cv::Size(), f, f, cv::INTER_LINEAR);
    ds = ds * static_cast<double>(rep.thumbnail.cols) / out.cols;
  } else {
    out = rep.thumbnail.clone();
  }

  // Necrosis shading: the grid's necrotic cells blended in yellow.
  if (!rep.necrosis_grid.empty() && cv::countNonZero(rep.necrosis_grid) > 0) {
    cv::Mat nec;
    cv::resize(rep.necrosis_grid, nec, out.size(), 0, 0, cv::INTER_NEAREST);
    // resize stretches the grid over the thumbnail; both cover the slide, up to rounding of their last cells.
    cv::Mat yellow(out.size(), out.type(), kNecrosis);
    cv::Mat blended;
    cv::addWeighted(out, 0.55, yellow, 0.45, 0.0, blended);
    blended.copyTo(out, nec);
  }

  const int thick = std::max(1, static_cast<int>(std::lround(std::max(out.cols, out.rows) / 800.0)));
  auto draw_grid_outline = [&](const cv::Mat& grid, const cv::Scalar& colour) {
    for (const auto& poly : detail::grid_polygons(grid, rep.grid_px, 4.0)) {
      std::vector<std::vector<cv::Point>> rings;
      for (const auto& ring : poly) {
        std::vector<cv::Point> pts;
        for (const auto& p : ring) pts.emplace_back(cv::Point(static_cast<int>(p.x / ds), static_cast<int>(p.y / ds)));
        rings.push_back(std::move(pts));
      }
      cv::polylines(out, rings, true, colour, thick, cv::LINE_AA);
    }
  };
  draw_grid_outline(rep.tissue_grid, kTissue);
  for (const Polygon& poly : rep.params.roi) {
    std::vector<std::vector<cv::Point>> rings;
    for (const auto& ring : poly.rings) {
      std::vector<cv::Point> pts;
      for (const auto& p : ring) pts.emplace_back(cv::Point(static_cast<int>(p.x / ds), static_cast<int>(p.y / ds)));
      rings.push_back(std::move(pts));
    }
    cv::polylines(out, rings, true, kRoi, thick, cv::LINE_AA);
  }

  const int dot = std::max(2, thick + 1);
  for (const MitosisDetection& d : rep.mitoses)
    cv::circle(out, cv::Point(static_cast<int>(d.x / ds), static_cast<int>(d.y / ds)), dot, kMitosis, cv::FILLED,
               cv::LINE_AA);

  const Rect64& w = rep.mitotic_count.window;
  if (w.width > 0 && w.height > 0) {
    const cv::Point p0(static_cast<int>(static_cast<double>(w.x) / ds), static_cast<int>(static_cast<double>(w.y) / ds));
    const cv::Point p1(static_cast<int>(static_cast<double>(w.x + w.width) / ds),
                       static_cast<int>(static_cast<double>(w.y + w.height) / ds));
    cv::rectangle(out, p0, p1, kHotspot, thick + 1, cv::LINE_AA);
    const std::string label = std::to_string(rep.mitotic_count.count) + " / " +
                              std::to_string(rep.mitotic_count.fields) + " HPF";
    const double font = std::max(0.4, out.cols / 1600.0);
    cv::putText(out, label, cv::Point(p0.x, std::max(12, p0.y - 4)), cv::FONT_HERSHEY_SIMPLEX, font, kHotspot,
                std::max(1, thick), cv::LINE_AA);
  }
  return out;
}

cv::Mat render_hotspot(const Slide& slide, const SlideReport& rep, double target_mpp, int max_side_px) {
  const Rect64& w = rep.mitotic_count.window;
  if (w.width <= 0 || w.height <= 0) return {};
  if (!(target_mpp > 0.0) || max_side_px < 64)
    throw Error(ErrorCode::invalid_argument, "render_hotspot: target_mpp must be > 0 and max_side_px >= 64");
  const double mpp0 = rep.mpp;
  // Never finer than the slide, never larger than max_side_px.
  double mpp = std::max(target_mpp, mpp0);
  mpp = std::max(mpp, mpp0 * static_cast<double>(std::max(w.width, w.height)) / max_side_px);
  const ImageView v = slide.read_region_at_mpp(w, mpp);
  cv::Mat out = v.rgb.clone();
  const double ds = v.downsample;
  const double radius = std::max(6.0, 8.0 / v.mpp);  // ~8 um: a mitotic figure sits inside with room to see it
  const double font = std::max(0.5, radius / 14.0);
  const int thick = std::max(2, static_cast<int>(std::lround(radius / 8.0)));
  for (std::size_t i = 0; i < rep.hotspot_mitoses.size(); ++i) {
    const MitosisDetection& d = rep.hotspot_mitoses[i];
    const cv::Point c(static_cast<int>((d.x - static_cast<double>(v.x0)) / ds),
                      static_cast<int>((d.y - static_cast<double>(v.y0)) / ds));
    cv::circle(out, c, static_cast<int>(radius), cv::Scalar(0, 0, 0), thick + 2, cv::LINE_AA);
    cv::circle(out, c, static_cast<int>(radius), kMitosis, thick, cv::LINE_AA);
    const std::string label = std::to_string(i + 1);
    const cv::Point at(c.x + static_cast<int>(radius * 0.8), c.y - static_cast<int>(radius * 0.8));
    cv::putText(out, label, at, cv::FONT_HERSHEY_SIMPLEX, font, cv::Scalar(255, 255, 255), thick + 2, cv::LINE_AA);
    cv::putText(out, label, at, cv::FONT_HERSHEY_SIMPLEX, font, kMitosis, thick, cv::LINE_AA);
  }
  cv::rectangle(out, cv::Point(0, 0), cv::Point(out.cols - 1, out.rows - 1), kHotspot, 2);
  const std::string title = std::to_string(rep.hotspot_mitoses.size()) + " mitoses in window" +
                            (rep.count_scaled ? " (count scaled to 10 HPF: " + std::to_string(rep.mitotic_count.count) + ")"
                                              : "");
  cv::putText(out, title, cv::Point(10, 30), cv::FONT_HERSHEY_SIMPLEX, 0.9, cv::Scalar(255, 255, 255), 4, cv::LINE_AA);
  cv::putText(out, title, cv::Point(10, 30), cv::FONT_HERSHEY_SIMPLEX, 0.9, kHotspot, 2, cv::LINE_AA);
  return out;
}

}  // namespace grade
