// Slide access. Two backends behind one interface (as OpenSlide itself does per vendor format):
//  - OpenSlide 3.4.1 for whole-slide formats; its error state is checked after every call and turned into one
//    grade::Error in one place (check_openslide);
//  - OpenCV imread for plain PNG/JPEG/TIFF images, which become one-level slides.
// OpenSlide ignores the resolution tags of generic tiled TIFFs, so those are read with libtiff here; so are the tiles of
// tiled TIFF slides where that gives OpenSlide's pixels (TiffTiles, see slide.hpp).
#include "grade/slide.hpp"

#include <openslide/openslide.h>
#include <tiffio.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"

namespace grade {

namespace fs = std::filesystem;

namespace {

// A target mpp finer than level 0 by at most this fraction is served from level 0 (slight upsampling): scanners call
// 0.2527 um/px "40x" and stages ask for 0.25.
constexpr double kFinerTolerance = 0.10;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool is_plain_image_extension(const fs::path& p) {
  const std::string e = lower(p.extension().string());
  return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".tif" || e == ".tiff" || e == ".bmp";
}

bool is_slide_extension(const fs::path& p) {
  const std::string e = lower(p.extension().string());
  return e == ".svs" || e == ".ndpi" || e == ".vms" || e == ".vmu" || e == ".scn" || e == ".mrxs" || e == ".svslide" ||
         e == ".bif";
}

std::optional<double> parse_positive(const char* s) {
  if (!s || !*s) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  if (end == s || !std::isfinite(v) || v <= 0.0) return std::nullopt;
  return v;
}

// Opens `path` for reading with libtiff's errors and warnings going to `handler` (with `user`) for this handle only,
// never to the user's terminal. nullptr when libtiff cannot open it.
TIFF* open_tiff(const fs::path& path, TIFFErrorHandlerExtR handler, void* user) {
  TIFFOpenOptions* opts = TIFFOpenOptionsAlloc();
  TIFFOpenOptionsSetErrorHandlerExtR(opts, handler, user);
  TIFFOpenOptionsSetWarningHandlerExtR(opts, handler, user);
  TIFF* tif = TIFFOpenExt(path.c_str(), "r", opts);
  TIFFOpenOptionsFree(opts);
  return tif;
}

// Reads the TIFF resolution tags of the first directory; nullopt when absent or without a physical unit.
std::optional<double> tiff_resolution_mpp(const fs::path& path) {
  // A missing tag is not worth a message.
  TIFF* tif = open_tiff(path, [](TIFF*, void*, const char*, const char*, va_list) -> int { return 1; }, nullptr);
  if (!tif) return std::nullopt;
  float xres = 0.f, yres = 0.f;
  uint16_t unit = RESUNIT_NONE;
  std::optional<double> mpp;
  if (TIFFGetField(tif, TIFFTAG_XRESOLUTION, &xres) && xres > 0.f &&
      TIFFGetFieldDefaulted(tif, TIFFTAG_RESOLUTIONUNIT, &unit)) {
    if (!TIFFGetField(tif, TIFFTAG_YRESOLUTION, &yres) || yres <= 0.f) yres = xres;
    const double per_unit_um = unit == RESUNIT_CENTIMETER ? 1e4 : unit == RESUNIT_INCH ? 25'400.0 : 0.0;
    if (per_unit_um > 0.0) {
      const double v = 0.5 * (per_unit_um / xres + per_unit_um / yres);
      if (v > 0.0 && v < 1000.0) mpp = v;  // a resolution of e.g. 72 dpi (353 um/px) is a screen default, not a scan
      if (v >= 100.0) mpp.reset();
    }
  }
  TIFFClose(tif);
  return mpp;
}

// Composites OpenSlide's premultiplied ARGB over white: a premultiplied channel c' = c * a / 255, so the colour over
// white is c' + (255 - a). Fully transparent pixels (a = 0, outside scanned areas) become white. In memory a pixel is
// B, G, R, A (little-endian uint32), so the opaque majority is a plain BGRA -> RGB shuffle (OpenCV's vectorised one);
// only rows holding a non-opaque pixel get the second pass.
void argb_to_rgb(const uint32_t* src, cv::Mat& dst) {
  static_assert(std::endian::native == std::endian::little, "OpenSlide's ARGB words are read as B, G, R, A bytes");
  const cv::Mat bgra(dst.rows, dst.cols, CV_8UC4, const_cast<uint32_t*>(src));
  cv::cvtColor(bgra, dst, cv::COLOR_BGRA2RGB);
  for (int y = 0; y < dst.rows; ++y) {
    const uint32_t* s = src + static_cast<size_t>(y) * dst.cols;
    uint32_t all = 0xff000000u;
    for (int x = 0; x < dst.cols; ++x) all &= s[x];
    if ((all & 0xff000000u) == 0xff000000u) continue;  // every pixel of the row is opaque
    auto* row = dst.ptr<cv::Vec3b>(y);
    for (int x = 0; x < dst.cols; ++x) {
      const int bg = 255 - static_cast<int>(s[x] >> 24);
      if (bg == 0) continue;
      for (int c = 0; c < 3; ++c) row[x][c] = static_cast<uchar>(std::min(255, row[x][c] + bg));
    }
  }
}

// Any decoded image (grey, BGR, BGRA, 16-bit) as 8-bit RGB, transparency over white.
cv::Mat to_rgb8(const cv::Mat& in, const fs::path& path) {
  cv::Mat m = in;
  if (m.depth() == CV_16U) m.convertTo(m, CV_MAKETYPE(CV_8U, m.channels()), 1.0 / 257.0);
  else if (m.depth() != CV_8U)
    throw Error(ErrorCode::unsupported, path.string() + ": unsupported pixel depth (only 8- and 16-bit images)");
  cv::Mat rgb;
  switch (m.channels()) {
    case 1: cv::cvtColor(m, rgb, cv::COLOR_GRAY2RGB); break;
    case 3: cv::cvtColor(m, rgb, cv::COLOR_BGR2RGB); break;
    case 4: {
      rgb.create(m.size(), CV_8UC3);
      for (int y = 0; y < m.rows; ++y) {
        const auto* s = m.ptr<cv::Vec4b>(y);
        auto* d = rgb.ptr<cv::Vec3b>(y);
        for (int x = 0; x < m.cols; ++x) {
          const int a = s[x][3];
          for (int c = 0; c < 3; ++c) d[x][2 - c] = static_cast<uchar>((s[x][c] * a + 255 * (255 - a) + 127) / 255);
        }
      }
      break;
    }
    default:
      throw Error(ErrorCode::unsupported, path.string() + ": unsupported channel count " + std::to_string(m.channels()));
  }
  return rgb;
}

// Direct tile reads of a tiled TIFF slide with libtiff (see slide.hpp). One TIFF handle per level per concurrent
// reader: libtiff handles are not thread-safe, and each handle stays on its level's directory. libtiff's errors and
// warnings only mark the handle (nothing is printed): a read that meets one is redone through OpenSlide, which then
// reports the problem in its own words.
class TiffTiles {
 public:
  struct Level {
    tdir_t dir = 0;
    int64_t width = 0, height = 0;
    uint32_t tile_w = 0, tile_h = 0;
    bool ycbcr_jpeg = false;  // decoded to RGB by libjpeg (JPEGCOLORMODE_RGB)
  };

