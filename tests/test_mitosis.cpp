// Mitosis detector: known answers on drawn images (no data files needed).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include <fstream>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "grade/mitosis.hpp"
#include "test_support.hpp"

namespace {

// Pale pink stroma at 0.25 um/px with pale oval nuclei (a few per 100 um^2) and mild noise, seeded.
cv::Mat stroma(int w, int h, unsigned seed, int nuclei) {
  cv::Mat img(h, w, CV_8UC3, cv::Scalar(236, 190, 214));  // RGB
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> ux(10, w - 10), uy(10, h - 10), ua(0, 180);
  for (int i = 0; i < nuclei; ++i)
    cv::ellipse(img, cv::Point(static_cast<int>(ux(rng)), static_cast<int>(uy(rng))), cv::Size(18, 7), ua(rng), 0, 360,
                cv::Scalar(170, 140, 200), cv::FILLED, cv::LINE_AA);
  cv::Mat noise(h, w, CV_8UC3);
  cv::randn(noise, cv::Scalar::all(0), cv::Scalar::all(3));
  cv::Mat out;
  cv::add(img, noise, out, cv::noArray(), CV_8UC3);
  return out;
}

// A metaphase-like figure: a dense, nearly black-blue chromatin bar with ragged edges, ~8 x 2.5 um.
void draw_figure(cv::Mat& img, cv::Point c, double angle) {
  cv::ellipse(img, c, cv::Size(16, 5), angle, 0, 360, cv::Scalar(45, 25, 80), cv::FILLED, cv::LINE_AA);
  for (int k = -3; k <= 3; ++k) {
    const double a = angle * CV_PI / 180.0;
    const cv::Point p(c.x + static_cast<int>(k * 4 * std::cos(a)), c.y + static_cast<int>(k * 4 * std::sin(a)));
    cv::circle(img, p + cv::Point(static_cast<int>(2 * std::sin(a * k)), 0), 3, cv::Scalar(35, 20, 70), cv::FILLED);
  }
}

grade::MitosisParams all_scores() {
  grade::MitosisParams p;
  p.threshold = 0.0;
  return p;
}

const grade::MitosisDetection* nearest(const std::vector<grade::MitosisDetection>& d, double x, double y) {
  const grade::MitosisDetection* best = nullptr;
  for (const auto& k : d)
    if (!best || std::hypot(k.x - x, k.y - y) < std::hypot(best->x - x, best->y - y)) best = &k;
  return best;
}

// The deterministic test pattern of the training scripts (tools/train/train_mitosis.py, train_mitosis_locate.py):
// value (x*7 + y*13 + c*50 + k*31) % 256 at pixel (x, y), channel c (RGB), pattern k.
cv::Mat test_pattern(int side, int k) {
  cv::Mat img(side, side, CV_8UC3);
  for (int y = 0; y < side; ++y)
    for (int x = 0; x < side; ++x)
      for (int c = 0; c < 3; ++c)
        img.at<cv::Vec3b>(y, x)[c] = static_cast<uchar>((x * 7 + y * 13 + c * 50 + k * 31) % 256);
  return img;
}

}  // namespace

TEST_CASE("a drawn dark figure on stroma is a candidate and a detection at the right place") {
  cv::Mat img = stroma(256, 256, 7, 12);
  draw_figure(img, {140, 100}, 30);
  const auto view = grade::make_view(img, 0.25);
  const auto cands = grade::find_mitosis_candidates(view);
  REQUIRE(!cands.empty());
  bool near = false;
  for (const auto& c : cands) near = near || std::hypot(c.x - 140, c.y - 100) <= 8;
  CHECK(near);
  // The pale nuclei are not dense enough to be candidates at all.
  for (const auto& c : cands) CHECK(std::hypot(c.x - 140, c.y - 100) <= 24);
  const auto det = grade::detect_mitoses(view, all_scores());
  const auto* d = nearest(det, 140, 100);
  REQUIRE(d != nullptr);
  CHECK(std::hypot(d->x - 140, d->y - 100) <= 8);
  CHECK(d->score >= 0.0);
  CHECK(d->score <= 1.0);
}

