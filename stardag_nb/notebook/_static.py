"""Static renderings of a DAG: an SVG picture and a markdown table.

They go into the widget's mimebundle next to the live view, so a saved notebook shows
the DAG on GitHub, in nbviewer, in nbconvert's HTML and after a kernel restart.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from typing import Any

from ._layout import layered_layout
from ._state import DagState

__all__ = ["STATUS_COLORS", "static_bundle", "to_html", "to_markdown", "to_svg"]

STATUS_COLORS = {
    "pending": "#d0d7de",
    "running": "#54aeff",
    "suspended": "#c297ff",
    "waiting_for_lock": "#fbbc05",
    "completed": "#2da44e",
    "failed": "#cf222e",
    "cancelled": "#6e7781",
    "already_complete": "#8fd19e",
}

_W, _H, _GAP_X, _GAP_Y, _PAD = 150, 34, 60, 14, 16


def to_svg(state: DagState, max_nodes: int = 2000) -> str:
    """The DAG as an SVG document (left to right, coloured by status): laid out by
    graphviz when its ``dot`` binary is installed, else by a pure-Python layered layout
    (``STARDAG_NB_STATIC_LAYOUT=python`` forces the latter)."""
    if os.environ.get("STARDAG_NB_STATIC_LAYOUT") != "python" and shutil.which("dot"):
        try:
            return _graphviz_svg(state, max_nodes)
        except (OSError, subprocess.SubprocessError, ValueError):
            pass  # fall back to the pure-Python layout
    return _python_svg(state, max_nodes)


def _graphviz_svg(state: DagState, max_nodes: int) -> str:
    nodes = list(state.nodes.values())[:max_nodes]
    ids = {n.id for n in nodes}
    lines = [
        "digraph stardag {",
        '  rankdir=LR; bgcolor="transparent"; nodesep=0.15; ranksep=0.5;',
        '  node [shape=box, style="rounded,filled", fontname="sans-serif", fontsize=11,'
        ' color="#57606a", width=1.9, height=0.45];',
        '  edge [color="#8c959f", arrowsize=0.6];',
    ]
    for node in nodes:
        note = "code changed" if node.code_changed else node.id[:8]
        label = _dot(_shorten(node.label, 22)) + r"\n" + _dot(f"{node.status.replace('_', ' ')} · {note}")
        extra = ', color="#bc4c00", penwidth=2.5, style="rounded,filled,dashed"' if node.code_changed else ""
        lines.append(
            f'  "{node.id}" [id="{node.id}", label="{label}", '
            f'fillcolor="{STATUS_COLORS.get(node.status, "#d0d7de")}"{extra}];'
        )
    for src, dst, dynamic in state.edges:
        if src in ids and dst in ids:
            lines.append(f'  "{src}" -> "{dst}"{" [style=dashed]" if dynamic else ""};')
    lines.append("}")
    result = subprocess.run(
        ["dot", "-Tsvg"], input="\n".join(lines), capture_output=True, text=True, timeout=60, check=True
    )
    svg = result.stdout
    start = svg.find("<svg")
    if start < 0:
        raise ValueError("graphviz produced no SVG")
    by_id = {n.id: n for n in nodes}

    def annotate(match: re.Match[str]) -> str:  # the same attributes as the Python picture
        node = by_id.get(html.unescape(match.group(1)))  # dot writes "-" as "&#45;"
        if node is None:
            return match.group(0)
        flag = ' data-code-changed="true"' if node.code_changed else ""
        return f'<g id="{node.id}" class="node" data-id="{node.id}" data-status="{node.status}"{flag}>'

    return _NODE_GROUP.sub(annotate, svg[start:])


_NODE_GROUP = re.compile(r'<g id="([^"]*)" class="node">')


def _dot(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _python_svg(state: DagState, max_nodes: int) -> str:
    nodes = list(state.nodes.values())[:max_nodes]
    ids = {n.id for n in nodes}
    layout = layered_layout([n.id for n in nodes], [(s, d) for s, d, _ in state.edges])
    xy = {
        node_id: (_PAD + layer * (_W + _GAP_X), _PAD + pos * (_H + _GAP_Y))
        for node_id, (layer, pos) in layout.items()
    }
    width = max((x for x, _ in xy.values()), default=0) + _W + 2 * _PAD
    height = max((y for _, y in xy.values()), default=0) + _H + 2 * _PAD + 24
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
        "<title>stardag_nb DAG</title>",
    ]
    for src, dst, dynamic in state.edges:
        if src not in ids or dst not in ids:
            continue
        (x1, y1), (x2, y2) = xy[src], xy[dst]
        dash = ' stroke-dasharray="4 3"' if dynamic else ""
        out.append(
            f'<line x1="{x1 + _W:.0f}" y1="{y1 + _H / 2:.0f}" x2="{x2:.0f}" y2="{y2 + _H / 2:.0f}" '
            f'stroke="#8c959f"{dash}/>'
        )
    for node in nodes:
        x, y = xy[node.id]
        color = STATUS_COLORS.get(node.status, "#d0d7de")
        label = html.escape(_shorten(node.label, 22))
        stroke = '#bc4c00" stroke-width="3" stroke-dasharray="5 3' if node.code_changed else "#57606a"
        note = "code changed" if node.code_changed else node.id[:8]
        flag = ' data-code-changed="true"' if node.code_changed else ""
        out.append(
            f'<g class="node" data-id="{node.id}" data-status="{node.status}"{flag}>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{_W}" height="{_H}" rx="6" fill="{color}" '
            f'stroke="{stroke}"/><text x="{x + 8:.0f}" y="{y + 15:.0f}">{label}</text>'
            f'<text x="{x + 8:.0f}" y="{y + 28:.0f}" font-size="10" fill="#24292f">'
            f"{node.status.replace('_', ' ')} · {note}</text></g>"
        )
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in state.counts().items() if v)
    out.append(
        f'<text x="{_PAD}" y="{height - 10:.0f}" fill="#57606a">'
        f"{html.escape(state.build_status)} · {len(state.nodes)} tasks · {html.escape(counts)}</text>"
    )
    out.append("</svg>")
    return "".join(out)


def to_markdown(state: DagState, max_rows: int = 200) -> str:
    """The tasks of the DAG as a markdown table with their final statuses."""
    lines = [
        f"**stardag_nb build** {state.build_id or ''} — {state.build_status}, "
        f"{len(state.nodes)} tasks",
        "",
        "| task | status | id |",
        "|---|---|---|",
    ]
    for node in list(state.nodes.values())[:max_rows]:
        status = f"{node.status} (code changed)" if node.code_changed else node.status
        lines.append(f"| {_md(node.label)} | {status} | `{node.id}` |")
    if len(state.nodes) > max_rows:
        lines.append(f"| … {len(state.nodes) - max_rows} more | | |")
    return "\n".join(lines)


def to_html(state: DagState, max_rows: int = 200, svg: str | None = None) -> str:
    """The SVG picture followed by the task table, as one HTML fragment (what nbconvert,
    nbviewer and a frontend without the widget show)."""
    rows = "".join(
        f"<tr><td>{html.escape(n.label)}</td><td>{n.status}</td><td><code>{n.id}</code></td></tr>"
        for n in list(state.nodes.values())[:max_rows]
    )
    more = len(state.nodes) - max_rows
    if more > 0:
        rows += f"<tr><td>… {more} more</td><td></td><td></td></tr>"
    return (
        f'<div class="stardag-static">{svg if svg is not None else to_svg(state)}'
        f"<p><b>stardag_nb build</b> {html.escape(state.build_id or '')} — "
        f"{html.escape(state.build_status)}, {len(state.nodes)} tasks</p>"
        f"<table><thead><tr><th>task</th><th>status</th><th>id</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def to_text(state: DagState) -> str:
    """One line for plain-text front ends: the build, its status and its counts."""
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in state.counts().items() if v)
    build = f"stardag_nb build {state.build_id}" if state.build_id else "stardag_nb DAG"
    return f"<{build}: {state.build_status}, {len(state.nodes)} tasks{': ' + counts if counts else ''}>"


def static_bundle(state: DagState, view: DagState | None = None) -> dict[str, str]:
    """The mimebundle a finished build's output keeps: the DAG picture as HTML and SVG,
    the task table as markdown and a text line; no widget, so it renders without a kernel
    in every front end. ``view`` (default ``state``) is what the picture draws, e.g. the
    family-collapsed graph of a large build; the table always lists ``state``'s tasks."""
    view = view or state
    svg = to_svg(view)
    return {
        "text/html": to_html(view, svg=svg),
        "image/svg+xml": svg,
        "text/markdown": to_markdown(state),
        "text/plain": to_text(state),
    }


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|")
