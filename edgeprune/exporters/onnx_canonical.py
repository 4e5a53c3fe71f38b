"""Deterministic names and node order for a tf2onnx graph, so equal models give equal bytes.

tf2onnx numbers the names it makes from a process-wide counter and walks sets of strings, whose
order changes with PYTHONHASHSEED: the same .tflite converted twice (or in two processes) gives
the same graph with other names and another node order. Here every node gets a key from its
structure alone (op, attributes, the keys of its inputs; graph inputs by name, initializers by
content), nodes are re-sorted topologically with ties broken by key, and names lose tf2onnx's
``__<counter>`` suffixes, de-duplicated in that order. Graph input and output names are kept.
"""

from __future__ import annotations

import hashlib
from typing import Any


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _has_subgraphs(graph: Any) -> bool:
    from onnx import AttributeProto

    kinds = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
    return any(a.type in kinds for node in graph.node for a in node.attribute)


def _keys(graph: Any) -> tuple[dict[str, str], list[str]]:
    """Structural key of every value and of every node (nodes as tf2onnx ordered them)."""
    value: dict[str, str] = {v.name: _digest("input", v.name) for v in graph.input}
    for t in graph.initializer:
        content = type(t)()
        content.CopyFrom(t)
        content.name = ""
        value[t.name] = _digest("initializer", content.SerializeToString(deterministic=True))
    nodes = []
    for node in graph.node:  # ONNX requires topological order, so inputs are keyed already
        attrs = [a.SerializeToString(deterministic=True)
                 for a in sorted(node.attribute, key=lambda a: a.name)]
        key = _digest("node", node.domain, node.op_type, *attrs,
                      *(value.get(name, _digest("missing", name)) for name in node.input))
        nodes.append(key)
        for k, out in enumerate(node.output):
            value[out] = _digest(key, str(k))
    return value, nodes


def _order(graph: Any, node_keys: list[str]) -> list[int]:
    """Kahn's topological sort, always taking the ready node with the smallest key."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    needs = [{producer[name] for name in node.input if name in producer} for node in graph.node]
    waiting = [len(n) for n in needs]
    users: dict[int, list[int]] = {}
    for i, producers in enumerate(needs):
        for j in producers:
            users.setdefault(j, []).append(i)
    ready = sorted((node_keys[i], i) for i, n in enumerate(waiting) if n == 0)
    order = []
    while ready:
        _, i = ready.pop(0)
        order.append(i)
        for j in users.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append((node_keys[j], j))
        ready.sort()
    return order


def canonicalize(model: Any) -> None:
    """Rename and re-order ``model.graph`` (an onnx ModelProto) in place; graphs with
    subgraphs (If/Loop bodies) are left as they are."""
    graph = model.graph
    if _has_subgraphs(graph):
        return
    _, node_keys = _keys(graph)
    order = _order(graph, node_keys)
    if len(order) != len(graph.node):  # a cycle or a dangling input: not a valid graph
        return
    renamed = {v.name: v.name for v in (*graph.input, *graph.output)}
    nodes = [graph.node[i] for i in order]
    consts = 0
    for i, node in enumerate(nodes):
        for name in node.input:
            if name and name not in renamed:  # initializers, numbered by first use
                renamed[name] = f"const_{consts}"
                consts += 1
        node.name = f"{node.op_type}_{i}"
        for k, name in enumerate(node.output):
            if name and name not in renamed:
                renamed[name] = f"{node.name}:{k}"
        node.input[:] = [renamed.get(n, n) for n in node.input]
        node.output[:] = [renamed.get(n, n) for n in node.output]
        if not node.domain:  # tf2onnx sets an empty domain on some nodes, not on others
            node.ClearField("domain")
    _replace(graph.node, nodes, {})
    _replace(graph.initializer, graph.initializer, renamed)
    _replace(graph.value_info, graph.value_info, renamed)
    _rename_dims(graph)


def _replace(field: Any, items: Any, renamed: dict[str, str]) -> None:
    """Fill a repeated field with copies of ``items``, renamed, sorted by name unless nodes."""
    copies = []
    for item in items:
        copy = type(item)()
        copy.CopyFrom(item)
        copy.name = renamed.get(item.name, item.name)
        copies.append(copy)
    if renamed:
        copies.sort(key=lambda c: c.name)
    del field[:]
    field.extend(copies)


def _rename_dims(graph: Any) -> None:
    """Symbolic dimensions (tf2onnx's ``unk__263``) renamed ``unk_0``… in order of appearance."""
    names: dict[str, str] = {}
    for info in (*graph.input, *graph.output, *graph.value_info):
        if not info.type.HasField("tensor_type"):
            continue
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = names.setdefault(dim.dim_param, f"unk_{len(names)}")
