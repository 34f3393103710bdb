// grade-synth: determinism, truth consistency (nuclei on dark hematoxylin, nucleus-free necrosis, mitoses darker than
// nuclei, hotspot recount, necrosis percentage), the TIFF as OpenSlide sees it, and errors for bad options.
#include <doctest/doctest.h>
#include <openslide.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "grade/synth.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using grade::test::quote;
using grade::test::read_json;
using grade::test::slurp;
using grade::test::run;
using grade::test::TempDir;
using json = nlohmann::json;

namespace {

// Level-0 pixels of a slide through OpenSlide's C API (premultiplied ARGB -> RGB; our TIFF is opaque).
cv::Mat read_rgb(openslide_t* osr, std::int64_t x, std::int64_t y, std::int64_t w, std::int64_t h, int level = 0) {
  std::vector<std::uint32_t> buf(static_cast<std::size_t>(w * h));
  openslide_read_region(osr, buf.data(), x, y, level, w, h);
  REQUIRE(openslide_get_error(osr) == nullptr);
  cv::Mat rgb(static_cast<int>(h), static_cast<int>(w), CV_8UC3);
  for (std::size_t i = 0; i < buf.size(); ++i) {
    auto* p = rgb.ptr<std::uint8_t>() + 3 * i;
    p[0] = static_cast<std::uint8_t>(buf[i] >> 16);
    p[1] = static_cast<std::uint8_t>(buf[i] >> 8);
    p[2] = static_cast<std::uint8_t>(buf[i]);
  }
  return rgb;
}

// Hematoxylin concentration by least-squares colour deconvolution with the truth's own stain vectors.
cv::Mat hematoxylin(const cv::Mat& rgb, const json& stains) {
  const auto h = stains["hematoxylin"].get<std::vector<double>>(), e = stains["eosin"].get<std::vector<double>>();
  // Normal equations of [h e] c = od.
  const double hh = h[0] * h[0] + h[1] * h[1] + h[2] * h[2], ee = e[0] * e[0] + e[1] * e[1] + e[2] * e[2];
  const double he = h[0] * e[0] + h[1] * e[1] + h[2] * e[2], det = hh * ee - he * he;
  std::array<double, 256> lut{};
  for (int v = 0; v < 256; ++v) lut[static_cast<std::size_t>(v)] = -std::log10(std::max(1.0, static_cast<double>(v)) / 255.0);
  cv::Mat out(rgb.size(), CV_32F);
  for (int y = 0; y < rgb.rows; ++y)
    for (int x = 0; x < rgb.cols; ++x) {
      const auto* p = rgb.ptr<std::uint8_t>(y) + 3 * x;
      double od[3];
      for (int c = 0; c < 3; ++c) od[c] = lut[p[c]];
      const double bh = h[0] * od[0] + h[1] * od[1] + h[2] * od[2], be = e[0] * od[0] + e[1] * od[1] + e[2] * od[2];
      out.at<float>(y, x) = static_cast<float>((ee * bh - he * be) / det);
    }
  return out;
}

// An independent (slow, obviously correct) recount: every candidate corner from the mitoses and a 64-px grid.
int recount_hotspot(const json& mitoses, std::int64_t w, std::int64_t h, std::int64_t side) {
  std::vector<std::int64_t> xs, ys;
  for (std::int64_t v = 0; v <= w - side; v += 64) xs.push_back(v);
  for (std::int64_t v = 0; v <= h - side; v += 64) ys.push_back(v);
  for (const auto& m : mitoses) {
    xs.push_back(std::clamp<std::int64_t>(static_cast<std::int64_t>(std::floor(m["x"].get<double>())), 0, w - side));
    ys.push_back(std::clamp<std::int64_t>(static_cast<std::int64_t>(std::floor(m["y"].get<double>())), 0, h - side));
  }
  int best = 0;
  for (auto y : ys)
    for (auto x : xs) {
      int n = 0;
      for (const auto& m : mitoses) {
        const double mx = m["x"], my = m["y"];
        n += mx >= x && mx < x + side && my >= y && my < y + side;
      }
      best = std::max(best, n);
    }
  return best;
}

double shoelace(const json& poly) {
  double a = 0;
  for (std::size_t i = 0, n = poly.size(); i < n; ++i) {
    const auto& p = poly[i];
    const auto& q = poly[(i + 1) % n];
    a += p[0].get<double>() * q[1].get<double>() - q[0].get<double>() * p[1].get<double>();
  }
  return std::abs(a) / 2;
}

grade::SynthParams small_params(std::uint64_t seed) {
  grade::SynthParams p;
  p.width_px = 2048;
  p.height_px = 2048;
  p.seed = seed;
  p.hotspot_mitoses_per_10hpf = 40;
  p.necrosis_percent = 15;
  return p;
}

}  // namespace

