"""A layered (Sugiyama-style) layout of a DAG in pure Python: linear passes, no deps.

Layers by longest path from the sources; order within a layer by the barycentre of
each node's predecessors (two sweeps). Used by the widget and by the static SVG.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable

__all__ = ["layered_layout"]


def layered_layout(
    node_ids: Iterable[str], edges: Iterable[tuple[str, str]]
) -> dict[str, tuple[int, float]]:
    """Node id -> (layer, position within the layer), for drawing left to right."""
    ids = list(dict.fromkeys(node_ids))
    known = set(ids)
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    indegree = dict.fromkeys(ids, 0)
    for src, dst in edges:
        if src in known and dst in known and src != dst:
            preds[dst].append(src)
            succs[src].append(dst)
            indegree[dst] += 1
    layer: dict[str, int] = {}
    queue = deque(n for n in ids if indegree[n] == 0)
    while queue:  # Kahn's algorithm: longest path layering
        node = queue.popleft()
        layer.setdefault(node, 0)
        for nxt in succs[node]:
            layer[nxt] = max(layer.get(nxt, 0), layer[node] + 1)
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                queue.append(nxt)
    for node in ids:  # nodes on a cycle (should not happen) go last
        layer.setdefault(node, max(layer.values(), default=-1) + 1)
    layers: dict[int, list[str]] = defaultdict(list)
    for node in ids:
        layers[layer[node]].append(node)
    position = {node: float(i) for nodes in layers.values() for i, node in enumerate(nodes)}
    for _ in range(2):
        for index in sorted(layers):
            if index == 0:
                continue
            nodes = layers[index]
            nodes.sort(key=lambda n: _barycentre(preds[n], position, position[n]))
            for i, node in enumerate(nodes):
                position[node] = float(i)
    return {node: (layer[node], position[node]) for node in ids}


def _barycentre(neighbours: list[str], position: dict[str, float], default: float) -> float:
    if not neighbours:
        return default
    return sum(position[n] for n in neighbours) / len(neighbours)
