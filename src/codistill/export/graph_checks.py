"""Every graph export writes is valid ONNX: nodes in topological order, full checker passed."""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any


class InvalidGraphError(ValueError):
    """An exported graph breaks the ONNX specification; the message names the file and rule."""


def drop_value_info_of_initializers(graph: Any) -> None:
    """Remove ``graph.value_info`` entries that name initializers: those state their own type."""
    initializers = {i.name for i in graph.initializer}
    kept = [v for v in graph.value_info if v.name not in initializers]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def sort_topologically(graph: Any) -> None:
    """Reorder ``graph.node`` in place so that every node follows the producers of its inputs.

    Graph inputs, initializers and omitted optional inputs are available from the start;
    among nodes that are ready, the earlier one in the original order goes first.
    """
    nodes = list(graph.node)
    producer = {name: i for i, node in enumerate(nodes) for name in node.output}
    waiting_on = [
        {producer[n] for n in node.input if n in producer} - {i} for i, node in enumerate(nodes)
    ]
    consumers: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, deps in enumerate(waiting_on):
        for dep in deps:
            consumers[dep].append(i)
    ready = [i for i, deps in enumerate(waiting_on) if not deps]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for consumer in consumers[i]:
            waiting_on[consumer].discard(i)
            if not waiting_on[consumer]:
                heapq.heappush(ready, consumer)
    if len(order) < len(nodes):
        stuck = [
            nodes[i].name or nodes[i].op_type for i in range(len(nodes)) if i not in set(order)
        ]
        raise InvalidGraphError(f"graph has a cycle through {stuck[:5]}")
    sorted_nodes = [nodes[i] for i in order]
    copies = []
    for node in sorted_nodes:
        copy = type(node)()
        copy.CopyFrom(node)
        copies.append(copy)
    del graph.node[:]
    graph.node.extend(copies)


def check_graph(path: str | Path) -> None:
    """Run ONNX's full checker (with strict shape inference) on the file at ``path``."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        first = str(err).strip().splitlines()[0]
        raise InvalidGraphError(f"{path}: not valid ONNX: {first}") from None
