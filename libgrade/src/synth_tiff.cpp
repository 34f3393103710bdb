// Pyramidal JPEG TIFF writer for grade-synth (see synth_detail.hpp).
#include <tiffio.h>

#include <cstring>
#include <random>

#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "synth_detail.hpp"

namespace grade::detail {

namespace fs = std::filesystem;

struct PyramidTiffWriter::Level {
  std::int64_t width = 0, height = 0;
  int tiles_x = 0, tiles_y = 0;
  double downsample = 1.0;
  TIFF* tif = nullptr;
  fs::path temp_path;  // empty for level 0 (written to the output itself)
  cv::Mat strip;       // levels >= 1: one tile row being assembled from the level above
  int strip_row = 0;   // tile row of this level held in `strip`
  int parts = 0;       // sub-strips (tile rows of the level above) received for the current strip
};

namespace {

void set_tags(TIFF* tif, const fs::path& path, std::int64_t w, std::int64_t h, int tile, int quality, double mpp,
              bool reduced, const std::string& description) {
  bool ok = true;
  ok &= TIFFSetField(tif, TIFFTAG_SUBFILETYPE, reduced ? FILETYPE_REDUCEDIMAGE : 0) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, static_cast<std::uint32_t>(w)) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_IMAGELENGTH, static_cast<std::uint32_t>(h)) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_TILEWIDTH, static_cast<std::uint32_t>(tile)) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_TILELENGTH, static_cast<std::uint32_t>(tile)) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, 8) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, 3) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_COMPRESSION, COMPRESSION_JPEG) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_YCBCR) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_YCBCRSUBSAMPLING, 2, 2) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_JPEGQUALITY, quality) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB) == 1;
  // Resolution tags in pixels per centimetre (1 cm = 10^4 um), for readers that use them (OpenSlide's generic TIFF
  // backend does not; its Aperio backend reads MPP from the ImageDescription).
  ok &= TIFFSetField(tif, TIFFTAG_RESOLUTIONUNIT, RESUNIT_CENTIMETER) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_XRESOLUTION, static_cast<float>(1e4 / mpp)) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_YRESOLUTION, static_cast<float>(1e4 / mpp)) == 1;
  ok &= TIFFSetField(tif, TIFFTAG_SOFTWARE, "grade-synth (libgrade)") == 1;
  if (!description.empty()) ok &= TIFFSetField(tif, TIFFTAG_IMAGEDESCRIPTION, description.c_str()) == 1;
  if (!ok) throw Error(ErrorCode::io, path.string() + ": cannot set the TIFF tags");
}

TIFF* open_tiff(const fs::path& path, const char* mode) {
  TIFF* tif = TIFFOpen(path.c_str(), mode);
  if (!tif) throw Error(ErrorCode::io, path.string() + ": cannot create the TIFF file");
  return tif;
}

}  // namespace

PyramidTiffWriter::PyramidTiffWriter(const fs::path& path, std::int64_t width, std::int64_t height, int tile_px,
                                     int jpeg_quality, double mpp, const std::string& description,
                                     std::int64_t min_level_px)
    : path_(path), tile_px_(tile_px), quality_(jpeg_quality), mpp_(mpp) {
  std::int64_t w = width, h = height;
  double ds = 1.0;
  for (;;) {
    auto level = std::make_unique<Level>();
    level->width = w;
    level->height = h;
    level->tiles_x = static_cast<int>((w + tile_px - 1) / tile_px);
    level->tiles_y = static_cast<int>((h + tile_px - 1) / tile_px);
    level->downsample = ds;
    levels_.push_back(std::move(level));
    if (std::max(w, h) < min_level_px) break;
    w = (w + 3) / 4;
    h = (h + 3) / 4;
    ds *= 4.0;
  }
  // Classic TIFF holds 4 GB; JPEG tiles at these qualities are well under 1/4 of the raw size.
  const bool big = static_cast<double>(width) * static_cast<double>(height) * 3.0 > 8e9;
  try {
    Level& l0 = *levels_[0];
    l0.tif = open_tiff(path_, big ? "w8" : "w");
    set_tags(l0.tif, path_, l0.width, l0.height, tile_px_, quality_, mpp_, false, description);
    std::random_device rd;
    for (std::size_t k = 1; k < levels_.size(); ++k) {
      Level& l = *levels_[k];
      l.temp_path = path_.parent_path() /
                    (".tmp-" + std::to_string(rd()) + "-level" + std::to_string(k) + "-" + path_.filename().string());
      l.tif = open_tiff(l.temp_path, big ? "w8" : "w");
      // The lower levels are re-encoded once more when appended: keep their first encoding nearly lossless.
      set_tags(l.tif, l.temp_path, l.width, l.height, tile_px_, 97, mpp_ * l.downsample, true, "");
      l.strip = cv::Mat(tile_px_, l.tiles_x * tile_px_, CV_8UC3, cv::Scalar::all(255));
    }
  } catch (...) {
    for (auto& l : levels_) {
      if (l->tif) TIFFClose(l->tif);
      l->tif = nullptr;
      std::error_code ec;
      if (!l->temp_path.empty()) fs::remove(l->temp_path, ec);
    }
    throw;
  }
}

