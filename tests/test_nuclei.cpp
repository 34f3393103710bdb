// segment_nuclei on drawn nuclei with known shapes, rendered from known stain vectors; determinism; input checks;
// test-time flips; grade-inspect nuclei.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <random>

#include <opencv2/core/utility.hpp>
#include <opencv2/dnn.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "direct_unet.hpp"
#include "grade/error.hpp"
#include "grade/nuclei.hpp"
#include "nuclei_eval.hpp"
#include "test_support.hpp"

namespace {

struct Drawn {
  double x, y, major_um, minor_um, angle_deg;
  bool spindle;
  double drawn_area_um2 = 0, drawn_elongation = 0;  // filled in by render()
};

// Beer-Lambert rendering at `mpp`: eosin-stained stroma (with a little texture) and hematoxylin-dense ellipses.
cv::Mat render(std::vector<Drawn>& nuclei, int w, int h, double mpp, unsigned seed) {
  const auto s = grade::standard_stains();
  cv::Mat hd(h, w, CV_32F, cv::Scalar(0.02)), ed(h, w, CV_32F);
  cv::RNG rng(seed);
  rng.fill(ed, cv::RNG::NORMAL, 0.35, 0.04);
  cv::GaussianBlur(ed, ed, {0, 0}, 2.0);
  // Nuclei drawn 8x supersampled and area-averaged: partial coverage at the edges, so the rendered nucleus has the
  // analytic ellipse's area and shape (the known answer).
  const int ss = 8;
  cv::Mat cover = cv::Mat::zeros(h * ss, w * ss, CV_8U);
  for (auto& n : nuclei) {
    cv::ellipse(cover, cv::Point(static_cast<int>((n.x + 0.5) * ss), static_cast<int>((n.y + 0.5) * ss)),
                cv::Size(static_cast<int>(n.major_um / mpp / 2 * ss), static_cast<int>(n.minor_um / mpp / 2 * ss)),
                -n.angle_deg, 0, 360, 255, cv::FILLED, cv::LINE_8);
    n.drawn_area_um2 = std::numbers::pi / 4 * n.major_um * n.minor_um;
    n.drawn_elongation = n.major_um / n.minor_um;
  }
  cv::Mat f;
  cover.convertTo(f, CV_32F, 1.0 / 255);
  cv::resize(f, f, cv::Size(w, h), 0, 0, cv::INTER_AREA);
  hd = hd + f * 0.9;
  ed = ed.mul(1.0 - f * 0.6);
  cv::Mat rgb(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        const double od = hd.at<float>(y, x) * s.hematoxylin[static_cast<std::size_t>(c)] +
                          ed.at<float>(y, x) * s.eosin[static_cast<std::size_t>(c)];
        rgb.at<cv::Vec3b>(y, x)[c] = cv::saturate_cast<uchar>(std::lround(256.0 * std::exp(-od) - 1.0));
      }
  return rgb;
}

std::vector<Drawn> layout() {
  std::vector<Drawn> v;
  // A fascicle of parallel spindle nuclei (elongated, blunt, aligned) on the left ...
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j) v.push_back({60.0 + j * 70.0, 50.0 + i * 45.0, 18.0, 4.0, 20.0, true});
  // ... and round / oval nuclei on the right.
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j)
      v.push_back({230.0 + j * 60.0, 50.0 + i * 45.0, 7.5 + 0.5 * i, 7.0 + 0.5 * i - 0.3 * j, 30.0 * i, false});
  return v;
}

}  // namespace