TEST_CASE("synth: the same seed gives identical bytes, another seed different ones") {
  TempDir dir("grade-synth");
  grade::synthesize_slide(small_params(7), dir / "a.tiff", dir / "a.json");
  grade::synthesize_slide(small_params(7), dir / "b.tiff", dir / "b.json");
  grade::synthesize_slide(small_params(8), dir / "c.tiff", dir / "c.json");
  CHECK(slurp(dir / "a.tiff") == slurp(dir / "b.tiff"));
  CHECK(slurp(dir / "a.json") == slurp(dir / "b.json"));
  CHECK(slurp(dir / "a.tiff") != slurp(dir / "c.tiff"));
  CHECK(slurp(dir / "a.json") != slurp(dir / "c.json"));
  // A 2048-px slide (0.5 mm) cannot hold a 10-HPF window: the truth says so and scales the count.
  const json t = read_json(dir / "a.json");
  CHECK(t["hotspot"]["scaled"] == true);
  CHECK(t["hotspot"]["raw_count"].get<int>() <= static_cast<int>(t["mitoses"].size()));
  // No temporary files are left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++files;
  CHECK(files == 6);
}

TEST_CASE("synth: OpenSlide opens the TIFF with the right size, levels and mpp") {
  TempDir dir("grade-synth");
  for (const double mpp : {0.25, 0.5}) {
    grade::SynthParams p = small_params(3);
    p.width_px = 5000;
    p.height_px = 3000;
    p.mpp = mpp;
    const auto sum = grade::synthesize_slide(p, dir / "s.tiff", dir / "s.json");
    openslide_t* osr = openslide_open((dir / "s.tiff").c_str());
    REQUIRE(osr != nullptr);
    REQUIRE(openslide_get_error(osr) == nullptr);
    CHECK(std::string(openslide_get_property_value(osr, OPENSLIDE_PROPERTY_NAME_VENDOR)) == "aperio");
    CHECK(std::stod(openslide_get_property_value(osr, OPENSLIDE_PROPERTY_NAME_MPP_X)) == doctest::Approx(mpp));
    CHECK(std::stod(openslide_get_property_value(osr, OPENSLIDE_PROPERTY_NAME_MPP_Y)) == doctest::Approx(mpp));
    // 5000 -> 1250 -> 313 (levels are added while the previous one is >= 1000 px).
    REQUIRE(openslide_get_level_count(osr) == 3);
    CHECK(sum.levels == 3);
    const std::int64_t expect[3][2] = {{5000, 3000}, {1250, 750}, {313, 188}};
    for (int l = 0; l < 3; ++l) {
      std::int64_t w = 0, h = 0;
      openslide_get_level_dimensions(osr, l, &w, &h);
      CHECK(w == expect[l][0]);
      CHECK(h == expect[l][1]);
      CHECK(openslide_get_level_downsample(osr, l) == doctest::Approx(std::pow(4.0, l)).epsilon(0.01));
    }
    // The lower levels show the same picture as level 0 (area average of 4 x 4 pixels).
    const cv::Mat l0 = read_rgb(osr, 1000, 1000, 1024, 1024, 0), l1 = read_rgb(osr, 1000, 1000, 256, 256, 1);
    cv::Mat l0_small;
    cv::resize(l0, l0_small, cv::Size(256, 256), 0, 0, cv::INTER_AREA);
    cv::Mat diff, shifted;
    cv::absdiff(l0_small, l1, diff);
    CHECK(cv::mean(diff)[0] < 8.0);  // JPEG at both levels
    // ... and aligned: a one-pixel shift matches worse.
    cv::absdiff(l0_small(cv::Rect(1, 0, 255, 256)), l1(cv::Rect(0, 0, 255, 256)), shifted);
    CHECK(cv::mean(diff)[0] < cv::mean(shifted)[0]);
    // Corners are glass (near white), the centre is stained tissue.
    const cv::Scalar corner = cv::mean(read_rgb(osr, 0, 0, 64, 64));
    const cv::Scalar centre = cv::mean(read_rgb(osr, 2500 - 128, 1500 - 128, 256, 256));
    CHECK(corner[1] > 225);
    CHECK(centre[1] < 200);
    openslide_close(osr);
  }
}