PyramidTiffWriter::~PyramidTiffWriter() {
  for (auto& l : levels_) {
    if (l->tif) TIFFClose(l->tif);
    std::error_code ec;
    if (!l->temp_path.empty()) fs::remove(l->temp_path, ec);
  }
}

void PyramidTiffWriter::write_tile(int col, int row, const cv::Mat& rgb) {
  CV_Assert(rgb.type() == CV_8UC3 && rgb.rows == tile_px_ && rgb.cols == tile_px_ && rgb.isContinuous());
  Level& l0 = *levels_[0];
  const std::uint32_t tile = TIFFComputeTile(l0.tif, static_cast<std::uint32_t>(col * tile_px_),
                                             static_cast<std::uint32_t>(row * tile_px_), 0, 0);
  if (TIFFWriteEncodedTile(l0.tif, tile, const_cast<uchar*>(rgb.ptr()), static_cast<tmsize_t>(rgb.total() * 3)) < 0)
    throw Error(ErrorCode::io, path_.string() + ": cannot write tile " + std::to_string(col) + "," + std::to_string(row));
  if (levels_.size() < 2) return;
  Level& l1 = *levels_[1];
  const int q = tile_px_ / 4;
  cv::Mat small;
  cv::resize(rgb, small, cv::Size(q, q), 0, 0, cv::INTER_AREA);
  small.copyTo(l1.strip(cv::Rect(col * q, (row % 4) * q, q, q)));
  if (col == l0.tiles_x - 1) {
    const bool last = row == l0.tiles_y - 1;
    if (row % 4 == 3 || last) flush_strip(1, last);
  }
}

void PyramidTiffWriter::flush_strip(std::size_t k, bool last) {
  Level& l = *levels_[k];
  if (l.strip_row >= l.tiles_y) throw Error(ErrorCode::internal, path_.string() + ": pyramid strip out of range");
  cv::Mat tile_buf(tile_px_, tile_px_, CV_8UC3);
  for (int c = 0; c < l.tiles_x; ++c) {
    l.strip(cv::Rect(c * tile_px_, 0, tile_px_, tile_px_)).copyTo(tile_buf);
    const std::uint32_t tile = TIFFComputeTile(l.tif, static_cast<std::uint32_t>(c * tile_px_),
                                               static_cast<std::uint32_t>(l.strip_row * tile_px_), 0, 0);
    if (TIFFWriteEncodedTile(l.tif, tile, tile_buf.ptr(), static_cast<tmsize_t>(tile_buf.total() * 3)) < 0)
      throw Error(ErrorCode::io, l.temp_path.string() + ": cannot write a tile");
  }
  if (k + 1 < levels_.size()) {
    Level& n = *levels_[k + 1];
    const int q = tile_px_ / 4;
    cv::Mat small;
    cv::resize(l.strip, small, cv::Size(l.strip.cols / 4, q), 0, 0, cv::INTER_AREA);
    small.copyTo(n.strip(cv::Rect(0, (l.strip_row % 4) * q, small.cols, q)));
    if (l.strip_row % 4 == 3 || last) flush_strip(k + 1, last);
  }
  ++l.strip_row;
  l.strip.setTo(cv::Scalar::all(255));
}

void PyramidTiffWriter::finish() {
  if (finished_) return;
  finished_ = true;
  Level& l0 = *levels_[0];
  if (!TIFFWriteDirectory(l0.tif)) throw Error(ErrorCode::io, path_.string() + ": cannot write the TIFF directory");
  std::vector<uchar> buf(static_cast<std::size_t>(tile_px_) * static_cast<std::size_t>(tile_px_) * 3);
  for (std::size_t k = 1; k < levels_.size(); ++k) {
    Level& l = *levels_[k];
    if (!TIFFWriteDirectory(l.tif)) throw Error(ErrorCode::io, l.temp_path.string() + ": cannot finish the level");
    TIFFClose(l.tif);
    l.tif = open_tiff(l.temp_path, "rm");  // no memory-mapping: RSS would grow with the level's size
    TIFFSetField(l.tif, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB);
    set_tags(l0.tif, path_, l.width, l.height, tile_px_, quality_, mpp_ * l.downsample, true, "");
    const std::uint32_t n = TIFFNumberOfTiles(l.tif);
    for (std::uint32_t t = 0; t < n; ++t) {
      if (TIFFReadEncodedTile(l.tif, t, buf.data(), static_cast<tmsize_t>(buf.size())) < 0)
        throw Error(ErrorCode::io, l.temp_path.string() + ": cannot read back a tile");
      if (TIFFWriteEncodedTile(l0.tif, t, buf.data(), static_cast<tmsize_t>(buf.size())) < 0)
        throw Error(ErrorCode::io, path_.string() + ": cannot write a tile");
    }
    if (!TIFFWriteDirectory(l0.tif)) throw Error(ErrorCode::io, path_.string() + ": cannot write the TIFF directory");
    TIFFClose(l.tif);
    l.tif = nullptr;
    std::error_code ec;
    fs::remove(l.temp_path, ec);
  }
  TIFFClose(l0.tif);
  l0.tif = nullptr;
}

}  // namespace grade::detail
