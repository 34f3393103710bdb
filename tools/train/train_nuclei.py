#!/usr/bin/python3
"""Trains the nucleus segmentation network embedded in libgrade (libgrade/models/nuclei_unet.onnx).

Data: ../shared/data/nuclei/{consep,monuseg,cpm15} (see that folder's README for provenance and licences), every image
resampled to 0.5 um/px (the network's working scale): consep at 0.25 um/px, monuseg at images.csv's mpp, cpm15 at
images.csv's approximate mpp.

Targets per pixel (computed at the source resolution, then area-resampled): nucleus foreground; the distance to the
nucleus boundary normalised per instance to 1 on its medial axis (separates touching nuclei: it dips to 0 between
them, and stays 1 along a thin spindle nucleus's whole axis); spindle (CoNSeP type 4; loss masked elsewhere); with
--hv-weight > 0, each nucleus's horizontal and vertical offset maps (HoVer-Net; -1..1 across the nucleus).

Folds: --fold K of --folds N holds out every image with (hash of its source image) % N == K (CoNSeP tiles are grouped
by their source image, train_<n>); --fold -1 trains on everything (the committed model is not such a run: it is
the fold-1 model, so that fold 1 can score it).

Reproducible: fixed seeds, CPU, torch threads <= 2, when a run ends at --steps rather than at --minutes (the same
command gave the same losses to 4 decimals in two sessions). The committed model is one run from scratch (since the
fourteenth session; 24 000 steps, 55-95 min on one core; before, it took eight stages, benchmarks/README.md "Nuclei";
since the sixteenth session with --scale-jitter 1.6):
  /usr/bin/python3 tools/train/train_nuclei.py --data ../shared/data/nuclei --folds 2 --fold 1 --widths 16,16,32 \
      --hv-weight 2 --lr 3e-3 --steps 24000 --minutes 170 --seed 21 --threads 1 --scale-jitter 1.6 \
      --out /tmp/nuc/sj1.onnx
  cp /tmp/nuc/sj1.onnx libgrade/models/nuclei_unet.onnx
The accurate network (libgrade/models/nuclei_unet_accurate.onnx, NucleiParams::network = accurate; twenty-first
session, 68 min on one core beside the fold-0 run) is the same command with twice the channels and fewer steps:
  /usr/bin/python3 tools/train/train_nuclei.py --data ../shared/data/nuclei --folds 2 --fold 1 --widths 32,32,64 \
      --hv-weight 2 --lr 3e-3 --steps 16000 --minutes 150 --seed 21 --threads 1 --scale-jitter 1.6 \
      --out /tmp/s21/w32f1.onnx
  cp /tmp/s21/w32f1.onnx libgrade/models/nuclei_unet_accurate.onnx
Distillation (tried for a narrower, faster network; not kept, benchmarks/README.md): --teacher WIDE.pt adds the wide
network's outputs as targets, --unlabelled ../shared/data/mitosis/amibr adds crops of unlabelled H&E for them.
"""
import argparse
import csv
import math
import os
import sys
import time
import zlib

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nuclei_net import NucleiNet, export_onnx, load as load_net, macs_per_px  # noqa: E402

WORK_MPP = 0.5


def group_of(dataset, name):
    if dataset == "consep":
        return "consep/" + "_".join(name.split("_")[:2])
    return dataset + "/" + name


def fold_of(group, folds):
    return zlib.crc32(group.encode()) % folds


