"""The report as a list of blocks (headings, paragraphs, tables, images, lists), written to
``report.md`` (figures as relative PNG links) and a self-contained ``report.html`` (PNGs embedded
as base64 data URIs), so the two formats never disagree."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .verdicts import VERDICTS


# --- document blocks ---------------------------------------------------------------------
@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass
class Para:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path
    caption: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Bullets:
    items: list[str]


Block = Heading | Para | Table | Image | Bullets


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block], base_dir: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' <a id="{b.anchor}"></a>' if b.anchor else ""
            out.append(f"{'#' * b.level} {b.text}{anchor}\n")
        elif isinstance(b, Para):
            out.append(b.text + "\n")
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "|".join("---" for _ in b.headers) + "|")
            for r in b.rows:
                out.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
            out.append("")
        elif isinstance(b, Image):
            rel = b.path.relative_to(base_dir) if b.path.is_relative_to(base_dir) else b.path
            out.append(f"![{b.path.stem}]({rel.as_posix()})\n")
            out.append(f"*{b.caption}*\n")
            for n in b.notes:
                out.append(f"> Note: {n}\n")
        elif isinstance(b, Bullets):
            out.extend(f"- {i}" for i in b.items)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _inline(s: str) -> str:
    s = html.escape(str(s), quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"\[([^\]]+)\]\(#([\w-]+)\)", r'<a href="#\2">\1</a>', s)
    return s


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.2em}h2{border-bottom:1px solid #eee;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:4px 8px;
vertical-align:top;text-align:left}th{background:#f4f4f4}tr:nth-child(even) td{background:#fafafa}
td.v-supported{background:#d9f2d9!important;font-weight:600}td.v-contradicted{background:#f7d4d4!important;
font-weight:600}td.v-not-resolved{background:#f3f0d8!important}td.v-deterministic{background:#e4ecf7!important}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-style:italic;color:#555}
.note{color:#7a5a00;font-size:.9em}code{background:#f4f4f4;padding:0 3px;border-radius:3px}
"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    out = [
        (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>"
        )
    ]
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{b.anchor}"' if b.anchor else ""
            out.append(f"<h{b.level}{anchor}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in b.headers) + "</tr></thead><tbody>")
            for r in b.rows:
                cells = []
                for c in r:
                    cls = f' class="v-{_css(c)}"' if c in VERDICTS else ""
                    cells.append(f"<td{cls}>{_inline(c)}</td>")
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(Path(b.path).read_bytes()).decode() if Path(b.path).is_file() else ""
            notes = "".join(f"<div class='note'>Note: {_inline(n)}</div>" for n in b.notes)
            out.append(f"<figure><img alt='{html.escape(b.caption, quote=True)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{_inline(b.caption)}</figcaption>{notes}</figure>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def _css(verdict: str) -> str:
    return "not-resolved" if verdict.startswith("not resolved") else verdict.replace(" ", "-")
