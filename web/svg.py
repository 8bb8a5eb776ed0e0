"""A flow's graph as inline SVG markup: one `<g class="step" data-step-id data-status>` per step.

Written with f-strings and markupsafe's `escape` rather than a template: a 1,000-step flow is ~10,000 elements,
and the template engine's per-attribute lookups cost the page most of its time. Every value from the ledger
goes through `escape` (step ids and labels, statuses, task ids), so the markup is as safe as autoescaped Jinja.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from flowledger.web.filters import duration
from flowledger.web.graph import Layout


def _attempts(count: object) -> str:
    n = int(count) if isinstance(count, int) else 0
    return f"{n} attempt{'' if n == 1 else 's'}"


def render_svg(graph: Layout) -> Markup:
    w, h = graph.node_width, graph.node_height
    out = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{graph.width}" height="{graph.height}" '
        f'viewBox="0 0 {graph.width} {graph.height}" role="img" aria-label="Flow graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrow-head"/></marker></defs>',
        '<g class="edges">',
    ]
    out.extend(f'<path d="{edge.path}" class="edge" data-from="{escape(edge.source)}" data-to="{escape(edge.target)}"'
               ' marker-end="url(#arrow)"/>' for edge in graph.edges)
    out.append('</g><g class="nodes">')
    for node in graph.nodes:
        step = node.step
        status = escape(step.get("status") or "pending")
        step_id = escape(node.step_id)
        out.append(
            f'<g class="step" data-step-id="{step_id}" data-status="{status}" '
            f'data-task-id="{escape(step.get("task_id") or "")}" '
            f'data-started-at="{escape(step.get("started_at") or "")}" '
            f'transform="translate({node.x},{node.y})" tabindex="0" role="button">'
            f"<title>{step_id}: {status}</title>"
            f'<rect class="box" width="{w}" height="{h}" rx="9"/>'
            f'<rect class="stripe" width="5" height="{h - 16}" x="7" y="8" rx="2.5"/>'
            f'<text class="label" x="20" y="23">{escape(node.short_label)}</text>'
            f'<text class="meta" x="20" y="41"><tspan data-field="status">{escape(str(status).replace("_", " "))}'
            f'</tspan> · {escape(step.get("runtime") or "")}</text>'
            f'<text class="meta" x="20" y="57"><tspan data-field="attempts">{_attempts(step.get("attempts"))}</tspan>'
            f' · <tspan data-field="duration">{escape(duration(step.get("duration_ms")))}</tspan></text></g>')
    out.append("</g></svg>")
    return Markup("".join(out))