TEST_CASE("drawn nuclei: count, area, elongation and spindle flags") {
  const double mpp = 0.5;
  auto truth = layout();
  const cv::Mat rgb = render(truth, 340, 230, mpp, 1);
  int flips = 1;
  auto network = grade::NucleiNetwork::fast;
  SUBCASE("one network pass") {}
  SUBCASE("test-time mirrors") { flips = 4; }
  SUBCASE("test-time mirrors and transposes") { flips = 8; }
  SUBCASE("the accurate network") { network = grade::NucleiNetwork::accurate; }
  CAPTURE(flips);
  const std::string network_name = grade::nuclei_network_name(network);
  CAPTURE(network_name);
  const auto r = grade::segment_nuclei(grade::make_view(rgb, mpp), {.network = network, .flips = flips});
  REQUIRE(r.labels.size() == rgb.size());
  REQUIRE(r.labels.type() == CV_32S);
  CHECK(r.nuclei.size() == truth.size());
  for (const auto& t : truth) {
    const int id = r.labels.at<int>(static_cast<int>(t.y), static_cast<int>(t.x));
    CAPTURE(t.x);
    CAPTURE(t.y);
    REQUIRE(id > 0);
    const auto& n = r.nuclei[static_cast<std::size_t>(id - 1)];
    REQUIRE(n.id == id);
    CHECK(n.area_um2 == doctest::Approx(t.drawn_area_um2).epsilon(0.05));
    CHECK(n.elongation == doctest::Approx(t.drawn_elongation).epsilon(0.05));
    CHECK(n.x == doctest::Approx(t.x).epsilon(0.01));
    CHECK(n.spindle == t.spindle);
    if (t.spindle) CHECK(std::abs(n.orientation_deg - t.angle_deg) < 5.0);
  }
}

TEST_CASE("network names: fast and accurate, both ways") {
  for (const auto n : {grade::NucleiNetwork::fast, grade::NucleiNetwork::accurate}) {
    auto back = n == grade::NucleiNetwork::fast ? grade::NucleiNetwork::accurate : grade::NucleiNetwork::fast;
    CHECK(grade::parse_nuclei_network(grade::nuclei_network_name(n), &back));
    CHECK(back == n);
  }
  CHECK(std::string(grade::nuclei_network_name(grade::NucleiNetwork::accurate)) == "accurate");
  auto n = grade::NucleiNetwork::fast;
  CHECK_FALSE(grade::parse_nuclei_network("Accurate", &n));
  CHECK_FALSE(grade::parse_nuclei_network("", &n));
  CHECK(n == grade::NucleiNetwork::fast);
}

TEST_CASE("each network's own post-processing settings apply unless the caller gives them") {
  CHECK(grade::default_contact_weight(grade::NucleiNetwork::fast) == 0.0);
  CHECK(grade::default_offset_merge_tolerance(grade::NucleiNetwork::fast) == 0.35);
  CHECK(grade::default_contact_weight(grade::NucleiNetwork::accurate) == 0.5);
  CHECK(grade::default_offset_merge_tolerance(grade::NucleiNetwork::accurate) == 0.30);
  CHECK_FALSE(grade::NucleiParams{}.contact_weight.has_value());
  CHECK_FALSE(grade::NucleiParams{}.offset_merge_tolerance.has_value());
  // Touching drawn nuclei (pairs 7 um apart), where the contact step has something to do.
  std::vector<Drawn> pairs;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 2; ++j) pairs.push_back({40.0 + i * 60.0 + j * 14.0, 40.0 + j * 4.0, 9.0, 7.5, 30.0 * i, false});
  const cv::Mat rgb = render(pairs, 220, 90, 0.5, 5);
  const auto view = grade::make_view(rgb, 0.5);
  for (const auto network : {grade::NucleiNetwork::fast, grade::NucleiNetwork::accurate}) {
    const std::string name = grade::nuclei_network_name(network);
    CAPTURE(name);
    const auto unset = grade::segment_nuclei(view, {.network = network});
    const auto given = grade::segment_nuclei(view, {.network = network,
                                                    .contact_weight = grade::default_contact_weight(network),
                                                    .offset_merge_tolerance = grade::default_offset_merge_tolerance(network)});
    CHECK(cv::countNonZero(unset.labels != given.labels) == 0);
    CHECK(unset.nuclei.size() == pairs.size());
  }
}

TEST_CASE("the accurate network is another network: other maps, the same drawn nuclei") {
  auto truth = layout();
  const cv::Mat rgb = render(truth, 340, 230, 0.5, 3);
  const auto fast = grade::detail::network_maps(rgb, {});
  const auto accurate = grade::detail::network_maps(rgb, {.network = grade::NucleiNetwork::accurate});
  REQUIRE(fast.size() == 5);
  REQUIRE(accurate.size() == 5);
  CHECK(cv::norm(fast[0], accurate[0], cv::NORM_INF) > 0.01);  // foreground probabilities differ somewhere
  const auto a = grade::segment_nuclei(grade::make_view(rgb, 0.5), {});
  const auto b = grade::segment_nuclei(grade::make_view(rgb, 0.5), {.network = grade::NucleiNetwork::accurate});
  CHECK(a.nuclei.size() == truth.size());
  CHECK(b.nuclei.size() == truth.size());
}

