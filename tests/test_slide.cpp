// Slide access: real fixtures from ../shared/data/wsi (skipped without it), plain images made here, reads at a target
// mpp against a reference resize, concurrent reads, and every error path.
#include <doctest/doctest.h>
#include <openslide/openslide.h>

#include <fstream>
#include <thread>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "grade/slide.hpp"
#include "grade/synth.hpp"
#include "test_support.hpp"

using grade::ErrorCode;
using grade::Rect64;
using grade::Slide;
namespace fs = std::filesystem;

namespace {

fs::path wsi(const std::string& name) { return grade::test::shared_data() / "wsi" / name; }
bool have_data() { return !grade::test::shared_data().empty(); }

// Runs f and returns the grade::Error code it threw (fails the test when it throws nothing).
template <class F>
grade::Error error_of(F&& f) {
  try {
    f();
  } catch (const grade::Error& e) {
    return e;
  }
  FAIL("expected a grade::Error");
  return grade::Error(ErrorCode::internal, "");
}

// A smooth colourful test image with fine detail, so resampling errors show.
cv::Mat test_pattern(int w, int h) {
  cv::Mat rgb(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      rgb.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uchar>((x * 7 + y) % 256), static_cast<uchar>((y * 3) % 256),
                                          static_cast<uchar>(((x / 5) % 2) * 200 + 20));
  return rgb;
}

}  // namespace

TEST_CASE("cmu-1-small-region.svs: dimensions, mpp, vendor and pixels") {
  if (!have_data()) { MESSAGE("SKIPPED: ../shared/data absent"); return; }
  const Slide s = Slide::open(wsi("cmu-1-small-region.svs"));
  CHECK(s.backend() == grade::SlideBackend::openslide);
  CHECK(s.vendor() == "aperio");
  CHECK(s.level_count() == 1);
  CHECK(s.width() == 2220);
  CHECK(s.height() == 2967);
  REQUIRE(s.mpp().has_value());
  CHECK(*s.mpp() == doctest::Approx(0.499));
  CHECK(s.mpp_source() == "openslide");
  REQUIRE(s.objective_power().has_value());
  CHECK(*s.objective_power() == doctest::Approx(20.0));
  const auto names = s.associated_image_names();
  CHECK(std::find(names.begin(), names.end(), "thumbnail") != names.end());
  const cv::Mat thumb = s.read_associated_image("thumbnail");
  CHECK(thumb.type() == CV_8UC3);
  CHECK(thumb.cols > 0);

  // OpenSlide gives 0xfff5f1ff at (1000, 1500): opaque, R=0xf5, G=0xf1, B=0xff.
  const grade::ImageView v = s.read_region({1000, 1500, 2, 2}, 0);
  REQUIRE(v.rgb.size() == cv::Size(2, 2));
  CHECK(v.rgb.at<cv::Vec3b>(0, 0) == cv::Vec3b(0xf5, 0xf1, 0xff));
  CHECK(v.x0 == 1000);
  CHECK(v.y0 == 1500);
  CHECK(v.mpp == doctest::Approx(0.499));
}

TEST_CASE("the pixels equal a bare openslide_read_region, premultiplied ARGB composited over white") {
  if (!have_data()) { MESSAGE("SKIPPED: ../shared/data absent"); return; }
  const fs::path p = wsi("tcga-cr-7395-01a-01-ts1.svs");
  const Slide s = Slide::open(p);
  const Rect64 r{1200, 900, 64, 48};
  const grade::ImageView v = s.read_region(r, 1);
  openslide_t* o = openslide_open(p.c_str());
  REQUIRE(o != nullptr);
  const int w = v.rgb.cols, h = v.rgb.rows;
  CHECK(w == 32);
  CHECK(h == 24);
  std::vector<uint32_t> buf(static_cast<size_t>(w * h));
  openslide_read_region(o, buf.data(), r.x, r.y, 1, w, h);
  int mismatches = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const uint32_t px = buf[static_cast<size_t>(y * w + x)];
      const int a = static_cast<int>(px >> 24);
      const cv::Vec3b want(static_cast<uchar>(((px >> 16) & 0xff) + 255 - a), static_cast<uchar>(((px >> 8) & 0xff) + 255 - a),
                           static_cast<uchar>((px & 0xff) + 255 - a));
      if (v.rgb.at<cv::Vec3b>(y, x) != want) ++mismatches;
    }
  openslide_close(o);
  CHECK(mismatches == 0);
}

