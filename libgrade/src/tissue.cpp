// Tissue detection on a thumbnail (about 8-16 um/px).
//
// A pixel is tissue when it absorbs light the way H&E-stained tissue does:
//   - it is not glass: its optical density (OD, -ln(I/256)) exceeds a threshold in some channel, chosen per slide by
//     Otsu's method on the OD of the pixels (bounded to [0.05, 0.3] so that an all-tissue or all-glass thumbnail still
//     behaves);
//   - it is stained, not grey: its smallest channel OD is below kGreyRatio of its largest (black/grey pen, dust and
//     out-of-focus debris are grey: nearly equal OD in all channels, while H&E absorb green far more than blue; on
//     the development slides 99 % of tissue pixels have a ratio < 0.77), and green is the channel it absorbs most or
//     nearly so (H&E both absorb green most; blue and green pen, and most dyes used to mark margins, do not);
//   - it is not saturated black (OD > 2.5 in every channel: ink, folds seen as opaque).
// Then small specks are removed (min_region_um2, dust and debris), small glass holes are filled (min_hole_um2) and
// large holes stay holes. Out-of-focus debris that is stained like tissue is not told apart here: it is usually small
// and goes with the specks.
#include "grade/tissue.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "stain_detail.hpp"

namespace grade {

TissueMask detect_tissue(const ImageView& image, const TissueParams& params) {
  check_view(image, "detect_tissue");
  if (!(params.min_region_um2 >= 0.0) || !(params.min_hole_um2 >= 0.0))
    throw Error(ErrorCode::invalid_argument, "detect_tissue: min_region_um2 and min_hole_um2 must be >= 0, got " +
                                                 std::to_string(params.min_region_um2) + " and " +
                                                 std::to_string(params.min_hole_um2));
  const cv::Mat& rgb = image.rgb;
  const auto& lut = detail::od_lut();
  constexpr float kGreyRatio = 0.8f;

  // Otsu threshold on the maximum channel OD (8-bit histogram of OD x 100).
  cv::Mat odmax(rgb.size(), CV_8U);
  for (int y = 0; y < rgb.rows; ++y) {
    const auto* p = rgb.ptr<cv::Vec3b>(y);
    auto* o = odmax.ptr<uchar>(y);
    for (int x = 0; x < rgb.cols; ++x) {
      const float m = std::max({lut[p[x][0]], lut[p[x][1]], lut[p[x][2]]});
      o[x] = cv::saturate_cast<uchar>(m * 100.0f);
    }
  }
  cv::Mat tmp;
  const double otsu = cv::threshold(odmax, tmp, 0, 255, cv::THRESH_BINARY | cv::THRESH_OTSU) / 100.0;
  const float thr = static_cast<float>(std::clamp(otsu, 0.05, 0.3));

  cv::Mat mask(rgb.size(), CV_8U);
  for (int y = 0; y < rgb.rows; ++y) {
    const auto* p = rgb.ptr<cv::Vec3b>(y);
    auto* m = mask.ptr<uchar>(y);
    for (int x = 0; x < rgb.cols; ++x) {
      const float r = lut[p[x][0]], g = lut[p[x][1]], b = lut[p[x][2]];
      const float mx = std::max({r, g, b});
      bool tissue = mx > thr;
      if (tissue) {
        const float mn = std::min({r, g, b});
        const bool grey = mn > kGreyRatio * mx;
        const bool green_not_max = g < 0.8f * mx;
        const bool black = mn > 2.5f;
        tissue = !(grey || green_not_max || black);
      }
      m[x] = tissue ? 255 : 0;
    }
  }
  // Smooth the pixel decisions (JPEG noise, single-pixel gaps in pale tissue).
  cv::medianBlur(mask, mask, 3);
  cv::morphologyEx(mask, mask, cv::MORPH_CLOSE, cv::getStructuringElement(cv::MORPH_ELLIPSE, {3, 3}));

  const double px_um2 = image.mpp * image.mpp;
  // Drop small pieces (dust, debris), then fill small holes (holes are the background components not touching the
  // border once the tissue is inverted).
  auto drop_small = [&](cv::Mat& bin, double min_um2, bool keep_border) {
    cv::Mat lab, stats, cent;
    const int n = cv::connectedComponentsWithStats(bin, lab, stats, cent, 8, CV_32S);
    std::vector<uchar> keep(static_cast<std::size_t>(n), 0);
    for (int i = 1; i < n; ++i) {
      const bool border = stats.at<int>(i, cv::CC_STAT_LEFT) == 0 || stats.at<int>(i, cv::CC_STAT_TOP) == 0 ||
                          stats.at<int>(i, cv::CC_STAT_LEFT) + stats.at<int>(i, cv::CC_STAT_WIDTH) == bin.cols ||
                          stats.at<int>(i, cv::CC_STAT_TOP) + stats.at<int>(i, cv::CC_STAT_HEIGHT) == bin.rows;
      keep[static_cast<std::size_t>(i)] =
          (keep_border && border) || stats.at<int>(i, cv::CC_STAT_AREA) * px_um2 >= min_um2 ? 255 : 0;
    }
    for (int y = 0; y < bin.rows; ++y) {
      const int* l = lab.ptr<int>(y);
      uchar* b = bin.ptr<uchar>(y);
      for (int x = 0; x < bin.cols; ++x) b[x] = keep[static_cast<std::size_t>(l[x])];
    }
  };
  drop_small(mask, params.min_region_um2, false);
  cv::Mat holes = 255 - mask;
  drop_small(holes, params.min_hole_um2, true);  // background reaching the border is never a hole
  mask = 255 - holes;

  TissueMask out;
  out.mask = mask;
  out.mpp = image.mpp;
  out.downsample = image.downsample;
  out.x0 = image.x0;
  out.y0 = image.y0;
  out.area_mm2 = static_cast<double>(cv::countNonZero(mask)) * px_um2 / 1e6;
  return out;
}

}  // namespace grade