  TiffTiles(fs::path path, std::vector<std::optional<Level>> levels)
      : path_(std::move(path)), levels_(std::move(levels)) {}
  TiffTiles(const TiffTiles&) = delete;
  TiffTiles& operator=(const TiffTiles&) = delete;
  ~TiffTiles() {
    for (auto& h : free_) TIFFClose(h->tif);
  }

  // The tiled directories of `path` that match OpenSlide's levels (same size, 8-bit RGB or JPEG YCbCr, contiguous
  // samples, a compression libtiff decodes). nullptr when none does or the file does not open with libtiff.
  static std::unique_ptr<TiffTiles> scan(const fs::path& path, const std::vector<LevelInfo>& levels) {
    auto handle = open_handle(path);
    if (!handle) return nullptr;
    std::vector<std::optional<Level>> found(levels.size());
    bool any = false;
    tdir_t dir = 0;
    do {
      TIFF* t = handle->tif;
      uint32_t w = 0, h = 0, tw = 0, th = 0;
      uint16_t bps = 0, spp = 0, planar = 0, compression = 0, photometric = 0;
      if (!TIFFIsTiled(t) || !TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w) || !TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h) ||
          !TIFFGetField(t, TIFFTAG_TILEWIDTH, &tw) || !TIFFGetField(t, TIFFTAG_TILELENGTH, &th) ||
          !TIFFGetFieldDefaulted(t, TIFFTAG_BITSPERSAMPLE, &bps) ||
          !TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLESPERPIXEL, &spp) ||
          !TIFFGetFieldDefaulted(t, TIFFTAG_PLANARCONFIG, &planar) ||
          !TIFFGetFieldDefaulted(t, TIFFTAG_COMPRESSION, &compression) ||
          !TIFFGetField(t, TIFFTAG_PHOTOMETRIC, &photometric))
        continue;
      const bool codec = compression == COMPRESSION_JPEG || compression == COMPRESSION_NONE ||
                         compression == COMPRESSION_LZW || compression == COMPRESSION_ADOBE_DEFLATE ||
                         compression == COMPRESSION_DEFLATE;
      const bool ycbcr_jpeg = photometric == PHOTOMETRIC_YCBCR && compression == COMPRESSION_JPEG;
      if (bps != 8 || spp != 3 || planar != PLANARCONFIG_CONTIG || !codec ||
          !(photometric == PHOTOMETRIC_RGB || ycbcr_jpeg) || tw == 0 || th == 0 || tw > 4096 || th > 4096)
        continue;
      for (size_t i = 0; i < levels.size(); ++i)
        if (!found[i] && levels[i].width == w && levels[i].height == h) {
          found[i] = Level{dir, w, h, tw, th, ycbcr_jpeg};
          any = true;
        }
    } while (++dir < 4096 && TIFFReadDirectory(handle->tif));
    TIFFClose(handle->tif);
    if (!any) return nullptr;
    return std::make_unique<TiffTiles>(path, std::move(found));
  }

  bool has(int level) const { return levels_[static_cast<size_t>(level)].has_value(); }
  std::pair<int64_t, int64_t> tile_size(int level) const {
    const Level& lv = *levels_[static_cast<size_t>(level)];
    return {lv.tile_w, lv.tile_h};
  }

  // Level pixels [lx, lx + rgb.cols) x [ly, ly + rgb.rows) into `rgb` (CV_8UC3, allocated by the caller); pixels
  // beyond the level are white, as OpenSlide's transparent ones become. False on any libtiff error or decode warning.
  bool read(int level, int64_t lx, int64_t ly, cv::Mat& rgb) {
    const Level& lv = *levels_[static_cast<size_t>(level)];
    std::unique_ptr<Handle> h = lease(level, lv);
    if (!h) return false;
    const int64_t x1 = lx + rgb.cols, y1 = ly + rgb.rows;
    if (lx < 0 || ly < 0 || x1 > lv.width || y1 > lv.height) rgb.setTo(cv::Scalar::all(255));
    const auto tile_bytes = static_cast<size_t>(lv.tile_w) * lv.tile_h * 3;
    thread_local std::vector<uint8_t> tile;
    if (tile.size() < tile_bytes) tile.resize(tile_bytes);
    bool ok = true;
    const int64_t cx1 = std::min(x1, lv.width), cy1 = std::min(y1, lv.height);
    for (int64_t ty = std::max<int64_t>(0, ly) / lv.tile_h * lv.tile_h; ok && ty < cy1; ty += lv.tile_h)
      for (int64_t tx = std::max<int64_t>(0, lx) / lv.tile_w * lv.tile_w; tx < cx1; tx += lv.tile_w) {
        const ttile_t index = TIFFComputeTile(h->tif, static_cast<uint32_t>(tx), static_cast<uint32_t>(ty), 0, 0);
        h->troubled = false;
        if (TIFFReadEncodedTile(h->tif, index, tile.data(), static_cast<tmsize_t>(tile_bytes)) !=
                static_cast<tmsize_t>(tile_bytes) ||
            h->troubled) {
          ok = false;
          break;
        }
        const int64_t ax = std::max(tx, lx), bx = std::min({tx + lv.tile_w, cx1});
        const int64_t ay = std::max(ty, ly), by = std::min({ty + lv.tile_h, cy1});
        for (int64_t y = ay; y < by; ++y)
          std::memcpy(rgb.ptr<uint8_t>(static_cast<int>(y - ly)) + (ax - lx) * 3,
                      tile.data() + ((y - ty) * lv.tile_w + (ax - tx)) * 3, static_cast<size_t>(bx - ax) * 3);
      }
    if (ok) give_back(std::move(h));  // a handle that failed is closed, not reused
    else TIFFClose(h->tif);
    return ok;
  }

 private:
  struct Handle {
    TIFF* tif = nullptr;
    int level = -1;
    bool troubled = false;  // libtiff reported an error or a warning since it was last cleared
  };

  static std::unique_ptr<Handle> open_handle(const fs::path& path) {
    auto h = std::make_unique<Handle>();
    // Errors and warnings mark the handle. A warning during a tile's decode is libjpeg's "Corrupt JPEG data", which
    // OpenSlide treats as an error, so the read is redone through OpenSlide.
    auto note = [](TIFF*, void* user, const char*, const char*, va_list) -> int {
      static_cast<Handle*>(user)->troubled = true;
      return 1;
    };
    h->tif = open_tiff(path, note, h.get());
    if (!h->tif) return nullptr;
    return h;
  }

  std::unique_ptr<Handle> lease(int level, const Level& lv) {
    {
      std::lock_guard lock(mutex_);
      for (auto it = free_.begin(); it != free_.end(); ++it)
        if ((*it)->level == level) {
          auto h = std::move(*it);
          free_.erase(it);
          return h;
        }
    }
    auto h = open_handle(path_);
    if (!h) return nullptr;
    if (!TIFFSetDirectory(h->tif, lv.dir) ||
        (lv.ycbcr_jpeg && !TIFFSetField(h->tif, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB))) {
      TIFFClose(h->tif);
      return nullptr;
    }
    h->level = level;
    return h;
  }

  void give_back(std::unique_ptr<Handle> h) {
    std::lock_guard lock(mutex_);
    free_.push_back(std::move(h));
  }

  fs::path path_;
  std::vector<std::optional<Level>> levels_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Handle>> free_;
};