TEST_CASE("the direct kernels (AVX-512 and AVX2) compute what OpenCV dnn computes") {
  using grade::detail::NucleiEngine;
  auto truth = layout();
  const cv::Mat rgb = render(truth, 340, 230, 0.5, 4);
  // AVX-512F (with AVX2 and FMA), else AVX2 with FMA, else none.
  const auto isa = grade::detail::DirectUnet::cpu_isa();
  const bool avx512 = isa == grade::detail::DirectUnet::Isa::avx512, avx2 = isa.has_value();
  struct Reset {  // the thread's engine back to the default however the test ends
    ~Reset() { grade::detail::set_thread_nuclei_engine(NucleiEngine::best); }
  } reset;
  for (auto network : {grade::NucleiNetwork::fast, grade::NucleiNetwork::accurate}) {
    const std::string name = grade::nuclei_network_name(network);
    CAPTURE(name);
    grade::detail::set_thread_nuclei_engine(NucleiEngine::best);
    const std::string best = grade::detail::nuclei_engine_name(network);
    CHECK(best == (avx512 ? "direct AVX-512" : avx2 ? "direct AVX2" : "OpenCV dnn"));
    // Tiles of 128 + 2 x 8 px and the partial ones at the edges: several input sizes, all multiples of 8, whose coarsest
    // level (1/8) has even sides (144 px: Winograd convolutions there) and odd ones (104 and 120 px: direct ones).
    const grade::NucleiParams params{.network = network, .tile_px = 128};
    grade::detail::set_thread_nuclei_engine(NucleiEngine::opencv);
    CHECK(std::string(grade::detail::nuclei_engine_name(network)) == "OpenCV dnn");
    const auto dnn = grade::detail::network_maps(rgb, params);
    const auto b = grade::segment_nuclei(grade::make_view(rgb, 0.5), params);
    REQUIRE(dnn.size() == 5);
    for (auto engine : {NucleiEngine::best, NucleiEngine::avx2}) {
      if (!avx2) {
        MESSAGE("no direct kernels here (a CPU without AVX2 and FMA, or not x86-64): OpenCV dnn runs the network");
        break;
      }
      grade::detail::set_thread_nuclei_engine(engine);
      const std::string engine_name = grade::detail::nuclei_engine_name(network);
      CAPTURE(engine_name);
      const auto direct = grade::detail::network_maps(rgb, params);
      const auto a = grade::segment_nuclei(grade::make_view(rgb, 0.5), params);
      REQUIRE(direct.size() == 5);
      for (std::size_t c = 0; c < direct.size(); ++c) CHECK(cv::norm(direct[c], dnn[c], cv::NORM_INF) < 1e-4);
      CHECK(a.nuclei.size() == truth.size());
      CHECK(cv::countNonZero(a.labels != b.labels) == 0);
    }
  }
}

TEST_CASE("the direct kernels refuse a network of another layout (it runs on OpenCV dnn)") {
  // One 3x3 convolution, 3 -> 16 channels: a valid network, not NucleiNet's layer sequence.
  cv::dnn::Net net;
  cv::dnn::LayerParams lp;
  lp.set("kernel_size", 3);
  lp.set("pad", 1);
  lp.set("num_output", 16);
  lp.set("bias_term", true);
  const int wshape[4] = {16, 3, 3, 3};
  cv::Mat w(4, wshape, CV_32F), b(16, 1, CV_32F, cv::Scalar(0.1));
  cv::randu(w, -1.0, 1.0);
  lp.blobs = {w, b};
  net.addLayerToPrev("conv", "Convolution", lp);
  const int ishape[4] = {1, 3, 16, 16};
  net.setInput(cv::Mat(4, ishape, CV_32F, cv::Scalar(0.2)));
  REQUIRE(net.forward().size[1] == 16);  // dnn runs it
  CHECK(grade::detail::DirectUnet::from(net) == nullptr);
}

