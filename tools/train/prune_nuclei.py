#!/usr/bin/python3
"""Narrows a trained NucleiNet (nuclei_net.py) by keeping its most used channels, as the start of a fine-tuning run
(train_nuclei.py --widths B,C,D --init OUT.pt): OpenCV dnn runs the narrower network faster, and starting from the
wide network's channels converges far sooner than training from scratch.

A channel's importance is the size of its activation (|batch-norm scale| + max(batch-norm shift, 0)) times the summed
absolute weights with which the next layers read it; the channels with the largest importance are kept, and the
layers that read them keep the matching input slices. The deepest level (32 channels) is kept whole.

  /usr/bin/python3 tools/train/prune_nuclei.py /tmp/nuc/fold1e.onnx.pt 8,16,32 /tmp/nuc/prune8.pt
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nuclei_net import sum_skips_of  # noqa: E402


def main():
    src, widths, out = sys.argv[1], [int(v) for v in sys.argv[2].split(",")], sys.argv[3]
    sd = torch.load(src)
    b0, c0, d0 = sd["s0.0.weight"].shape[0], sd["e2.0.0.weight"].shape[0], sd["e3.0.0.weight"].shape[0]
    b, c, d = widths
    if sum_skips_of(b0, c0, sd["d1.0.weight"].shape[1], sd["d2.0.weight"].shape[1]):
        sys.exit("prune_nuclei: networks whose decoder sums its skip connections (train_nuclei.py --sum-skips) "
                 "are not supported")
    if d != d0 or b > b0 or c > c0:
        sys.exit(f"prune_nuclei: can only narrow the first two levels of a {b0},{c0},{d0} network, not to {sys.argv[2]}")

    def act(prefix):  # typical activation size per output channel of a conv + batch-norm + ReLU block
        return sd[prefix + ".weight"].abs() + sd[prefix + ".bias"].clamp(min=0)

    def reads(conv, lo, hi):  # how strongly `conv` reads its input channels lo..hi-1
        return sd[conv].abs().sum(dim=(0, 2, 3))[lo:hi]

    # Output channel sets of every narrowed block, and who reads them (concatenations: up-path first, then skip).
    keep = {}

    def choose(block, bn, n, readers):
        imp = act(bn) * sum(reads(conv, lo, hi) for conv, lo, hi in readers)
        keep[block] = torch.argsort(imp, descending=True)[:n].sort().values

    choose("s0", "s0.1", b, [("e1.0.weight", 0, b0)])
    choose("e1", "e1.1", b, [("e2.0.0.weight", 0, b0), ("d1.0.weight", b0, 2 * b0)])
    choose("e2.0", "e2.0.1", c, [("e2.1.0.weight", 0, c0)])
    choose("e2.1", "e2.1.1", c, [("e3.0.0.weight", 0, c0), ("d2.0.weight", c0, 2 * c0)])
    choose("r3", "r3.1", c, [("d2.0.weight", 0, c0)])
    choose("d2", "d2.1", c, [("r2.0.weight", 0, c0)])
    choose("r2", "r2.1", b, [("d1.0.weight", 0, b0)])
    choose("d1", "d1.1", b, [("head.weight", 0, b0)])
    everything = torch.arange(d0)
    # (conv prefix, batch-norm prefix, output channels, input channels)
    layers = [
        ("s0.0", "s0.1", keep["s0"], torch.arange(3)),
        ("e1.0", "e1.1", keep["e1"], keep["s0"]),
        ("e2.0.0", "e2.0.1", keep["e2.0"], keep["e1"]),
        ("e2.1.0", "e2.1.1", keep["e2.1"], keep["e2.0"]),
        ("e3.0.0", "e3.0.1", everything, keep["e2.1"]),
        ("e3.1.0", "e3.1.1", everything, everything),
        ("r3.0", "r3.1", keep["r3"], everything),
        ("d2.0", "d2.1", keep["d2"], torch.cat([keep["r3"], c0 + keep["e2.1"]])),
        ("r2.0", "r2.1", keep["r2"], keep["d2"]),
        ("d1.0", "d1.1", keep["d1"], torch.cat([keep["r2"], b0 + keep["e1"]])),
    ]
    new = {}
    for conv, bn, o, i in layers:
        new[conv + ".weight"] = sd[conv + ".weight"][o][:, i].clone()
        for k in ("weight", "bias", "running_mean", "running_var"):
            new[f"{bn}.{k}"] = sd[f"{bn}.{k}"][o].clone()
        new[bn + ".num_batches_tracked"] = sd[bn + ".num_batches_tracked"].clone()
    new["head.weight"] = sd["head.weight"][:, keep["d1"]].clone()
    new["head.bias"] = sd["head.bias"].clone()
    torch.save(new, out)
    print(f"wrote {out}: widths {b},{c},{d} from {b0},{c0},{d0}")


if __name__ == "__main__":
    main()
