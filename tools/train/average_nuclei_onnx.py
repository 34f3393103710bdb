#!/usr/bin/python3
"""Joins two exported nucleus networks into one ONNX graph whose output is the mean of their logits (a two-network
ensemble, run by OpenCV dnn like any other model: `bench_nuclei_quality --model OUT.onnx`).

usage: average_nuclei_onnx.py A.onnx B.onnx OUT.onnx

Both networks read the same input; each one's last convolution (`/head/Conv`) is scaled by 1/2 and the two outputs are
added. The upsampling after that convolution is linear, so this equals the mean of the two networks' outputs. Used in
benchmarks/README.md ("Seventeenth session") to measure what averaging two training seeds is worth; not embedded.
"""
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper


def halved_and_renamed(path, prefix):
    model = onnx.load(path)
    graph = model.graph
    heads = [n for n in graph.node if n.name == "/head/Conv"]
    if len(heads) != 1 or [o.name for o in graph.output] != ["output"]:
        sys.exit(f"{path}: not a nucleus network exported by train_nuclei.py (no /head/Conv or no 'output')")
    initializers = {i.name: i for i in graph.initializer}
    for name in heads[0].input[1:]:  # weight and bias
        initializers[name].CopyFrom(numpy_helper.from_array(
            (numpy_helper.to_array(initializers[name]) * 0.5).astype(np.float32), name))

    def rename(s):
        return s if s in ("input", "") else prefix + s

    for node in graph.node:
        node.name = prefix + node.name
        node.input[:] = [rename(s) for s in node.input]
        node.output[:] = [rename(s) for s in node.output]
    for i in graph.initializer:
        i.name = rename(i.name)
    return model


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    a, b = halved_and_renamed(sys.argv[1], "a_"), halved_and_renamed(sys.argv[2], "b_")
    graph = a.graph
    graph.node.extend(b.graph.node)
    graph.initializer.extend(b.graph.initializer)
    # The graph's declared output ("output", with A's shape) is now the sum's.
    graph.node.append(helper.make_node("Add", ["a_output", "b_output"], ["output"], name="mean"))
    onnx.checker.check_model(a)
    onnx.save(a, sys.argv[3])


if __name__ == "__main__":
    main()