TEST_CASE("results do not depend on OpenCV's thread count") {
  auto truth = layout();
  const cv::Mat rgb = render(truth, 340, 230, 0.5, 2);
  auto network = grade::NucleiNetwork::fast;
  SUBCASE("fast network") {}
  SUBCASE("accurate network") { network = grade::NucleiNetwork::accurate; }
  const int before = cv::getNumThreads();
  cv::setNumThreads(1);
  const auto a = grade::segment_nuclei(grade::make_view(rgb, 0.5), {.network = network, .tile_px = 128});
  cv::setNumThreads(2);
  const auto b = grade::segment_nuclei(grade::make_view(rgb, 0.5), {.network = network, .tile_px = 128});
  cv::setNumThreads(before);
  CHECK(a.nuclei.size() > 10);
  CHECK(cv::countNonZero(a.labels != b.labels) == 0);
  REQUIRE(a.nuclei.size() == b.nuclei.size());
  for (std::size_t i = 0; i < a.nuclei.size(); ++i) CHECK(a.nuclei[i].area_um2 == b.nuclei[i].area_um2);
}

TEST_CASE("test-time flips: a mirrored or transposed tile gives the mirrored or transposed nuclei") {
  // Averaging over all eight mirror / transpose copies makes the network's output (nearly: float sums in another
  // order) equivariant to them, offset maps included: a wrong sign or a swapped map would move the offset merge.
  auto truth = layout();
  const cv::Mat rgb = render(truth, 232, 232, 0.5, 4);  // square, so that the transposed copy tiles alike
  const grade::NucleiParams p{.flips = 8};
  const auto r = grade::segment_nuclei(grade::make_view(rgb, 0.5), p);
  REQUIRE(r.nuclei.size() >= 8);
  for (int op : {0, 1, 2}) {  // up-down, left-right, transpose
    CAPTURE(op);
    cv::Mat t;
    if (op == 2) cv::transpose(rgb, t);
    else cv::flip(rgb, t, op);
    const auto rt = grade::segment_nuclei(grade::make_view(t, 0.5), p);
    CHECK(rt.nuclei.size() == r.nuclei.size());
    cv::Mat back;
    if (op == 2) cv::transpose(rt.labels, back);
    else cv::flip(rt.labels, back, op);
    // Same foreground, and each nucleus's pixels in one nucleus of the other result, up to a few boundary pixels.
    CHECK(cv::countNonZero((back > 0) != (r.labels > 0)) <= 10);
    for (const auto& n : r.nuclei) {
      const int id = r.labels.at<int>(static_cast<int>(std::lround(n.y)), static_cast<int>(std::lround(n.x)));
      if (id != n.id) continue;  // a concave nucleus's centroid outside it
      const int other = back.at<int>(static_cast<int>(std::lround(n.y)), static_cast<int>(std::lround(n.x)));
      REQUIRE(other > 0);
      const auto& m = rt.nuclei[static_cast<std::size_t>(other - 1)];
      CHECK(m.area_um2 == doctest::Approx(n.area_um2).epsilon(0.02));
    }
  }
}

TEST_CASE("test-time flips: the offset maps of the mirrored and transposed copies are turned back") {
  // One round nucleus: its horizontal offset rises along x and not along y, the vertical one along y; a copy whose
  // maps came back with the wrong sign would flatten that rise, one with the maps swapped would tilt it.
  std::vector<Drawn> one{{48.0, 48.0, 8.0, 8.0, 0.0, false}};
  const cv::Mat rgb = render(one, 96, 96, 0.5, 5);
  for (int flips : {1, 2, 4, 8}) {
    CAPTURE(flips);
    const auto maps = grade::detail::network_maps(rgb, {.flips = flips});
    REQUIRE(maps.size() == 5);
    // Mean offset in the right minus the left half of the nucleus (x), bottom minus top (y).
    double rise[2][2] = {};  // [map][axis]
    for (int m = 0; m < 2; ++m)
      for (int axis = 0; axis < 2; ++axis) {
        double sum[2] = {}, n[2] = {};
        for (int y = 40; y < 57; ++y)
          for (int x = 40; x < 57; ++x) {
            const int c = axis == 0 ? x : y;
            if (c == 48 || maps[0].at<float>(y, x) < 0.5f) continue;
            sum[c > 48] += maps[static_cast<std::size_t>(3 + m)].at<float>(y, x);
            ++n[c > 48];
          }
        REQUIRE(n[0] > 10);
        REQUIRE(n[1] > 10);
        rise[m][axis] = sum[1] / n[1] - sum[0] / n[0];
      }
    CHECK(rise[0][0] > 0.3);  // 0..1 for -1..1 across the nucleus: halves differ by ~0.5
    CHECK(rise[1][1] > 0.3);
    CHECK(std::abs(rise[0][1]) < 0.1);
    CHECK(std::abs(rise[1][0]) < 0.1);
  }
}

