"""An HTML page read back for tests: its tables (caption, header cells, rows of cell texts), its
images' sources, its links and scripts, and the text of each section (html.parser, no browser)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Table:
    caption: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    section: str = ""


class Page(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[Table] = []
        self.images: list[str] = []
        self.external: list[str] = []  # href/src of link, script and iframe elements
        self.scripts = 0
        self.notes: list[str] = []
        self.section = ""
        self._cell: list[str] | None = None
        self._caption = False
        self._row: list[str] | None = None
        self._in_head = False
        self._in_notes = False
        self._li: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("id") or ""
        elif tag == "table":
            self.tables.append(Table(section=self.section))
        elif tag == "caption":
            self._caption = True
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag in ("link", "script", "iframe", "object", "embed"):
            self.scripts += tag == "script"
            self.external.append(a.get("href") or a.get("src") or tag)
        elif tag == "div" and a.get("class") == "notes":
            self._in_notes = True
        elif tag == "li" and self._in_notes:
            self._li = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption":
            self._caption = False
        elif tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            t = self.tables[-1]
            if self._in_head:
                t.headers = self._row
            else:
                t.rows.append(self._row)
            self._row = None
        elif tag == "li" and self._li is not None:
            self.notes.append("".join(self._li).strip())
            self._li = None
        elif tag == "div":
            self._in_notes = False

    def handle_data(self, data: str) -> None:
        if self._caption:
            self.tables[-1].caption += data
        if self._cell is not None:
            self._cell.append(data)
        if self._li is not None:
            self._li.append(data)

    def table(self, caption_start: str) -> Table:
        found = [t for t in self.tables if t.caption.startswith(caption_start)]
        assert len(found) == 1, [t.caption for t in self.tables]
        return found[0]
