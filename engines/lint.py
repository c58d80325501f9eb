"""Static check, on a CPU, that a graph will go through TensorRT's ONNX parser and profile.

Rules come from ``trt_onnx_support.json`` (operators, their data types and
restrictions, as the onnx-tensorrt support matrix states them for the TensorRT
version named there). Shapes are checked by tracking which tensors' *values*
depend on the graph inputs: such a value must not decide a shape (Reshape's
shape, Slice's ends, ...), and data-dependent operators (NonZero, ...) are
refused, since an engine's output sizes must follow from the input shapes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from runtime.bundle import Bundle

TABLE = Path(__file__).with_name("trt_onnx_support.json")
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})  # their values depend on input shapes, not input values


@dataclass(frozen=True)
class Finding:
    """One thing in a graph that TensorRT cannot build or profile."""

    graph: str
    node: str
    op: str
    message: str

    def __str__(self) -> str:
        return f"{self.graph}: {self.op} node '{self.node}': {self.message}"


@lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    return json.loads(TABLE.read_text(encoding="utf-8"))


def _type_name(elem_type: int) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(elem_type)


def _supported_types() -> dict[str, str]:
    """ONNX type name -> the table's short name, for the types TensorRT has."""
    names = table()["type_names"]
    return {names[t]: t for t in table()["tensor_types"]}


class _Graph:
    """What the checks need to know about one (shape-inferred) graph."""

    def __init__(self, model):
        import onnx

        model = onnx.shape_inference.infer_shapes(model)
        graph = model.graph
        self.model = model
        self.nodes = list(graph.node)
        self.types: dict[str, int] = {}
        self.ranks: dict[str, int] = {}
        for info in [*graph.input, *graph.output, *graph.value_info]:
            tensor = info.type.tensor_type
            if info.type.HasField("tensor_type"):
                self.types[info.name] = tensor.elem_type
                if tensor.HasField("shape"):
                    self.ranks[info.name] = len(tensor.shape.dim)
            else:
                self.types[info.name] = -1  # sequence, map or optional
        for init in graph.initializer:
            self.types[init.name] = init.data_type
            self.ranks[init.name] = len(init.dims)
        initializers = {i.name for i in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in initializers]
        self.constants = set(initializers)
        self.sources: dict[str, frozenset[str]] = {name: frozenset({name}) for name in self.inputs}
        for node in self.nodes:  # graph order is topological
            present = [name for name in node.input if name]
            if all(name in self.constants for name in present):
                self.constants.update(node.output)
            if node.op_type not in SHAPE_ONLY_OPS:
                sources = frozenset().union(*(self.sources.get(name, frozenset()) for name in present))
                if sources:
                    self.sources.update({out: sources for out in node.output})


def _check_types(graph: _Graph, name: str, findings: list[Finding]) -> None:
    supported = _supported_types()
    notes = table()["unsupported_type_notes"]
    seen = set()
    for tensor, elem_type in graph.types.items():
        if elem_type in (0, -1) or elem_type in seen:
            continue
        type_name = _type_name(elem_type) if elem_type > 0 else "non-tensor"
        if type_name not in supported:
            seen.add(elem_type)
            hint = notes.get(type_name, f"TensorRT supports {', '.join(supported)}")
            findings.append(Finding(name, tensor, "tensor", f"data type {type_name} is not supported ({hint})"))


