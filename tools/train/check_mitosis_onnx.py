#!/usr/bin/python3
"""Checks an exported mitosis classifier: rebuilds it in torch from the ONNX weights (batch-norm already folded into
the convolutions by the exporter), runs torch and OpenCV dnn (the C++ run time's engine) on the test patterns of
tests/test_mitosis.cpp and on random crops, and prints the logits and the largest difference. Also removes Identity
nodes on constant weights (torch 1.13 emits them; OpenCV 4.6 rejects them) when --fix is given.

  /usr/bin/python3 tools/train/check_mitosis_onnx.py libgrade/models/mitosis_cnn.onnx [--fix]
"""
import sys

import cv2
import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from train_mitosis import test_patterns  # noqa: E402


def fix(path):
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


def torch_forward(path, x):
    m = onnx.load(path)
    w = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Conv":
            pads = [a.ints for a in n.attribute if a.name == "pads"][0]
            strides = [a.ints for a in n.attribute if a.name == "strides"][0]
            x = F.conv2d(x, w[n.input[1]], w[n.input[2]] if len(n.input) > 2 else None, stride=tuple(strides),
                         padding=(pads[0], pads[1]))
        elif n.op_type == "Relu":
            x = F.relu(x)
        elif n.op_type == "MaxPool":
            x = F.max_pool2d(x, 2)
        elif n.op_type == "GlobalAveragePool":
            x = x.mean(dim=(2, 3), keepdim=True)
        elif n.op_type == "Flatten":
            x = torch.flatten(x, 1)
        elif n.op_type == "Gemm":
            x = F.linear(x, w[n.input[1]], w[n.input[2]])
        else:
            raise SystemExit(f"unexpected ONNX node {n.op_type}")
    return x


def main():
    path = sys.argv[1]
    if "--fix" in sys.argv:
        fix(path)
    rng = np.random.default_rng(0)
    x = np.concatenate([test_patterns(), rng.random((5, 3, 64, 64), dtype=np.float32)])
    with torch.no_grad():
        ref = torch_forward(path, torch.from_numpy(x))[:, 0].numpy()
    net = cv2.dnn.readNetFromONNX(path)
    net.setInput(x)
    got = net.forward().reshape(-1)
    print("test patterns (logits):", [round(float(v), 5) for v in ref[:3]])
    print(f"cv2.dnn vs torch (folded weights) on {len(x)} inputs: max |logit difference| = "
          f"{np.max(np.abs(got - ref)):.2e}")


if __name__ == "__main__":
    main()