TEST_CASE("TCGA frozen section: two levels, no mpp in the file") {
  if (!have_data()) { MESSAGE("SKIPPED: ../shared/data absent"); return; }
  const fs::path p = wsi("tcga-cr-7395-01a-01-ts1.svs");
  const Slide s = Slide::open(p);
  REQUIRE(s.level_count() == 2);
  CHECK(s.level(0).width == 4443);
  CHECK(s.level(0).height == 3567);
  CHECK(s.level(1).width == 2221);
  CHECK(s.level(1).downsample == doctest::Approx(2.0).epsilon(0.001));
  CHECK_FALSE(s.mpp().has_value());
  const grade::Error e = error_of([&] { s.require_mpp(); });
  CHECK(e.code() == ErrorCode::missing_mpp);
  CHECK(std::string(e.what()).find(p.string()) != std::string::npos);
  CHECK(std::string(e.what()).find("--mpp") != std::string::npos);
  CHECK(std::string(e.what()).find("the slide does not record its resolution") != std::string::npos);
  CHECK(error_of([&] { s.read_region_at_mpp({0, 0, 100, 100}, 8.0); }).code() == ErrorCode::missing_mpp);

  // The caller's mpp makes it usable, and reads at a coarse mpp use level 1.
  const Slide t = Slide::open(p, {4.0});
  CHECK(t.mpp_source() == "caller");
  CHECK(t.best_level_for_mpp(8.0) == 0);  // level 1 is 2.0005x: 8.002 um/px, just coarser than 8
  CHECK(t.best_level_for_mpp(8.01) == 1);
  CHECK(t.best_level_for_mpp(6.0) == 0);
  const grade::ImageView v = t.read_region_at_mpp({0, 0, 400, 200}, 8.0);
  CHECK(v.rgb.cols == 200);
  CHECK(v.rgb.rows == 100);
  CHECK(v.mpp == doctest::Approx(8.0));
  CHECK(v.downsample == doctest::Approx(2.0));
  CHECK(error_of([&] { t.read_region_at_mpp({0, 0, 400, 200}, 2.0); }).code() == ErrorCode::invalid_argument);
}

TEST_CASE("error fixtures: each gives its error, naming the file") {
  if (!have_data()) { MESSAGE("SKIPPED: ../shared/data absent"); return; }
  struct Case {
    const char* file;
    ErrorCode code;
  };
  for (const Case& c : {Case{"broken.svs", ErrorCode::corrupt}, Case{"fixtures/unopenable.tiff", ErrorCode::unsupported},
                        Case{"no-such-slide.svs", ErrorCode::file_not_found}}) {
    CAPTURE(c.file);
    const grade::Error e = error_of([&] { Slide::open(wsi(c.file)); });
    CHECK(e.code() == c.code);
    CHECK(std::string(e.what()).find(c.file) != std::string::npos);
  }
  // unreadable.svs opens (its header is fine) and fails on read with the decoder's message.
  const Slide s = Slide::open(wsi("fixtures/unreadable.svs"));
  CHECK(s.width() == 16);
  const grade::Error e = error_of([&] { s.read_region({0, 0, 16, 16}, 0); });
  CHECK(e.code() == ErrorCode::corrupt);
  CHECK(std::string(e.what()).find("Bogus marker length") != std::string::npos);
  CHECK(std::string(e.what()).find("unreadable.svs") != std::string::npos);

  // small.svs is valid.
  const Slide small = Slide::open(wsi("fixtures/small.svs"));
  CHECK(small.read_region({0, 0, 16, 16}, 0).rgb.size() == cv::Size(16, 16));
}