def targets(lab, sp_ids, edge_px):
    """fg, normalised distance, spindle and contact maps (float32) at the label's resolution. Contact: the pixel lies
    within edge_px of two different nuclei (where touching nuclei meet, and the thin gaps between close ones)."""
    h, w = lab.shape
    fg = (lab > 0).astype(np.float32)
    dist = np.zeros((h, w), np.float32)
    sp = np.zeros((h, w), np.float32)
    hv = np.zeros((2, h, w), np.float32)
    ids = np.unique(lab)
    ids = ids[ids > 0]
    if len(ids):
        objs = __import__("scipy.ndimage", fromlist=["find_objects"]).find_objects(lab)
        for i in ids:
            sl = objs[i - 1]
            if sl is None:
                continue
            y0, y1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
            x0, x1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
            m = (lab[y0:y1, x0:x1] == i).astype(np.uint8)
            d = cv2.distanceTransform(np.pad(m, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
            mx = d.max()
            if mx > 0:
                dist[y0:y1, x0:x1][m > 0] = d[m > 0] / mx
            if i in sp_ids:
                sp[y0:y1, x0:x1][m > 0] = 1.0
            yy, xx = np.nonzero(m)
            for c, q in enumerate((xx, yy)):  # horizontal, vertical offset from the centroid, -1..1 per nucleus
                q = q - q.mean()
                hv[c, y0:y1, x0:x1][yy, xx] = q / max(np.abs(q).max(), 1e-6)
    nd = __import__("scipy.ndimage", fromlist=["grey_dilation"])
    k = 2 * edge_px + 1
    hi = nd.grey_dilation(lab, size=(k, k))
    lo = nd.grey_erosion(np.where(lab > 0, lab, np.iinfo(np.int32).max), size=(k, k))
    contact = ((hi > 0) & (lo < np.iinfo(np.int32).max) & (hi != lo)).astype(np.float32)
    return fg, dist, sp, contact, hv


def load(data_dir):
    items = []
    sp_by_tile = {}
    with open(os.path.join(data_dir, "consep", "nuclei.csv")) as f:
        for r in csv.DictReader(f):
            if r["type"] == "4":
                sp_by_tile.setdefault(r["tile"], set()).add(int(r["id"]))
    mpps = {}
    for ds, col in (("monuseg", "mpp"), ("cpm15", "mpp_approx")):
        with open(os.path.join(data_dir, ds, "images.csv")) as f:
            for r in csv.DictReader(f):
                mpps[(ds, r["image"])] = float(r[col]) if r[col] else 0.25
    for ds in ("consep", "monuseg", "cpm15"):
        for fn in sorted(os.listdir(os.path.join(data_dir, ds, "images"))):
            name = os.path.splitext(fn)[0]
            img = cv2.cvtColor(cv2.imread(os.path.join(data_dir, ds, "images", fn)), cv2.COLOR_BGR2RGB)
            lab = cv2.imread(os.path.join(data_dir, ds, "labels", name + ".png"), cv2.IMREAD_UNCHANGED).astype(np.int32)
            mpp = 0.25 if ds == "consep" else mpps[(ds, name)]
            # contact band: +-1 um at the source resolution
            fg, dist, sp, contact, hv = targets(lab, sp_by_tile.get(name, set()) if ds == "consep" else set(),
                                            max(1, round(1.0 / mpp)))
            s = mpp / WORK_MPP
            size = (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s)))
            rs = lambda a: cv2.resize(a, size, interpolation=cv2.INTER_AREA)
            items.append(dict(ds=ds, name=name, group=group_of(ds, name), img=rs(img),
                              y=np.stack([rs(fg), rs(dist), rs(sp), rs(contact), rs(hv[0]), rs(hv[1])]).astype(np.float32),
                              typed=ds == "consep"))
    return items


# Ruifrok and Johnston's hematoxylin, eosin and residual optical-density vectors (rows, unit length), for --photometric.
HED = np.array([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105], [0.268, 0.570, 0.776]], np.float32)
HED /= np.linalg.norm(HED, axis=1, keepdims=True)
HED_INV = np.linalg.inv(HED).astype(np.float32)


def photometric(od, rng):
    """Scanner and staining variation beyond the per-channel jitter (--photometric): each stain's optical density
    scaled and shifted in the hematoxylin / eosin / residual basis (Tellez et al., Medical Image Analysis 2019, "HED"
    augmentation: pale and dark hematoxylin, more or less eosin), then slight defocus (Gaussian blur, sigma 0.3-1 px
    at 0.5 um/px) and sensor noise, each with probability 1/2. od: (h, w, 3) float32 optical density."""
    hed = od.reshape(-1, 3) @ HED_INV
    hed = hed * rng.uniform(0.7, 1.3, 3).astype(np.float32) + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    od = np.maximum(hed @ HED, 0).reshape(od.shape)
    if rng.random() < 0.5:
        od = cv2.GaussianBlur(od, (0, 0), rng.uniform(0.3, 1.0))
    if rng.random() < 0.5:
        od = od + rng.normal(0, rng.uniform(0.005, 0.03), od.shape).astype(np.float32)
    return od