TEST_CASE("a candidate sits at the centroid of its dark mass, not at its densest point") {
  // A dark bar 12 um long (x 92..140 at y 100) with a denser knot at its left end (x 96).
  cv::Mat img = stroma(256, 256, 7, 0);
  cv::line(img, {92, 100}, {140, 100}, cv::Scalar(70, 45, 110), 9, cv::LINE_AA);
  cv::circle(img, {96, 100}, 6, cv::Scalar(25, 10, 50), cv::FILLED, cv::LINE_AA);
  const auto view = grade::make_view(img, 0.25);
  grade::MitosisParams at_peak;
  at_peak.candidate_centroid_um = 0.0;
  auto nearest_x = [](const std::vector<grade::MitosisCandidate>& c) {
    REQUIRE(!c.empty());
    const auto it = std::min_element(c.begin(), c.end(), [](const auto& a, const auto& b) {
      return std::hypot(a.x - 110, a.y - 100) < std::hypot(b.x - 110, b.y - 100);
    });
    CHECK(std::abs(it->y - 100) <= 4);
    return it->x;
  };
  const double peak_x = nearest_x(grade::find_mitosis_candidates(view, at_peak));
  const double centroid_x = nearest_x(grade::find_mitosis_candidates(view));
  CHECK(peak_x < 104);              // at the knot
  CHECK(centroid_x > peak_x + 3);   // pulled along the bar, towards its middle (116)
  CHECK(centroid_x < 124);
  grade::MitosisParams bad;
  bad.candidate_centroid_fraction = 1.0;
  CHECK_THROWS_AS(grade::find_mitosis_candidates(view, bad), grade::Error);
  bad = {};
  bad.candidate_centroid_um = -1.0;
  CHECK_THROWS_AS(grade::find_mitosis_candidates(view, bad), grade::Error);
}

TEST_CASE("plain stroma without dark objects gives no candidates and no detections") {
  const auto view = grade::make_view(stroma(300, 200, 3, 10), 0.25);
  CHECK(grade::find_mitosis_candidates(view).empty());
  CHECK(grade::detect_mitoses(view, all_scores()).empty());
}

TEST_CASE("bad inputs and parameters throw grade::Error naming the value") {
  CHECK_THROWS_AS(grade::detect_mitoses(grade::make_view(cv::Mat(), 0.25)), grade::Error);
  CHECK_THROWS_AS(grade::detect_mitoses(grade::make_view(cv::Mat(64, 64, CV_8UC1, cv::Scalar(128)), 0.25)),
                  grade::Error);
  CHECK_THROWS_AS(grade::detect_mitoses(grade::make_view(cv::Mat(64, 64, CV_32FC3, cv::Scalar::all(0.5)), 0.25)),
                  grade::Error);
  CHECK_THROWS_AS(grade::detect_mitoses(grade::make_view(cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(200)), 0.0)),
                  grade::Error);
  grade::MitosisParams p;
  p.candidate_mpp = -1;
  try {
    grade::detect_mitoses(grade::make_view(cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(200)), 0.25), p);
    FAIL("no throw");
  } catch (const grade::Error& e) {
    CHECK(e.code() == grade::ErrorCode::invalid_argument);
    CHECK(std::string(e.what()).find("candidate_mpp") != std::string::npos);
  }
  p = {};
  p.orientations = 9;
  CHECK_THROWS_AS(grade::detect_mitoses(grade::make_view(cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(200)), 0.25), p),
                  grade::Error);
  CHECK_THROWS_AS(grade::MitosisModel::from_onnx({1, 2, 3}), grade::Error);
  p = {};
  p.screen_threshold = 1.0;
  CHECK_THROWS_AS(grade::detect_mitoses(grade::make_view(cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(200)), 0.25), p),
                  grade::Error);
  p = {};
  p.verify_from = -0.1;
  CHECK_THROWS_AS(grade::detect_mitoses(grade::make_view(cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(200)), 0.25), p),
                  grade::Error);
  p = {};
  p.midpoint_min_score = 1.5;
  CHECK_THROWS_AS(grade::detect_mitoses(grade::make_view(cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(200)), 0.25), p),
                  grade::Error);
}