TEST_CASE("boxes.tiff: a generic tiled TIFF with 4 levels; 72 dpi is not taken as a scan resolution") {
  if (!have_data()) { MESSAGE("SKIPPED: ../shared/data absent"); return; }
  const Slide s = Slide::open(wsi("fixtures/boxes.tiff"));
  CHECK(s.vendor() == "generic-tiff");
  CHECK(s.level_count() == 4);
  CHECK(s.width() == 300);
  CHECK_FALSE(s.mpp().has_value());
  const grade::ImageView v = s.read_region({0, 0, 300, 250}, 2);
  CHECK(v.rgb.cols == 75);
}

TEST_CASE("plain images are one-level slides, with and without an mpp") {
  grade::test::TempDir dir;
  const cv::Mat rgb = test_pattern(300, 200);
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  const fs::path png = dir / "pattern.png";
  REQUIRE(cv::imwrite(png.string(), bgr));

  const Slide s = Slide::open(png);
  CHECK(s.backend() == grade::SlideBackend::plain_image);
  CHECK(s.vendor() == "image");
  CHECK(s.level_count() == 1);
  CHECK(s.width() == 300);
  CHECK(s.height() == 200);
  CHECK_FALSE(s.mpp().has_value());
  const grade::Error e = error_of([&] { s.require_mpp(); });
  CHECK(e.code() == ErrorCode::missing_mpp);
  CHECK(std::string(e.what()).find("the image does not record its resolution") != std::string::npos);  // not "slide"
  const grade::ImageView v = s.read_region({10, 20, 30, 40}, 0);
  CHECK(cv::norm(v.rgb, rgb(cv::Rect(10, 20, 30, 40)), cv::NORM_INF) == 0.0);

  const Slide t = Slide::open(png, {0.25});
  CHECK(*t.mpp() == doctest::Approx(0.25));

  // A plain TIFF with resolution tags: 40000 px/cm = 0.25 um/px.
  const fs::path tif = dir / "pattern.tif";
  REQUIRE(cv::imwrite(tif.string(), bgr, {cv::IMWRITE_TIFF_RESUNIT, 3, cv::IMWRITE_TIFF_XDPI, 40000, cv::IMWRITE_TIFF_YDPI, 40000}));
  const Slide u = Slide::open(tif);
  REQUIRE(u.mpp().has_value());
  CHECK(*u.mpp() == doctest::Approx(0.25));
  CHECK(u.mpp_source() == "tiff-resolution");

  // RGBA PNG: transparent pixels become white.
  cv::Mat bgra(10, 10, CV_8UC4, cv::Scalar(0, 0, 0, 0));
  REQUIRE(cv::imwrite((dir / "clear.png").string(), bgra));
  const cv::Mat white = Slide::open(dir / "clear.png").read_region({0, 0, 10, 10}, 0).rgb;
  CHECK(cv::norm(white, cv::Mat(10, 10, CV_8UC3, cv::Scalar::all(255)), cv::NORM_INF) == 0.0);

  // Not an image at all.
  std::ofstream(dir / "notes.txt") << "hello";
  CHECK(error_of([&] { Slide::open(dir / "notes.txt"); }).code() == ErrorCode::unsupported);
  std::ofstream(dir / "fake.png") << "not a png";
  CHECK(error_of([&] { Slide::open(dir / "fake.png"); }).code() == ErrorCode::corrupt);
}

