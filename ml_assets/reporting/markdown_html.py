"""The Markdown subset the reports use, rendered to HTML for email bodies.

Headings, pipe tables (PASS/FAIL cells coloured), bullet lists, fenced code, paragraphs,
``**bold**`` and ``code``; everything else is escaped text. Split from report.py.
"""

from __future__ import annotations

import html
import re

_SEPARATOR = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*]\s+(.*)$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")

TABLE_STYLE = "border-collapse:collapse;margin:6px 0 14px 0;font-size:13px"
CELL_STYLE = "border:1px solid #c8c8c8;padding:3px 8px"
HEAD_STYLE = CELL_STYLE + ";background:#f0f0f0"
CELL_COLOURS = {"PASS": "#d9f2d9", "FAIL": "#f8d0d0"}


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(line)]


def _table_html(lines: list[str]) -> str:
    header = _cells(lines[0])
    aligns = ["right" if c.endswith(":") else "left" for c in _cells(lines[1])]
    aligns += ["left"] * (len(header) - len(aligns))

    def cell(tag: str, text: str, i: int) -> str:
        style = HEAD_STYLE if tag == "th" else CELL_STYLE
        style += f";text-align:{aligns[i] if i < len(aligns) else 'left'}"
        if tag == "td" and text in CELL_COLOURS:
            style += f";background:{CELL_COLOURS[text]};font-weight:bold"
        return f'<{tag} style="{style}">{_inline(text)}</{tag}>'

    out = [f'<table style="{TABLE_STYLE}">', "<thead><tr>"]
    out += [cell("th", text, i) for i, text in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for line in lines[2:]:
        out.append("<tr>" + "".join(cell("td", t, i) for i, t in enumerate(_cells(line))) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def markdown_to_html(text: str) -> str:
    """Render the Markdown subset the report uses; everything else is escaped text."""
    lines = text.splitlines()
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append("<p>" + "<br>\n".join(_inline(p) for p in paragraph) + "</p>")
            paragraph.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            code = "\n".join(lines[i + 1 : j])
            out.append(
                '<pre style="background:#f6f6f6;padding:8px;white-space:pre-wrap">'
                + html.escape(code, quote=False)
                + "</pre>"
            )
            i = j + 1
            continue
        if (
            stripped.startswith("|")
            and i + 1 < len(lines)
            and _SEPARATOR.match(lines[i + 1].strip())
        ):
            flush()
            j = i + 2
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            out.append(_table_html([ln.strip() for ln in lines[i:j]]))
            i = j
            continue
        heading = _HEADING.match(stripped)
        if heading:
            flush()
            level = min(len(heading.group(1)) + 2, 6)  # the report's own titles are h2
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
            continue
        if _BULLET.match(line):
            flush()
            items = []
            while i < len(lines) and _BULLET.match(lines[i]):
                items.append(f"<li>{_inline(_BULLET.match(lines[i]).group(1))}</li>")
                i += 1
            out.append("<ul>\n" + "\n".join(items) + "\n</ul>")
            continue
        if not stripped:
            flush()
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    return "\n".join(out)