TEST_CASE("level-0 coordinates follow the view's origin and downsample; other scales are resampled") {
  auto truth = layout();
  const cv::Mat rgb = render(truth, 340, 230, 0.5, 3);
  grade::ImageView v = grade::make_view(rgb, 0.5);
  v.x0 = 1000;
  v.y0 = 2000;
  v.downsample = 2.0;
  const auto r = grade::segment_nuclei(v);
  const auto r0 = grade::segment_nuclei(grade::make_view(rgb, 0.5));
  REQUIRE(r.nuclei.size() == r0.nuclei.size());
  for (std::size_t i = 0; i < r.nuclei.size(); ++i) {
    CHECK(r.nuclei[i].x == doctest::Approx(1000 + 2.0 * r0.nuclei[i].x));
    CHECK(r.nuclei[i].y == doctest::Approx(2000 + 2.0 * r0.nuclei[i].y));
  }
  // The same scene at 0.25 um/px: same nuclei, areas in um^2 agree.
  cv::Mat big;
  cv::resize(rgb, big, {}, 2.0, 2.0, cv::INTER_LINEAR);
  const auto r2 = grade::segment_nuclei(grade::make_view(big, 0.25));
  CHECK(r2.labels.size() == big.size());
  CHECK(r2.nuclei.size() == r0.nuclei.size());
}

TEST_CASE("render_nuclei_overlay: outlines on each nucleus's own edge pixels, spindle and other colours") {
  cv::Mat rgb(8, 10, CV_8UC3, cv::Scalar(200, 150, 190));
  grade::NucleiResult r;
  r.labels = cv::Mat::zeros(rgb.size(), CV_32S);
  r.labels(cv::Rect(1, 1, 4, 5)).setTo(1);  // spindle, 4x5: 14 edge pixels, 2x3 inside
  r.labels(cv::Rect(5, 1, 3, 3)).setTo(2);  // touches nucleus 1: 8 edge pixels, 1 inside
  r.labels(cv::Rect(9, 6, 1, 2)).setTo(3);  // cut by the image's border: both pixels are edge
  r.nuclei = {{.id = 1, .spindle = true}, {.id = 2}, {.id = 3}};
  const cv::Mat o = grade::render_nuclei_overlay(grade::make_view(rgb, 0.5), r);
  REQUIRE(o.size() == rgb.size());
  REQUIRE(o.type() == CV_8UC3);
  int spindle = 0, other = 0, unchanged = 0;
  for (int y = 0; y < o.rows; ++y)
    for (int x = 0; x < o.cols; ++x) {
      const auto v = o.at<cv::Vec3b>(y, x);
      spindle += v == grade::kSpindleOutline;
      other += v == grade::kOtherOutline;
      unchanged += v == rgb.at<cv::Vec3b>(y, x);
    }
  CHECK(spindle == 14);
  CHECK(other == 8 + 2);
  CHECK(unchanged == 80 - 14 - 10);
  CHECK(o.at<cv::Vec3b>(3, 4) == grade::kSpindleOutline);  // where nucleus 1 meets nucleus 2
  CHECK(o.at<cv::Vec3b>(2, 5) == grade::kOtherOutline);
  CHECK(o.at<cv::Vec3b>(3, 2) == rgb.at<cv::Vec3b>(3, 2));  // inside nucleus 1
  CHECK(o.at<cv::Vec3b>(2, 6) == rgb.at<cv::Vec3b>(2, 6));  // inside nucleus 2
  CHECK(rgb.at<cv::Vec3b>(1, 1) == cv::Vec3b(200, 150, 190));  // the input is not drawn on
  CHECK_THROWS_WITH_AS(grade::render_nuclei_overlay(grade::make_view(rgb(cv::Rect(0, 0, 9, 8)).clone(), 0.5), r),
                       doctest::Contains("not this image's"), grade::Error);
}