TEST_CASE("read at a target mpp equals an area resize of the level-0 pixels") {
  grade::test::TempDir dir;
  const cv::Mat rgb = test_pattern(400, 300);
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  REQUIRE(cv::imwrite((dir / "p.png").string(), bgr));
  const Slide s = Slide::open(dir / "p.png", {0.25});
  const Rect64 r{40, 20, 200, 160};
  const grade::ImageView v = s.read_region_at_mpp(r, 0.5);
  cv::Mat ref;
  cv::resize(rgb(cv::Rect(40, 20, 200, 160)), ref, cv::Size(100, 80), 0, 0, cv::INTER_AREA);
  REQUIRE(v.rgb.size() == ref.size());
  CHECK(cv::norm(v.rgb, ref, cv::NORM_INF) == 0.0);
  CHECK(v.mpp == doctest::Approx(0.5));
  CHECK(v.downsample == doctest::Approx(2.0));
  CHECK(v.x0 == 40);
  // Slightly finer than level 0 (within 10 %) is served from level 0; much finer is an error.
  CHECK(s.read_region_at_mpp(r, 0.24).rgb.cols == 208);
  CHECK(error_of([&] { s.read_region_at_mpp(r, 0.1); }).code() == ErrorCode::invalid_argument);
  // Regions outside the slide.
  CHECK(error_of([&] { s.read_region({350, 0, 100, 10}, 0); }).code() == ErrorCode::out_of_bounds);
  CHECK(error_of([&] { s.read_region({-1, 0, 10, 10}, 0); }).code() == ErrorCode::out_of_bounds);
  CHECK(error_of([&] { s.read_region({0, 0, 0, 10}, 0); }).code() == ErrorCode::out_of_bounds);
  CHECK(error_of([&] { s.level(1); }).code() == ErrorCode::out_of_bounds);
  // The thumbnail keeps the aspect ratio and reports its scale.
  const grade::ImageView th = s.read_thumbnail(1.0);
  CHECK(th.rgb.cols == 100);
  CHECK(th.rgb.rows == 75);
  CHECK(th.mpp == doctest::Approx(1.0));
}

TEST_CASE("two threads reading the same regions get identical pixels") {
  if (!have_data()) { MESSAGE("SKIPPED: ../shared/data absent"); return; }
  const Slide s = Slide::open(wsi("cmu-1-small-region.svs"));
  std::vector<Rect64> regions;
  for (int i = 0; i < 24; ++i) regions.push_back({(i * 397) % 1900, (i * 613) % 2600, 256, 256});
  std::vector<cv::Mat> a(regions.size()), b(regions.size());
  auto work = [&](std::vector<cv::Mat>& out, bool reverse) {
    for (size_t k = 0; k < regions.size(); ++k) {
      const size_t i = reverse ? regions.size() - 1 - k : k;
      out[i] = s.read_region_at_mpp(regions[i], 1.0).rgb;
    }
  };
  std::thread t1(work, std::ref(a), false), t2(work, std::ref(b), true);
  t1.join();
  t2.join();
  for (size_t i = 0; i < regions.size(); ++i) CHECK(cv::norm(a[i], b[i], cv::NORM_INF) == 0.0);
}

namespace {

// Reads `regions` at `level` with direct TIFF reads on and off; returns how many regions differ.
int direct_mismatches(const fs::path& p, int level, const std::vector<Rect64>& regions) {
  const Slide direct = Slide::open(p);
  grade::SlideOpenParams off;
  off.direct_tiff = false;
  const Slide through_openslide = Slide::open(p, off);
  CHECK_FALSE(through_openslide.reads_tiff_directly(level));
  int differ = 0;
  for (const Rect64& r : regions) {
    const cv::Mat a = direct.read_region(r, level).rgb, b = through_openslide.read_region(r, level).rgb;
    if (a.size() != b.size() || cv::norm(a, b, cv::NORM_INF) != 0.0) ++differ;
  }
  return differ;
}

// Regions of all sizes (one pixel to several tiles) at whole and fractional level origins, touching every edge.
std::vector<Rect64> probe_regions(const Slide& s, int level) {
  const auto ds = static_cast<int64_t>(std::llround(s.level(level).downsample));
  std::vector<Rect64> out;
  const int64_t w = s.width(), h = s.height();
  for (int i = 0; i < 12; ++i) {
    const int64_t rw = std::min<int64_t>(w, 1 + (i * 211 * ds) % (700 * ds));
    const int64_t rh = std::min<int64_t>(h, 1 + (i * 157 * ds) % (500 * ds));
    int64_t x = ((i * 7919) % std::max<int64_t>(1, w - rw)) / ds * ds;
    int64_t y = ((i * 104729) % std::max<int64_t>(1, h - rh)) / ds * ds;
    if (i % 3 == 1) x = std::min(w - rw, x + 1);  // an origin between level pixels when ds > 1
    if (i == 4) x = w - rw;                        // the right and bottom edges
    if (i == 5) y = h - rh;
    out.push_back({x, y, rw, rh});
  }
  return out;
}

}  // namespace

