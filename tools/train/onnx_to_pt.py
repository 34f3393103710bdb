#!/usr/bin/python3
"""Turns an exported nucleus network (ONNX, batch-norm folded into the convolutions) back into a train_nuclei.py state
dict (.pt), so that training can go on from the committed model when its .pt is gone:

  /usr/bin/python3 tools/train/onnx_to_pt.py libgrade/models/nuclei_unet.onnx --fold 1 --folds 2 /tmp/nuc/committed.pt

Each convolution gets the folded weights; its batch-norm is set so that it passes its input through unchanged in both
modes: in eval mode by construction, in training mode (which normalises with the batch's own statistics) for a batch
of training crops, whose per-channel mean and variance become the batch-norm's scale, shift and running statistics.
The crops come from the images of the training side of --fold (never the held-out ones). Prints how far the rebuilt
network is from the ONNX one (eval mode, should be ~1e-6) and from itself in training mode on other crops.
"""
import argparse
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nuclei_net import NucleiNet, sum_skips_of  # noqa: E402
from train_nuclei import crops, fold_of, load  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx")
    ap.add_argument("out")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../../shared/data/nuclei"))
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=96, help="crops whose statistics calibrate the batch-norms")
    a = ap.parse_args()

    m = onnx.load(a.onnx)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    convs = [(inits[n.input[1]], inits[n.input[2]] if len(n.input) > 2 else None)
             for n in m.graph.node if n.op_type == "Conv"]
    if any(any(at.name == "group" and at.i != 1 for at in n.attribute) for n in m.graph.node if n.op_type == "Conv"):
        sys.exit("onnx_to_pt: grouped (separable) convolutions are not supported")
    w0, wd, wc = convs[0][0].shape[0], convs[3][0].shape[0], convs[5][0].shape[0]  # s0, e2[0], e3[0]
    model = NucleiNet((w0, wd, wc), outputs=convs[-1][0].shape[0],
                      sum_skips=sum_skips_of(w0, wd, convs[9][0].shape[1], convs[7][0].shape[1]))  # d1, d2
    mods = [mod for mod in model.modules() if isinstance(mod, (nn.Conv2d, nn.BatchNorm2d))]
    pairs, i = [], 0
    while i < len(mods):  # each convolution with the batch-norm after it (the head has none)
        bn = mods[i + 1] if i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d) else None
        pairs.append((mods[i], bn))
        i += 2 if bn is not None else 1
    if len(pairs) != len(convs):
        sys.exit(f"onnx_to_pt: {len(convs)} convolutions in {a.onnx}, {len(pairs)} in the network")
    with torch.no_grad():
        for (conv, bn), (w, b) in zip(pairs, convs):
            if tuple(conv.weight.shape) != w.shape:
                sys.exit(f"onnx_to_pt: shape {w.shape} where the network has {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(w.copy()))
            bias = torch.from_numpy(b.copy()) if b is not None else torch.zeros(w.shape[0])
            if bn is None:
                conv.bias.copy_(bias)
            else:  # identity for now: eval mode computes exactly the folded network
                bn.weight.fill_(1.0)
                bn.bias.copy_(bias)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)

    items = [it for it in load(a.data) if fold_of(it["group"], a.folds) != a.fold]
    rng = np.random.default_rng(0)
    x = crops(items, rng, a.batch, 128)[0]
    stats = {}
    hooks = [bn.register_forward_hook(lambda mod, inp, out: stats.__setitem__(mod, inp[0]))
             for _, bn in pairs if bn is not None]
    model.eval()
    with torch.no_grad():
        ref = model(x)
        for h in hooks:
            h.remove()
        for _, bn in pairs:
            if bn is None:
                continue
            v = stats[bn]
            mean, var = v.mean((0, 2, 3)), v.var((0, 2, 3), unbiased=False)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.add_(mean)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
        d_eval = (model(x) - ref).abs().max().item()
        x2 = crops(items, rng, a.batch, 128)[0]
        ref2 = model(x2)
        model.train()
        d_train = (torch.sigmoid(model(x2)) - torch.sigmoid(ref2)).abs().mean().item()
    # the ONNX file itself, for the eval-mode check
    import cv2
    net = cv2.dnn.readNetFromONNX(a.onnx)
    net.setInput(x[:2].numpy())
    d_onnx = np.abs(net.forward() - ref[:2].numpy()).max()
    torch.save(model.state_dict(), a.out)
    print(f"wrote {a.out}: widths {w0},{wd},{wc}, {convs[-1][0].shape[0]} outputs; largest logit difference to the "
          f"ONNX network {d_onnx:.1e} (eval mode, after calibration {d_eval:.1e}); mean sigmoid difference in training "
          f"mode on other crops {d_train:.3f}")


if __name__ == "__main__":
    main()
