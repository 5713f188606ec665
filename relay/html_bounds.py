"""HTML from a stranger, rebuilt so that the sanitiser reads it in time linear in its size. Pure.

nh3's sanitiser parses with html5ever, whose tree builder scans its stack of open elements on
most tags and caps nothing: markup nested N deep costs O(N²), and misnested markup it keeps
open (`<span><div></span>` repeated; `<p><b id=k><div>x</div>` repeated, which reopens every
formatting element on each line) costs as much with no depth in the source at all. Browsers
cap nesting at 512 and attach deeper elements to the deepest allowed ancestor.

`rebuild_html` makes one linear pass over the markup and writes it again as an explicitly
nested tree of only the elements and attributes the sanitiser keeps, at most `max_depth`
deep: every element it closes gets its end tag written, in order, so that html5ever closes
exactly what it closes and never holds more open than the rebuilt tree does; start tags
deeper than the cap (or past MAX_OPEN_FORMATTING open formatting elements) are left out
and their text kept. The pass follows the HTML standard's tokenizer for where tags, comments
and raw text end, and its tree-construction rules for which end tags close anything and
which start tags close an open paragraph, list item, cell or row, so that ordinary mail
sanitises to what it did before. What it does not model can only make html5ever's tree
shallower than the rebuilt one, or deeper by a bounded amount (implied table rows and bodies,
reopened formatting elements).
"""

from __future__ import annotations

import re

#: The elements the sanitiser keeps (nh3's default allow-list); every other tag is left out, its text kept.
KEPT_TAGS = frozenset(
    {"a", "abbr", "acronym", "area", "article", "aside", "b", "bdi", "bdo", "blockquote", "br", "caption",
     "center", "cite", "code", "col", "colgroup", "data", "dd", "del", "details", "dfn", "div", "dl", "dt",
     "em", "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "i",
     "img", "ins", "kbd", "li", "map", "mark", "nav", "ol", "p", "pre", "q", "rp", "rt", "rtc", "ruby", "s",
     "samp", "small", "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td", "th",
     "thead", "time", "tr", "tt", "u", "ul", "var", "wbr"}
)  # fmt: skip
#: Attributes kept on every element ("*") and on some; the sanitiser gets the same table.
KEPT_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"style", "title", "dir", "lang", "align", "width", "height"},
    "a": {"href", "name"},
    "img": {"src", "alt"},
    "td": {"colspan", "rowspan", "valign", "bgcolor"},
    "th": {"colspan", "rowspan", "valign", "bgcolor"},
    "table": {"border", "cellpadding", "cellspacing", "bgcolor"},
}
#: Elements removed with everything in them (raw text to the tokenizer: their content is never markup).
DROPPED_WITH_TEXT = frozenset({"script", "style", "iframe", "title", "noembed", "noframes"})
#: Elements the sanitiser removes with their whole subtree (as html5ever builds it).
DROPPED_WITH_SUBTREE = frozenset({"form", "object"})
#: Raw-text or RCDATA elements whose text the sanitiser keeps, escaped (it reads them as html5ever does).
KEPT_AS_TEXT = frozenset({"textarea", "xmp", "noscript"})

#: Default cap on nesting; browsers stop at 512, mail rarely goes past 40.
MAX_DEPTH = 256
#: Open formatting elements (b, i, a, ...) html5ever may reopen at once: each costs that many new elements.
MAX_OPEN_FORMATTING = 32
#: Elements written: the sanitiser holds each in memory (about 200 bytes) and time; a long
#: newsletter has a few thousand. Past it, tags are left out and their text kept.
MAX_ELEMENTS = 25_000
#: Default cap on the characters of HTML read: the sanitiser's cost per character is what stays bounded.
MAX_CHARS = 1024 * 1024