TEST_CASE("clear errors for empty, non-RGB or scale-less input and bad parameters") {
  CHECK_THROWS_WITH_AS(grade::segment_nuclei(grade::make_view(cv::Mat(), 0.5)), doctest::Contains("empty"), grade::Error);
  CHECK_THROWS_WITH_AS(grade::segment_nuclei(grade::make_view(cv::Mat(64, 64, CV_8UC1, cv::Scalar(0)), 0.5)),
                       doctest::Contains("CV_8UC3"), grade::Error);
  const cv::Mat rgb(64, 64, CV_8UC3, cv::Scalar(230, 200, 220));
  CHECK_THROWS_WITH_AS(grade::segment_nuclei(grade::make_view(rgb, 0.0)), doctest::Contains("mpp"), grade::Error);
  CHECK_THROWS_WITH_AS(grade::segment_nuclei(grade::make_view(rgb, 0.5), {.working_mpp = -1}),
                       doctest::Contains("working_mpp"), grade::Error);
  CHECK_THROWS_WITH_AS(grade::segment_nuclei(grade::make_view(rgb, 0.5), {.tile_px = 100}), doctest::Contains("tile_px"),
                       grade::Error);
  CHECK_THROWS_WITH_AS(grade::segment_nuclei(grade::make_view(rgb, 0.5), {.flips = 3}), doctest::Contains("flips"),
                       grade::Error);
  CHECK_THROWS_WITH_AS(grade::segment_nuclei(grade::make_view(rgb, 0.5), {.network = grade::NucleiNetwork{7}}),
                       doctest::Contains("network must be fast or accurate"), grade::Error);
  // Blank glass: no nuclei, no error.
  const cv::Mat glass(64, 64, CV_8UC3, cv::Scalar(245, 245, 245));
  CHECK(grade::segment_nuclei(grade::make_view(glass, 0.5)).nuclei.empty());
}

TEST_CASE("offset maps: halves of one nucleus are merged, two touching nuclei are not") {
  // Ideal offset maps (0..1 for -1..1) for discs of radius r: h = (x - cx) / r, v = (y - cy) / r.
  const int r = 12;
  cv::Mat labels(40, 100, CV_32S, cv::Scalar(0)), h(labels.size(), CV_32F, cv::Scalar(0.5)), v = h.clone();
  auto disc = [&](int cx, int cy, auto label_of) {
    for (int y = cy - r; y <= cy + r; ++y)
      for (int x = cx - r; x <= cx + r; ++x) {
        if ((x - cx) * (x - cx) + (y - cy) * (y - cy) > r * r) continue;
        labels.at<int>(y, x) = label_of(x, y);
        h.at<float>(y, x) = 0.5f + 0.5f * static_cast<float>(x - cx) / r;
        v.at<float>(y, x) = 0.5f + 0.5f * static_cast<float>(y - cy) / r;
      }
  };
  disc(20, 20, [](int x, int) { return x < 20 ? 1 : 2; });  // one nucleus cut in two by the watershed
  disc(45, 20, [](int, int) { return 3; });                   // touches its right half: another nucleus
  disc(75, 20, [](int, int y) { return y < 16 ? 4 : 5; });    // a nucleus cut off-centre
  grade::detail::merge_by_offsets(labels, h, v, 0.3);
  CHECK(labels.at<int>(20, 10) == 1);
  CHECK(labels.at<int>(20, 30) == 1);  // merged with its other half, taking the smaller number
  CHECK(labels.at<int>(20, 45) == 3);  // the touching nucleus stays apart
  CHECK(labels.at<int>(10, 75) == 4);
  CHECK(labels.at<int>(30, 75) == 4);
  // Flat offsets (no evidence either way) merge nothing.
  labels.setTo(0);
  disc(20, 20, [](int x, int) { return x < 20 ? 1 : 2; });
  const cv::Mat flat(labels.size(), CV_32F, cv::Scalar(0.5));
  grade::detail::merge_by_offsets(labels, flat, flat, 0.3);
  CHECK(labels.at<int>(20, 30) == 2);
}