def crops(items, rng, n, size, weights=None, scale_jitter=0.0, scale_prob=0.5, photometric_prob=0.0):
    """n random crops of side `size`, from items drawn uniformly or with probability `weights`. With scale_jitter S > 1,
    a share scale_prob of the crops is magnified by a factor drawn log-uniformly from [1/S, S] (a region of side
    size / factor resized to `size`), so that the network also sees nuclei larger and smaller than its data's. A share
    photometric_prob of the crops also gets photometric() (off by default: the committed recipe draws no numbers for
    it, so its runs are unchanged)."""
    xs, ys, ts = [], [], []
    for _ in range(n):
        it = items[rng.integers(len(items)) if weights is None else rng.choice(len(items), p=weights)]
        img, y = it["img"], it["y"]
        src = size
        if scale_jitter > 1.0 and rng.random() < scale_prob:
            src = int(round(size / math.exp(rng.uniform(-math.log(scale_jitter), math.log(scale_jitter)))))
        h, w = img.shape[:2]
        ph, pw = max(0, src - h), max(0, src - w)
        if ph or pw:
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
            y = np.pad(y, ((0, 0), (0, ph), (0, pw)), mode="reflect")
            h, w = img.shape[:2]
        r0, c0 = rng.integers(h - src + 1), rng.integers(w - src + 1)
        im = img[r0:r0 + src, c0:c0 + src].astype(np.float32) / 255.0
        yy = y[:, r0:r0 + src, c0:c0 + src]
        if src != size:  # masks nearest; the distance and offset maps (smooth inside nuclei) linearly
            im = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA if src > size else cv2.INTER_LINEAR)
            yy = np.stack([cv2.resize(np.ascontiguousarray(c), (size, size), interpolation=(
                cv2.INTER_LINEAR if k in (1, 4, 5) else cv2.INTER_NEAREST)) for k, c in enumerate(yy)])
        k = rng.integers(4)
        im, yy = np.rot90(im, k, (0, 1)), np.rot90(yy, k, (1, 2))
        flip = rng.random() < 0.5
        if flip:
            im, yy = im[:, ::-1], yy[:, :, ::-1]
        if len(yy) > 4:  # the offset maps turn with the crop: a quarter turn maps (h, v) to (v, -h), a mirror h to -h
            yy = yy.copy()
            for _ in range(k):
                yy[4], yy[5] = yy[5].copy(), -yy[4]
            if flip:
                yy[4] = -yy[4]
        # Stain / scanner variation: jitter in optical density space (per-channel gain and offset), and brightness.
        od = -np.log(np.clip(im, 1.0 / 255, 1.0))
        od = od * rng.uniform(0.75, 1.3, 3)[None, None, :] + rng.uniform(-0.05, 0.05, 3)[None, None, :]
        if photometric_prob > 0 and rng.random() < photometric_prob:
            od = photometric(od.astype(np.float32), rng)
        im = np.clip(np.exp(-od) * rng.uniform(0.92, 1.08), 0, 1)
        xs.append(np.ascontiguousarray(im.transpose(2, 0, 1)).astype(np.float32) - 0.5)
        ys.append(np.ascontiguousarray(yy))
        ts.append(1.0 if it["typed"] else 0.0)
    return torch.tensor(np.stack(xs)), torch.tensor(np.stack(ys)), torch.tensor(ts)