TEST_CASE("the screen network scores ordinary nuclei 0; what it passes gets the main network's score") {
  // Ordinary interphase nuclei, dark enough to be candidates: smooth ovals of even, medium hematoxylin.
  cv::Mat img = stroma(512, 512, 21, 0);
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> pos(24, 488), ang(0, 179);
  for (int i = 0; i < 40; ++i)
    cv::ellipse(img, {pos(rng), pos(rng)}, {20, 9}, ang(rng), 0, 360, cv::Scalar(95, 70, 150), cv::FILLED, cv::LINE_AA);
  const grade::ImageView view = grade::make_view(img, 0.25);
  const auto cands = grade::find_mitosis_candidates(view);
  REQUIRE(cands.size() >= 20);
  grade::MitosisParams screened, unscreened;
  unscreened.screen_threshold = 0.0;
  const auto with = grade::score_mitosis_candidates(view, cands, screened);
  const auto without = grade::score_mitosis_candidates(view, cands, unscreened);
  REQUIRE(with.size() == cands.size());
  size_t rejected = 0;
  for (size_t i = 0; i < cands.size(); ++i) {
    CHECK(without[i] > 0.0);  // the main network never gives exactly 0
    if (with[i] == 0.0)
      ++rejected;
    else
      CHECK(with[i] == doctest::Approx(without[i]).epsilon(1e-6));
  }
  MESSAGE(rejected << " of " << cands.size() << " candidates screened out");
  CHECK(rejected * 2 >= cands.size());  // most ordinary nuclei never reach the main network
}

TEST_CASE("detections are in level-0 coordinates: origin and downsample are honoured") {
  cv::Mat img = stroma(256, 256, 11, 8);
  draw_figure(img, {120, 90}, 0);
  auto view = grade::make_view(img, 0.25);
  const auto base = grade::detect_mitoses(view, all_scores());
  REQUIRE(!base.empty());
  view.x0 = 1000;
  view.y0 = 4000;
  const auto moved = grade::detect_mitoses(view, all_scores());
  REQUIRE(moved.size() == base.size());
  for (size_t i = 0; i < base.size(); ++i) {
    CHECK(moved[i].x == doctest::Approx(base[i].x + 1000));
    CHECK(moved[i].y == doctest::Approx(base[i].y + 4000));
    CHECK(moved[i].score == doctest::Approx(base[i].score));
  }
  // The same pixels read from a pyramid level with downsample 2 (level 0 at 0.125 um/px): coordinates double.
  view.downsample = 2.0;
  const auto scaled = grade::detect_mitoses(view, all_scores());
  REQUIRE(scaled.size() == base.size());
  for (size_t i = 0; i < base.size(); ++i) {
    CHECK(scaled[i].x == doctest::Approx(1000 + 2 * base[i].x));
    CHECK(scaled[i].y == doctest::Approx(4000 + 2 * base[i].y));
  }
  // An image at 0.5 um/px (half the pixels): the figure is found at half the pixel coordinates.
  cv::Mat half;
  cv::resize(img, half, {128, 128}, 0, 0, cv::INTER_AREA);
  const auto coarse = grade::detect_mitoses(grade::make_view(half, 0.5), all_scores());
  const auto* d = nearest(coarse, 60, 45);
  REQUIRE(d != nullptr);
  CHECK(std::hypot(d->x - 60, d->y - 45) <= 5);
}

