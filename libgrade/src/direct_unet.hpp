#pragma once
// The nucleus network (tools/train/nuclei_net.py, NucleiNet) run by libgrade's own AVX-512 / AVX2 kernels instead of
// OpenCV dnn: the same weights, read from the loaded cv::dnn::Net, and the same function to float rounding. OpenCV
// 4.6's convolutions run at about 18 GMAC/s per core on our machines whatever their shape; these kernels keep
// activations channels-last (16 or 8 channels per register) with a block of output pixels' sums in registers, about
// 60-80 GMAC/s with AVX-512 and 45 with AVX2 on the same cores (benchmarks/README.md, "Twenty-third session"); most
// 3x3 convolutions run by Winograd's F(4x4, 3x3) or F(2x2, 3x3), 36 multiplies per 4x4 outputs or 16 per 2x2 where the
// direct way does 144 or 36 ("Twenty-fourth session": the accurate network alone 1.5 times as fast with AVX-512, 1.8
// with AVX2). Used
// only where the CPU has AVX-512F or AVX2 with FMA, and the network has NucleiNet's layout with widths that are
// multiples of 16; from() checks the result against OpenCV dnn on a test input before it is used, so a network it does
// not understand falls back to dnn rather than running wrong.
#include <memory>
#include <optional>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

namespace grade::detail {

class DirectUnet {
 public:
  enum class Isa { avx2, avx512 };  // AVX2 with FMA; AVX-512F
  // The best instruction set this CPU offers for the kernels (AVX-512F where it also has AVX2 with FMA), or none (also
  // on other architectures than x86-64).
  static std::optional<Isa> cpu_isa();
  // The direct network for `net` (a freshly loaded NucleiNet), or null when this CPU has neither AVX-512F nor AVX2 with
  // FMA, the graph is not NucleiNet's (layer types and weight shapes), or its output on a test input differs from
  // net's with either instruction set the CPU has.
  static std::unique_ptr<const DirectUnet> from(cv::dnn::Net& net);
  // As net.forward(): `in` is a 1 x 3 x H x W CV_32F blob with H and W multiples of 8; `out` becomes 1 x O x H x W
  // logits. `isa` must be one the CPU has (AVX2 where it has AVX-512F too). Thread-safe (scratch buffers are per
  // thread); rows are split with cv::parallel_for_, each output computed alone in a fixed order, so the result does
  // not depend on the number of threads.
  void forward(const cv::Mat& in, cv::Mat& out, Isa isa) const;

  struct Conv {
    int k = 3, stride = 1, cin = 0, cout = 0, cout_p = 0;  // cout_p: cout rounded up to a multiple of 16
    std::vector<float> w;                                  // [k * k][cin][cout_p], zero beyond cout
    std::vector<float> b;                                  // [cout_p]
    std::vector<float> wino;  // 3x3 stride 1 only: Winograd F(2x2, 3x3)'s transformed weights [16][cin][cout_p]
    std::vector<float> wino4;  // and F(4x4, 3x3)'s [36][cin][cout_p]
  };

 private:
  // s0 (stride 2), e1, e2 (two), e3 (two), r3 (1x1), d2, r2 (1x1), d1, head (1x1), in the graph's order.
  std::vector<Conv> convs_;
  int b_ = 0, c_ = 0, d_ = 0, outputs_ = 0;
};

}  // namespace grade::detail
