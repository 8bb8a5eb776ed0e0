"""The board's graph layout: layered by topological generation, every edge pointing right, no overlaps."""

from __future__ import annotations

import networkx as nx

from flowledger.web.graph import GAP_X, GAP_Y, NODE_HEIGHT, NODE_WIDTH, PAD, layout


def _graph(edges: list[tuple[str, str]], nodes: list[str]) -> nx.DiGraph[str]:
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    return graph


def test_generations_become_columns_and_edges_point_right() -> None:
    graph = _graph([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("a", "d")], ["a", "b", "c", "d"])
    drawn = layout(graph, [{"step_id": s, "status": "pending"} for s in "abcd"])
    x = {n.step_id: n.x for n in drawn.nodes}
    assert x["b"] == x["c"] > x["a"]
    assert x["d"] - x["b"] == NODE_WIDTH + GAP_X  # longest chain decides the column
    assert len(drawn.edges) == 5
    for edge in drawn.edges:
        assert x[edge.source] < x[edge.target]


def test_no_two_boxes_overlap_and_all_fit() -> None:
    graph = _graph([("root", f"leaf{i}") for i in range(7)] + [(f"leaf{i}", "join") for i in range(7)],
                   ["root", *(f"leaf{i}" for i in range(7)), "join"])
    drawn = layout(graph, [])
    boxes = {(n.x, n.y) for n in drawn.nodes}
    assert len(boxes) == len(drawn.nodes) == 9
    for n in drawn.nodes:
        assert n.x >= 0 and n.x + NODE_WIDTH <= drawn.width
        assert n.y >= 0 and n.y + NODE_HEIGHT <= drawn.height
    by_id = {n.step_id: n for n in drawn.nodes}
    middle = by_id["leaf3"].y
    assert by_id["root"].y == by_id["join"].y == middle  # short columns centred on the tallest


def test_long_labels_are_shortened_for_the_box() -> None:
    graph = _graph([], ["x"])
    node = layout(graph, [{"step_id": "x", "label": "a" * 60, "status": "running"}]).nodes[0]
    assert node.short_label.endswith("…") and len(node.short_label) <= 24
    assert node.step["status"] == "running"


def test_an_empty_graph_is_an_empty_picture() -> None:
    drawn = layout(_graph([], []), [])
    assert drawn.nodes == [] and drawn.edges == []


def test_an_edge_that_skips_a_layer_runs_in_a_lane_of_its_own() -> None:
    graph = _graph([("a", "b"), ("b", "c"), ("a", "c")], ["a", "b", "c"])
    drawn = layout(graph, [])
    by_id = {n.step_id: n for n in drawn.nodes}
    long_edge = next(e for e in drawn.edges if (e.source, e.target) == ("a", "c"))
    assert long_edge.path.count(" L") == 1  # straight through its waypoint's slot in b's layer
    lane_y = int(long_edge.path.split(" L")[1].split(",")[1].split()[0]) - NODE_HEIGHT // 2
    assert lane_y != by_id["b"].y  # never behind b's box
    assert drawn.height == 2 * PAD + 2 * NODE_HEIGHT + GAP_Y  # the lane took a slot: b's layer is two tall
