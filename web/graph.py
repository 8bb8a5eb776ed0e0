"""Where each step of a flow's graph goes on the page: layered by topological generation, left to right.

Pure: networkx in, boxes and edge paths out; the template draws them as inline SVG. Generation k holds the
steps whose longest chain of needs has length k, so every edge points right. Within a generation, steps sit
near the mean row of what they need (one barycentre pass), which keeps fan-outs and joins from crossing much.
Cost: O(steps + edges) after networkx's sort, so a 1,000-step flow lays out in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

NODE_WIDTH = 172
NODE_HEIGHT = 64
GAP_X = 56
GAP_Y = 20
PAD = 16
LABEL_CHARS = 24


@dataclass(frozen=True, slots=True)
class Node:
    step_id: str
    x: int
    y: int
    step: Mapping[str, Any]  # the step's view (CONTRACT §7 `steps` item)

    @property
    def short_label(self) -> str:
        label = str(self.step.get("label") or self.step_id)
        return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    path: str  # SVG path data


@dataclass(frozen=True, slots=True)
class Layout:
    width: int
    height: int
    nodes: list[Node]
    edges: list[Edge]
    node_width: int = NODE_WIDTH
    node_height: int = NODE_HEIGHT


def _generations(graph: nx.DiGraph[str]) -> list[list[str]]:
    file_order = {node: index for index, node in enumerate(graph)}
    layers: list[list[str]] = []
    row: dict[str, float] = {}
    for generation in nx.topological_generations(graph):
        def barycentre(node: str) -> tuple[float, int]:
            needs = [row[p] for p in graph.predecessors(node)]
            return (sum(needs) / len(needs) if needs else file_order[node], file_order[node])

        layer = sorted(generation, key=barycentre)
        for index, node in enumerate(layer):
            row[node] = index
        layers.append(layer)
    return layers


def layout(graph: nx.DiGraph[str], steps: Sequence[Mapping[str, Any]]) -> Layout:
    """Boxes for every step in `steps` (the graph's nodes) and one path per need → step edge."""
    by_id = {str(s["step_id"]): s for s in steps}
    layers = _generations(graph)
    tallest = max((len(layer) for layer in layers), default=0)
    position: dict[str, tuple[int, int]] = {}
    nodes: list[Node] = []
    for column, layer in enumerate(layers):
        x = PAD + column * (NODE_WIDTH + GAP_X)
        # Centre short columns against the tallest one, so a chain runs through the middle of a fan-out.
        top = PAD + (tallest - len(layer)) * (NODE_HEIGHT + GAP_Y) // 2
        for index, step_id in enumerate(layer):
            y = top + index * (NODE_HEIGHT + GAP_Y)
            position[step_id] = (x, y)
            nodes.append(Node(step_id, x, y, by_id.get(step_id, {"step_id": step_id, "status": "pending"})))
    edges = []
    for source, target in graph.edges:
        (x1, y1), (x2, y2) = position[source], position[target]
        start_x, start_y = x1 + NODE_WIDTH, y1 + NODE_HEIGHT // 2
        end_x, end_y = x2, y2 + NODE_HEIGHT // 2
        bend = max(GAP_X // 2, (end_x - start_x) // 2)
        path = f"M{start_x},{start_y} C{start_x + bend},{start_y} {end_x - bend},{end_y} {end_x},{end_y}"
        edges.append(Edge(source, target, path))
    width = PAD * 2 + max(0, len(layers) * (NODE_WIDTH + GAP_X) - GAP_X)
    height = PAD * 2 + max(0, tallest * (NODE_HEIGHT + GAP_Y) - GAP_Y)
    return Layout(width, height, nodes, edges)
