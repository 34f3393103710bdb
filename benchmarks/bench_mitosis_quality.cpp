// Mitosis detector quality on ../shared/data, by the definitions of ../shared/eval/eval_mitosis.py, on the source
// images held out from training (tools/train/train_mitosis.py; same split rule, libgrade/src/mitosis_eval.hpp).
// --fold K evaluates the quarter K of the source groups instead of the committed networks' quarter 3, for networks
// trained with train_mitosis.py --fold K (cross-validation).
//
//   bench_mitosis_quality [--all | --fold K] [--model FILE.onnx [--screen SCREEN.onnx] [--locate LOCATE.onnx]
//                         [--verify VERIFY.onnx]] [--no-locate] [--verify-from P] [--screen-threshold T]
//                         [--threshold T] [--candidate-min-od OD] [--candidate-separation-um UM]
//                         [--candidate-centroid-um UM] [--midpoint-min-score S] [--orientations N] [--csv OUT.csv]
//                         [--nuclei-csv OUT.csv]
//   bench_mitosis_quality --dump-candidates OUT.csv      (stage-1 candidates of every image, for training)
//
// Prints the recall / FP-per-mm^2 curve on AMi-Br, recall per class and dataset at the operating threshold, and the
// detections per mm^2 on the nucleus images (consep, monuseg, cpm15), where mitoses are rare (inside eval_mitosis.py's
// 2 um border, as its false positives per mm^2 on the patches; also over whole images). --csv writes the AMi-Br
// detections (eval_mitosis.py's input), --nuclei-csv those on the nucleus images (set,image,x,y,score), to view them.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/mitosis.hpp"
#include "mitosis_eval.hpp"

namespace me = grade::detail::mitosis_eval;