std::string rect_str(const Rect64& r) {
  std::ostringstream s;
  s << "(x=" << r.x << ", y=" << r.y << ", width=" << r.width << ", height=" << r.height << ")";
  return s.str();
}

}  // namespace

struct Slide::Impl {
  fs::path path;
  SlideBackend backend = SlideBackend::openslide;
  openslide_t* osr = nullptr;  // openslide backend
  cv::Mat image;               // plain-image backend (RGB)
  std::vector<LevelInfo> levels;
  std::optional<double> mpp;
  std::string mpp_source;
  std::string vendor;
  // Direct tile reads (nullptr: none). direct[i]: 0 = not probed yet, 1 = direct, 2 = OpenSlide; probed on the first
  // read of each level, under probe_mutex.
  std::unique_ptr<TiffTiles> tiles;
  std::unique_ptr<std::atomic<int>[]> direct;
  std::mutex probe_mutex;

  ~Impl() {
    if (osr) openslide_close(osr);
  }

  // The one place OpenSlide's error state becomes an exception. Once set, OpenSlide's error is sticky: every later
  // call on this handle fails the same way, which is what we want for a corrupt file.
  void check_openslide(const char* during) const {
    if (!osr) return;
    if (const char* err = openslide_get_error(osr))
      throw Error(ErrorCode::corrupt, path.string() + ": " + during + " failed: " + err);
  }