#: Markup of at most SMALL_CHARS characters, SMALL_TAG_COUNT "<" and SMALL_ESCAPE_COUNT "&" and
#: no-break spaces is handed to the sanitiser as it is: even shaped at its worst, it costs html5ever
#: a few milliseconds, and most mail is read exactly as written.
SMALL_CHARS = 16 * 1024
SMALL_TAG_COUNT = 500
#: nh3 writes each text node and attribute value in time quadratic in the characters it escapes
#: there ("&", no-break spaces), and html5ever checks each attribute of a tag against the ones
#: before it: the rebuilt tree keeps only the attributes the sanitiser keeps, splits text nodes
#: (with an empty comment, which the sanitiser drops) every ESCAPES_PER_TEXT escaped characters and
#: leaves out attribute values longer than MAX_ATTRIBUTE_CHARS.
SMALL_ESCAPE_COUNT = 2000
ESCAPES_PER_TEXT = 256
MAX_ATTRIBUTE_CHARS = 8192

#: Names recorded in a delivery's `truncated`.
CUT_NESTING = "html nesting"
CUT_SIZE = "html size"
CUT_ATTRIBUTES = "html attributes"
CUT_ELEMENTS = "html elements"

VOID_TAGS = frozenset({"area", "br", "col", "hr", "img", "wbr"})
_FORMATTING = frozenset({"a", "b", "code", "em", "i", "s", "small", "strike", "strong", "tt", "u"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# The standard's "special" elements among the kept ones: an end tag for any other element stops at them.
_SPECIAL = frozenset(
    {"area", "article", "aside", "blockquote", "br", "caption", "center", "col", "colgroup", "dd", "details",
     "div", "dl", "dt", "figcaption", "figure", "footer", "header", "hgroup", "hr", "img", "li", "nav", "ol",
     "p", "pre", "summary", "table", "tbody", "td", "th", "thead", "tr", "ul", "wbr"} | _HEADINGS
    | DROPPED_WITH_SUBTREE
)  # fmt: skip
# Elements that end the default scope (the kept ones), and the extra ends of list-item scope.
_SCOPE_ENDS = frozenset({"caption", "table", "td", "th", "object"})
_LIST_ENDS = frozenset({"ol", "ul"})
# Start tags that close an open paragraph.
_CLOSES_P = frozenset(
    {"article", "aside", "blockquote", "center", "details", "div", "dl", "figcaption", "figure", "footer",
     "header", "hgroup", "nav", "ol", "p", "summary", "ul", "pre", "table", "hr", "li", "dd", "dt", "form"}
    | _HEADINGS
)  # fmt: skip
_CELLS = frozenset({"td", "th"})
_TABLE_PARTS = frozenset({"caption", "colgroup", "col", "tbody", "thead", "tr", "td", "th"})
_SECTIONS = frozenset({"tbody", "thead"})

_WS = "\t\n\f\r "
_TAG = re.compile(
    rf"<(/?)([A-Za-z][^{_WS}/>]*+)"
    rf"((?:[{_WS}/]*+[^{_WS}/>][^{_WS}/>=]*+"
    rf"(?:[{_WS}]*+=[{_WS}]*+(?:\"[^\"]*+\"|'[^']*+'|(?![\"'])[^{_WS}>]*+))?)*+)"
    rf"[{_WS}/]*+>"
)
_ATTRIBUTE = re.compile(
    rf"[{_WS}/]*+([^{_WS}/>][^{_WS}/>=]*+)"
    rf"(?:[{_WS}]*+=[{_WS}]*+(?:\"([^\"]*+)\"|'([^']*+)'|(?![\"'])([^{_WS}>]*+)))?"
)
_COMMENT_END = re.compile(r"--!?>")
_RAW_TEXT_END: dict[str, re.Pattern[str]] = {
    name: re.compile(rf"</{name}(?=[{_WS}/>])", re.IGNORECASE) for name in DROPPED_WITH_TEXT | KEPT_AS_TEXT
}


# What a start tag does before it opens its element (the standard's "in body" and table rules).
_PLAIN, _CELL, _ROW, _SECTION, _TABLE, _CLOSES_P_ONLY, _LIST_ITEM, _DEFINITION, _HEADING, _ANCHOR = range(10)


def _start_rule(name: str) -> int:
    if name in _CELLS:
        return _CELL
    if name == "tr":
        return _ROW
    if name in _TABLE_PARTS:
        return _SECTION
    if name == "table":
        return _TABLE
    if name == "li":
        return _LIST_ITEM
    if name in ("dd", "dt"):
        return _DEFINITION
    if name in _HEADINGS:
        return _HEADING
    if name == "a":
        return _ANCHOR
    return _CLOSES_P_ONLY if name in _CLOSES_P else _PLAIN


def _end_scope(name: str) -> str:
    """The group whose innermost open element an end tag for `name` cannot reach past."""
    if name in _TABLE_PARTS:
        return "table"
    if name == "li":
        return "list-item-scope"
    if name in _SPECIAL or name in _FORMATTING:
        return "scope"
    return "special"


def _group_keys(name: str) -> tuple[str, ...]:
    """The keys under which an open element is indexed: its name and the groups the rules ask about."""
    keys = [name]
    if name in _SPECIAL:
        keys.append("special")
        if name not in ("div", "p"):
            keys.append("li-stop")  # a new list item closes an open one only up to these
    if name in _SCOPE_ENDS:
        keys += ["scope", "list-item-scope"]
    if name in _LIST_ENDS:
        keys.append("list-item-scope")
    if name in _CELLS:
        keys.append("cell")
    if name in _CELLS or name in ("caption", "object"):
        keys.append("marker")  # where html5ever's list of formatting elements to reopen starts
    if name in _SECTIONS:
        keys.append("section")
    return tuple(keys)


#: Every element the rebuilt tree keeps track of: the kept ones, and those it leaves out whole.
_TREE_TAGS = KEPT_TAGS | DROPPED_WITH_SUBTREE
_GROUPS = {name: _group_keys(name) for name in _TREE_TAGS}
#: What a new cell, row, or other part of a table ends when it is open inside the innermost table.
_TABLE_PARTS_CLOSED = {_CELL: ("cell",), _ROW: ("cell", "tr"), _SECTION: ("cell", "tr", "section")}
_START_RULES = {name: _start_rule(name) for name in _TREE_TAGS}
_END_SCOPES = {name: _end_scope(name) for name in _TREE_TAGS}
_ALLOWED_ATTRIBUTES = {name: KEPT_ATTRIBUTES.get(name, set()) | KEPT_ATTRIBUTES["*"] for name in KEPT_TAGS}
_CID = re.compile(r"[\t\n\f\r ]*cid:", re.IGNORECASE)
_ESCAPED_IN_TEXT = re.compile("[&\xa0]")
_ALL_KEYS = {key for keys in _GROUPS.values() for key in keys} | {"table"}
# One string per tag, shared by every place it is written: the output list then costs a pointer
# per tag, not a new string (a megabyte of tags would otherwise hold tens of megabytes).
_BARE_START_TAGS = {name: f"<{name}>" for name in _TREE_TAGS}
_END_TAGS = {name: f"</{name}>" for name in _TREE_TAGS}


class _Tree:
    """The rebuilt tree as it is written: its open elements, and for each name and group of names
    the stack positions where one is open (innermost last), so every rule is answered at once."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.out: list[str] = []
        self.stack: list[str] = []
        self.open_at: dict[str, list[int]] = {key: [] for key in _ALL_KEYS}
        self.formatting = 0
        self.elements = 0
        #: "&" and no-break spaces in the text node being written (see ESCAPES_PER_TEXT).
        self.escapes = 0
        #: The stack position of the outermost open element left out with its subtree, or -1.
        self.hidden_from = -1
        self.cut: set[str] = set()

    def text(self, chunk: str) -> None:
        """Text as it came, split into text nodes of at most ESCAPES_PER_TEXT escaped characters."""
        if self.hidden_from >= 0:
            return
        found = chunk.count("&") + chunk.count("\xa0")
        if self.escapes + found <= ESCAPES_PER_TEXT:
            self.escapes += found
            self.out.append(chunk)
            return
        start = 0
        for escape in _ESCAPED_IN_TEXT.finditer(chunk):
            self.escapes += 1
            if self.escapes > ESCAPES_PER_TEXT:
                self.out.append(chunk[start : escape.start()])
                self.out.append("<!---->")  # ends the text node; the sanitiser drops comments
                start, self.escapes = escape.start(), 1
        self.out.append(chunk[start:])

    def innermost(self, key: str) -> int:
        found = self.open_at[key]
        return found[-1] if found else -1

    def close_through(self, depth: int) -> None:
        """Close every element from the innermost down to the one at `depth`, writing each end tag."""
        stack, open_at, out = self.stack, self.open_at, self.out
        if len(stack) > depth:
            self.escapes = 0
        while len(stack) > depth:
            name = stack.pop()
            for key in _GROUPS[name]:
                open_at[key].pop()
            if name in _FORMATTING:
                self.formatting -= 1
            if self.hidden_from < 0:
                out.append(_END_TAGS[name])
            elif self.hidden_from == len(stack):
                self.hidden_from = -1

    def start(self, name: str, attributes: str) -> None:
        """A start tag, after closing what it closes."""
        rule = _START_RULES[name]
        if rule != _PLAIN:
            if rule <= _SECTION:
                table = self.innermost("table")
                if table < 0:
                    return  # outside a table the standard ignores them
                for part in _TABLE_PARTS_CLOSED[rule]:
                    if self.innermost(part) > table:
                        self.close_through(self.innermost(part))
                # Back to the row, the table body or the table: what sat in between was foster-parented.
                context = max(table, self.innermost("section"), self.innermost("tr") if rule == _CELL else -1)
                self.close_through(context + 1)
            elif rule == _ANCHOR:
                if self.innermost("a") > self.innermost("marker"):
                    self.close_through(self.innermost("a"))
            else:
                if rule == _TABLE:
                    table = self.innermost("table")
                    if table >= 0 and self.innermost("cell") < table:
                        self.close_through(table)  # a table directly inside a table ends the first
                elif rule in (_LIST_ITEM, _DEFINITION):
                    # An open item of the same kind ends, unless another special element is open inside it.
                    at = self.innermost("li-stop")
                    if at >= 0 and self.stack[at] in (("li",) if rule == _LIST_ITEM else ("dd", "dt")):
                        self.close_through(at)
                if self.innermost("p") > self.innermost("scope"):
                    self.close_through(self.innermost("p"))
                if rule == _HEADING and self.stack and self.stack[-1] in _HEADINGS:
                    self.close_through(len(self.stack) - 1)
        stack = self.stack
        if len(stack) >= self.max_depth or (name in _FORMATTING and self.formatting >= MAX_OPEN_FORMATTING):
            self.cut.add(CUT_NESTING)
            return
        if self.elements >= MAX_ELEMENTS:
            self.cut.add(CUT_ELEMENTS)
            return
        self.elements += 1
        if self.hidden_from < 0:
            if name in DROPPED_WITH_SUBTREE:
                self.hidden_from = len(stack)
            else:
                tag = self.start_tag(name, attributes)
                if tag is None:
                    return
                self.out.append(tag)
                self.escapes = 0
        if name in VOID_TAGS:
            return
        depth = len(stack)
        stack.append(name)
        open_at = self.open_at
        for key in _GROUPS[name]:
            open_at[key].append(depth)
        if name in _FORMATTING:
            self.formatting += 1

    def start_tag(self, name: str, attributes: str) -> str | None:
        """The start tag with only the kept attributes, the first of each name, values double-quoted;
        None for an image of a `cid:` part (it shows nothing once attachments are gone)."""
        written: dict[str, str] = {}
        if attributes:
            allowed = _ALLOWED_ATTRIBUTES[name]
            for found in _ATTRIBUTE.finditer(attributes):
                attribute = found[1].lower()
                if attribute in allowed and attribute not in written:
                    value = found[2] if found[2] is not None else found[3] if found[3] is not None else found[4] or ""
                    if len(value) > MAX_ATTRIBUTE_CHARS:
                        self.cut.add(CUT_ATTRIBUTES)
                        continue
                    written[attribute] = value.replace('"', "&quot;")
            if name == "img" and _CID.match(written.get("src", "")):
                return None
        if not written:
            return _BARE_START_TAGS[name]
        return "<" + name + "".join(f' {key}="{value}"' for key, value in written.items()) + ">"

    def end(self, name: str) -> None:
        """An end tag closes its element only when the standard's scope rules let it reach it."""
        at = self.innermost(name)
        if at < 0:
            if name == "p" and self.hidden_from < 0:
                if len(self.stack) >= self.max_depth:
                    self.cut.add(CUT_NESTING)
                else:
                    self.out.append("<p></p>")  # as the standard does for a stray </p>
                    self.escapes = 0
            elif name == "br":
                self.start("br", "")
            return
        if name == "table" or at > self.innermost(_END_SCOPES[name]):
            self.close_through(at)


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class BoundedHtml(str):
    """Markup `bound_html` returned: its cost to the sanitiser is linear in its length."""


def bound_html(
    markup: str, *, max_depth: int = MAX_DEPTH, max_chars: int = MAX_CHARS
) -> tuple[BoundedHtml, tuple[str, ...]]:
    """`markup` read up to `max_chars` characters, rebuilt (unless it is small) as an explicitly
    nested tree of kept elements at most `max_depth` deep, with no image of a `cid:` part; and the
    caps it reached, by their names for a delivery's `truncated`. Linear in the length read."""
    cut: list[str] = []
    if len(markup) > max_chars:
        markup = markup[:max_chars]
        cut.append(CUT_SIZE)
    if (
        len(markup) <= SMALL_CHARS
        and markup.count("<") <= SMALL_TAG_COUNT
        and markup.count("&") + markup.count("\xa0") <= SMALL_ESCAPE_COUNT
    ):
        return BoundedHtml(without_cid_images(markup)), tuple(cut)
    tree = _Tree(max_depth)
    position, length = 0, len(markup)
    while position < length:
        opening = markup.find("<", position)
        if opening < 0:
            tree.text(markup[position:])
            break
        if opening > position:
            tree.text(markup[position:opening])
        tag = _TAG.match(markup, opening)
        if tag is not None:
            position = tag.end()
            name = tag[2].lower()
            if tag[1]:
                if name in _TREE_TAGS:
                    tree.end(name)
            elif name in _TREE_TAGS:
                tree.start(name, tag[3])
            elif name in _RAW_TEXT_END:
                closing = _RAW_TEXT_END[name].search(markup, position)
                end = closing.start() if closing else length
                if name in KEPT_AS_TEXT:
                    tree.text(_escaped(markup[position:end]))
                position = end
            elif name == "plaintext":
                tree.text(_escaped(markup[position:]))
                break
            continue
        following = markup[opening + 1 : opening + 2]
        if following.isascii() and following.isalpha():
            break  # a tag the input ends inside: the standard drops it and everything after it
        if markup.startswith("<!--", opening):
            if markup.startswith(("<!-->", "<!--->"), opening):
                position = markup.index(">", opening + 4) + 1
                continue
            closing = _COMMENT_END.search(markup, opening + 4)
            position = closing.end() if closing else length
        elif following in ("!", "?") or (following == "/" and markup[opening + 2 : opening + 3] not in ("", ">")):
            closing_at = markup.find(">", opening + 2)  # a doctype or a bogus comment
            position = closing_at + 1 if closing_at >= 0 else length
        elif markup.startswith("</>", opening):
            position = opening + 3
        else:
            tree.text("&lt;")  # a "<" that starts nothing is text
            position = opening + 1
    cut += sorted(tree.cut)
    return BoundedHtml("".join(tree.out)), tuple(cut)


_IMG_TAG = re.compile(r"<img(?=[\t\n\f\r />])", re.IGNORECASE)
_CID_SOURCE = re.compile(r"\bsrc[\t\n\f\r ]*=[\t\n\f\r ]*[\"']?[\t\n\f\r ]*cid:", re.IGNORECASE)


def without_cid_images(markup: str) -> str:
    """`markup` without the `<img>` tags whose src is a `cid:` part, each tag read to its first ">".
    Linear: the search for a tag's end and for its source is never repeated over the same text."""
    pieces: list[str] = []
    kept_to = 0
    tag_end = -1
    checked_end, cid_before = -1, False
    for found in _IMG_TAG.finditer(markup):
        if found.start() < kept_to:
            continue
        if found.end() > tag_end:
            tag_end = markup.find(">", found.end())
            if tag_end < 0:
                break
        if tag_end != checked_end:  # a later <img> ending at the same ">" has no source the first lacked
            checked_end, cid_before = tag_end, bool(_CID_SOURCE.search(markup, found.end(), tag_end))
        if cid_before:
            pieces.append(markup[kept_to : found.start()])
            kept_to = tag_end + 1
    if not pieces:
        return markup
    pieces.append(markup[kept_to:])
    return "".join(pieces)