TEST_CASE("synth: the truth agrees with the pixels") {
  TempDir dir("grade-synth");
  grade::SynthParams p;
  p.width_px = 6000;  // 1.5 mm: holds a full 10-HPF window (1.32 mm)
  p.height_px = 6000;
  p.seed = 5;
  p.hotspot_mitoses_per_10hpf = 120;  // many figures on a small slide, to compare them with the nuclei
  p.necrosis_percent = 18;
  const auto sum = grade::synthesize_slide(p, dir / "s.tiff", dir / "s.json");
  const json t = read_json(dir / "s.json");
  for (const char* k : {"width", "height", "mpp", "seed", "params", "nuclei", "mitoses", "tissue_polygons",
                        "necrosis_polygons", "hotspot", "necrosis_percent", "tissue_area_mm2", "mitosis_score",
                        "necrosis_score"})
    CHECK_MESSAGE(t.contains(k), k);
  REQUIRE(t["nuclei"].size() > 1000);
  REQUIRE(t["mitoses"].size() >= 5);
  CHECK(static_cast<std::int64_t>(t["nuclei"].size()) == sum.nuclei);

  openslide_t* osr = openslide_open((dir / "s.tiff").c_str());
  REQUIRE(osr != nullptr);
  const cv::Mat rgb = read_rgb(osr, 0, 0, 6000, 6000);
  openslide_close(osr);
  const cv::Mat H = hematoxylin(rgb, t["params"]["stains"]);
  const double mpp = t["mpp"];
  // The darkest hematoxylin of an object: the maximum of the 5x5-averaged H within a disc (robust to JPEG noise).
  cv::Mat Hs;
  cv::blur(H, Hs, cv::Size(5, 5));
  auto disc_max = [&](double x, double y, double r_px) {
    float best = 0;
    const int ir = static_cast<int>(std::ceil(r_px));
    for (int dy = -ir; dy <= ir; ++dy)
      for (int dx = -ir; dx <= ir; ++dx) {
        const int px = static_cast<int>(std::floor(x)) + dx, py = static_cast<int>(std::floor(y)) + dy;
        if (dx * dx + dy * dy > r_px * r_px || px < 0 || py < 0 || px >= H.cols || py >= H.rows) continue;
        best = std::max(best, Hs.at<float>(py, px));
      }
    return best;
  };

  // Stroma (tissue, not nuclei) level of hematoxylin, for reference.
  cv::Mat tissue_mask = cv::Mat::zeros(H.size(), CV_8U);
  std::vector<cv::Point> tissue;
  for (const auto& q : t["tissue_polygons"][0]) tissue.emplace_back(q[0].get<int>(), q[1].get<int>());
  cv::fillPoly(tissue_mask, std::vector<std::vector<cv::Point>>{tissue}, cv::Scalar(255));
  const double stroma_h = cv::mean(H, tissue_mask)[0];
  MESSAGE("mean H in tissue " << stroma_h);

  {  // every nucleus centre sits on dark hematoxylin
    int dark = 0, n = 0;
    double darkest_nucleus = 0;
    for (const auto& nu : t["nuclei"]) {
      const double x = nu["x"], y = nu["y"];
      const float c = H.at<float>(static_cast<int>(y), static_cast<int>(x));
      dark += c > 0.3;
      ++n;
      darkest_nucleus = std::max(darkest_nucleus, static_cast<double>(disc_max(x, y, nu["minor_um"].get<double>() / 2 / mpp)));
    }
    MESSAGE(dark << " of " << n << " nucleus centres have H > 0.3; darkest nucleus " << darkest_nucleus);
    CHECK(dark >= n * 98 / 100);
    // Mitotic figures are darker than any nucleus.
    double faintest_mitosis = 1e9;
    for (const auto& m : t["mitoses"]) faintest_mitosis = std::min(faintest_mitosis, static_cast<double>(disc_max(m["x"], m["y"], 8.0 / mpp)));
    MESSAGE("faintest mitosis " << faintest_mitosis);
    CHECK(faintest_mitosis > darkest_nucleus);
  }

  {  // necrosis polygons hold no intact-nucleus pixels; the percentage follows from the polygons
    REQUIRE(!t["necrosis_polygons"].empty());
    double necrotic = 0;
    cv::Mat nmask = cv::Mat::zeros(H.size(), CV_8U);
    for (const auto& poly : t["necrosis_polygons"]) {
      necrotic += shoelace(poly);
      std::vector<cv::Point> pts;
      for (const auto& q : poly) pts.emplace_back(q[0].get<int>(), q[1].get<int>());
      cv::fillPoly(nmask, std::vector<std::vector<cv::Point>>{pts}, cv::Scalar(255));
    }
    CHECK(t["necrosis_percent"].get<double>() == doctest::Approx(100.0 * necrotic / shoelace(t["tissue_polygons"][0])).epsilon(1e-3));
    CHECK(t["necrosis_percent"].get<double>() == doctest::Approx(18.0).epsilon(0.01));
    // Intact nuclei are solid dark blobs at least ~4 um across; karyorrhectic dust is smaller. Open the dark mask with
    // a 3-um disc: nothing may remain inside the necrosis (its border band of 2 um excluded).
    cv::Mat dark = H > 0.3;
    const int r = static_cast<int>(std::lround(1.5 / mpp));
    cv::morphologyEx(dark, dark, cv::MORPH_OPEN, cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(2 * r + 1, 2 * r + 1)));
    cv::Mat inner;
    const int b = static_cast<int>(std::lround(2.0 / mpp));
    cv::erode(nmask, inner, cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(2 * b + 1, 2 * b + 1)));
    const int inside = cv::countNonZero(dark & inner);
    MESSAGE("nucleus-like pixels inside necrosis: " << inside << " of " << cv::countNonZero(inner));
    CHECK(inside == 0);
    // ... while the viable tumour has plenty of them.
    cv::Mat viable = tissue_mask & ~nmask;
    CHECK(cv::countNonZero(dark & viable) > cv::countNonZero(viable) / 20);
  }

  {  // the hotspot count equals a brute-force recount; scores follow FNCLCC
    const auto side = static_cast<std::int64_t>(std::llround(std::sqrt(10 * 0.1734) * 1000.0 / mpp));
    CHECK(t["hotspot"]["window"]["width"] == side);
    CHECK(t["hotspot"]["fields"] == 10);
    CHECK(t["hotspot"]["hpf_area_mm2"] == doctest::Approx(0.1734));
    const int count = t["hotspot"]["count"];
    CHECK(t["hotspot"]["scaled"] == false);
    CHECK(count == recount_hotspot(t["mitoses"], 6000, 6000, side));
    // The reported window holds that many.
    const std::int64_t wx = t["hotspot"]["window"]["x"], wy = t["hotspot"]["window"]["y"];
    int in = 0;
    for (const auto& m : t["mitoses"])
      in += m["x"].get<double>() >= wx && m["x"].get<double>() < wx + side && m["y"].get<double>() >= wy &&
            m["y"].get<double>() < wy + side;
    CHECK(in == count);
    CHECK(t["mitosis_score"] == (count >= 20 ? 3 : count >= 10 ? 2 : 1));
    const double nec = t["necrosis_percent"];
    CHECK(t["necrosis_score"] == (nec <= 0 ? 0 : nec < 50 ? 1 : 2));
  }
}