  // openslide_read_region of `region` (level-0 pixels) at `level` into rgb (allocated: the level's pixel count).
  void read_openslide(const Rect64& region, int level, cv::Mat& rgb) const {
    // OpenSlide clears the destination itself (checked: a buffer filled with garbage reads back transparent outside
    // the slide), so the buffer is not initialised here. A tile-sized buffer is kept per thread and reused: a fresh,
    // zeroed 20 MB vector per tile cost a memset and page faults, ~5 % of the read.
    constexpr size_t kKeep = size_t{1} << 24;  // pixels (64 MB) kept between calls; larger reads get their own buffer
    thread_local std::unique_ptr<uint32_t[]> kept;
    thread_local size_t kept_size = 0;
    const auto n = static_cast<size_t>(rgb.total());
    std::unique_ptr<uint32_t[]> own;
    uint32_t* buf = nullptr;
    if (n <= kKeep) {
      if (kept_size < n) {
        kept.reset();
        kept.reset(new uint32_t[n]);
        kept_size = n;
      }
      buf = kept.get();
    } else {
      own.reset(new uint32_t[n]);
      buf = own.get();
    }
    openslide_read_region(osr, buf, region.x, region.y, level, rgb.cols, rgb.rows);
    check_openslide(("reading region " + rect_str(region) + " at level " + std::to_string(level)).c_str());
    argb_to_rgb(buf, rgb);
  }