TEST_CASE("evaluation: drawn GT and predictions with known metrics and error classes") {
  // GT 1 found exactly; GT 2 and 3 merged into one prediction; GT 4 split in two halves; GT 5 missed; a prediction
  // on no nucleus; GT 6 inside a larger prediction (IoU 100 / 256). Every IoU is <= 0.5 except GT 1's.
  cv::Mat gt = cv::Mat::zeros(100, 100, CV_32S), pred = cv::Mat::zeros(100, 100, CV_32S);
  auto box = [](cv::Mat& m, int x0, int y0, int x1, int y1, int id) { m(cv::Rect(x0, y0, x1 - x0, y1 - y0)) = id; };
  box(gt, 10, 10, 20, 20, 1), box(pred, 10, 10, 20, 20, 1);
  box(gt, 30, 10, 40, 20, 2), box(gt, 40, 10, 50, 20, 3), box(pred, 30, 10, 50, 20, 2);
  box(gt, 60, 10, 80, 20, 4), box(pred, 60, 10, 70, 20, 3), box(pred, 70, 10, 80, 20, 4);
  box(gt, 10, 40, 20, 50, 5);
  box(pred, 40, 40, 50, 50, 5);
  box(pred, 60, 40, 76, 56, 6), box(gt, 63, 43, 73, 53, 6);
  // The same numbers from ../shared/eval/eval_nuclei.py on these maps: AJI 500 / 1256, Dice 1200 / 1556, one match.
  const auto m = grade::detail::nuclei_metrics(grade::detail::nuclei_image_sums(gt, pred, {2}, {2}));
  CHECK(m.aji == doctest::Approx(500.0 / 1256));
  CHECK(m.dice == doctest::Approx(1200.0 / 1556));
  CHECK(m.precision == doctest::Approx(1.0 / 6));
  CHECK(m.recall == doctest::Approx(1.0 / 6));
  CHECK(m.pq == doctest::Approx(1.0 / 6));
  CHECK(m.sp_f1 == 0.0);  // GT 2 is spindle and so is the prediction that covers it, but at IoU 0.5, not above
  const auto overlap = grade::detail::instance_overlap(gt, pred);
  const auto match = grade::detail::match_predictions(overlap);
  CHECK(match == std::vector<int>{0, 1, 0, 0, 0, 0, 0});

  const auto c = grade::detail::nuclei_error_counts(overlap, {2, 4});
  using A = std::array<std::int64_t, 6>;  // matched, missed, merged, split, outline, other
  CHECK(c.gt == A{1, 1, 2, 1, 1, 0});
  CHECK(c.spindle_gt == A{0, 0, 1, 1, 0, 0});
  CHECK(c.pred == A{1, 1, 1, 2, 1, 0});  // matched, unlabelled, merge, split, outline, other
}

