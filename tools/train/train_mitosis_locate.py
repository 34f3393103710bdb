#!/usr/bin/python3
"""Trains libgrade's mitosis locator (libgrade/models/mitosis_locate.onnx): given a detection, where is the centre of
its mitotic figure?

Why: the detector finds a figure from one of its dark masses (a clump of a prometaphase or an atypical figure spread
around an empty centre, one end of an anaphase, a daughter of a telophase), and the mark then lies up to ~11 um from
the figure's centre, outside the 7.5 um match radius of ../shared/eval/eval_mitosis.py: one figure, counted once, but
scored as a false positive and a miss. In the cross-validated detections, 11 of the 16 false positives at the operating
threshold were such marks (benchmarks/README.md, "Mitosis").

The network: a 128 x 128 crop at 0.25 um/px (32 um) centred on the detection, averaged 2x2 to 64 x 64 (0.5 um/px) as
libgrade fills the input, -> fully convolutional conv / batch-norm / ReLU (two 2x2 max-pools, then dilated convolutions
for a ~30 um field) -> one logit per 2 um cell (16 x 16). libgrade takes the soft-argmax of that map (softmax, then the
mean cell centre) as the figure's centre. A heat map rather than a regression head keeps the network translation
equivariant, which a few thousand figures can train.

Data: every figure of ../shared/data/mitosis/amibr/mitoses.csv in the training source groups (same split rule and
--fold as train_mitosis.py), each epoch seen from --starts (2) new start points: with probability 0.35 one of
libgrade's stage-1 candidates within 44 px (11 um) of it (where detections really start), otherwise a point drawn
uniformly in the disc of 44 px around it; the target is the figure, or the nearest figure to the start when a patch
holds several. Any rotation, mirror images, +-10 % scale, stain and brightness jitter. Loss: L1 distance (um) between
soft-argmax and target.

Reproducible (fixed seeds, CPU):
  build/benchmarks/bench_mitosis_quality --dump-candidates /tmp/mitosis_centroids.csv
  /usr/bin/python3 tools/train/train_mitosis_locate.py --candidates /tmp/mitosis_centroids.csv --data ../shared/data \\
      --epochs 20 --threads 1 --out libgrade/models/mitosis_locate.onnx      # ~9 min
  # cross-validation: the same with --fold K (K = 0, 1, 2) and their own --out, then bench_mitosis_quality --fold K
  # --locate OUT (benchmarks/README.md, "Mitosis")
"""
import argparse
import csv
import math
import os
import sys
import time
from collections import defaultdict

import cv2
import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_mitosis import colour_jitter, export, held_out_groups  # noqa: E402

SIDE = 128          # crop side at 0.25 um/px
CELL = 8            # crop pixels per output cell (2 um)
CELLS = SIDE // CELL
REACH = 44          # start points lie within this many crop pixels of their figure
MARGIN = 192        # mirrored border around each patch, enough for any rotated crop of a start near the edge