  // Whether `level` is read directly: on its first use, a probe block of 2 x 2 tiles around the level's centre (or
  // its top-left tile when the centre's tiles do not start on a whole level-0 pixel) is read both ways and must be
  // identical byte for byte.
  bool direct_ok(int level) {
    if (!tiles) return false;
    std::atomic<int>& state = direct[static_cast<size_t>(level)];
    if (const int s = state.load(std::memory_order_acquire)) return s == 1;
    std::lock_guard lock(probe_mutex);
    if (const int s = state.load(std::memory_order_relaxed)) return s == 1;
    bool same = false;
    if (tiles->has(level)) {
      const LevelInfo lv = levels[static_cast<size_t>(level)];
      const auto [tw, th] = tiles->tile_size(level);
      auto origin = [&](int64_t extent, int64_t tile) {
        const int64_t c = std::max<int64_t>(0, (extent / 2) / tile * tile - tile / 2);
        const double at0 = static_cast<double>(c) * lv.downsample;
        return std::abs(at0 - std::round(at0)) < 1e-9 ? c : int64_t{0};
      };
      const int64_t lx = origin(lv.width, tw), ly = origin(lv.height, th);
      const int64_t bw = std::min<int64_t>(tw, lv.width - lx), bh = std::min<int64_t>(th, lv.height - ly);
      auto l0 = [&](int64_t v) { return static_cast<int64_t>(std::llround(static_cast<double>(v) * lv.downsample)); };
      // The block in level-0 pixels, clipped to the slide (a level's last pixel may reach past level 0's edge).
      const Rect64 inside{l0(lx), l0(ly), std::min(std::max<int64_t>(1, l0(bw)), levels[0].width - l0(lx)),
                          std::min(std::max<int64_t>(1, l0(bh)), levels[0].height - l0(ly))};
      const int w = static_cast<int>(std::ceil(static_cast<double>(inside.width) / lv.downsample - 1e-9));
      const int h = static_cast<int>(std::ceil(static_cast<double>(inside.height) / lv.downsample - 1e-9));
      // libtiff first: a probe block it finds damaged is never read through OpenSlide, whose errors are sticky (one
      // failed read fails every later read of the handle).
      cv::Mat a(h, w, CV_8UC3), b(h, w, CV_8UC3);
      if (tiles->read(level, lx, ly, b)) {
        read_openslide(inside, level, a);
        same = cv::norm(a, b, cv::NORM_INF) == 0.0;
      }
    }
    state.store(same ? 1 : 2, std::memory_order_release);
    return same;
  }
};