static cv::Mat load_rgb(const std::string& path) {
  cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
  if (bgr.empty()) throw std::runtime_error("cannot read " + path);
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

int main(int argc, char** argv) {
  bool all = false;
  int fold = 3;
  std::string model_path, screen_path, locate_path, verify_path, csv_path, nuclei_csv_path, dump_path;
  bool locate = grade::MitosisParams{}.locate;
  double screen_threshold = grade::MitosisParams{}.screen_threshold;
  double verify_from = grade::MitosisParams{}.verify_from;
  double candidate_min_od = grade::MitosisParams{}.candidate_min_od;
  double candidate_separation_um = grade::MitosisParams{}.candidate_separation_um;
  double candidate_centroid_um = grade::MitosisParams{}.candidate_centroid_um;
  double threshold = grade::MitosisParams{}.threshold;
  double midpoint_min_score = grade::MitosisParams{}.midpoint_min_score;
  int orientations = grade::MitosisParams{}.orientations;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--all") all = true;
    else if (a == "--fold") fold = std::stoi(next());
    else if (a == "--model") model_path = next();
    else if (a == "--screen") screen_path = next();
    else if (a == "--locate") locate_path = next();
    else if (a == "--no-locate") locate = false;
    else if (a == "--verify") verify_path = next();
    else if (a == "--verify-from") verify_from = std::stod(next());
    else if (a == "--screen-threshold") screen_threshold = std::stod(next());
    else if (a == "--candidate-min-od") candidate_min_od = std::stod(next());
    else if (a == "--candidate-separation-um") candidate_separation_um = std::stod(next());
    else if (a == "--candidate-centroid-um") candidate_centroid_um = std::stod(next());
    else if (a == "--threshold") threshold = std::stod(next());
    else if (a == "--midpoint-min-score") midpoint_min_score = std::stod(next());
    else if (a == "--csv") csv_path = next();
    else if (a == "--nuclei-csv") nuclei_csv_path = next();
    else if (a == "--orientations") orientations = std::stoi(next());
    else if (a == "--dump-candidates") dump_path = next();
    else {
      std::cerr << "unknown argument " << a << "\n";
      return 2;
    }
  }
  if (fold < 0 || fold > 3) throw std::runtime_error("--fold must be 0..3");
  const auto images = me::list_images(GRADE_SHARED_DATA, fold);
  grade::MitosisParams params;
  params.threshold = 0.0;  // keep every scored candidate: the curve is over thresholds
  params.orientations = orientations;
  params.screen_threshold = screen_threshold;
  params.candidate_min_od = candidate_min_od;
  params.candidate_separation_um = candidate_separation_um;
  params.candidate_centroid_um = candidate_centroid_um;
  params.midpoint_min_score = midpoint_min_score;
  params.locate = locate;
  params.verify_from = verify_from;
  if (!model_path.empty())
    params.model = me::load_model(model_path, screen_path, locate_path, verify_path);
  else if (!screen_path.empty() || !locate_path.empty() || !verify_path.empty())
    throw std::runtime_error("--screen, --locate and --verify need --model (the main network they go with)");

  if (!dump_path.empty()) {
    std::ofstream out(dump_path);
    out << "set,image,path,group,mpp,width,height,x,y,density\n";
    size_t n = 0;
    for (const auto& d : images) {
      const cv::Mat rgb = load_rgb(d.path);
      const auto c = grade::find_mitosis_candidates(grade::make_view(rgb, d.mpp), params);
      const std::string head = d.set + "," + d.name + "," + d.path + "," + d.group + "," + std::to_string(d.mpp) +
                               "," + std::to_string(rgb.cols) + "," + std::to_string(rgb.rows) + ",";
      if (c.empty()) out << head << ",,\n";
      for (const auto& k : c) out << head << k.x << "," << k.y << "," << k.density << "\n";
      n += c.size();
    }
    std::cout << "wrote " << n << " candidates of " << images.size() << " images to " << dump_path << "\n";
    return 0;
  }

  std::vector<const me::DevImage*> patches;
  std::vector<cv::Size> sizes;
  std::vector<me::Det> dets;
  std::ofstream csv, nuclei_csv;
  if (!csv_path.empty()) {
    csv.open(csv_path);
    csv << "image,x,y,score\n";
  }
  if (!nuclei_csv_path.empty()) {
    nuclei_csv.open(nuclei_csv_path);
    nuclei_csv << "set,image,x,y,score\n";
  }
  std::map<std::string, me::OpenImages> nuclei;
  me::OpenImages all_nuclei;
  double mp = 0, seconds = 0;
  size_t n_candidates = 0;
  for (const auto& d : images) {
    if (!all && !d.held_out) continue;
    const cv::Mat rgb = load_rgb(d.path);
    const auto t0 = std::chrono::steady_clock::now();
    const auto det = grade::detect_mitoses(grade::make_view(rgb, d.mpp), params);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    mp += rgb.total() * 1e-6;
    n_candidates += det.size();
    if (d.set == "amibr") {
      for (const auto& k : det) {
        dets.push_back({patches.size(), k.x, k.y, k.score});
        if (csv.is_open()) csv << d.name << "," << k.x << "," << k.y << "," << k.score << "\n";
      }
      patches.push_back(&d);
      sizes.push_back(rgb.size());
    } else {
      nuclei[d.set].add(rgb.size(), d.mpp, det);
      all_nuclei.add(rgb.size(), d.mpp, det);
      if (nuclei_csv.is_open())
        for (const auto& k : det)
          nuclei_csv << d.set << "," << d.name << "," << k.x << "," << k.y << "," << k.score << "\n";
    }
  }
  const auto e = me::evaluate_patches(patches, sizes, dets);
  std::printf("mitosis quality (%s source images), %zu AMi-Br patches, %d figures in the evaluated region, "
              "%.4f mm^2; %zu detections after NMS at threshold 0; %.1f MP in %.1f s\n",
              all ? "ALL (training included)" : "held-out", patches.size(), e.n_gt, e.area_mm2, n_candidates, mp,
              seconds);
  std::printf("curve: recall at FP/mm^2 budgets (out of training: held-out source images)\n");
  std::printf("%10s %10s %8s %6s %6s\n", "FP/mm2<=", "threshold", "recall", "TP", "FP");
  for (double budget : {1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0, 1e9}) {
    const me::CurvePoint* best = nullptr;
    for (const auto& p : e.curve)
      if (p.fp_per_mm2 <= budget) best = &p;
    if (best)
      std::printf("%10.0f %10.4f %8.3f %6d %6d\n", budget, best->threshold, best->recall, best->tp, best->fp);
  }
  std::printf("at thresholds:\n%10s %8s %10s %8s %9s %9s", "threshold", "recall", "FP/mm2", "atyp_rec", "MIDOG_rec",
              "TUPAC_rec");
  for (const auto& [set, s] : nuclei) std::printf(" %9s", (set + "/mm2").c_str());
  std::printf(" %9s %9s\n", "all/mm2", "(whole)");
  for (double t : {0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, threshold}) {
    const auto p = e.at(t);
    std::printf("%10.4f %8.3f %10.2f %8.3f %9.3f %9.3f", t, p.recall, p.fp_per_mm2, e.recall_of("class", "atypical", t),
                e.recall_of("dataset", "MIDOG21", t, false), e.recall_of("dataset", "TUPAC16", t, false));
    for (const auto& [set, s] : nuclei) std::printf(" %9.2f", s.rate(t));
    std::printf(" %9.2f %9.2f%s\n", all_nuclei.rate(t), all_nuclei.whole_rate(t),
                t == threshold ? "   <- operating threshold" : "");
  }
  for (const auto& [set, s] : nuclei)
    std::printf("  %s: %d images, %.3f mm^2 inside the 2 um border (%.3f whole)\n", set.c_str(), s.images, s.area_mm2,
                s.whole_mm2);
  std::printf("  nucleus-image detections/mm^2 count those inside eval_mitosis.py's border (8 px at 0.25 um/px) over "
              "the area inside it; (whole): every detection over the whole images\n");
  return 0;
}
