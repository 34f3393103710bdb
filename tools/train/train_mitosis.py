#!/usr/bin/python3
"""Trains libgrade's mitotic-figure classifiers: the screen (libgrade/models/mitosis_screen.onnx, run on every
candidate), the main network (libgrade/models/mitosis_cnn.onnx, run on the candidates the screen passes) and the
verifier (libgrade/models/mitosis_verify.onnx, a wider view run on the candidates the main network scores high).

Reproducible (fixed seeds, CPU; the committed models were made exactly so, ~15 + 60 min on a shared 2-core machine):
  cmake --build build --target bench_mitosis_quality
  # the committed networks were trained on the density peaks (before candidates moved to their dark mass's centroid)
  build/benchmarks/bench_mitosis_quality --candidate-centroid-um 0 --dump-candidates /tmp/mitosis_candidates.csv
  T="/usr/bin/python3 tools/train/train_mitosis.py --candidates /tmp/mitosis_candidates.csv --data ../shared/data"
  # 1. the single small network of libgrade 0.1; only used to pick the main network's hard negatives
  $T --arch small --out /tmp/mitosis_small.onnx
  # 2. the screen
  $T --arch tiny --neg-per-epoch 100000 --epochs 20 --threads 1 --warp 0.3 --lr 3e-3 --out libgrade/models/mitosis_screen.onnx
  # 3. the main network: all positives, every negative the small network gives >= 0.02, 2000 others per epoch
  $T --arch large --screen /tmp/mitosis_small.onnx --screen-threshold 0.02 --neg-per-epoch 100000 --easy-negatives 2000 \
     --epochs 30 --threads 1 --warp 0.5 --lr 2e-3 --out libgrade/models/mitosis_cnn.onnx
  # 4. the verifier (seventh session; ~35 min at 1 thread with three other trainings on the 2 cores): the main
  #    network's recipe on 128x128 crops averaged to 64x64, with the candidates at their centroids, as libgrade now
  #    makes them (the small network of step 1 still picks the hard negatives)
  build/benchmarks/bench_mitosis_quality --dump-candidates /tmp/mc_centroid.csv
  #    The committed verifier (eighth session) is two such networks, seeds 1 and 2, their logits averaged in one graph:
  for S in 1 2; do
  /usr/bin/python3 tools/train/train_mitosis.py --candidates /tmp/mc_centroid.csv --data ../shared/data --arch context \
     --screen /tmp/mitosis_small.onnx --screen-threshold 0.02 --neg-per-epoch 100000 --easy-negatives 2000 \
     --epochs 20 --threads 1 --warp 0.5 --lr 2e-3 --seed $S --out /tmp/mitosis_verify_s$S.onnx
  done
  /usr/bin/python3 tools/train/train_mitosis.py --average /tmp/mitosis_verify_s1.onnx /tmp/mitosis_verify_s2.onnx \
     --out libgrade/models/mitosis_verify.onnx
  # held-out summary of a network, behind a screen: --eval NET.onnx [--screen S.onnx --screen-threshold T]
  # cross-validation: the same commands with --fold K (K = 0, 1, 2; the committed networks are fold 3) and
  # their own --out files, then bench_mitosis_quality --fold K --model MAIN --screen SCREEN [--locate L --verify V]
  # --csv cvK.csv per fold
  # (benchmarks/README.md, "Cross-validation")
The screen (tiny) is exported without its first layer, the 2x2 average, which libgrade applies to the crop itself
(class Pooled). The committed screen was exported before that and converted, same weights and outputs, with
  /usr/bin/python3 tools/train/train_mitosis.py --convert-pooled OLD_SCREEN.onnx \
      --out libgrade/models/mitosis_screen.onnx

Data (../shared/data, never copied into the repository):
  - positives: every candidate of libgrade's own stage 1 (find_mitosis_candidates, dumped by the benchmark above) within
    16 px (4 um) of a figure listed in mitosis/amibr/mitoses.csv, plus a crop centred on each listed figure;
  - negatives: every other candidate in the same AMi-Br patches more than 30 px from every figure (they are fully
    annotated; candidates 16-30 px from a figure are left out of training) and every candidate in the
    nucleus images (nuclei/consep, monuseg, cpm15), where figures are rare.
Split by source image: the groups (AMi-Br dataset/source_image, CoNSeP source image train_N, MoNuSeg / CPM-15 image)
are sorted per set and every 4th (index % 4 == 3) is held out; the model is trained on the other 3/4 only, so that
benchmarks/bench_mitosis_quality measures it on unseen source images.

Crops: 64x64 RGB at 0.25 um/px (the verifier, --arch context: 128x128, averaged 2x2 by its first layer, which is
exported without it, as the screen) centred on floor(candidate) (image edges mirrored, BORDER_REFLECT_101), scaled to
0..1, exactly as libgrade/src/mitosis.cpp makes them. The network is plain conv / batch-norm / ReLU / max-pool with
global average pooling, which OpenCV 4.6 dnn runs; the script checks cv2.dnn against torch on held-out crops.
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

CROP = 64  # crop side at 0.25 um/px (128 for --arch context, set in main)
PAD = 8  # extra context around the crop for shift augmentation
CONTEXT_CROP = 128


def held_out_groups(groups_by_set, fold=3):
    held = set()
    for s, gs in groups_by_set.items():
        for i, g in enumerate(sorted(gs)):
            if i % 4 == fold:
                held.add(g)
    return held


def block(i, o):
    return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]


class Net(nn.Module):
    """"tiny": the screen (15k parameters, ~1 M multiply-adds per crop on the crop averaged to 0.5 um/px), run on
    every candidate; "large": the main classifier (0.28 M parameters, ~28 M multiply-adds), run only on the candidates
    the screen passes; "small" (48k parameters, 4.6 M multiply-adds): the single network of libgrade 0.1; "context": the
    verifier, the large network's layers on a 128x128 crop (32 um) averaged to 64x64 at 0.5 um/px, run only on the
    candidates the main network already scores high (MitosisParams::verify_from)."""

    def __init__(self, arch="small"):
        super().__init__()
        if arch == "tiny":
            layers = [nn.AvgPool2d(2),                     # 64 -> 32 (0.5 um/px)
                      *block(3, 8), nn.MaxPool2d(2),       # 16
                      *block(8, 16), nn.MaxPool2d(2),      # 8
                      *block(16, 32), nn.MaxPool2d(2),     # 4
                      *block(32, 32)]
            width = 32
        elif arch == "small":
            layers = [*block(3, 8), nn.MaxPool2d(2),     # 64 -> 32
                      *block(8, 16), nn.MaxPool2d(2),    # 16
                      *block(16, 32), nn.MaxPool2d(2),   # 8
                      *block(32, 48), nn.MaxPool2d(2),   # 4
                      *block(48, 64)]
            width = 64
        elif arch in ("large", "context"):
            layers = [nn.AvgPool2d(2)] if arch == "context" else []    # context: 128 -> 64 (0.5 um/px)
            layers += [*block(3, 16), nn.MaxPool2d(2),                   # 64 -> 32
                      *block(16, 32), nn.MaxPool2d(2),                   # 16
                      *block(32, 64), *block(64, 64), nn.MaxPool2d(2),   # 8
                      *block(64, 128), nn.MaxPool2d(2),                  # 4
                      *block(128, 128)]
            width = 128
        else:
            raise ValueError(arch)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.drop = nn.Dropout(0.3 if arch in ("large", "context") else 0.0)
        self.fc = nn.Linear(width, 1)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(self.features(x), 1)))


class Pooled(nn.Module):
    """The exported form of a network that starts by averaging the crop 2x2 ("tiny"): the layers after that average,
    on the 32x32 crop at 0.5 um/px. libgrade averages each 64x64 crop itself while it fills the input (a quarter of
    the floats to convert and copy, and no pooling layer in the network: ~30 % of the screen's cost per candidate)."""

    def __init__(self, net):
        super().__init__()
        self.features = nn.Sequential(*list(net.features)[1:])
        self.drop, self.fc = net.drop, net.fc

    forward = Net.forward  # the same head on the shortened features


def starts_with_pool(net):
    return isinstance(net.features[0], nn.AvgPool2d)


def onnx_side(path):
    """Input side of an exported network: 64 (the crop) or 32 (the crop averaged 2x2, see Pooled)."""
    import onnx
    return onnx.load(path).graph.input[0].type.tensor_type.shape.dim[2].dim_value


def pool2(x):
    """2x2 average of N x 3 x 64 x 64 crops, as libgrade computes the screen's input."""
    return torch.nn.functional.avg_pool2d(x, 2)


def dnn_input(path, x):
    """The input the exported network at `path` takes for crops `x` (pooled for a Pooled export), as numpy."""
    return (pool2(x) if onnx_side(path) < CROP else x).numpy()


def load_candidates(path):
    rows = list(csv.DictReader(open(path)))
    by_image = defaultdict(list)
    for r in rows:
        by_image[(r["set"], r["image"])].append(r)
    return by_image


def work_image(path, mpp, working=0.25):
    img = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    scale = mpp / working
    if abs(scale - 1.0) > 0.02:
        w = max(1, int(round(img.shape[1] * scale)))
        h = max(1, int(round(img.shape[0] * scale)))
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return img


def crops_at(img, pts, sx, sy, pad):
    """80x80 (CROP + 2 pad) crops whose centre 64x64 is what the C++ code feeds the network for each point."""
    m = CROP // 2 + pad + 2
    big = cv2.copyMakeBorder(img, m, m, m, m, cv2.BORDER_REFLECT_101)
    out = []
    for (x, y) in pts:
        left = int(math.floor(x * sx)) - CROP // 2 - pad + m
        top = int(math.floor(y * sy)) - CROP // 2 - pad + m
        out.append(big[top:top + CROP + 2 * pad, left:left + CROP + 2 * pad])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", help="stage-1 candidates CSV (bench_mitosis_quality --dump-candidates)")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--neg-per-epoch", type=int, default=9000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fold", type=int, default=3, choices=range(4),
                    help="hold out the source groups with sorted index %% 4 == FOLD (3: the committed networks' split; "
                    "0-2 for cross-validation, bench_mitosis_quality --fold)")
    ap.add_argument("--init-only", action="store_true", help="export the untrained network (for bootstrapping)")
    ap.add_argument("--scores-out", help="write held-out candidate scores (CSV) here")
    ap.add_argument("--arch", choices=["tiny", "small", "large", "context"], default="small")
    ap.add_argument("--screen", help="a trained screen network (ONNX): train only on the candidates it passes")
    ap.add_argument("--screen-threshold", type=float, default=0.02,
                    help="screen probability a training negative must reach to be used (held-out: cascade scores)")
    ap.add_argument("--easy-negatives", type=int, default=2000,
                    help="with --screen: screened-out negatives added per epoch, so the network stays sane on them")
    ap.add_argument("--eval", metavar="ONNX", help="no training: print the held-out summary of this trained network "
                    "(behind --screen if given)")
    ap.add_argument("--nuclei-repeat", type=int, default=1,
                    help="with --screen: each hard negative from the nucleus sets is seen this many times per epoch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warp", type=float, default=0.0, help="fraction of crops also rotated and scaled")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--convert-pooled", metavar="ONNX", help="no training: rewrite a 64x64-input screen exported "
                    "before Pooled existed into the 32x32 pooled form (--out), dropping its leading Pad/AveragePool")
    ap.add_argument("--average", metavar="ONNX", nargs="+", help="no training: write one network (--out) whose logit "
                    "is the mean of these networks' logits (same input; an ensemble, e.g. of two verifiers)")
    a = ap.parse_args()
    if a.convert_pooled:
        convert_pooled(a.convert_pooled, a.out)
        return
    if a.average:
        average(a.average, a.out)
        return
    global CROP
    if a.arch == "context":
        CROP = CONTEXT_CROP
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    random.seed(a.seed)
    net = Net(a.arch)
    if a.init_only:
        export(net, a.out)
        return
    if not a.candidates:
        ap.error("--candidates is required")

    t0 = time.time()
    by_image = load_candidates(a.candidates)
    gt = defaultdict(list)
    for r in csv.DictReader(open(os.path.join(a.data, "mitosis/amibr/mitoses.csv"))):
        gt[r["patch"]].append((float(r["x"]), float(r["y"]), r["class"]))
    groups_by_set = defaultdict(set)
    for (s, _), rows in by_image.items():
        groups_by_set[s].add(rows[0]["group"])
    held = held_out_groups(groups_by_set, a.fold)

    X = {"train": [], "test": []}
    Y = {"train": [], "test": []}
    META = {"train": [], "test": []}
    for (s, name), rows in sorted(by_image.items()):
        r0 = rows[0]
        split = "test" if r0["group"] in held else "train"
        mpp = float(r0["mpp"])
        img = work_image(r0["path"], mpp)
        src_h, src_w = int(r0["height"]), int(r0["width"])
        sx, sy = img.shape[1] / src_w, img.shape[0] / src_h
        pts, labels = [], []
        figs = gt.get(name, []) if s == "amibr" else []
        for r in rows:
            if r["x"] == "":
                continue  # an image without candidates
            x, y = float(r["x"]), float(r["y"])
            d = min((math.hypot(x - fx, y - fy) for fx, fy, _ in figs), default=1e9)
            if split == "train" and 16 < d <= 30:
                continue  # near a figure but not on it: neither a clean positive nor a negative
            pts.append((x, y))
            labels.append(1 if d <= (16 if split == "train" else 30) else 0)
        if split == "train":
            for fx, fy, _ in figs:  # the annotated centres themselves, as extra positives
                pts.append((fx, fy))
                labels.append(1)
        if not pts:
            continue
        X[split] += crops_at(img, pts, sx, sy, PAD)
        Y[split] += labels
        META[split] += [(s, name, x, y) for (x, y) in pts]
    for k in X:
        X[k] = np.stack(X[k]) if X[k] else np.zeros((0, CROP + 2 * PAD, CROP + 2 * PAD, 3), np.uint8)
        Y[k] = np.array(Y[k], np.float32)
        print(f"{k}: {len(Y[k])} crops, {int(Y[k].sum())} positive", flush=True)
    print(f"data loaded in {time.time() - t0:.0f}s", flush=True)

    # (--eval needs the held-out scores only)
    screen = {k: screen_scores(a.screen, X[k]) if a.screen and (k == "test" or not a.eval) else None for k in X}
    if a.eval:
        print("held-out " + summary(cascade(screen_scores(a.eval, X["test"]), screen["test"], a.screen_threshold),
                                    Y["test"]), flush=True)
        return
    pos = np.nonzero(Y["train"] == 1)[0]
    neg = np.nonzero(Y["train"] == 0)[0]
    easy = np.zeros(0, np.int64)
    if a.screen:
        hard = screen["train"][neg] >= a.screen_threshold
        easy, neg = neg[~hard], neg[hard]
        print(f"screen {a.screen}: {len(neg)} training negatives pass at {a.screen_threshold}, {len(easy)} do not; "
              f"positives passing: {np.mean(screen['train'][pos] >= a.screen_threshold):.4f}", flush=True)
    n_easy = min(a.easy_negatives, len(easy)) if a.screen else 0
    if a.nuclei_repeat > 1:
        from_nuclei = np.array([META["train"][i][0] != "amibr" for i in neg], bool)
        print(f"{int(from_nuclei.sum())} of the {len(neg)} hard negatives are from the nucleus sets: "
              f"{a.nuclei_repeat} times each per epoch", flush=True)
        neg = np.concatenate([neg] + [neg[from_nuclei]] * (a.nuclei_repeat - 1))
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    steps_per_epoch = (len(pos) + min(a.neg_per_epoch, len(neg)) + n_easy) // 128 + 1
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.epochs * steps_per_epoch)
    lossf = nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(a.seed)
    for ep in range(a.epochs):
        net.train()
        idx = np.concatenate([pos, rng.choice(neg, min(a.neg_per_epoch, len(neg)), replace=False),
                              rng.choice(easy, n_easy, replace=False) if n_easy else np.zeros(0, np.int64)])
        rng.shuffle(idx)
        tl, n = 0.0, 0
        for b in range(0, len(idx), 128):
            bi = idx[b:b + 128]
            xb = augment(X["train"][bi], rng, a.warp)
            yb = torch.from_numpy(Y["train"][bi]).unsqueeze(1)
            opt.zero_grad()
            loss = lossf(net(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            tl += float(loss) * len(bi)
            n += len(bi)
        msg = f"epoch {ep + 1}/{a.epochs} loss {tl / n:.4f} ({time.time() - t0:.0f}s)"
        if len(Y["test"]) and (ep % 3 == 2 or ep == a.epochs - 1):
            s = cascade(predict(net, X["test"]), screen["test"], a.screen_threshold)
            msg += " | held-out " + summary(s, Y["test"])
        print(msg, flush=True)
    export(net, a.out)
    if len(Y["test"]):
        s = cascade(predict(net, X["test"]), screen["test"], a.screen_threshold)
        check_dnn(net, a.out, X["test"][:200])
        if a.scores_out:
            with open(a.scores_out, "w") as f:
                f.write("set,image,x,y,label,score\n")
                for (st, name, x, y), lab, sc in zip(META["test"], Y["test"], s):
                    f.write(f"{st},{name},{x},{y},{int(lab)},{sc:.6f}\n")
    # the synthetic inputs of tests/test_mitosis.cpp ("classifier matches torch"): print torch's logits for them
    net.eval()
    with torch.no_grad():
        print("test patterns (logits):", [round(float(v), 5) for v in net(torch.from_numpy(test_patterns()))[:, 0]])
    print(f"done in {time.time() - t0:.0f}s")


def test_patterns():
    """Deterministic 64x64 RGB crops also built by tests/test_mitosis.cpp: value (x*7 + y*13 + c*50 + k*31) % 256."""
    out = np.zeros((3, 3, CROP, CROP), np.float32)
    for k in range(3):
        for c in range(3):
            for y in range(CROP):
                for x in range(CROP):
                    out[k, c, y, x] = ((x * 7 + y * 13 + c * 50 + k * 31) % 256) / 255.0
    return out


def augment(batch, rng, warp=0.0):
    """Random shift (+-4 px), flips, 90-degree turns, (with probability `warp`) rotation and scale, stain-like colour jitter; returns N x 3 x 64 x 64 tensors."""
    n = len(batch)
    out = np.empty((n, CROP, CROP, 3), np.float32)
    for i in range(n):
        dx, dy = rng.integers(PAD - 4, PAD + 5, 2)
        if warp > 0 and rng.random() < warp:  # (no draw at warp 0: the stream of the earlier runs)
            # any angle and +-12 % scale (sizes of nuclei vary between scanners and tissues)
            cx, cy = CROP / 2 + dx, CROP / 2 + dy
            m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(rng.uniform(0, 360)), float(rng.uniform(0.88, 1.12)))
            m[0, 2] += CROP / 2 - cx
            m[1, 2] += CROP / 2 - cy
            c = cv2.warpAffine(batch[i], m, (CROP, CROP), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        else:
            c = batch[i, dy:dy + CROP, dx:dx + CROP]
        k = int(rng.integers(4))
        c = np.rot90(c, k)
        if rng.random() < 0.5:
            c = c[:, ::-1]
        out[i] = c
    out /= 255.0
    return torch.from_numpy(np.ascontiguousarray(colour_jitter(out, rng).transpose(0, 3, 1, 2)))


def colour_jitter(out, rng):
    """Stain-like colour augmentation of N x H x W x 3 crops in 0..1: a per-crop, per-channel gain in optical density
    (stain strength), then a brightness offset."""
    n = len(out)
    od = -np.log(np.clip(out, 1.0 / 255, 1.0))
    gain = rng.uniform(0.75, 1.3, (n, 1, 1, 3)).astype(np.float32) * rng.uniform(0.85, 1.15, (n, 1, 1, 1)).astype(np.float32)
    od = od * gain
    out = np.exp(-od) + rng.uniform(-0.04, 0.04, (n, 1, 1, 1)).astype(np.float32)
    return np.clip(out, 0, 1)


def screen_scores(path, X):
    """The screen network's probabilities (OpenCV dnn, as at run time) on the centre crops. A screen is a 64x64
    classifier: with --arch context, it sees the middle 64x64 of each 128x128 crop."""
    dnn = cv2.dnn.readNetFromONNX(path)
    out = []
    side, cut = onnx_side(path), (CROP - 64) // 2
    for b in range(0, len(X), 512):
        x = centre(X[b:b + 512])[:, :, cut:cut + 64, cut:cut + 64]
        dnn.setInput((pool2(x) if side < 64 else x).numpy())
        out.append(1.0 / (1.0 + np.exp(-dnn.forward().reshape(-1))))
    return np.concatenate(out) if out else np.zeros(0)


def cascade(main, screen, threshold):
    """Run-time scores: the main network's where the screen passes the candidate, else 0."""
    return main if screen is None else np.where(screen >= threshold, main, 0.0)


def centre(batch):
    c = batch[:, PAD:PAD + CROP, PAD:PAD + CROP].astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(c.transpose(0, 3, 1, 2)))


def predict(net, X):
    net.eval()
    out = []
    with torch.no_grad():
        for b in range(0, len(X), 512):
            out.append(torch.sigmoid(net(centre(X[b:b + 512])))[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros(0)


def summary(s, y):
    pos = y == 1
    res = []
    for t in (0.5, 0.8, 0.9, 0.95, 0.98, 0.99):
        res.append(f"t{t}: rec {np.mean(s[pos] >= t):.3f} fp {int(np.sum(s[~pos] >= t))}")
    return ", ".join(res)


def export(net, path, side=None):
    """Writes `net` as ONNX for OpenCV 4.6 dnn; `side`: its input side (default: a classifier's, 64 or pooled 32)."""
    net.eval()
    side = side or (CROP // 2 if starts_with_pool(net) else CROP)
    dummy = torch.zeros(1, 3, side, side)
    # Pooled shares net's layers: it must be in eval mode too, since export restores the exported module's mode.
    torch.onnx.export(Pooled(net).eval() if starts_with_pool(net) else net, dummy, path, input_names=["input"],
                      output_names=["logit"], opset_version=11,
                      dynamic_axes={"input": {0: "n"}, "logit": {0: "n"}}, do_constant_folding=True)
    # torch 1.13 emits Identity nodes on constant weights, which OpenCV 4.6's importer rejects: fold them away.
    import onnx
    m = onnx.load(path)
    inits = {i.name: i for i in m.graph.initializer}
    for node in [n for n in m.graph.node if n.op_type == "Identity" and n.input[0] in inits]:
        t = onnx.TensorProto()
        t.CopyFrom(inits[node.input[0]])
        t.name = node.output[0]
        m.graph.initializer.append(t)
        m.graph.node.remove(node)
    onnx.checker.check_model(m)
    onnx.save(m, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", flush=True)


def convert_pooled(src, dst):
    """The committed screen was trained and exported before Pooled: its graph starts Pad (of zeros) -> AveragePool 2x2.
    Dropping those two nodes gives exactly the Pooled export of the same weights."""
    import onnx
    m = onnx.load(src)
    g = m.graph
    pool = next(i for i, n in enumerate(g.node) if n.op_type == "AveragePool")
    assert all(n.op_type in ("Constant", "Pad") for n in g.node[:pool]), "unexpected nodes before the pooling"
    out = g.node[pool].output[0]
    del g.node[:pool + 1]
    for n in g.node:
        for k, name in enumerate(n.input):
            if name == out:
                n.input[k] = "input"
    for d in (2, 3):
        g.input[0].type.tensor_type.shape.dim[d].dim_value = CROP // 2
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    x = np.random.default_rng(0).random((64, 3, CROP, CROP), dtype=np.float32)
    a, b = cv2.dnn.readNetFromONNX(src), cv2.dnn.readNetFromONNX(dst)
    a.setInput(x)
    b.setInput(pool2(torch.from_numpy(x)).numpy())
    print(f"wrote {dst}: max |logit difference| to {src} on 64 random crops = "
          f"{np.max(np.abs(a.forward() - b.forward())):.2e}", flush=True)


def average(srcs, dst):
    """One ONNX graph holding every network of `srcs` side by side on the same input, its output the mean of their
    logits: OpenCV runs an ensemble as one network, and libgrade needs no change to use one."""
    import onnx
    from onnx import compose, helper
    ms = [onnx.load(p) for p in srcs]
    inp, out = ms[0].graph.input[0], ms[0].graph.output[0]
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert all([d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == dims for m in ms), \
        "the networks' inputs differ"
    nodes, inits, logits = [], [], []
    for i, m in enumerate(ms):
        g = compose.add_prefix(m, f"m{i}_").graph
        for n in g.node:
            n.input[:] = [inp.name if x == f"m{i}_{inp.name}" else x for x in n.input]
        nodes += g.node
        inits += g.initializer
        logits.append(g.output[0].name)
    inits.append(helper.make_tensor("ensemble_scale", onnx.TensorProto.FLOAT, [], [1.0 / len(ms)]))
    nodes += [helper.make_node("Sum", logits, ["ensemble_sum"]),
              helper.make_node("Mul", ["ensemble_sum", "ensemble_scale"], [out.name])]
    g = helper.make_graph(nodes, "ensemble", [inp], [out], inits)
    m = helper.make_model(g, opset_imports=ms[0].opset_import)
    m.ir_version = ms[0].ir_version
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    x = np.random.default_rng(0).random((16, 3, dims[2], dims[3]), dtype=np.float32)
    ref = []
    for p in srcs:
        n = cv2.dnn.readNetFromONNX(p)
        n.setInput(x)
        ref.append(n.forward().reshape(-1))
    n = cv2.dnn.readNetFromONNX(dst)
    n.setInput(x)
    print(f"wrote {dst} ({os.path.getsize(dst)} bytes): max |logit difference| to the mean of the {len(srcs)} networks "
          f"on 16 random inputs = {np.max(np.abs(n.forward().reshape(-1) - np.mean(ref, axis=0))):.2e}", flush=True)


def check_dnn(net, path, X):
    """OpenCV dnn (the C++ run time) against torch on held-out crops."""
    dnn = cv2.dnn.readNetFromONNX(path)
    x = centre(X)
    net.eval()
    with torch.no_grad():
        ref = net(x)[:, 0].numpy()
    dnn.setInput(dnn_input(path, x))
    got = dnn.forward().reshape(-1)
    print(f"cv2.dnn vs torch on {len(ref)} held-out crops: max |logit difference| = {np.max(np.abs(got - ref)):.2e}",
          flush=True)


if __name__ == "__main__":
    main()