Slide::Slide(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Slide::Slide(Slide&&) noexcept = default;
Slide& Slide::operator=(Slide&&) noexcept = default;
Slide::~Slide() = default;

Slide Slide::open(const fs::path& path, const SlideOpenParams& params) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(ErrorCode::file_not_found, path.string() + ": no such file");
  if (fs::is_directory(path, ec)) throw Error(ErrorCode::unsupported, path.string() + ": is a directory, not a slide");
  if (!(params.mpp_override >= 0.0) || !std::isfinite(params.mpp_override))
    throw Error(ErrorCode::invalid_argument, path.string() + ": mpp must be > 0, got " + std::to_string(params.mpp_override));

  auto impl = std::make_unique<Impl>();
  impl->path = path;

  if (const char* vendor = openslide_detect_vendor(path.c_str())) {
    impl->vendor = vendor;
    impl->osr = openslide_open(path.c_str());
    if (!impl->osr)
      throw Error(ErrorCode::unsupported, path.string() + ": OpenSlide recognises it (" + impl->vendor + ") but cannot open it");
    if (const char* err = openslide_get_error(impl->osr)) {
      // e.g. an unsupported compression in a TIFF: the file is a TIFF but not a slide we can decode.
      throw Error(ErrorCode::unsupported, path.string() + ": cannot open as a slide: " + err);
    }
    const int32_t n = openslide_get_level_count(impl->osr);
    impl->check_openslide("reading the level count");
    if (n < 1) throw Error(ErrorCode::corrupt, path.string() + ": the slide has no levels");
    for (int32_t i = 0; i < n; ++i) {
      LevelInfo info;
      openslide_get_level_dimensions(impl->osr, i, &info.width, &info.height);
      info.downsample = openslide_get_level_downsample(impl->osr, i);
      impl->check_openslide("reading the level dimensions");
      if (info.width <= 0 || info.height <= 0 || !(info.downsample >= 1.0 - 1e-9))
        throw Error(ErrorCode::corrupt, path.string() + ": level " + std::to_string(i) + " has invalid dimensions");
      impl->levels.push_back(info);
    }
    const auto mx = parse_positive(openslide_get_property_value(impl->osr, OPENSLIDE_PROPERTY_NAME_MPP_X));
    const auto my = parse_positive(openslide_get_property_value(impl->osr, OPENSLIDE_PROPERTY_NAME_MPP_Y));
    if (mx || my) {
      impl->mpp = 0.5 * (mx.value_or(*my) + my.value_or(*mx));
      impl->mpp_source = "openslide";
    } else if (impl->vendor == "generic-tiff") {
      if ((impl->mpp = tiff_resolution_mpp(path))) impl->mpp_source = "tiff-resolution";
    }
    if (params.direct_tiff && (impl->vendor == "generic-tiff" || impl->vendor == "aperio")) {
      impl->tiles = TiffTiles::scan(path, impl->levels);
      impl->direct = std::make_unique<std::atomic<int>[]>(impl->levels.size());
      for (size_t i = 0; i < impl->levels.size(); ++i) impl->direct[i].store(0);
    }
  } else {
    if (!is_plain_image_extension(path)) {
      if (is_slide_extension(path))
        throw Error(ErrorCode::corrupt, path.string() +
                                            ": OpenSlide does not recognise this file although its extension names a "
                                            "slide format; it is probably truncated or damaged");
      throw Error(ErrorCode::unsupported,
                  path.string() + ": not a slide or image format libgrade reads (OpenSlide formats, PNG, JPEG, TIFF)");
    }
    cv::Mat decoded;
    try {
      decoded = cv::imread(path.string(), cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception& e) {
      throw Error(ErrorCode::corrupt, path.string() + ": cannot decode the image: " + e.what());
    }
    if (decoded.empty()) throw Error(ErrorCode::corrupt, path.string() + ": cannot decode the image (damaged or unsupported encoding)");
    impl->backend = SlideBackend::plain_image;
    impl->vendor = "image";
    impl->image = to_rgb8(decoded, path);
    impl->levels.push_back({impl->image.cols, impl->image.rows, 1.0});
    const std::string ext = lower(path.extension().string());
    if (ext == ".tif" || ext == ".tiff") {
      if ((impl->mpp = tiff_resolution_mpp(path))) impl->mpp_source = "tiff-resolution";
    }
  }
  if (params.mpp_override > 0.0) {
    impl->mpp = params.mpp_override;
    impl->mpp_source = "caller";
  }
  return Slide(std::move(impl));
}

const fs::path& Slide::path() const { return impl_->path; }
SlideBackend Slide::backend() const { return impl_->backend; }
std::string Slide::vendor() const { return impl_->vendor; }
int Slide::level_count() const { return static_cast<int>(impl_->levels.size()); }

LevelInfo Slide::level(int index) const {
  if (index < 0 || index >= level_count())
    throw Error(ErrorCode::out_of_bounds, impl_->path.string() + ": level " + std::to_string(index) +
                                              " does not exist (the slide has " + std::to_string(level_count()) + ")");
  return impl_->levels[static_cast<size_t>(index)];
}

std::optional<double> Slide::mpp() const { return impl_->mpp; }
std::string Slide::mpp_source() const { return impl_->mpp_source; }

double Slide::require_mpp() const {
  if (!impl_->mpp)
    throw Error(ErrorCode::missing_mpp, impl_->path.string() + ": the " +
                                            (impl_->backend == SlideBackend::plain_image ? "image" : "slide") +
                                            " does not record its resolution (microns per pixel); give it "
                                            "with --mpp (e.g. --mpp 0.25 for a 40x scan)");
  return *impl_->mpp;
}

std::optional<double> Slide::objective_power() const {
  if (!impl_->osr) return std::nullopt;
  return parse_positive(openslide_get_property_value(impl_->osr, OPENSLIDE_PROPERTY_NAME_OBJECTIVE_POWER));
}

bool Slide::reads_tiff_directly(int index) const {
  (void)level(index);  // bounds check
  return impl_->direct_ok(index);
}

std::map<std::string, std::string> Slide::properties() const {
  std::map<std::string, std::string> out;
  if (!impl_->osr) return out;
  const char* const* names = openslide_get_property_names(impl_->osr);
  impl_->check_openslide("reading the properties");
  for (; names && *names; ++names) {
    const char* v = openslide_get_property_value(impl_->osr, *names);
    out[*names] = v ? v : "";
  }
  return out;
}

std::vector<std::string> Slide::associated_image_names() const {
  std::vector<std::string> out;
  if (!impl_->osr) return out;
  const char* const* names = openslide_get_associated_image_names(impl_->osr);
  impl_->check_openslide("listing the associated images");
  for (; names && *names; ++names) out.emplace_back(*names);
  return out;
}

cv::Mat Slide::read_associated_image(const std::string& name) const {
  const auto names = associated_image_names();
  if (std::find(names.begin(), names.end(), name) == names.end())
    throw Error(ErrorCode::invalid_argument, impl_->path.string() + ": no associated image named '" + name + "'");
  int64_t w = 0, h = 0;
  openslide_get_associated_image_dimensions(impl_->osr, name.c_str(), &w, &h);
  impl_->check_openslide("reading an associated image's size");
  if (w <= 0 || h <= 0 || w * h > (int64_t{1} << 28))
    throw Error(ErrorCode::corrupt, impl_->path.string() + ": associated image '" + name + "' has an invalid size");
  std::vector<uint32_t> buf(static_cast<size_t>(w * h));
  openslide_read_associated_image(impl_->osr, name.c_str(), buf.data());
  impl_->check_openslide(("reading associated image '" + name + "'").c_str());
  cv::Mat rgb(static_cast<int>(h), static_cast<int>(w), CV_8UC3);
  argb_to_rgb(buf.data(), rgb);
  return rgb;
}

ImageView Slide::read_region(const Rect64& region, int level_index) const {
  const LevelInfo lv = level(level_index);
  const LevelInfo l0 = impl_->levels.front();
  if (region.width <= 0 || region.height <= 0 || region.x < 0 || region.y < 0 || region.x + region.width > l0.width ||
      region.y + region.height > l0.height)
    throw Error(ErrorCode::out_of_bounds, impl_->path.string() + ": region " + rect_str(region) +
                                              " is empty or outside the slide (" + std::to_string(l0.width) + " x " +
                                              std::to_string(l0.height) + ")");
  const int64_t w = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(region.width / lv.downsample - 1e-9)));
  const int64_t h = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(region.height / lv.downsample - 1e-9)));
  if (w * h > (int64_t{1} << 30) || w > (1 << 30) || h > (1 << 30))
    throw Error(ErrorCode::invalid_argument, impl_->path.string() + ": region " + rect_str(region) +
                                                 " is too large to read at once; read it in tiles");
  ImageView v;
  v.x0 = region.x;
  v.y0 = region.y;
  v.downsample = lv.downsample;
  v.mpp = impl_->mpp ? *impl_->mpp * lv.downsample : 0.0;
  if (impl_->backend == SlideBackend::plain_image) {
    v.rgb = impl_->image(cv::Rect(static_cast<int>(region.x), static_cast<int>(region.y), static_cast<int>(w),
                                  static_cast<int>(h)))
                .clone();
    return v;
  }
  v.rgb.create(static_cast<int>(h), static_cast<int>(w), CV_8UC3);
  // Direct tile reads need the origin on one of the level's pixels (OpenSlide would otherwise resample by the
  // fraction). A direct read that fails (a damaged tile) is redone through OpenSlide, whose error is then the one
  // reported.
  const double lx = static_cast<double>(region.x) / lv.downsample, ly = static_cast<double>(region.y) / lv.downsample;
  if (std::abs(lx - std::round(lx)) < 1e-9 && std::abs(ly - std::round(ly)) < 1e-9 && impl_->direct_ok(level_index) &&
      impl_->tiles->read(level_index, std::llround(lx), std::llround(ly), v.rgb))
    return v;
  impl_->read_openslide(region, level_index, v.rgb);
  return v;
}