TEST_CASE("synth: the brute-force hotspot is exact on hand-made points") {
  // Three points within one 100-px window, two elsewhere; ties go to the smallest y, then x.
  const std::vector<std::pair<double, double>> pts{{150.5, 210.2}, {249.9, 300.0}, {200, 250}, {900, 900}, {950, 990}};
  const auto w = grade::brute_force_hotspot(pts, 1000, 1000, 100);
  CHECK(w.count == 3);
  // The window must start at x <= 150 and end after 249.9 (x = 150), and at y <= 210 and after 300 (y in 201..210):
  // the tie rule picks the smallest y.
  CHECK(w.x == 150);
  CHECK(w.y == 201);
  CHECK(grade::brute_force_hotspot({}, 1000, 1000, 100).count == 0);
  CHECK(grade::brute_force_hotspot({{999.5, 999.5}}, 1000, 1000, 100).count == 1);  // clamped to the slide
}

TEST_CASE("synth: bad options give clear errors and leave no files") {
  TempDir dir("grade-synth");
  const std::string exe = quote(grade::test::tool("grade-synth").string());
  const std::string outs = " --out " + quote((dir / "x.tiff").string()) + " --truth " + quote((dir / "x.json").string());
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases{{"--mpp 0", "mpp"},
                                {"--necrosis-percent 120", "necrosis_percent"},
                                {"--width 10", "width"},
                                {"--spindle-fraction 1.5", "spindle_fraction"},
                                {"--jpeg-quality 0", "jpeg_quality"},
                                {"--seed banana", "seed"},
                                {"--bogus 1", "bogus"}};
  for (const auto& c : cases) {
    const auto r = run(exe + outs + " " + c.args);
    INFO(c.args << " -> " << r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.output.find(c.expect) != std::string::npos);
  }
  auto r = run(exe + " --truth " + quote((dir / "x.json").string()));
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("--out") != std::string::npos);
  r = run(exe + " --out " + quote((dir / "nowhere" / "x.tiff").string()) + " --truth " + quote((dir / "x.json").string()));
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("nowhere") != std::string::npos);
  CHECK(fs::is_empty(dir.path()));
  // The library throws grade::Error naming the parameter.
  grade::SynthParams p;
  p.mpp = -1;
  try {
    grade::synthesize_slide(p, dir / "y.tiff", dir / "y.json");
    FAIL("expected an error");
  } catch (const grade::Error& e) {
    CHECK(e.code() == grade::ErrorCode::invalid_argument);
    CHECK(std::string(e.what()).find("mpp") != std::string::npos);
  }
  // A good run through the CLI prints its throughput.
  r = run(exe + outs + " --quiet --width 1024 --height 1024");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("MP/s") != std::string::npos);
}
