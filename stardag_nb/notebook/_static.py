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
from ._params import param_summary
from ._state import DagState, shown_statuses

__all__ = [
    "STATUS_COLORS",
    "STATUS_LABELS",
    "static_bundle",
    "text_color",
    "to_html",
    "to_markdown",
    "to_svg",
]

# The live widget's fills (js/src/dag_widget.js); text takes whichever of black and white
# contrasts more with its fill.
STATUS_COLORS = {
    "pending": "#d0d7de",
    "running": "#0969da",
    "suspended": "#8250df",
    "waiting_for_lock": "#d4a72c",
    "completed": "#1a7f37",
    "failed": "#cf222e",
    "cancelled": "#57606a",
    "already_complete": "#8fd19e",
    "blocked": "#f6c1c4",
}
STATUS_LABELS = {
    "pending": "pending",
    "running": "running",
    "suspended": "waiting (dynamic deps)",
    "waiting_for_lock": "waiting for lock",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "already_complete": "up to date",
    "blocked": "blocked by failure",
}


def text_color(fill: str) -> str:
    """Black or white: whichever contrasts more with ``fill`` (``#rrggbb``)."""
    channels = [int(fill[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    lum = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "#1f2328" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "#ffffff"


STALE_COLOR = "#bc4c00"
"""The outline of stale nodes (3:1 against white, the dark theme's background and every
light fill)."""
STALE_LABELS = {
    "code": "code changed",
    "upstream": "stale (upstream changed)",
    "rebuilt": "stale (upstream rebuilt)",
}
STALE_HINT = (
    "their code, or code upstream of them, changed since their outputs were built. "
    "Rebuild them with <code>%%stardag --rebuild-stale</code> (or a live DAG's Rebuild "
    "stale button), or bump the changed task's version."
)


def _node_lines(node: Any, status: str) -> tuple[str, str]:
    """A node's two label lines: its name, then its parameters (or status)."""
    params = param_summary(node.task, 28)
    second = params or STATUS_LABELS.get(status, status)
    if node.code_changed or node.stale == "code":
        second = f"code changed · {second}"
    elif node.stale:
        second = f"stale · {second}"
    return _shorten(node.label, 24), _shorten(second, 30)


def _stale_flags(node: Any) -> str:
    """The data attributes that mark a stale node (the same in every picture)."""
    flags = ' data-code-changed="true"' if node.code_changed else ""
    if node.stale:
        flags += f' data-stale="{node.stale}"'
    return flags


_W, _H, _GAP_X, _GAP_Y, _PAD = 170, 40, 60, 14, 16


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
    shown = shown_statuses(state)
    lines = [
        "digraph stardag {",
        '  rankdir=LR; bgcolor="transparent"; nodesep=0.15; ranksep=0.5;',
        '  node [shape=box, style="rounded,filled", fontname="sans-serif", fontsize=11,'
        ' color="#57606a", width=2.1, height=0.5];',
        '  edge [color="#8c959f", arrowsize=0.7];',
    ]
    for node in nodes:
        first, second = _node_lines(node, shown[node.id])
        label = _dot(first) + r"\n" + _dot(second)
        fill = STATUS_COLORS.get(shown[node.id], "#d0d7de")
        extra = ""
        if node.code_changed or node.stale == "code":
            extra = f', color="{STALE_COLOR}", penwidth=3.5, style="rounded,filled,bold"'
        elif node.stale:
            extra = f', color="{STALE_COLOR}", penwidth=2.5, style="rounded,filled,dashed"'

        lines.append(
            f'  "{node.id}" [id="{node.id}", label="{label}", tooltip="{_dot(node.id)}", '
            f'fillcolor="{fill}", fontcolor="{text_color(fill)}"{extra}];'
        )
    for src, dst, dynamic in state.edges:
        if src in ids and dst in ids:
            lines.append(f'  "{src}" -> "{dst}"{" [style=dashed]" if dynamic else ""};')
    lines.append("}")
    result = subprocess.run(
        ["dot", "-Tsvg"],
        input="\n".join(lines),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
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
        status = shown[node.id]
        flags = _stale_flags(node)
        return f'<g id="{node.id}" class="node" data-id="{node.id}" data-status="{status}"{flags}>'

    return _NODE_GROUP.sub(annotate, svg[start:])


_NODE_GROUP = re.compile(r'<g id="([^"]*)" class="node">')


def _dot(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _python_svg(state: DagState, max_nodes: int) -> str:
    nodes = list(state.nodes.values())[:max_nodes]
    ids = {n.id for n in nodes}
    shown = shown_statuses(state)
    layout = layered_layout([n.id for n in nodes], [(s, d) for s, d, _ in state.edges])
    xy = {
        node_id: (_PAD + layer * (_W + _GAP_X), _PAD + pos * (_H + _GAP_Y))
        for node_id, (layer, pos) in layout.items()
    }
    width = max((x for x, _ in xy.values()), default=0) + _W + 2 * _PAD
    height = max((y for _, y in xy.values()), default=0) + _H + 2 * _PAD
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
        "<title>stardag_nb DAG</title>",
        '<defs><marker id="stardag-static-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#8c959f"/></marker></defs>',
    ]
    for src, dst, dynamic in state.edges:
        if src not in ids or dst not in ids:
            continue
        (x1, y1), (x2, y2) = xy[src], xy[dst]
        x1, y1, y2 = x1 + _W, y1 + _H / 2, y2 + _H / 2
        bend = max(20.0, (x2 - x1) / 2)
        dash = ' stroke-dasharray="4 3"' if dynamic else ""
        out.append(
            f'<path d="M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} {x2 - bend:.0f},{y2:.0f} '
            f'{x2:.0f},{y2:.0f}" fill="none" stroke="#8c959f" stroke-width="1.3" '
            f'marker-end="url(#stardag-static-arrow)"{dash}/>'
        )
    for node in nodes:
        x, y = xy[node.id]
        status = shown[node.id]
        fill = STATUS_COLORS.get(status, "#d0d7de")
        ink = text_color(fill)
        first, second = _node_lines(node, status)
        changed = node.code_changed or node.stale == "code"
        stroke = "#57606a"
        if changed:
            stroke = f'{STALE_COLOR}" stroke-width="3.5'
        elif node.stale:
            stroke = f'{STALE_COLOR}" stroke-width="3" stroke-dasharray="5 3'
        badge = (
            f'<circle cx="{x + _W - 1:.0f}" cy="{y + 1:.0f}" r="7" fill="{STALE_COLOR}"/>'
            f'<text x="{x + _W - 1:.0f}" y="{y + 5:.0f}" fill="#ffffff" font-size="11" '
            f'font-weight="700" text-anchor="middle">!</text>'
            if changed
            else ""
        )
        out.append(
            f'<g class="node" data-id="{node.id}" data-status="{status}"{_stale_flags(node)}>'
            f"<title>{html.escape(node.id)}</title>"
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{_W}" height="{_H}" rx="6" fill="{fill}" '
            f'stroke="{stroke}"/><text x="{x + 8:.0f}" y="{y + 16:.0f}" fill="{ink}" '
            f'font-weight="600">{html.escape(first)}</text>'
            f'<text x="{x + 8:.0f}" y="{y + 31:.0f}" font-size="10" fill="{ink}">'
            f"{html.escape(second)}</text>{badge}</g>"
        )
    out.append("</svg>")
    return "".join(out)


def _headline(state: DagState) -> str:
    """``success · 9/10 done · 1 failed · 2 blocked · 0.52 s``."""
    counts = state.counts()
    shown = shown_statuses(state)
    total = len(state.nodes)
    done = counts.get("completed", 0) + counts.get("already_complete", 0)
    parts = [state.build_status, f"{done}/{total} done"]
    blocked = sum(1 for s in shown.values() if s == "blocked")
    for label, value in (
        ("running", counts.get("running", 0)),
        ("failed", counts.get("failed", 0)),
        ("blocked", blocked),
        ("cancelled", counts.get("cancelled", 0)),
        ("up to date", counts.get("already_complete", 0)),
    ):
        if value:
            parts.append(f"{value} {label}")
    stale = state.stale_count()
    if stale:
        parts.append(f"{stale} stale")
    if state.started_at is not None:
        parts.append(f"{state.elapsed():.2f} s")
    return " · ".join(parts)


_ITEM = '<span style="display:inline-flex;align-items:center;gap:4px;margin-right:12px">'
_SWATCH = "display:inline-block;width:12px;height:12px;border-radius:3px;"


def _legend_html(statuses: set[str], stale: set[str] | None = None) -> str:
    items = "".join(
        f'{_ITEM}<span style="{_SWATCH}background:{STATUS_COLORS[s]};border:1px solid #8c959f">'
        f"</span>{STATUS_LABELS[s]}</span>"
        for s in STATUS_COLORS
        if s in statuses
    )
    stale = stale or set()
    if "code" in stale:
        items += (
            f'{_ITEM}<span style="{_SWATCH}border:3px solid {STALE_COLOR}"></span>'
            f"{STALE_LABELS['code']}</span>"
        )
    if stale - {"code"}:
        items += (
            f'{_ITEM}<span style="{_SWATCH}border:3px dashed {STALE_COLOR}"></span>'
            "stale (code upstream changed)</span>"
        )
    return f'<div class="stardag-static-legend" style="font-size:11px;margin:4px 0">{items}</div>'


def _stale_note_html(state: DagState) -> str:
    count = state.stale_count()
    if not count:
        return ""
    tasks = "1 task is" if count == 1 else f"{count} tasks are"
    return (
        f'<p class="stardag-stale-note" style="margin:4px 0;padding:4px 8px;'
        f'border-left:3px solid {STALE_COLOR}">{tasks} stale: {STALE_HINT}</p>'
    )


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
        status = node.status
        if node.code_changed or node.stale:
            status += f" ({STALE_LABELS[node.stale or 'code']})"
        lines.append(f"| {_md(node.label)} | {status} | `{node.id}` |")
    if len(state.nodes) > max_rows:
        lines.append(f"| … {len(state.nodes) - max_rows} more | | |")
    stale = state.stale_count()
    if stale:
        hint = STALE_HINT.replace("<code>", "`").replace("</code>", "`")
        lines += ["", f"**{stale} stale:** {hint}"]
    return "\n".join(lines)


def to_html(state: DagState, max_rows: int = 200, svg: str | None = None) -> str:
    """A headline with the counts, a legend, the SVG picture (``svg``, default ``state``'s)
    and the task table, as one HTML fragment (what nbconvert, nbviewer and a front end
    without the widget show)."""
    shown = shown_statuses(state)
    rows = "".join(
        f"<tr><td>{html.escape(n.label)}</td><td>{html.escape(param_summary(n.task, 48))}</td>"
        f"<td>{STATUS_LABELS.get(shown[n.id], shown[n.id])}"
        f"{' · ' + STALE_LABELS[n.stale] if n.stale else ''}</td><td><code>{n.id}</code></td></tr>"
        for n in list(state.nodes.values())[:max_rows]
    )
    more = len(state.nodes) - max_rows
    if more > 0:
        rows += f"<tr><td>… {more} more</td><td></td><td></td><td></td></tr>"
    return (
        f'<div class="stardag-static"><p><b>stardag_nb build</b> '
        f"<code>{html.escape(state.build_id or '')}</code> — {html.escape(_headline(state))}</p>"
        f"{_legend_html(set(shown.values()), {n.stale for n in state.nodes.values() if n.stale})}"
        f"{_stale_note_html(state)}"
        f"{svg if svg is not None else to_svg(state)}"
        f"<table><thead><tr><th>task</th><th>parameters</th><th>status</th><th>id</th></tr>"
        f"</thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def to_text(state: DagState) -> str:
    """One line for plain-text front ends: the build, its status and its counts."""
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in state.counts().items() if v)
    build = f"stardag_nb build {state.build_id}" if state.build_id else "stardag_nb DAG"
    shown = f": {counts}" if counts else ""
    return f"<{build}: {state.build_status}, {len(state.nodes)} tasks{shown}>"


def static_bundle(state: DagState, view: DagState | None = None) -> dict[str, str]:
    """The mimebundle a finished build's output keeps: the DAG picture as HTML and SVG,
    the task table as markdown and a text line; no widget, so it renders without a kernel
    in every front end. ``view`` (default ``state``) is what the picture draws, e.g. the
    family-collapsed graph of a large build; the table always lists ``state``'s tasks."""
    view = view or state
    svg = to_svg(view)
    return {
        "text/html": to_html(state, svg=svg),
        "image/svg+xml": svg,
        "text/markdown": to_markdown(state),
        "text/plain": to_text(state),
    }


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|")