def _attribute_value(attribute) -> Any:
    import onnx

    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def _check_node(graph: _Graph, name: str, node, findings: list[Finding]) -> None:
    ops, version = table()["operators"], table()["tensorrt"]
    label = node.name or f"#{graph.nodes.index(node)}"

    def flag(message: str) -> None:
        findings.append(Finding(name, label, node.op_type, message))

    if node.domain not in ("", "ai.onnx"):
        return flag(f"custom-domain operator ({node.domain}) needs a TensorRT plugin; export it with standard ops")
    rule = ops.get(node.op_type)
    if rule is None or not rule.get("supported", True):
        return flag(f"TensorRT {version}'s ONNX parser does not support {node.op_type}; replace it in the export")
    if "types" in rule and node.input and node.input[0] in graph.types and graph.types[node.input[0]] > 0:
        found = _supported_types().get(_type_name(graph.types[node.input[0]]), _type_name(graph.types[node.input[0]]))
        if found not in rule["types"]:
            flag(f"input type {found} is not supported (expected {', '.join(rule['types'])})")
    for attribute in node.attribute:
        value = _attribute_value(attribute)
        if node.op_type == "Cast" and attribute.name == "to" and _type_name(value) not in _supported_types():
            flag(f"casts to {_type_name(value)}, which TensorRT does not support; cast to FLOAT or INT64")
        check = rule.get("attributes", {}).get(attribute.name)
        if check is None:
            continue
        if check.get("forbidden"):
            flag(f"attribute '{attribute.name}' is not supported")
        elif "allowed" in check and value not in check["allowed"]:
            flag(f"attribute {attribute.name}={value!r} is not supported (expected one of {check['allowed']})")
        elif "all_equal" in check and any(v != check["all_equal"] for v in value):
            flag(f"attribute {attribute.name}={value} is not supported (expected all {check['all_equal']})")
    for index, what in rule.get("constant_inputs", {}).items():
        i = int(index)
        if i < len(node.input) and node.input[i] and node.input[i] not in graph.constants:
            flag(f"input {i} ('{what}') must be a build-time constant (an initializer), found computed "
                 f"tensor '{node.input[i]}'")
    for group in ("unsupported_inputs", "unsupported_outputs"):
        tensors = node.input if group == "unsupported_inputs" else node.output
        for index, what in rule.get(group, {}).items():
            if int(index) < len(tensors) and tensors[int(index)]:
                flag(f"the optional {group.split('_')[1][:-1]} '{what}' is not supported; leave it out")
    for index, ranks in rule.get("input_rank", {}).items():
        i = int(index)
        if i < len(node.input) and graph.ranks.get(node.input[i]) not in (None, *ranks):
            flag(f"input {i} has rank {graph.ranks[node.input[i]]}, expected rank {' or '.join(map(str, ranks))}")
    _check_shape_inputs(graph, node, flag)


def _check_shape_inputs(graph: _Graph, node, flag) -> None:
    why = table()["data_dependent_ops"].get(node.op_type)
    if why:
        flag(f"data-dependent output shape ({why}); TensorRT cannot size it from the optimization profile. "
             "Compute a fixed-size result instead (e.g. a mask and Where)")
    for index in table()["shape_inputs"].get(node.op_type, ()):
        i = int(index)
        if i < len(node.input) and graph.sources.get(node.input[i]):
            inputs = ", ".join(sorted(graph.sources[node.input[i]]))
            flag(f"input {i} ('{node.input[i]}') decides an output shape but depends on the values of graph "
                 f"input(s) {inputs}; TensorRT cannot profile that. Derive it from shapes (Shape/Gather) or constants")


def lint_model(model, name: str) -> list[Finding]:
    """Every finding in one ONNX model (``onnx.ModelProto``)."""
    findings: list[Finding] = []
    limits = table()["opset"]
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not limits["min"] <= opset.version <= limits["max"]:
            findings.append(Finding(name, "-", "opset", f"opset {opset.version} is outside TensorRT "
                                    f"{table()['tensorrt']}'s range {limits['min']}..{limits['max']}"))
    graph = _Graph(model)
    _check_types(graph, name, findings)
    for node in graph.nodes:
        _check_node(graph, name, node, findings)
    return findings


def lint_file(path: Path) -> list[Finding]:
    import onnx

    return lint_model(onnx.load(str(path), load_external_data=False), path.name)


def lint_bundle(root: str | Path, components: list[str] | None = None) -> dict[str, list[Finding]]:
    """Findings per graph file of the bundle (FP32 graphs and INT8 Q/DQ graphs it lists)."""
    bundle = Bundle(root)
    names = components or list(bundle.manifest.components)
    files = [bundle.component_path(n) for n in names]
    files += [bundle.root / rel for rel in bundle.manifest.files if rel.endswith(".int8.onnx")]
    return {path.name: lint_file(path) for path in files}
