// Nucleus segmentation quality on ../shared/data/nuclei with the metrics of ../shared/eval/eval_nuclei.py (pooled AJI,
// Dice, P/R/F1 at IoU > 0.5, PQ, spindle P/R/F1), and throughput (input megapixels per second of segment_nuclei).
//
// usage: bench_nuclei_quality [--data DIR] [--dataset consep|monuseg|cpm15|all] [--model FILE.onnx]
//                             [--only LIST.txt] [--pred-dir DIR] [--limit N] [--cv MODEL LIST ...]
//   --model  evaluate another network instead of the embedded one (cross-validation fold models)
//   --only   evaluate only the images listed ("dataset/name" per line), e.g. a fold's held-out list
//   --cv MODEL LIST  (once per fold) pooled cross-validation: each fold's network scores only the images it held out
//              (its LIST, as written by train_nuclei.py); the scores are pooled over all folds' images
//   --exclude  skip the images listed (same format): with a fold's held-out list, tune parameters on the images the
//              network trained on and leave the held-out ones untouched until the parameters are chosen
//   --fg T --marker T --merge D --min-area A --tile PX --margin PX  NucleiParams to try
//   --contact W --otol T  the same for networks with offset maps (contact_weight, offset_merge_tolerance)
//   --flips N  test-time flips (1, 2, 4 or 8 network passes per tile)
//   --network fast|accurate  which embedded network (NucleiParams::network; --model and --cv override it, but its
//              post-processing settings, contact_weight and offset_merge_tolerance unless given, still apply)
//   --working-mpp X  the resolution the network runs at (it was trained at 0.5 um/px)
//   --sp-elongation E --sp-solidity S --sp-probability P --sp-confident P --sp-alignment A  the spindle rule's thresholds
//   --dump FILE  per predicted nucleus: centroid (um), features, the spindle flag, whether it matches a GT nucleus
//                (IoU > 0.5), and whether that one is spindle
//   --errors  also print where the detection errors are: each GT nucleus (and each CoNSeP spindle one) as matched,
//             missed, merged, split, outline (IoU 0.3-0.5) or other, each prediction as matched, unlabelled, merge,
//             split, outline or other (nuclei_eval.hpp, NucleiErrorCounts), as shares of their totals
//   --engine best|avx2|opencv  run the network on libgrade's own kernels with the CPU's best instruction set (the
//              default), with AVX2, or on OpenCV dnn (grade::detail::NucleiEngine)
//   --pred-dir  also write <name>.png (uint16 labels) and nuclei.csv per data set, for eval_nuclei.py
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/nuclei.hpp"
#include "nuclei_eval.hpp"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::string data = std::string(GRADE_SHARED_DATA) + "/nuclei", which = "all", model, only, exclude, pred_dir;
  int limit = 0;
  grade::NucleiParams params;
  std::string dump;
  bool errors = false;
  std::vector<std::pair<std::string, std::string>> cv_folds;  // (model, held-out list)
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--data") data = next();
    else if (a == "--dataset") which = next();
    else if (a == "--model") model = next();
    else if (a == "--only") only = next();
    else if (a == "--exclude") exclude = next();
    else if (a == "--pred-dir") pred_dir = next();
    else if (a == "--limit") limit = std::stoi(next());
    else if (a == "--fg") params.foreground_threshold = std::stod(next());
    else if (a == "--marker") params.marker_threshold = std::stod(next());
    else if (a == "--merge") params.merge_depth = std::stod(next());
    else if (a == "--contact") params.contact_weight = std::stod(next());
    else if (a == "--otol") params.offset_merge_tolerance = std::stod(next());
    else if (a == "--flips") params.flips = std::stoi(next());
    else if (a == "--network") {
      if (!grade::parse_nuclei_network(next(), &params.network)) {
        std::cerr << "--network must be fast or accurate\n";
        return 2;
      }
    }
    else if (a == "--working-mpp") params.working_mpp = std::stod(next());
    else if (a == "--margin") params.tile_margin_px = std::stoi(next());
    else if (a == "--tile") params.tile_px = std::stoi(next());
    else if (a == "--min-area") params.min_area_um2 = std::stod(next());
    else if (a == "--sp-elongation") params.spindle_min_elongation = std::stod(next());
    else if (a == "--sp-solidity") params.spindle_min_solidity = std::stod(next());
    else if (a == "--sp-probability") params.spindle_min_probability = std::stod(next());
    else if (a == "--sp-confident") params.spindle_confident_probability = std::stod(next());
    else if (a == "--sp-alignment") params.spindle_min_alignment = std::stod(next());
    else if (a == "--dump") dump = next();
    else if (a == "--errors") errors = true;
    else if (a == "--engine") {
      const std::string e = next();
      if (e != "best" && e != "avx2" && e != "opencv") {
        std::cerr << "--engine must be best, avx2 or opencv\n";
        return 2;
      }
      grade::detail::set_thread_nuclei_engine(e == "best"   ? grade::detail::NucleiEngine::best
                                              : e == "avx2" ? grade::detail::NucleiEngine::avx2
                                                            : grade::detail::NucleiEngine::opencv);
    }
    else if (a == "--cv") {
      std::string m = next();
      cv_folds.emplace_back(m, next());
    }
    else {
      std::cerr << "unknown argument " << a << "\n";
      return 2;
    }
  }
  cv::setNumThreads(1);
  if (!cv_folds.empty() && (!model.empty() || !only.empty())) {
    std::cerr << "--cv gives each fold's model and image list: not with --model or --only\n";
    return 2;
  }
  auto read_model = [](const std::string& path) {
    std::vector<unsigned char> bytes;
    if (path.empty()) return bytes;  // the embedded network
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::cerr << "cannot read " << path << "\n";
      std::exit(2);
    }
    bytes.assign(std::istreambuf_iterator<char>(in), {});
    return bytes;
  };
  auto read_list = [](const std::string& path) {
    std::set<std::string> names;
    if (path.empty()) return names;
    std::ifstream in(path);
    if (!in) {
      std::cerr << "cannot read the image list " << path << "\n";
      std::exit(2);
    }
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) names.insert(line);
    return names;
  };
  // The folds: (network, images it scores); without --cv one fold, --model on --only (or on all images).
  struct Fold {
    std::vector<unsigned char> model;
    std::set<std::string> keep;  // empty: all images
  };
  std::vector<Fold> folds;
  if (cv_folds.empty()) folds.push_back({read_model(model), read_list(only)});
  for (const auto& [m, list] : cv_folds) {
    folds.push_back({read_model(m), read_list(list)});
    if (folds.back().keep.empty()) {
      std::cerr << "--cv: the image list " << list << " is empty\n";
      return 2;
    }
  }
  const std::set<std::string> skip = read_list(exclude);
  std::vector<std::string> sets = which == "all" ? std::vector<std::string>{"consep", "monuseg", "cpm15"}
                                                 : std::vector<std::string>{which};
  std::printf("%-8s %5s %6s %6s %6s %6s %6s %6s %6s %6s %6s %6s\n", "dataset", "imgs", "AJI", "Dice", "P", "R", "F1",
              "PQ", "spP", "spR", "spF1", "MP/s");
  std::ofstream dumpf;
  if (!dump.empty()) {
    dumpf.open(dump);
    dumpf << "dataset,image,id,x_um,y_um,area_um2,perimeter_um,minor_axis_um,elongation,solidity,spindle_probability,"
             "alignment,bluntness,mean_h_od,std_h_od,spindle,matched,gt_spindle\n";
  }
  for (const auto& ds : sets) {
    auto samples = grade::detail::nuclei_dataset(data, ds);
    grade::detail::NucleiEvalSums total;
    grade::detail::NucleiErrorCounts error_counts;
    double seconds = 0, mpix = 0;
    int count = 0;
    std::ofstream csv;
    if (!pred_dir.empty()) {
      fs::create_directories(fs::path(pred_dir) / ds);
      csv.open(fs::path(pred_dir) / ds / "nuclei.csv");
      csv << "image,id,spindle\n";
    }
    for (const auto& fold : folds) {
      grade::detail::set_thread_nuclei_model(fold.model);  // the network is (re)loaded at its first use
      for (const auto& s : samples) {
        if (!fold.keep.empty() && !fold.keep.count(ds + "/" + s.name)) continue;
        if (skip.count(ds + "/" + s.name)) continue;
        if (limit > 0 && count >= limit) break;
        cv::Mat bgr = cv::imread(s.image_path, cv::IMREAD_COLOR), rgb;
        cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
        const cv::Mat gt = cv::imread(s.label_path, cv::IMREAD_UNCHANGED);
        const auto t0 = std::chrono::steady_clock::now();
        const auto r = grade::segment_nuclei(grade::make_view(rgb, s.mpp), params);
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        mpix += static_cast<double>(rgb.total()) / 1e6;
        std::set<int> sp;
        for (const auto& n : r.nuclei)
          if (n.spindle) sp.insert(n.id);
        const auto overlap = grade::detail::instance_overlap(gt, r.labels);  // once for every measure below
        total += grade::detail::nuclei_image_sums(overlap, s.gt_spindle, sp);
        if (errors) error_counts += grade::detail::nuclei_error_counts(overlap, s.gt_spindle);
        if (dumpf.is_open()) {
          const auto match = grade::detail::match_predictions(overlap);
          for (const auto& n : r.nuclei) {
            const int g = match[static_cast<std::size_t>(n.id)];
            dumpf << ds << "," << s.name << "," << n.id << "," << n.x * s.mpp << "," << n.y * s.mpp << ","
                  << n.area_um2 << "," << n.perimeter_um << "," << n.minor_axis_um << "," << n.elongation << ","
                  << n.solidity << "," << n.spindle_probability << "," << n.alignment << "," << n.bluntness << ","
                  << n.mean_h_od << "," << n.std_h_od << "," << n.spindle << "," << (g > 0) << ","
                  << (g > 0 && s.gt_spindle.count(g) ? 1 : 0) << "\n";
          }
        }
        if (!pred_dir.empty()) {
          cv::Mat l16;
          r.labels.convertTo(l16, CV_16U);
          cv::imwrite((fs::path(pred_dir) / ds / (s.name + ".png")).string(), l16);
          for (const auto& n : r.nuclei) csv << s.name << "," << n.id << "," << (n.spindle ? 1 : 0) << "\n";
        }
        ++count;
      }
    }
    const auto m = grade::detail::nuclei_metrics(total);
    std::printf("%-8s %5d %6.3f %6.3f %6.3f %6.3f %6.3f %6.3f %6.3f %6.3f %6.3f %6.2f\n", ds.c_str(), count, m.aji,
                m.dice, m.precision, m.recall, m.f1, m.pq, m.sp_precision, m.sp_recall, m.sp_f1,
                seconds > 0 ? mpix / seconds : 0.0);
    if (errors) {
      using Counts = grade::detail::NucleiErrorCounts;
      auto line = [](const char* what, const std::array<std::int64_t, 6>& c, const auto& names) {
        std::int64_t n = 0;
        for (auto v : c) n += v;
        if (n == 0) return;
        std::printf("  %-15s %6lld:", what, static_cast<long long>(n));
        for (std::size_t k = 0; k < c.size(); ++k)
          std::printf(" %s %.3f", names[k], static_cast<double>(c[k]) / static_cast<double>(n));
        std::printf("\n");
      };
      line("GT nuclei", error_counts.gt, Counts::gt_names);
      line("GT spindle", error_counts.spindle_gt, Counts::gt_names);
      line("predictions", error_counts.pred, Counts::pred_names);
    }
    std::fflush(stdout);
  }
  return 0;
}