int Slide::best_level_for_mpp(double target_mpp) const {
  const double mpp0 = require_mpp();
  int best = 0;
  for (int i = 0; i < level_count(); ++i)
    if (mpp0 * impl_->levels[static_cast<size_t>(i)].downsample <= target_mpp * (1.0 + 1e-6)) best = i;
  return best;
}

ImageView Slide::read_region_at_mpp(const Rect64& region, double target_mpp) const {
  const double mpp0 = require_mpp();
  if (!(target_mpp > 0.0) || !std::isfinite(target_mpp))
    throw Error(ErrorCode::invalid_argument, impl_->path.string() + ": target mpp must be > 0, got " + std::to_string(target_mpp));
  if (target_mpp < mpp0 * (1.0 - kFinerTolerance))
    throw Error(ErrorCode::invalid_argument,
                impl_->path.string() + ": target resolution " + std::to_string(target_mpp) +
                    " um/px is finer than the slide's level 0 (" + std::to_string(mpp0) + " um/px)");
  const int li = best_level_for_mpp(target_mpp);
  ImageView v = read_region(region, li);
  const double scale_x = static_cast<double>(region.width) * mpp0 / target_mpp;
  const double scale_y = static_cast<double>(region.height) * mpp0 / target_mpp;
  const int w = std::max(1, static_cast<int>(std::lround(scale_x)));
  const int h = std::max(1, static_cast<int>(std::lround(scale_y)));
  if (w != v.rgb.cols || h != v.rgb.rows) {
    cv::Mat out;
    // Area resampling when shrinking (each output pixel averages the input pixels it covers); linear in the rare
    // case of a small upsampling (target within kFinerTolerance of level 0).
    const bool shrinking = w <= v.rgb.cols && h <= v.rgb.rows;
    cv::resize(v.rgb, out, cv::Size(w, h), 0, 0, shrinking ? cv::INTER_AREA : cv::INTER_LINEAR);
    v.rgb = out;
  }
  v.mpp = target_mpp;
  v.downsample = target_mpp / mpp0;
  return v;
}

