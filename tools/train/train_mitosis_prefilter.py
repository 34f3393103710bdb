#!/usr/bin/python3
"""Trains the mitosis pre-filter (libgrade/models/mitosis_pre.onnx): a tiny CNN on 16x16 RGB crops at 1 um/px (the
64x64 classifier crop area-averaged 4x, cv::INTER_AREA) that rejects the plainly non-mitotic candidates before the main
classifier runs, for speed. Same data, candidates, labels and held-out split as train_mitosis.py (see there):

  nice -n 10 /usr/bin/python3 tools/train/train_mitosis_prefilter.py --candidates /tmp/mitosis_candidates.csv \
      --data ../shared/data --out libgrade/models/mitosis_pre.onnx
"""
import argparse
import csv
import math
import os
import random
import sys
import time
from collections import defaultdict

import cv2
import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_mitosis as tm  # noqa: E402

SMALL = 16


class PreNet(nn.Module):
    def __init__(self):
        super().__init__()

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*block(3, 8), nn.MaxPool2d(2), *block(8, 16), nn.MaxPool2d(2), *block(16, 32),
                                      nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(32, 1)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


def shrink(batch):
    """N x 64 x 64 x 3 uint8 -> N x 3 x 16 x 16 float 0..1, exactly as the C++ code (INTER_AREA, then /255)."""
    out = np.stack([cv2.resize(np.ascontiguousarray(c), (SMALL, SMALL), interpolation=cv2.INTER_AREA) for c in batch])
    return torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", required=True)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    random.seed(a.seed)
    t0 = time.time()
    by_image = tm.load_candidates(a.candidates)
    gt = defaultdict(list)
    for r in csv.DictReader(open(os.path.join(a.data, "mitosis/amibr/mitoses.csv"))):
        gt[r["patch"]].append((float(r["x"]), float(r["y"])))
    groups_by_set = defaultdict(set)
    for (s, _), rows in by_image.items():
        groups_by_set[s].add(rows[0]["group"])
    held = tm.held_out_groups(groups_by_set)
    X = {"train": [], "test": []}
    Y = {"train": [], "test": []}
    for (s, name), rows in sorted(by_image.items()):
        r0 = rows[0]
        split = "test" if r0["group"] in held else "train"
        img = tm.work_image(r0["path"], float(r0["mpp"]))
        sx, sy = img.shape[1] / int(r0["width"]), img.shape[0] / int(r0["height"])
        figs = gt.get(name, []) if s == "amibr" else []
        pts, labels = [], []
        for r in rows:
            if r["x"] == "":
                continue
            x, y = float(r["x"]), float(r["y"])
            d = min((math.hypot(x - fx, y - fy) for fx, fy in figs), default=1e9)
            pts.append((x, y))
            labels.append(1 if d <= 30 else 0)  # the pre-filter must keep everything the detector could match
        if pts:
            X[split] += tm.crops_at(img, pts, sx, sy, 0)
            Y[split] += labels
    for k in X:
        X[k] = np.stack(X[k])
        Y[k] = np.array(Y[k], np.float32)
        print(f"{k}: {len(Y[k])} crops, {int(Y[k].sum())} positive", flush=True)
    net = PreNet()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    rng = np.random.default_rng(a.seed)
    pos = np.nonzero(Y["train"] == 1)[0]
    neg = np.nonzero(Y["train"] == 0)[0]
    lossf = nn.BCEWithLogitsLoss()
    for ep in range(a.epochs):
        net.train()
        idx = np.concatenate([pos, pos, neg])
        rng.shuffle(idx)
        for g in opt.param_groups:
            g["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * ep / a.epochs))
        for b in range(0, len(idx), 256):
            bi = idx[b:b + 256]
            crops = X["train"][bi]
            k = int(rng.integers(4))
            crops = np.rot90(crops, k, axes=(1, 2))
            if rng.random() < 0.5:
                crops = crops[:, :, ::-1]
            xb = shrink(crops)
            gain = torch.from_numpy(rng.uniform(0.85, 1.15, (len(bi), 3, 1, 1)).astype(np.float32))
            xb = torch.clamp(xb ** gain, 0, 1)
            opt.zero_grad()
            loss = lossf(net(xb), torch.from_numpy(Y["train"][bi]).unsqueeze(1))
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            s = torch.sigmoid(net(shrink(X["test"])))[:, 0].numpy()
        yt = Y["test"] == 1
        msg = []
        for q in (0.995, 0.99, 0.98):
            t = np.quantile(s[yt], 1 - q)
            msg.append(f"keep {q:.3f} of positives at t={t:.4f}: passes {np.mean(s >= t):.3f} of candidates")
        print(f"epoch {ep + 1} ({time.time() - t0:.0f}s): " + "; ".join(msg), flush=True)
    net.eval()
    dummy = torch.zeros(1, 3, SMALL, SMALL)
    torch.onnx.export(net, dummy, a.out, input_names=["input"], output_names=["logit"], opset_version=11,
                      dynamic_axes={"input": {0: "n"}, "logit": {0: "n"}}, do_constant_folding=True)
    import check_mitosis_onnx
    check_mitosis_onnx.fix(a.out)
    x = np.random.default_rng(0).random((4, 3, SMALL, SMALL), dtype=np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x))[:, 0].numpy()
    d = cv2.dnn.readNetFromONNX(a.out)
    d.setInput(x)
    print(f"wrote {a.out}; cv2.dnn vs torch max |logit diff| {np.max(np.abs(d.forward().reshape(-1) - ref)):.2e}")


if __name__ == "__main__":
    main()