TEST_CASE("grade-inspect nuclei: labels and nuclei.csv as DESIGN.md says, --flips, --network, --overlay, errors") {
  namespace test = grade::test;
  test::TempDir dir("grade-nuclei-cli");
  auto truth = layout();
  const cv::Mat rgb = render(truth, 340, 230, 0.5, 1);
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  REQUIRE(cv::imwrite((dir / "drawn.png").string(), bgr));
  const std::string inspect = test::quote(test::tool("grade-inspect").string());
  using grade::NucleiNetwork;
  for (const auto& [flips, network] : {std::pair{1, NucleiNetwork::fast}, std::pair{4, NucleiNetwork::fast},
                                       std::pair{1, NucleiNetwork::accurate}}) {
    const std::string network_name = grade::nuclei_network_name(network);
    CAPTURE(flips);
    CAPTURE(network_name);
    const auto out = dir / ("out" + std::to_string(flips) + network_name);
    const auto r = test::run(inspect + " nuclei --mpp 0.5 --flips " + std::to_string(flips) +
                             (network == grade::NucleiNetwork::accurate ? " --network accurate" : "") +
                             (flips == 4 ? " --overlay" : "") + " --out " +
                             test::quote(out.string()) + " " + test::quote((dir / "drawn.png").string()));
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
    const cv::Mat labels = cv::imread((out / "drawn.png").string(), cv::IMREAD_UNCHANGED);
    REQUIRE(labels.type() == CV_16U);
    CHECK(labels.size() == rgb.size());
    const auto direct = grade::segment_nuclei(grade::make_view(rgb, 0.5), {.network = network, .flips = flips});
    cv::Mat direct16;
    direct.labels.convertTo(direct16, CV_16U);
    CHECK(cv::countNonZero(labels != direct16) == 0);
    const std::string text = test::slurp(out / "nuclei.csv");
    CHECK(text.rfind("image,id,x,y,area_um2,elongation,spindle,", 0) == 0);
    int rows = 0, spindles = 0;
    for (const auto& row : test::read_csv(out / "nuclei.csv")) {
      CHECK(row.at("image") == "drawn");
      ++rows;
      spindles += row.at("spindle") == "1";
    }
    CHECK(rows == static_cast<int>(truth.size()));
    CHECK(spindles == 8);
    // --overlay (with four passes only): the image with the outlines, as render_nuclei_overlay draws them.
    const auto overlay = out / "drawn.overlay.png";
    CHECK(std::filesystem::exists(overlay) == (flips == 4));
    if (flips == 4) {
      cv::Mat expected;
      cv::cvtColor(grade::render_nuclei_overlay(grade::make_view(rgb, 0.5), direct), expected, cv::COLOR_RGB2BGR);
      const cv::Mat written = cv::imread(overlay.string(), cv::IMREAD_COLOR);
      REQUIRE(written.size() == rgb.size());
      CHECK(cv::norm(written, expected, cv::NORM_INF) == 0.0);
    }
  }
  const auto bad = test::run(inspect + " nuclei --mpp 0.5 --flips 3 --out " + test::quote((dir / "x").string()) + " " +
                             test::quote((dir / "drawn.png").string()));
  CHECK(bad.exit_code == 2);
  CHECK(bad.output.find("--flips must be 1, 2, 4 or 8") != std::string::npos);
  const auto other = test::run(inspect + " tissue --mpp 0.5 --flips 4 --out " + test::quote((dir / "x").string()) + " " +
                               test::quote((dir / "drawn.png").string()));
  CHECK(other.exit_code == 2);
  CHECK(other.output.find("nuclei stage only") != std::string::npos);
  const auto turbo = test::run(inspect + " nuclei --mpp 0.5 --network turbo --out " +
                               test::quote((dir / "x").string()) + " " + test::quote((dir / "drawn.png").string()));
  CHECK(turbo.exit_code == 2);
  CHECK(turbo.output.find("--network must be fast or accurate, got 'turbo'") != std::string::npos);
  const auto tissue = test::run(inspect + " tissue --mpp 0.5 --network accurate --out " +
                                test::quote((dir / "x").string()) + " " + test::quote((dir / "drawn.png").string()));
  CHECK(tissue.exit_code == 2);
  CHECK(tissue.output.find("--network applies to the nuclei stage only") != std::string::npos);
  const auto stain = test::run(inspect + " stain --mpp 0.5 --overlay --out " + test::quote((dir / "x").string()) + " " +
                               test::quote((dir / "drawn.png").string()));
  CHECK(stain.exit_code == 2);
  CHECK(stain.output.find("--overlay applies to the nuclei stage only") != std::string::npos);
  // A PNG records no resolution: without --mpp the error names the image and both ways to give it, nothing is written.
  const auto nompp = test::run(inspect + " nuclei --out " + test::quote((dir / "y").string()) + " " +
                               test::quote((dir / "drawn.png").string()));
  CHECK(nompp.exit_code == 1);
  CHECK(nompp.output.find("drawn.png") != std::string::npos);
  CHECK(nompp.output.find("--mpp-csv") != std::string::npos);
  CHECK(!std::filesystem::exists(dir / "y" / "nuclei.csv"));
}
