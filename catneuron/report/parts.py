"""Fragments shared by the index and the neuron pages, and the copying of figures into the report folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from catneuron.report.collect import Entry, Picture
from catneuron.report.html import Html, el, esc, fixed, join, percent, slug
from catneuron.store.runs import number


class Assets:
    """Copies run files into the report folder once each, so the folder can be moved or shared as a whole."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.names: dict[Path, str] = {}

    def add(self, source: Path, folder: str = "figures") -> str:
        """The path of `source`'s copy, relative to the report folder."""
        key = source.resolve()
        if key in self.names:
            return self.names[key]
        rel = f"{folder}/{slug(source.name)}"
        if rel in self.names.values():  # same name from another folder
            rel = f"{folder}/{hashlib.sha1(str(key).encode()).hexdigest()[:8]}-{slug(source.name)}"
        dest = self.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not (dest.exists() and dest.samefile(source)):
            shutil.copyfile(source, dest)
        self.names[key] = rel
        return rel


def missing(*parts: object) -> Html:
    """A note saying what has not been computed yet, and the command that computes it."""
    return el("p", *parts, class_="missing")


def code(text: str) -> Html:
    return el("code", text)


def figure(picture: Picture, assets: Assets, root: str, small: bool = False) -> Html:
    href = root + assets.add(picture.source)
    img = el("img", src=href, alt=picture.title, loading="lazy", class_="small" if small else None)
    return el("figure", el("a", img, href=href), el("figcaption", f"{picture.title} — {picture.source.name}"))


def num_cell(value: object, text: object) -> Html:
    v = number(value)
    return el("td", text, class_="num", data_sort="" if v is None else repr(v))


def roles(entry: Entry) -> Html:
    return join(el("span", r, class_="tag") for r in entry.roles)


def record_cells(entry: Entry) -> Html:
    """Accuracy (percent), AUC and threshold of a neuron as one concept's evaluation measured them."""
    r = entry.record
    return join([num_cell(r.get("accuracy"), percent(r.get("accuracy"))), num_cell(r.get("auc"), fixed(r.get("auc"))),
                 num_cell(r.get("threshold"), fixed(r.get("threshold"), 4))])


def scalar(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def value_html(value: object, key: str = "") -> Html:
    """A JSON value as nested tables: a dict as key/value rows, a list of dicts as rows with one column per key."""
    if isinstance(value, dict):
        rows = [el("tr", el("th", k), el("td", value_html(v, str(k)))) for k, v in value.items()]
        return el("table", el("tbody", join(rows)), class_="kv")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = list(dict.fromkeys(k for v in value for k in v))
        first = "stage" if key == "stages" else "#"
        head = el("tr", el("th", first), join(el("th", c) for c in columns))
        rows = [el("tr", el("td", i), join(el("td", value_html(v.get(c, ""))) for c in columns))
                for i, v in enumerate(value, start=1)]
        return el("table", el("thead", head), el("tbody", join(rows)))
    if isinstance(value, list):
        return esc(", ".join(scalar(v) for v in value))
    return esc(scalar(value))