TEST_CASE("direct TIFF tile reads give OpenSlide's pixels, byte for byte, on every level") {
  grade::test::TempDir dir;
  grade::SynthParams sp;
  sp.width_px = 3000;
  sp.height_px = 2000;
  sp.seed = 5;
  grade::synthesize_slide(sp, dir / "s.tiff", dir / "s.json");
  std::vector<fs::path> slides{dir / "s.tiff"};
  if (have_data())
    for (const char* f : {"cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs", "kidney-48-5.tif",
                          "fixtures/boxes.tiff", "fixtures/small.svs"})
      slides.push_back(wsi(f));
  else
    MESSAGE("SKIPPED the real slides: ../shared/data absent");
  int direct_levels = 0;
  for (const fs::path& p : slides) {
    CAPTURE(p);
    const Slide s = Slide::open(p);
    for (int level = 0; level < s.level_count(); ++level) {
      CAPTURE(level);
      // Only direct levels are compared: boxes.tiff's levels 2 and 3 (fractional downsamples, tiles wider than the
      // level) read differently through two OpenSlide handles, so OpenSlide cannot be compared with itself there.
      if (!s.reads_tiff_directly(level)) continue;
      ++direct_levels;
      CHECK(direct_mismatches(p, level, probe_regions(s, level)) == 0);
    }
  }
  // The synthetic slide (JPEG YCbCr tiles) is read directly on every level; so are the Aperio slide's JPEG RGB tiles
  // and boxes.tiff's two levels with whole downsamples. The TCGA slide's JPEG 2000 tiles go through OpenSlide.
  const Slide synth = Slide::open(dir / "s.tiff");
  for (int level = 0; level < synth.level_count(); ++level) CHECK(synth.reads_tiff_directly(level));
  if (have_data()) {
    CHECK(Slide::open(wsi("cmu-1-small-region.svs")).reads_tiff_directly(0));
    CHECK_FALSE(Slide::open(wsi("tcga-cr-7395-01a-01-ts1.svs")).reads_tiff_directly(0));
    const Slide boxes = Slide::open(wsi("fixtures/boxes.tiff"));
    CHECK(boxes.reads_tiff_directly(0));
    CHECK(boxes.reads_tiff_directly(1));
    CHECK(direct_levels == synth.level_count() + 4);
  }

  // Damaged tiles: libjpeg only warns ("Corrupt JPEG data"), which OpenSlide treats as an error; direct reads must
  // fail the same way rather than return the damaged pixels.
  std::string bytes = grade::test::slurp(dir / "s.tiff");
  REQUIRE(bytes.size() > 300'000);
  for (size_t i = bytes.size() / 3; i < bytes.size() / 3 + 200'000; i += 997)
    bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
  std::ofstream(dir / "damaged.tiff", std::ios::binary) << bytes;
  for (const bool direct : {true, false}) {
    CAPTURE(direct);
    grade::SlideOpenParams op;
    op.direct_tiff = direct;
    const Slide d = Slide::open(dir / "damaged.tiff", op);
    std::string message;
    try {
      for (int64_t y = 0; y < d.height(); y += 512)
        for (int64_t x = 0; x < d.width(); x += 512)
          d.read_region({x, y, std::min<int64_t>(512, d.width() - x), std::min<int64_t>(512, d.height() - y)}, 0);
    } catch (const grade::Error& e) {
      CHECK(e.code() == ErrorCode::corrupt);
      message = e.what();
    }
    CHECK(message.find("damaged.tiff") != std::string::npos);
    CHECK(message.find("Corrupt JPEG data") != std::string::npos);
  }
}