def loss_fn(out, y, typed, contact_weight=0.0, hv_weight=0.0, spindle_weight=0.0):
    """Foreground BCE + Dice, distance MSE (mostly inside nuclei), spindle BCE on typed nuclei. With contact_weight,
    pixels where nuclei touch weigh 1 + contact_weight times more in the first two (as the original U-Net's weight map
    does): those few pixels decide whether touching nuclei are separated. With spindle_weight, CoNSeP's spindle nuclei
    and a ~1 um ring around them weigh 1 + spindle_weight times more in those two and in the offset loss (fifteenth
    session: spindle F1 +0.003, not kept; benchmarks/README.md)."""
    fg_t, d_t, sp_t = y[:, 0], y[:, 1], y[:, 2]
    fg_l, d_l, sp_l = out[:, 0], out[:, 1], out[:, 2]
    cw = 1 + contact_weight * y[:, 3]
    if spindle_weight > 0:  # spindle nuclei of typed crops and a ~1 um ring around them weigh 1 + spindle_weight
        ring = F.max_pool2d(y[:, 2:3], 5, stride=1, padding=2)[:, 0] * typed[:, None, None]
        cw = cw + spindle_weight * ring
    p = torch.sigmoid(fg_l)
    l_fg = ((F.binary_cross_entropy_with_logits(fg_l, fg_t, reduction="none") * cw).mean()
            + 1 - (2 * (p * fg_t).sum() + 1) / (p.sum() + fg_t.sum() + 1))
    w = (fg_t > 0.5).float()
    l_d = ((torch.sigmoid(d_l) - d_t) ** 2 * (0.2 + w) * cw).sum() / (0.2 * w.numel() + w.sum()) * 4
    tm = typed[:, None, None] * w
    l_sp = (F.binary_cross_entropy_with_logits(sp_l, sp_t, reduction="none") * tm).sum() / (tm.sum() + 1)
    loss = l_fg + l_d + 0.5 * l_sp
    if out.shape[1] > 3 and hv_weight > 0:
        loss = loss + hv_weight * hv_loss(out[:, 3:5], y[:, 4:6], fg_t, cw if spindle_weight > 0 else None)
    return loss


SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4


def hv_loss(hv_l, hv_t, fg_t, weight=None):
    """The offset maps (as in HoVer-Net, Graham et al. 2019): squared error of the values (predicted through a
    sigmoid, 0..1 for -1..1) and of their derivative along their own axis, inside nuclei. The derivative term makes the
    maps flip sharply where two nuclei touch, which is what the post-processing reads."""
    p = torch.sigmoid(hv_l) * 2 - 1
    w = fg_t[:, None]
    n = w.sum() * 2 + 1
    if weight is not None:  # per-pixel weights (normalised by the unweighted count, as the other losses are)
        w = w * weight[:, None]
    l_val = ((p - hv_t) ** 2 * w).sum() / n
    k = torch.stack([SOBEL, SOBEL.t()])[:, None]  # d/dx for h, d/dy for v

    def grad(a):
        return F.conv2d(F.pad(a, (1, 1, 1, 1), mode="replicate"), k, groups=2)

    l_grad = ((grad(p) - grad(hv_t)) ** 2 * w).sum() / n
    return l_val + l_grad


def load_unlabelled(amibr_dir, side):
    """The AMi-Br mitosis patches (0.25 um/px) at the working scale, a source of unlabelled H&E for distillation, as
    items for crops() (their label maps are zeros, unused)."""
    out = []
    for fn in sorted(os.listdir(os.path.join(amibr_dir, "patches"))):
        img = cv2.cvtColor(cv2.imread(os.path.join(amibr_dir, "patches", fn)), cv2.COLOR_BGR2RGB)
        s = 0.25 / WORK_MPP
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        if min(img.shape[:2]) >= side:
            out.append(dict(img=img, y=np.broadcast_to(np.zeros((4, 1, 1), np.float32), (4,) + img.shape[:2]),
                            typed=False))
    return out


def flipped_mean(model, x, flips):
    """The model's logits averaged over `flips` (1, 2 or 4) mirrored copies of x, as segment_nuclei's test-time flips
    do (libgrade/src/nuclei.cpp): each copy's outputs mirrored back, a left-right mirror negating the horizontal
    offset, an up-down one the vertical."""
    total = None
    for t in range(flips):
        dims = [d for d, on in ((3, t & 1), (2, t & 2)) if on]
        o = model(torch.flip(x, dims) if dims else x)
        if dims:
            o = torch.flip(o, dims)
            if o.shape[1] > 3:
                o = o.clone()
                if t & 1:
                    o[:, 3] = -o[:, 3]
                if t & 2:
                    o[:, 4] = -o[:, 4]
        total = o if total is None else total + o
    return total / flips