TEST_CASE("tiled detection equals whole-image detection") {
  cv::Mat img = stroma(1024, 768, 5, 120);
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> ux(20, 1000), uy(20, 740), ua(0, 179);
  for (int i = 0; i < 25; ++i) draw_figure(img, {ux(rng), uy(rng)}, ua(rng));
  // Threshold 0: every candidate is a detection; then the median score: only some are, so the ring around a region
  // is classified only near detections (MitosisParams::region).
  auto scores = grade::detect_mitoses(grade::make_view(img, 0.25), all_scores());
  REQUIRE(scores.size() >= 20);
  std::sort(scores.begin(), scores.end(), [](const auto& a, const auto& b) { return a.score < b.score; });
  const double median = scores[scores.size() / 2].score;
  for (const double threshold : {0.0, median}) {
    CAPTURE(threshold);
    auto p = all_scores();
    p.threshold = threshold;
    auto whole = grade::detect_mitoses(grade::make_view(img, 0.25), p);
    REQUIRE(whole.size() >= 8);
    // Tiles of 512 px with a 128 px margin (multiples of the 4 px candidate grid); a detection belongs to its core.
    // Either the caller keeps the core's detections, or it passes the core as MitosisParams::region (as the pipeline
    // does), which classifies only the candidates in and near the core and returns only the core's detections.
    std::vector<grade::MitosisDetection> tiled, by_region;
    for (int ty = 0; ty < img.rows; ty += 512)
      for (int tx = 0; tx < img.cols; tx += 512) {
        const int x0 = std::max(0, tx - 128), y0 = std::max(0, ty - 128);
        const int x1 = std::min(img.cols, tx + 512 + 128), y1 = std::min(img.rows, ty + 512 + 128);
        grade::ImageView v = grade::make_view(img(cv::Rect(x0, y0, x1 - x0, y1 - y0)).clone(), 0.25);
        v.x0 = x0;
        v.y0 = y0;
        for (const auto& d : grade::detect_mitoses(v, p))
          if (d.x >= tx && d.x < tx + 512 && d.y >= ty && d.y < ty + 512) tiled.push_back(d);
        grade::MitosisParams q = p;
        q.region = {tx, ty, std::min(512, img.cols - tx), std::min(512, img.rows - ty)};
        for (const auto& d : grade::detect_mitoses(v, q)) {
          CHECK((d.x >= tx && d.x < tx + 512 && d.y >= ty && d.y < ty + 512));
          by_region.push_back(d);
        }
      }
    auto key = [](const auto& a, const auto& b) { return a.y != b.y ? a.y < b.y : a.x < b.x; };
    std::sort(whole.begin(), whole.end(), key);
    for (auto* got : {&tiled, &by_region}) {
      std::sort(got->begin(), got->end(), key);
      REQUIRE(got->size() == whole.size());
      for (size_t i = 0; i < whole.size(); ++i) {
        CHECK((*got)[i].x == whole[i].x);
        CHECK((*got)[i].y == whole[i].y);
        CHECK((*got)[i].score == doctest::Approx(whole[i].score).epsilon(1e-5));
      }
    }
  }
}

TEST_CASE("excluded points (the pipeline's necrosis) are not classified; the rest keep their scores") {
  cv::Mat img = stroma(768, 512, 9, 60);
  std::mt19937 rng(4);
  std::uniform_int_distribution<int> ux(20, 740), uy(20, 490), ua(0, 179);
  for (int i = 0; i < 12; ++i) draw_figure(img, {ux(rng), uy(rng)}, ua(rng));
  const auto view = grade::make_view(img, 0.25);
  const auto p = all_scores();
  const auto all = grade::detect_mitoses(view, p);
  size_t left = 0;
  for (const auto& d : all) left += d.x < 300 ? 1 : 0;
  REQUIRE(left >= 1);
  REQUIRE(left < all.size());
  // Exclude the right part of the image (x >= 400), with a band 300..400 between so that no detection kept on the
  // left was suppressed by, or suppresses, anything on the right (NMS radius 16 um = 64 px).
  grade::MitosisParams q = p;
  q.exclude = [](double x, double) { return x >= 400; };
  const auto got = grade::detect_mitoses(view, q);
  for (const auto& d : got) CHECK(d.x < 400);
  size_t got_left = 0;
  for (const auto& d : got) {
    if (d.x >= 300) continue;
    ++got_left;
    const auto* w = nearest(all, d.x, d.y);
    REQUIRE(w != nullptr);
    CHECK(w->x == d.x);
    CHECK(w->y == d.y);
    CHECK(w->score == doctest::Approx(d.score).epsilon(1e-5));
  }
  CHECK(got_left == left);
  q.exclude = [](double, double) { return true; };
  CHECK(grade::detect_mitoses(view, q).empty());
}

