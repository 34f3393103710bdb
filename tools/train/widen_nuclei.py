#!/usr/bin/python3
"""Widens the finest level (1 um/px at 0.5 um/px input) of a trained NucleiNet (nuclei_net.py) from B0 to B channels,
as the start of a fine-tuning run (train_nuclei.py --widths B,C,D --init OUT.pt). The network computes exactly what it
did: the new channels get fresh weights, and every layer reads them with weights of zero, which training then moves.

The ninth session's measurement: the finest level's width, not the depth or the number of training steps, is what
limits CoNSeP (benchmarks/README.md, "Nuclei").

  /usr/bin/python3 tools/train/widen_nuclei.py /tmp/nuc/fold1e.onnx.pt 16 /tmp/nuc/widen16.pt
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nuclei_net import NucleiNet, load, sum_skips_of  # noqa: E402


def main():
    src, b, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    old = torch.load(src)
    b0, c, d = old["s0.0.weight"].shape[0], old["e2.0.0.weight"].shape[0], old["e3.0.0.weight"].shape[0]
    if sum_skips_of(b0, c, old["d1.0.weight"].shape[1], old["d2.0.weight"].shape[1]):
        sys.exit("widen_nuclei: networks whose decoder sums its skip connections (train_nuclei.py --sum-skips) "
                 "are not supported")
    if b < b0:
        sys.exit(f"widen_nuclei: {b} < {b0} channels; narrowing is prune_nuclei.py's job")
    torch.manual_seed(0)
    new = NucleiNet((b, c, d)).state_dict()
    for k, v in old.items():
        n = new[k]
        if n.shape == v.shape:
            new[k] = v.clone()
        elif k.startswith(("s0.", "r2.")):  # layers that write the finest level (weights, batch-norm)
            n[:b0] = v
        elif k.startswith("e1."):  # writes and reads it
            if v.dim() == 4:
                n[:b0] = 0
                n[:b0, :b0] = v
            else:
                n[:b0] = v
        elif k == "e2.0.0.weight" or k == "head.weight":  # read it
            n[:, b0:] = 0
            n[:, :b0] = v
        elif k.startswith("d1."):  # reads [up-path, skip] and writes the finest level
            if v.dim() == 4:
                n[:b0] = 0
                n[:b0, :b0] = v[:, :b0]
                n[:b0, b:b + b0] = v[:, b0:]
            else:
                n[:b0] = v
        else:
            sys.exit(f"widen_nuclei: unexpected layer {k}")
    torch.save(new, out)
    x = torch.rand(1, 3, 64, 64) - 0.5
    with torch.no_grad():
        diff = (load(src)(x) - load(out)(x)).abs().max().item()
    print(f"wrote {out}: widths {b},{c},{d} from {b0},{c},{d}; largest output difference {diff:.1e}")


if __name__ == "__main__":
    main()
