#!/usr/bin/python3
"""Checks that OpenCV dnn (what libgrade runs) and torch give the same outputs for the exported nucleus network.

usage: check_nuclei_onnx.py MODEL.onnx MODEL.onnx.pt IMAGE...   (prints the largest absolute difference of the
sigmoid outputs per image; exits 1 when any exceeds 1e-3)
"""
import os
import sys

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nuclei_net  # noqa: E402


def main():
    onnx_path, pt_path, images = sys.argv[1], sys.argv[2], sys.argv[3:]
    model = nuclei_net.load(pt_path)
    net = cv2.dnn.readNetFromONNX(onnx_path)
    worst = 0.0
    for path in images:
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        h, w = (rgb.shape[0] // 8) * 8, (rgb.shape[1] // 8) * 8
        rgb = rgb[:h, :w]
        # The same input as libgrade: (I - 127.5) / 255, NCHW.
        blob = cv2.dnn.blobFromImage(rgb, 1.0 / 255, (w, h), (127.5, 127.5, 127.5), False, False)
        net.setInput(blob)
        a = 1 / (1 + np.exp(-net.forward()))
        with torch.no_grad():
            b = torch.sigmoid(model(torch.from_numpy(blob))).numpy()
        d = float(np.abs(a - b).max())
        worst = max(worst, d)
        print(f"{os.path.basename(path)} {w}x{h}: max |opencv - torch| = {d:.2e}")
    sys.exit(0 if worst < 1e-3 else 1)


if __name__ == "__main__":
    main()