ImageView Slide::read_thumbnail(double target_mpp, int64_t max_pixels) const {
  const LevelInfo l0 = impl_->levels.front();
  if (max_pixels < 1) max_pixels = 1;
  double ds = (impl_->mpp && target_mpp > 0.0) ? target_mpp / *impl_->mpp : 1.0;
  ds = std::max({ds, 1.0, std::sqrt(static_cast<double>(l0.width) * static_cast<double>(l0.height) /
                                    static_cast<double>(max_pixels))});
  const int out_w = std::max(1, static_cast<int>(std::lround(static_cast<double>(l0.width) / ds)));
  const int out_h = std::max(1, static_cast<int>(std::lround(static_cast<double>(l0.height) / ds)));
  int li = 0;
  for (int i = 0; i < level_count(); ++i)
    if (impl_->levels[static_cast<size_t>(i)].downsample <= ds * (1.0 + 1e-6)) li = i;
  const LevelInfo lv = impl_->levels[static_cast<size_t>(li)];

  // Read the chosen level in horizontal strips so memory stays bounded whatever the slide's size; each strip maps to
  // a whole number of output rows so strips join without seams.
  cv::Mat out(out_h, out_w, CV_8UC3);
  const double row_l0 = static_cast<double>(l0.height) / out_h;  // level-0 rows per output row
  const int rows_per_strip = std::max(1, static_cast<int>(4096.0 / std::max(1.0, row_l0 / lv.downsample)));
  for (int r0 = 0; r0 < out_h; r0 += rows_per_strip) {
    const int r1 = std::min(out_h, r0 + rows_per_strip);
    const int64_t y0 = static_cast<int64_t>(std::floor(r0 * row_l0));
    const int64_t y1 = std::min<int64_t>(l0.height, static_cast<int64_t>(std::ceil(r1 * row_l0)));
    ImageView strip = read_region({0, y0, l0.width, std::max<int64_t>(1, y1 - y0)}, li);
    cv::Mat dst = out.rowRange(r0, r1);
    cv::resize(strip.rgb, dst, dst.size(), 0, 0, cv::INTER_AREA);
  }
  ImageView v;
  v.rgb = out;
  v.downsample = static_cast<double>(l0.width) / out_w;
  v.mpp = impl_->mpp ? *impl_->mpp * v.downsample : 0.0;
  return v;
}

}  // namespace grade
