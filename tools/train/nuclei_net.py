"""The nucleus segmentation network (a small U-Net), shared by train_nuclei.py and the checks.

Only plain convolution, batch-norm, ReLU, max-pooling, nearest upsampling, concatenation and addition, so that OpenCV
4.6's dnn module runs the exported ONNX. Input: RGB at 0.5 um/px scaled to [0, 1] minus 0.5 (the C++ side does the
same).
Output (3 channels, logits at the input's size): nucleus foreground; the normalised distance to the nucleus
boundary (per instance, 0 at the edge and 1 on the medial axis; trained through a sigmoid); spindle-shaped nucleus.
"""
import torch
import torch.nn as nn


def cbr(i, o, k=3):
    return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


def sep(i, o):
    """Depthwise-separable 3x3 block: per-channel 3x3, then a 1x1 mix (OpenCV 4.6 runs it several times faster per
    channel than a full 3x3 convolution)."""
    return nn.Sequential(nn.Conv2d(i, i, 3, padding=1, groups=i, bias=False), nn.BatchNorm2d(i), nn.ReLU(inplace=True),
                         cbr(i, o, 1))


class NucleiNet(nn.Module):
    """A U-Net whose finest level is at half the input resolution (a stride-2 stem): at 0.5 um/px input the features
    are at 1, 2 and 4 um/px, and the logits are upsampled bilinearly to the input size. Multiply-adds per input pixel
    (macs_per_px): ~2.5k with widths 12-24-32, ~2.7k with the committed 16-16-32 (ninth session: the finest level
    widened, which is what CoNSeP needed, and the second narrowed, which costs little; benchmarks/README.md, "Nuclei")."""

    def __init__(self, w=(12, 24, 32), outputs=3, fine_sep=None, sum_skips=0):
        """fine_sep: None (a full 3x3 convolution in e1 and d1), or (e1 blocks, d1 blocks): the finest level built of
        depthwise-separable blocks, which affords it more channels at the same speed. sum_skips: how many decoder
        levels, finest first, add the upsampled coarser features to the skip connection instead of concatenating them
        (LinkNet's way, Chaurasia and Culurciello 2017): the decoder convolution then reads half the channels, which at
        the finest level saves a fifth of all multiply-adds (1 level: 1.35-1.5 times the speed in OpenCV, but
        0.003-0.007 less CoNSeP AJI and 0.005-0.015 less spindle F1 pooled over two seeds; eighteenth session, not
        kept: benchmarks/README.md, "Nuclei")."""
        super().__init__()
        b, c, d = w
        self.sum_skips = sum_skips
        self.s0 = nn.Sequential(nn.Conv2d(3, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b),
                                nn.ReLU(inplace=True))
        self.e1 = cbr(b, b) if fine_sep is None else nn.Sequential(*[sep(b, b) for _ in range(fine_sep[0])])
        self.e2 = nn.Sequential(cbr(b, c), cbr(c, c))
        self.e3 = nn.Sequential(cbr(c, d), cbr(d, d))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.r3 = cbr(d, c, 1)
        self.d2 = cbr(c if sum_skips >= 2 else 2 * c, c)
        self.r2 = cbr(c, b, 1)
        f1 = b if sum_skips >= 1 else 2 * b
        self.d1 = (cbr(f1, b) if fine_sep is None else
                   nn.Sequential(sep(f1, b), *[sep(b, b) for _ in range(fine_sep[1] - 1)]))
        self.head = nn.Conv2d(b, outputs, 1)
        self.upb = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x):
        x1 = self.e1(self.s0(x))
        x2 = self.e2(self.pool(x1))
        x3 = self.e3(self.pool(x2))
        def join(up, skip, level):
            return up + skip if self.sum_skips >= level else torch.cat([up, skip], 1)

        y2 = self.d2(join(self.up(self.r3(x3)), x2, 2))
        y1 = self.d1(join(self.up(self.r2(y2)), x1, 1))
        return self.upb(self.head(y1))


def macs_per_px(model):
    total = 0.0
    scale = {"s0": 4, "e1": 4, "e2": 16, "e3": 64, "r3": 64, "d2": 16, "r2": 16, "d1": 4, "head": 4}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            top = name.split(".")[0]
            total += (m.in_channels // m.groups * m.out_channels * m.kernel_size[0] * m.kernel_size[1] /
                      scale[top])
    return total


def sum_skips_of(b, c, d1_in, d2_in):
    """NucleiNet's sum_skips for a network of widths b, c whose d1 and d2 convolutions read d1_in and d2_in channels
    (a concatenating level reads twice its width)."""
    return 0 if d1_in == 2 * b else (2 if d2_in == c else 1)


def load(pt_path):
    """A NucleiNet with the weights of a train_nuclei.py state dict (.pt), its widths read from the weights."""
    sd = torch.load(pt_path)
    fine_sep = None
    if "e1.0.0.weight" in sd:  # separable finest level: count its blocks
        fine_sep = tuple(len({k.split(".")[1] for k in sd if k.startswith(p + ".")}) for p in ("e1", "d1"))
    b = sd["s0.0.weight"].shape[0]
    c = sd["e2.0.0.weight"].shape[0]
    d1_in = sd["d1.0.weight" if fine_sep is None else "d1.0.3.0.weight"].shape[1]  # the 1x1 mix of a separable block
    model = NucleiNet((b, c, sd["e3.0.0.weight"].shape[0]), fine_sep=fine_sep, outputs=sd["head.weight"].shape[0],
                      sum_skips=sum_skips_of(b, c, d1_in, sd["d2.0.weight"].shape[1]))
    model.load_state_dict(sd)
    return model.eval()


def export_onnx(model, path):
    """Exports for OpenCV 4.6 dnn: batch-norm folded by the exporter; the Identity nodes that torch's constant
    de-duplication inserts between shared initializers (which OpenCV 4.6 cannot read) are replaced by copies."""
    import onnx
    from onnx import numpy_helper

    model = model.eval()
    torch.onnx.export(model, torch.zeros(1, 3, 64, 64), path, opset_version=11, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {2: "h", 3: "w"}, "output": {2: "h", 3: "w"}})
    m = onnx.load(path)
    inits = {i.name: i for i in m.graph.initializer}
    keep = []
    for n in m.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            t = numpy_helper.from_array(numpy_helper.to_array(inits[n.input[0]]).copy(), n.output[0])
            m.graph.initializer.append(t)
            inits[n.output[0]] = t
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    onnx.save(m, path)
