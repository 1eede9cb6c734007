"""A static, self-contained HTML page for the report (inline CSS, PNGs referenced relatively)."""
from __future__ import annotations

from html import escape

from reports.tables import Table

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 110em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
.note { background: #fff4d6; border: 1px solid #e0c060; padding: 0.5em 1em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""


def page(title: str, notes: list[str], sections: list[tuple[str, list]]) -> str:
    """Render sections of (heading, [Table | ("h3", text) | ("p", text) | ("img", file)])."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           f"<h1>{escape(title)}</h1>"]
    out += [f'<p class="note">{escape(n)}</p>' for n in notes]
    for heading, parts in sections:
        out.append(f"<h2>{escape(heading)}</h2>")
        for part in parts:
            if isinstance(part, Table):
                out.append(part.html())
            elif part[0] == "img":
                name = escape(part[1], quote=True)
                out.append(f'<p><img src="{name}" alt="{name}"></p>')
            else:
                tag, text = part
                out.append(f"<{tag}>{escape(text)}</{tag}>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)