TEST_CASE("the embedded classifier gives torch's outputs (tools/train/train_mitosis.py test patterns)") {
  // Logits printed by the training script for the same three crops ("test patterns (logits)").
  const double torch_logits[3] = {-8.41449, -9.76564, -9.44612};
  for (int k = 0; k < 3; ++k) {
    const cv::Mat crop = test_pattern(64, k);
    grade::MitosisParams p;
    p.screen_threshold = 0.0;  // the main network on every candidate: its logits are what the script printed
    const auto s = grade::score_mitosis_candidates(grade::make_view(crop, 0.25), {{32.0, 32.0, 1.0}}, p);
    REQUIRE(s.size() == 1);
    CHECK(s[0] == doctest::Approx(1.0 / (1.0 + std::exp(-torch_logits[k]))).epsilon(1e-4));
  }
}

TEST_CASE("the embedded verifier gives torch's outputs; its logit is averaged with the main network's") {
  // The embedded verifier averages two networks (train_mitosis.py --average): the mean of the logits that
  // tools/train/train_mitosis.py --arch context printed for its 128x128 test patterns ("test patterns") when it trained
  // them, {-0.26089, -0.46548, 0.39235} (seed 1) and {-0.31659, -0.22406, -0.39887} (seed 2).
  const double torch_logits[3] = {-0.28874, -0.34477, -0.00326};
  auto logit = [](double p) { return std::log(p / (1.0 - p)); };
  for (int k = 0; k < 3; ++k) {
    const cv::Mat img = test_pattern(128, k);
    const grade::ImageView view = grade::make_view(img, 0.25);
    grade::MitosisParams main_only, both;
    main_only.screen_threshold = both.screen_threshold = 0.0;
    main_only.verify_from = 1.0;  // never
    both.verify_from = 0.0;       // every candidate
    const auto m = grade::score_mitosis_candidates(view, {{64.0, 64.0, 1.0}}, main_only);
    const auto b = grade::score_mitosis_candidates(view, {{64.0, 64.0, 1.0}}, both);
    REQUIRE(m.size() == 1);
    REQUIRE(b.size() == 1);
    CHECK(2.0 * logit(b[0]) - logit(m[0]) == doctest::Approx(torch_logits[k]).epsilon(1e-3));
    // With the default verify_from (0.5), a candidate the main network scores low keeps the main network's score.
    if (m[0] < 0.5) {
      grade::MitosisParams dflt;
      dflt.screen_threshold = 0.0;
      CHECK(grade::score_mitosis_candidates(view, {{64.0, 64.0, 1.0}}, dflt)[0] == m[0]);
    }
  }
}

TEST_CASE("the embedded locator gives the offsets the training script computes (test patterns)") {
  // Printed by tools/train/train_mitosis_locate.py --patterns libgrade/models/mitosis_locate.onnx (OpenCV dnn in
  // Python, soft-argmax in numpy): the crop, its 2x2 average, the network and the cell centres checked end to end.
  const double want[3][2] = {{-0.8812, 3.9214}, {-1.1555, 3.9808}, {-1.0182, 3.5437}};
  for (int k = 0; k < 3; ++k) {
    const cv::Mat img = test_pattern(128, k);
    std::vector<grade::MitosisDetection> d{{64.0, 64.0, 1.0}};  // its crop is the whole image
    grade::locate_mitoses(grade::make_view(img, 0.25), d);
    CHECK(std::abs(d[0].x - 64.0 - want[k][0]) < 0.03);  // offsets are rounded to 1/64 px
    CHECK(std::abs(d[0].y - 64.0 - want[k][1]) < 0.03);
    CHECK(d[0].score == 1.0);
  }
}

