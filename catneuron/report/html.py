"""Building HTML where escaping cannot be forgotten: text and attribute values are escaped unless already markup.

Concept names, neuron ids, file names and config values all come from files a user (or a hostile folder
name) controls; every one of them reaches the page through `esc` or `el`, never by string formatting.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable

from catneuron.store.runs import number

VOID = {"img", "meta", "br", "hr", "link"}


class Html(str):
    """Markup that is already safe to insert; any other value is escaped."""


def esc(value: object) -> Html:
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts: Iterable[object], sep: str = "") -> Html:
    return Html(sep.join(esc(p) for p in parts))


def el(tag: str, *children: object, **attrs: object) -> Html:
    """One element. `class_="x"` gives class, `data_sort=1` gives data-sort; None/False attributes are left out."""
    text = ""
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        text += f" {name}" if value is True else f' {name}="{html.escape(str(value), quote=True)}"'
    if tag in VOID:
        return Html(f"<{tag}{text}>")
    return Html(f"<{tag}{text}>{join(children)}</{tag}>")


def slug(text: str) -> str:
    """A file-name and anchor-safe form of `text`; a hash suffix keeps different texts apart once changed."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:80].strip(".") or "x"
    if safe != text:
        safe += "-" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return safe


def percent(value: object) -> str:
    """An accuracy in [0, 1] as the paper writes it: 81.7."""
    v = number(value)
    return "—" if v is None else f"{100 * v:.1f}"


def fixed(value: object, digits: int = 3) -> str:
    v = number(value)
    return "—" if v is None else f"{v:.{digits}f}"


CSS = """
:root { --fg: #1d2430; --muted: #5f6b7a; --line: #dde3ea; --bg: #f6f8fa; --card: #fff; --accent: #1f6feb;
        --good: #1a7f37; --warn: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); }
header.top { background: #24292f; color: #fff; padding: 10px 24px; display: flex; gap: 18px; align-items: baseline;
             flex-wrap: wrap; }
header.top a { color: #c9d1d9; text-decoration: none; }
header.top a:hover { color: #fff; text-decoration: underline; }
header.top .brand { font-weight: 700; color: #fff; }
main { max-width: 1120px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 26px; margin: 8px 0 4px; word-break: break-all; }
h2 { font-size: 20px; margin: 0 0 10px; }
h3 { font-size: 16px; margin: 18px 0 8px; }
a { color: var(--accent); }
.sub { color: var(--muted); margin: 0 0 16px; }
section.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px;
               margin: 16px 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f0f3f6; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; }
tbody tr:nth-child(even) { background: #fafbfc; }
table.kv { width: auto; min-width: 50%; }
table.kv th { background: none; color: var(--muted); font-weight: 500; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #aab4c0; }
table.sortable th[aria-sort=ascending]::after { content: " \\2191"; color: var(--fg); }
table.sortable th[aria-sort=descending]::after { content: " \\2193"; color: var(--fg); }
.missing { color: var(--warn); background: #fff8e5; border: 1px solid #f0dca0; border-radius: 6px;
           padding: 6px 10px; margin: 8px 0; }
.missing code, .note code { background: #f3ede0; padding: 0 4px; border-radius: 3px; }
.note { color: var(--muted); font-size: 13px; }
.better { color: var(--good); font-weight: 600; }
.worse { color: var(--warn); font-weight: 600; }
.tag { display: inline-block; font-size: 12px; padding: 0 6px; margin: 1px 2px; border-radius: 10px;
       background: #ddf4ff; color: #0550ae; white-space: nowrap; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px;
         max-width: 100%; }
.card > figure { margin-top: 12px; width: fit-content; }
figure img { display: block; max-width: 100%; height: auto; image-rendering: auto; }
figure img.small { width: 420px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; word-break: break-all; }
.headline { font-size: 17px; }
.controls { font-size: 15px; }
table.evidence th { white-space: normal; }
.pager { display: flex; justify-content: space-between; gap: 12px; margin-top: 8px; word-break: break-all; }
details summary { cursor: pointer; color: var(--accent); }
pre { background: #f0f3f6; padding: 8px; overflow-x: auto; }
"""

# Sorts every table.sortable by the clicked column: numbers by data-sort (missing ones last), text alphabetically.
SORT_JS = """
(function () {
  function key(row, col) {
    var cell = row.cells[col];
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    return raw.trim();
  }
  function sortBy(table, th, col) {
    var numeric = th.classList.contains("num");
    var current = th.getAttribute("aria-sort");
    var dir = current ? (current === "descending" ? 1 : -1) : (numeric ? -1 : 1);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      if (numeric) {
        var nx = parseFloat(x), ny = parseFloat(y);
        if (isNaN(nx) || isNaN(ny)) { return isNaN(nx) - isNaN(ny); }
        return dir * (nx - ny);
      }
      return dir * x.localeCompare(y, undefined, {numeric: true});
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir < 0 ? "descending" : "ascending");
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.tabIndex = 0;
      th.title = "Sort by this column";
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""


def page(title: str, body: Html, root: str, nav: Iterable[tuple[str, str]] = (), script: bool = False) -> Html:
    """A whole document: inline CSS (and the sorting script where asked), nothing fetched from anywhere."""
    links = join(el("a", text, href=href) for text, href in nav)
    head = el("head", el("meta", charset="utf-8"), el("meta", name="viewport", content="width=device-width"),
              el("title", title), el("style", Html(CSS)))
    top = el("header", el("a", "catneuron report", href=f"{root}index.html", class_="brand"), links, class_="top")
    tail = el("script", Html(SORT_JS)) if script else Html("")
    return Html("<!doctype html>\n" + el("html", head, el("body", top, el("main", body), tail), lang="en") + "\n")
