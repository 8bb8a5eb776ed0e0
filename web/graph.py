"""Where each step of a flow's graph goes on the page: layered by topological generation, left to right.

Pure: networkx in, boxes and edge paths out; the template draws them as inline SVG. Generation k holds the
steps whose longest chain of needs has length k, so every edge points right. Within a generation, steps sit
near the mean row of what they need (one barycentre pass), which keeps fan-outs and joins from crossing much.
Cost: O(steps + edges), lanes included (they are bounded by the step count), so a 1,000-step flow lays out in
milliseconds.
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
LANE_BUDGET = 64  # waypoints always allowed, however few steps


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


def _layers(graph: nx.DiGraph[str]) -> tuple[list[list[str]], dict[tuple[str, str], list[str]]]:
    """Steps by generation, each layer ordered by the barycentre of what it needs. An edge that skips layers gets
    a waypoint in each layer it crosses (Sugiyama's dummy nodes): it reserves a slot there, so the line runs in
    its own lane instead of behind a box."""
    file_order = {node: index for index, node in enumerate(graph)}
    generation = {node: depth for depth, layer in enumerate(nx.topological_generations(graph)) for node in layer}
    depth_count = max(generation.values(), default=-1) + 1
    members: list[list[str]] = [[] for _ in range(depth_count)]
    needs: dict[str, list[str]] = {node: [] for node in graph}
    waypoints: dict[tuple[str, str], list[str]] = {}
    for node in graph:
        members[generation[node]].append(node)
    # Lanes cost a slot per layer crossed: within a budget of one per step they make the picture; beyond it (big
    # graphs with far-reaching needs) they would only make it taller, so long edges are drawn straight instead.
    crossings = sum(max(0, generation[t] - generation[s] - 1) for s, t in graph.edges)
    for source, target in graph.edges if crossings <= max(LANE_BUDGET, graph.number_of_nodes()) else ():
        previous = source
        chain = []
        for depth in range(generation[source] + 1, generation[target]):
            dummy = f"\0{source}\0{target}\0{depth}"  # NUL cannot occur in a step id
            members[depth].append(dummy)
            needs[dummy] = [previous]
            file_order[dummy] = file_order[source]
            chain.append(dummy)
            previous = dummy
        needs[target].append(previous)
        waypoints[(source, target)] = chain
    for source, target in graph.edges:
        if (source, target) not in waypoints:
            needs[target].append(source)
    row: dict[str, float] = {}
    layers: list[list[str]] = []
    for layer in members:
        def barycentre(node: str) -> tuple[float, int]:
            placed = [row[p] for p in needs[node]]
            return (sum(placed) / len(placed) if placed else file_order[node], file_order[node])

        ordered = sorted(layer, key=barycentre)
        for index, node in enumerate(ordered):
            row[node] = index
        layers.append(ordered)
    return layers, waypoints


def _curve(x1: int, y1: int, x2: int, y2: int) -> str:
    bend = max(GAP_X // 2, (x2 - x1) // 2)
    return f" C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"


def layout(graph: nx.DiGraph[str], steps: Sequence[Mapping[str, Any]]) -> Layout:
    """Boxes for every step in `steps` (the graph's nodes) and one path per need → step edge."""
    by_id = {str(s["step_id"]): s for s in steps}
    layers, waypoints = _layers(graph)
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
            if step_id in graph:
                nodes.append(Node(step_id, x, y, by_id.get(step_id, {"step_id": step_id, "status": "pending"})))
    edges = []
    mid = NODE_HEIGHT // 2
    for source, target in graph.edges:
        x, y = position[source]
        x, y = x + NODE_WIDTH, y + mid
        path = f"M{x},{y}"
        for dummy in waypoints.get((source, target), []):
            dx, dy = position[dummy]
            path += _curve(x, y, dx, dy + mid) + f" L{dx + NODE_WIDTH},{dy + mid}"
            x, y = dx + NODE_WIDTH, dy + mid
        tx, ty = position[target]
        path += _curve(x, y, tx, ty + mid)
        edges.append(Edge(source, target, path))
    width = PAD * 2 + max(0, len(layers) * (NODE_WIDTH + GAP_X) - GAP_X)
    height = PAD * 2 + max(0, tallest * (NODE_HEIGHT + GAP_Y) - GAP_Y)
    return Layout(width, height, nodes, edges)