def distill_loss(out, ref):
    """The student's outputs against the teacher's (probabilities): foreground and distance everywhere, spindle where
    the teacher sees a nucleus."""
    p, q = torch.sigmoid(out), torch.sigmoid(ref)
    w = (q[:, 0] > 0.5).float()
    return (F.binary_cross_entropy_with_logits(out[:, 0], q[:, 0]) + 4 * ((p[:, 1] - q[:, 1]) ** 2).mean()
            + 0.5 * (F.binary_cross_entropy_with_logits(out[:, 2], q[:, 2], reduction="none") * w).sum() / (w.sum() + 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/nuclei")
    ap.add_argument("--fold", type=int, default=-1)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=20.0, help="safety limit on wall-clock time")
    ap.add_argument("--steps", type=int, default=1200, help="optimiser steps (the schedule; reproducible)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--init", help="start from this state dict (.pt), e.g. a previous stage's")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--widths", default="12,24,32", help="channels per level (a narrower network runs faster: start "
                    "it from a wider one with prune_nuclei.py; a wider one from a trained one with widen_nuclei.py)")
    ap.add_argument("--fine-sep", help="E,D: build the finest level of depthwise-separable blocks, E in the encoder "
                    "and D in the decoder (nuclei_net.py), e.g. 1,1; default full 3x3 convolutions")
    ap.add_argument("--sum-skips", type=int, default=0, choices=(0, 1, 2),
                    help="decoder levels (finest first) that add the upsampled features to the skip connection "
                    "instead of concatenating them: fewer multiply-adds (nuclei_net.py)")
    ap.add_argument("--sample", choices=("image", "area"), default="image",
                    help="draw training crops per image (uniform) or per unit of area at 0.5 um/px: with 'image' the "
                    "432 small CoNSeP tiles get ~94 %% of the crops and the large MoNuSeg / CPM-15 images ~6 %%")
    ap.add_argument("--share", help="with --sample area: each data set's share of the crops, e.g. "
                    "consep=0.7,monuseg=0.15,cpm15=0.15 (by area within a data set)")
    ap.add_argument("--teacher", help="distillation: a trained network's state dict (.pt) whose outputs the network "
                    "also learns, on the training crops and on --unlabelled crops")
    ap.add_argument("--distill-weight", type=float, default=1.0)
    ap.add_argument("--teacher-flips", type=int, default=1, choices=(1, 2, 4),
                    help="the teacher's outputs averaged over this many mirrored copies (segment_nuclei's flips)")
    ap.add_argument("--scale-jitter", type=float, default=0.0,
                    help="S > 1: magnify a share of the crops by a factor in [1/S, S] (log-uniform); the committed "
                         "network uses 1.6 (sixteenth session, benchmarks/README.md)")
    ap.add_argument("--scale-prob", type=float, default=0.5, help="with --scale-jitter: the share of crops magnified")
    ap.add_argument("--photometric", type=float, default=0.0,
                    help="the share of crops that also get stain (HED), blur and noise augmentation (photometric())")
    ap.add_argument("--spindle-weight", type=float, default=0.0,
                    help="extra loss weight on the pixels of CoNSeP's spindle nuclei and a ~1 um ring around them "
                         "(foreground, distance and offset losses; tried, not kept: benchmarks/README.md)")
    ap.add_argument("--contact-weight", type=float, default=0.0,
                    help="extra loss weight of the pixels where nuclei touch (foreground and distance)")
    ap.add_argument("--hv-weight", type=float, default=0.0,
                    help="> 0: two more outputs, each nucleus's horizontal and vertical offset maps (HoVer-Net), "
                    "learnt with this weight; an --init network without them gets them added (their weights start at 0)")
    ap.add_argument("--unlabelled", help="with --teacher: AMi-Br folder (../shared/data/mitosis/amibr) whose patches "
                    "add unlabelled crops (64 px at 0.5 um/px, 2 per labelled crop) to every step")
    a = ap.parse_args()
    torch.set_num_threads(min(a.threads, 2))
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    items = load(a.data)
    train = [it for it in items if a.fold < 0 or fold_of(it["group"], a.folds) != a.fold]
    held = sorted({it["ds"] + "/" + it["name"] for it in items if a.fold >= 0 and fold_of(it["group"], a.folds) == a.fold})
    with open(a.out + ".heldout.txt", "w") as f:
        f.write("\n".join(held) + ("\n" if held else ""))
    print(f"loaded {len(items)} images in {time.time() - t0:.0f}s; training on {len(train)}, holding out {len(held)}",
          flush=True)
    if a.share and a.sample != "area":
        sys.exit("--share needs --sample area")
    weights = None
    if a.sample == "area":
        area = np.array([it["img"].shape[0] * it["img"].shape[1] for it in train], np.float64)
        if a.share:
            share = {k: float(v) for k, v in (kv.split("=") for kv in a.share.split(","))}
            for ds in share:
                sel = np.array([it["ds"] == ds for it in train])
                if not sel.any():
                    sys.exit(f"--share: no training images of data set '{ds}' (consep, monuseg, cpm15)")
                area[sel] *= share[ds] / area[sel].sum()
        weights = area / area.sum()
        for ds in ("consep", "monuseg", "cpm15"):
            print(f"  {ds}: {sum(w for w, it in zip(weights, train) if it['ds'] == ds):.3f} of the crops", flush=True)
    model = NucleiNet(tuple(int(v) for v in a.widths.split(",")),
                      fine_sep=tuple(int(v) for v in a.fine_sep.split(",")) if a.fine_sep else None,
                      outputs=5 if a.hv_weight > 0 else 3, sum_skips=a.sum_skips)
    print(f"widths {a.widths}, finest level {'separable ' + a.fine_sep if a.fine_sep else 'full 3x3'}, "
          f"{a.sum_skips} decoder level(s) summing: "
          f"{macs_per_px(model):.0f} multiply-adds per input pixel", flush=True)
    if a.init:
        sd = torch.load(a.init)
        n_out = model.head.weight.shape[0]
        if sd["head.weight"].shape[0] < n_out:  # a network without the offset outputs: added, starting at 0
            for k in ("head.weight", "head.bias"):
                grown = torch.zeros((n_out,) + sd[k].shape[1:])
                grown[:sd[k].shape[0]] = sd[k]
                sd[k] = grown
        model.load_state_dict(sd)
    teacher, extra = None, []
    if a.teacher:
        teacher = load_net(a.teacher)  # widths from its weights, in eval mode
        if a.unlabelled:
            extra = load_unlabelled(a.unlabelled, 64)
        print(f"distilling from {a.teacher} (weight {a.distill_weight}), {len(extra)} unlabelled images", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    budget = a.minutes * 60 - (time.time() - t0) - 30
    t1 = time.time()
    step = 0
    avg = None
    while step < a.steps:
        if time.time() - t1 > budget:
            print("stopped by the time limit (not reproducible)", flush=True)
            break
        lr = a.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * step / a.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, t = crops(train, rng, a.batch, a.crop, weights, a.scale_jitter, a.scale_prob, a.photometric)
        model.train()
        out = model(x)
        loss = loss_fn(out, y, t, a.contact_weight, a.hv_weight, a.spindle_weight)
        if teacher is not None:
            with torch.no_grad():
                ref = flipped_mean(teacher, x, a.teacher_flips)
            loss = loss + a.distill_weight * distill_loss(out, ref)
            if extra:
                xu = crops(extra, rng, 2 * a.batch, 64)[0]
                with torch.no_grad():
                    ref_u = flipped_mean(teacher, xu, a.teacher_flips)
                loss = loss + a.distill_weight * distill_loss(model(xu), ref_u)
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        step += 1
        if step % 100 == 0:
            print(f"step {step} t={time.time() - t0:.0f}s lr={lr:.5f} loss={avg:.4f}", flush=True)
    model.eval()
    export_onnx(model, a.out)
    torch.save(model.state_dict(), a.out + ".pt")
    print(f"done: {step} steps, wrote {a.out}", flush=True)


if __name__ == "__main__":
    main()
