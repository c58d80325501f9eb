"""ONNX Runtime's own graph of a component: scaled-dot-product attention fused into ``MultiHeadAttention``.

A traced attention is ``softmax(Q Kᵀ · scale) V`` on heads split by Reshape/Transpose; ONNX Runtime
runs it as written, materialising the (batch·heads, queries, keys) score matrix three times over
(MatMul, Mul, Softmax): 2.1 GB per spatial attention of VideoCrafter's UNet at 16 frames of 40x64
latents. Its contrib operator ``com.microsoft.MultiHeadAttention`` computes the same thing tile by
tile on the CPU (and with fused kernels on CUDA): on a 2-core AMD EPYC (Zen 3), 16 x 2560 tokens,
5 heads of 64, it runs in half the time with a fifth of the memory.

TensorRT and OpenVINO do not read that operator, so the bundle keeps its standard graph and gains a
second file ``<stem>.ort.onnx`` beside it: the same nodes with every matched attention replaced,
pointing at the same external weight file. No weight is stored twice: a graph that embeds more than
:data:`MAX_EMBEDDED_BYTES` of weights gets no ONNX Runtime graph (those are the short sequences: the
text encoders' 77 tokens, a VAE's one mid-block attention). :func:`write_ort_graph` writes it; the
ONNX Runtime backend opens it in place of the standard graph when the manifest names it.

Matched is exactly what the export traces for plain attention (``export.videocrafter1.unet_blocks``):
``MatMul(Transpose₀₂₁₃(Reshape(q)), Transpose₀₂₃₁(Reshape(k)))``, a scalar ``Mul``/``Div``, ``Softmax``
on the last axis, ``MatMul`` with ``Transpose₀₂₁₃(Reshape(v))``, then ``Transpose₀₂₁₃`` and a
``Reshape`` merging the heads. An attention with anything between (relative positions, a causal mask)
is left as it is.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

DOMAIN = "com.microsoft"
SPLIT_HEADS = [0, 2, 1, 3]
SPLIT_HEADS_TRANSPOSED = [0, 2, 3, 1]
MAX_EMBEDDED_BYTES = 64 * 1024**2


def ort_graph_name(path: Path) -> Path:
    """Where the ONNX Runtime graph of the standard graph ``path`` goes: ``<stem>.ort.onnx``."""
    return path.with_name(f"{path.stem}.ort.onnx")


class _Graph:
    """Producers, consumers and constant values of one ONNX graph."""

    def __init__(self, graph: onnx.GraphProto):
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.constants = {t.name: t for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = node.attribute[0].t

    def value(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def node(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        found = self.consumers.get(name, [])
        return found[0] if len(found) == 1 else None


def _perm(node: onnx.NodeProto) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _heads_input(g: _Graph, name: str, perm: list[int]) -> tuple[str, int] | None:
    """(the (batch, tokens, heads·dim) tensor, heads) behind ``Transpose_perm(Reshape(x, [.., .., heads, -1]))``."""
    transpose = g.node(name, "Transpose")
    if transpose is None or _perm(transpose) != perm:
        return None
    reshape = g.node(transpose.input[0], "Reshape")
    if reshape is None:
        return None
    shape = g.value(reshape.input[1])
    if shape is None:  # a shape computed from the input's dims: a Concat whose last two parts are constants
        concat = g.node(reshape.input[1], "Concat")
        if concat is None or len(concat.input) != 4:
            return None
        tail = [g.value(n) for n in concat.input[2:]]
        if any(t is None or t.size != 1 for t in tail):
            return None
        shape = np.array([0, 0, *(int(t.reshape(-1)[0]) for t in tail)])
    if shape.size != 4 or shape[2] <= 0:
        return None
    return reshape.input[0], int(shape[2])


def _scale(g: _Graph, node: onnx.NodeProto) -> tuple[str, float] | None:
    """(the scores input, the scale) of a ``Mul``/``Div`` of the scores by a scalar constant."""
    if node.op_type not in ("Mul", "Div"):
        return None
    for index, other in ((0, 1), (1, 0)):
        value = g.value(node.input[other])
        if value is not None and value.size == 1 and (node.op_type == "Mul" or other == 1):
            factor = float(value.reshape(-1)[0])
            return node.input[index], factor if node.op_type == "Mul" else 1.0 / factor
    return None


def _match(g: _Graph, softmax: onnx.NodeProto) -> tuple[list[str], int, float, onnx.NodeProto] | None:
    """([q, k, v], heads, scale, the Reshape whose output the fused node produces) of one traced attention."""
    axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
    scaled = g.producer.get(softmax.input[0])
    found = None if axis not in (-1, 3) or scaled is None else _scale(g, scaled)
    scores = None if found is None else g.node(found[0], "MatMul")
    attend = g.only_consumer(softmax.output[0])
    if scores is None or attend is None or attend.op_type != "MatMul" or attend.input[0] != softmax.output[0]:
        return None
    if g.only_consumer(scores.output[0]) is not scaled or g.only_consumer(scaled.output[0]) is not softmax:
        return None
    q = _heads_input(g, scores.input[0], SPLIT_HEADS)
    k = _heads_input(g, scores.input[1], SPLIT_HEADS_TRANSPOSED)
    v = _heads_input(g, attend.input[1], SPLIT_HEADS)
    merge = g.only_consumer(attend.output[0])
    if None in (q, k, v) or merge is None or merge.op_type != "Transpose" or _perm(merge) != SPLIT_HEADS:
        return None
    if not q[1] == k[1] == v[1]:
        return None
    merged = [n for n in g.consumers[merge.output[0]] if n.op_type == "Reshape" and n.input[0] == merge.output[0]]
    if len(merged) != 1:
        return None
    return [q[0], k[0], v[0]], q[1], found[1], merged[0]


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove the nodes no graph output depends on (the replaced attention's own nodes and shape arithmetic)."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)


def fuse_attention(model: onnx.ModelProto) -> int:
    """Replace every matched attention of ``model`` by one ``MultiHeadAttention`` node, in place; the count.

    A graph with subgraphs (``If``, ``Loop``) is left alone: its nodes may read tensors no edge shows.
    """
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return 0
    g = _Graph(graph)
    replaced: dict[int, onnx.NodeProto] = {}
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        match = _match(g, softmax)
        if match is None:
            continue
        inputs, heads, scale, merged = match
        replaced[id(merged)] = helper.make_node(
            "MultiHeadAttention", inputs, list(merged.output), name=f"{softmax.name}/MultiHeadAttention",
            domain=DOMAIN, num_heads=heads, scale=scale)
    if not replaced:
        return 0
    nodes = [replaced.get(id(node), node) for node in graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph)
    if not any(op.domain == DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return len(replaced)


def write_ort_graph(path: Path) -> tuple[Path, int] | None:
    """Write ``<stem>.ort.onnx`` beside the standard graph ``path`` when it has attention to fuse: (its path, the
    number of fused attentions); None (nothing written) when there is none, or when ``path`` embeds more than
    :data:`MAX_EMBEDDED_BYTES` of weights. External weights are not read: the new graph keeps pointing at
    ``path``'s external data file."""
    if path.stat().st_size > MAX_EMBEDDED_BYTES:
        return None
    model = onnx.load(str(path), load_external_data=False)
    fused = fuse_attention(model)
    if not fused:
        return None
    target = ort_graph_name(path)
    onnx.save_model(model, str(target))
    return target, fused