def block(i, o, dilation=1):
    return [nn.Conv2d(i, o, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(o),
            nn.ReLU(inplace=True)]


class LocNet(nn.Module):
    """Input N x 3 x 64 x 64 (the crop at 0.5 um/px, 0..1); output N x 1 x 16 x 16 logits, one per 2 um cell."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            *block(3, 16), *block(16, 16), nn.MaxPool2d(2),                          # 32 x 32, 1 um
            *block(16, 32), *block(32, 32), nn.MaxPool2d(2),                         # 16 x 16, 2 um
            *block(32, 48), *block(48, 48, 2), *block(48, 48, 4), *block(48, 48, 2),  # field ~34 um
            nn.Conv2d(48, 1, 1))

    def forward(self, x):
        return self.features(x)


def cell_centres():
    """Centre of each output cell, in crop pixels relative to the crop's centre pixel (index SIDE / 2)."""
    c = torch.arange(CELLS, dtype=torch.float32) * CELL + (CELL - 1) / 2.0 - SIDE // 2
    return c


def soft_argmax(logits):
    """N x 1 x C x C logits -> N x 2 (x, y) offsets in crop pixels, as libgrade computes them."""
    n = logits.shape[0]
    p = torch.softmax(logits.reshape(n, -1), 1).reshape(n, CELLS, CELLS)
    c = cell_centres()
    return torch.stack([(p.sum(1) * c).sum(1), (p.sum(2) * c).sum(1)], 1)


def crop(padded, start, angle, scale, mirror):
    """The crop around `start` (patch pixels) that libgrade makes (no rotation: exactly pixels floor(start) - 64 ..
    + 63), rotated by `angle` degrees, scaled and mirrored about its centre. Returns the crop and the 2x3 matrix from
    patch pixels to crop pixels."""
    c = np.floor(np.asarray(start, np.float64))
    a = math.radians(angle)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * scale
    if mirror:
        r = r @ np.array([[-1.0, 0.0], [0.0, 1.0]])
    m = np.zeros((2, 3))
    m[:, :2] = r
    m[:, 2] = SIDE // 2 - r @ c
    src = m.copy()
    src[:, 2] -= r @ np.array([MARGIN, MARGIN], np.float64)  # the padded image's pixel (MARGIN, MARGIN) is (0, 0)
    out = cv2.warpAffine(padded, src, (SIDE, SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out, m


def net_input(crops):
    """N x SIDE x SIDE x 3 float crops in 0..1 -> N x 3 x 64 x 64 tensor (2x2 averages)."""
    x = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
    return torch.nn.functional.avg_pool2d(x, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", help="stage-1 candidates CSV (bench_mitosis_quality --dump-candidates)")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out")
    ap.add_argument("--fold", type=int, default=3, choices=range(4), help="held-out quarter, as train_mitosis.py")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--starts", type=int, default=2, help="start points per figure and epoch")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--patterns", metavar="ONNX", help="no training: print the offsets this exported locator gives for "
                    "the test patterns of tests/test_mitosis.cpp (OpenCV dnn, soft-argmax in numpy)")
    a = ap.parse_args()
    if a.patterns:
        print_patterns(a.patterns)
        return
    if not a.candidates or not a.out:
        ap.error("--candidates and --out are required")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    t0 = time.time()

    cands = defaultdict(list)
    group_of = {}
    for r in csv.DictReader(open(a.candidates)):
        if r["set"] != "amibr":
            continue
        group_of[r["image"]] = r["group"]
        if r["x"] != "":
            cands[r["image"]].append((float(r["x"]), float(r["y"])))
    figs = defaultdict(list)
    for r in csv.DictReader(open(os.path.join(a.data, "mitosis/amibr/mitoses.csv"))):
        figs[r["patch"]].append((float(r["x"]), float(r["y"])))
    held = held_out_groups({"amibr": set(group_of.values())}, a.fold)
    patches, items = {}, {"train": [], "test": []}
    for name in sorted(figs):
        if name not in group_of:
            sys.exit(f"{a.candidates}: no row for patch {name}: dump the candidates of every AMi-Br patch")
        img = cv2.cvtColor(cv2.imread(os.path.join(a.data, "mitosis/amibr/patches", name + ".png")), cv2.COLOR_BGR2RGB)
        patches[name] = cv2.copyMakeBorder(img, MARGIN, MARGIN, MARGIN, MARGIN, cv2.BORDER_REFLECT_101)
        split = "test" if group_of[name] in held else "train"
        for f in figs[name]:
            near = [c for c in cands[name] if math.dist(c, f) <= REACH
                    and min(math.dist(c, g) for g in figs[name]) == math.dist(c, f)]
            items[split].append((name, f, near))
    print(f"figures: {len(items['train'])} training, {len(items['test'])} held out ({time.time() - t0:.0f}s)",
          flush=True)

    def starts(item, r, realistic=0.35):
        name, f, near = item
        if near and r.random() < realistic:
            s = near[int(r.integers(len(near)))]
        else:
            rad, ang = REACH * math.sqrt(r.random()), r.uniform(0, 2 * math.pi)
            s = (f[0] + rad * math.cos(ang), f[1] + rad * math.sin(ang))
        # the target: the figure nearest the start (a patch may hold several)
        g = min(figs[name], key=lambda q: math.dist(q, s))
        return s, g

    def batch(chosen, r, augment):
        xs, ys, moved = [], [], []
        for item in chosen:
            s, g = starts(item, r)
            if augment:
                angle = r.uniform(0, 360) if r.random() < 0.5 else 90.0 * int(r.integers(4))
                out, m = crop(patches[item[0]], s, angle, r.uniform(0.9, 1.1), r.random() < 0.5)
            else:
                out, m = crop(patches[item[0]], s, 0.0, 1.0, False)
            xs.append(out.astype(np.float32) / 255.0)
            ys.append(m[:, :2] @ np.asarray(g) + m[:, 2] - SIDE // 2)
            moved.append(math.dist(s, g))
        x = np.stack(xs)
        if augment:
            x = colour_jitter(x, r)
        return net_input(x), torch.tensor(np.array(ys), dtype=torch.float32), np.array(moved)

    # fixed held-out starts, no augmentation
    test_r = np.random.default_rng(12345)
    test = [batch(items["test"][i:i + 256], test_r, False) for i in range(0, len(items["test"]), 256)]

    net = LocNet()
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    per_epoch = len(items["train"]) * a.starts
    steps = a.epochs * ((per_epoch + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps)
    for ep in range(a.epochs):
        net.train()
        order = np.concatenate([rng.permutation(len(items["train"])) for _ in range(a.starts)])
        tl, n = 0.0, 0
        for b in range(0, len(order), 64):
            x, y, _ = batch([items["train"][i] for i in order[b:b + 64]], rng, True)
            loss = (soft_argmax(net(x)) - y).norm(dim=1).mean() * 0.25  # um
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tl += float(loss) * len(y)
            n += len(y)
        msg = f"epoch {ep + 1}/{a.epochs} loss {tl / n:.3f} um ({time.time() - t0:.0f}s)"
        if test and (ep % 5 == 4 or ep == a.epochs - 1):
            msg += " | held-out " + evaluate(net, test)
        print(msg, flush=True)
    export(net, a.out, SIDE // 2)
    check_dnn(net, a.out, test[0][0][:64] if test else torch.rand(8, 3, SIDE // 2, SIDE // 2))
    print(f"done in {time.time() - t0:.0f}s")


def evaluate(net, test):
    net.eval()
    before, after = [], []
    with torch.no_grad():
        for x, y, moved in test:
            e = (soft_argmax(net(x)) - y).norm(dim=1).numpy()
            before.append(moved)
            after.append(e)
    b, e = np.concatenate(before), np.concatenate(after)
    return (f"{len(e)} starts: distance to the figure, median {np.median(b):.1f} -> {np.median(e):.1f} px; "
            f"within 30 px {np.mean(b <= 30):.3f} -> {np.mean(e <= 30):.3f}; within 15 px {np.mean(b <= 15):.3f} -> "
            f"{np.mean(e <= 15):.3f}")


def print_patterns(path):
    """Deterministic 128x128 RGB crops, value (x*7 + y*13 + c*50 + k*31) % 256, as tests/test_mitosis.cpp builds
    them: the (dx, dy) crop-pixel offsets the locator gives, computed independently of libgrade."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    crops = np.stack([np.stack([(x * 7 + y * 13 + c * 50 + k * 31) % 256 for c in range(3)], 2) for k in range(3)])
    dnn = cv2.dnn.readNetFromONNX(path)
    dnn.setInput(net_input(crops.astype(np.float32) / 255.0).numpy())
    logits = torch.from_numpy(dnn.forward().reshape(3, 1, CELLS, CELLS))
    print("test patterns (dx, dy):", [[round(float(v), 4) for v in row] for row in soft_argmax(logits)])


def check_dnn(net, path, x):
    dnn = cv2.dnn.readNetFromONNX(path)
    net.eval()
    with torch.no_grad():
        ref = net(x).numpy()
    dnn.setInput(x.numpy())
    got = dnn.forward().reshape(ref.shape)
    print(f"cv2.dnn vs torch on {len(x)} crops: max |logit difference| = {np.max(np.abs(got - ref)):.2e}", flush=True)


if __name__ == "__main__":
    main()