TEST_CASE("the locator never moves a detection out of the image") {
  // Near the edge its crop is mirrored; whatever it sees there, the position stays on the image's pixels.
  for (const cv::Size size : {cv::Size(1, 1), cv::Size(5, 300), cv::Size(40, 40), cv::Size(130, 7)}) {
    CAPTURE(size);
    cv::Mat img(size, CV_8UC3, cv::Scalar(230, 180, 200));
    cv::circle(img, {size.width / 2, size.height / 2}, 3, cv::Scalar(60, 30, 90), -1);
    std::vector<grade::MitosisDetection> d{
        {size.width / 2.0, size.height / 2.0, 0.95}, {0.0, 0.0, 0.95}, {size.width - 0.5, size.height - 0.5, 0.95}};
    grade::locate_mitoses(grade::make_view(img, 0.25), d);
    for (const auto& m : d) {
      CHECK(m.x >= 0.0);
      CHECK(m.y >= 0.0);
      CHECK(m.x <= size.width - 1.0);
      CHECK(m.y <= size.height - 1.0);
    }
  }
}

TEST_CASE("grade-inspect mitoses tiles a large image and writes what detect_mitoses finds") {
  // 2600 x 2300 px: more than one 2048 px tile each way, so the tiling path runs.
  cv::Mat img = stroma(2600, 2300, 9, 900);
  std::mt19937 rng(4);
  std::uniform_int_distribution<int> ux(20, 2580), uy(20, 2280), ua(0, 179);
  for (int i = 0; i < 60; ++i) draw_figure(img, {ux(rng), uy(rng)}, ua(rng));
  grade::test::TempDir dir("mitosis-cli");
  cv::Mat bgr;
  cv::cvtColor(img, bgr, cv::COLOR_RGB2BGR);
  REQUIRE(cv::imwrite((dir / "synthetic.png").string(), bgr));
  const auto r = grade::test::run(grade::test::quote(grade::test::tool("grade-inspect").string()) +
                                  " mitoses --mpp 0.25 --threads 2 --out " + grade::test::quote((dir / "out").string()) +
                                  " " + grade::test::quote((dir / "synthetic.png").string()));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::ifstream in(dir / "out" / "mitoses.csv");
  std::string line;
  REQUIRE(std::getline(in, line));
  CHECK(line.rfind("image,x,y,score", 0) == 0);
  std::vector<grade::MitosisDetection> csv;
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string name, x, y, s;
    std::getline(ss, name, ',');
    std::getline(ss, x, ',');
    std::getline(ss, y, ',');
    std::getline(ss, s, ',');
    CHECK(name == "synthetic");
    csv.push_back({std::stod(x), std::stod(y), std::stod(s)});
  }
  auto whole = grade::detect_mitoses(grade::make_view(img, 0.25));
  auto key = [](const auto& a, const auto& b) { return a.y != b.y ? a.y < b.y : a.x < b.x; };
  std::sort(whole.begin(), whole.end(), key);
  std::sort(csv.begin(), csv.end(), key);
  REQUIRE(csv.size() == whole.size());
  for (size_t i = 0; i < csv.size(); ++i) {
    CHECK(csv[i].x == doctest::Approx(whole[i].x));
    CHECK(csv[i].y == doctest::Approx(whole[i].y));
    CHECK(csv[i].score == doctest::Approx(whole[i].score).epsilon(1e-4));
  }
}

TEST_CASE("test-time augmentation does not alter the image and keeps scores in range") {
  cv::Mat img = stroma(256, 256, 13, 8);
  draw_figure(img, {128, 128}, 45);
  const cv::Mat before = img.clone();
  auto p = all_scores();
  const auto one = grade::detect_mitoses(grade::make_view(img, 0.25), p);
  p.orientations = 8;
  const auto eight = grade::detect_mitoses(grade::make_view(img, 0.25), p);
  CHECK(cv::norm(img, before, cv::NORM_INF) == 0.0);
  REQUIRE(!eight.empty());
  for (const auto& d : eight) CHECK((d.score >= 0.0 && d.score <= 1.0));
  CHECK(nearest(eight, 128, 128) != nullptr);
  CHECK(one.size() >= 1);
}
