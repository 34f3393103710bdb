#pragma once
// A pool of OpenCV dnn networks loaded from one ONNX model. A cv::dnn::Net must not run two forward passes at once, so
// each worker borrows one for a while (Lease) and gives it back; a returned network keeps its loaded graph and its
// allocated buffers, so the next borrower (another tile, another thread, the next slide) pays neither the ONNX parse
// nor the first pass's allocations again. The pool grows to the number of networks in use at once.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <opencv2/dnn.hpp>

#include "grade/error.hpp"

namespace grade::detail {

struct NetPool {
  std::vector<unsigned char> bytes;
  std::string what = "network";  // names the model in error messages
  mutable std::mutex mutex;
  mutable std::vector<std::unique_ptr<cv::dnn::Net>> pool;

  std::unique_ptr<cv::dnn::Net> acquire() const {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!pool.empty()) {
        auto net = std::move(pool.back());
        pool.pop_back();
        return net;
      }
    }
    try {
      auto net = std::make_unique<cv::dnn::Net>(cv::dnn::readNetFromONNX(bytes));
      net->setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
      net->setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
      return net;
    } catch (const cv::Exception& e) {
      throw Error(ErrorCode::model, what + ": cannot load the ONNX model: " + e.what());
    }
  }
  void release(std::unique_ptr<cv::dnn::Net> net) const {
    std::lock_guard<std::mutex> lock(mutex);
    pool.push_back(std::move(net));
  }
  // Borrows a network for the scope of the object.
  struct Lease {
    const NetPool* owner;
    std::unique_ptr<cv::dnn::Net> net;
    explicit Lease(const NetPool& p) : owner(&p), net(p.acquire()) {}
    ~Lease() { owner->release(std::move(net)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
  };
  // Loads the network and checks that an N x 3 x side x side input gives `per_crop` outputs per crop.
  void check(int side, int per_crop = 1) const {
    Lease lease(*this);
    try {
      const int shape[] = {2, 3, side, side};
      cv::Mat blob(4, shape, CV_32F, cv::Scalar(0.5));
      lease.net->setInput(blob);
      cv::Mat out = lease.net->forward();
      if (out.total() != 2 * static_cast<size_t>(per_crop))
        throw Error(ErrorCode::model, what + ": expected " + std::to_string(per_crop) + " output(s) per crop, got " +
                                          std::to_string(out.total()) + " for 2 crops");
    } catch (const cv::Exception& e) {
      throw Error(ErrorCode::model, what + ": the ONNX model does not run: " + e.what());
    }
  }
};

}  // namespace grade::detail
