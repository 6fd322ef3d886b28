"""One escaping function per medium for text that comes from files: layer names (state-dict keys),
paths, checkpoint metadata, recipe names, error messages that quote any of these.

Such text is data, never markup or control: a layer name must not start a new table row in report.md,
render a link or an image on a GitHub job summary, clear the terminal with an escape sequence, make
junit.xml ill-formed, or run as a script in report.html. Every string from a file that a report,
summary or message shows goes through the function of its medium:

    markdown(s)  a code span: nothing inside renders (no links, images, HTML, emphasis); `|` escaped
                 for GFM tables, where the table parser would split the cell
    terminal(s)  control and format characters (ESC, bidi overrides, zero-width) made visible
    xml(s)       characters XML 1.0 cannot hold made visible (ElementTree escapes & < > " itself)
    html(s)      & < > " ' as entities

Each first makes control characters visible (`\\x1b`, `\\n`, `\\u202e`) and bounds the text to
`LIMIT` characters (a 3 MB error message is not a summary line).
"""

from __future__ import annotations

import html as _html
import re
import unicodedata

LIMIT = 2000  # characters of one string shown (the command line's error messages use the same)
_INVISIBLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")  # controls, format (bidi, zero-width), surrogates, unassigned
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_XML_VALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


_SLACK = 40  # a text bounded once (its "... (N characters)" added) passes a second bound unchanged


def bounded(text: object, limit: int = LIMIT) -> str:
    """`text` cut to `limit` characters, saying how long it was."""
    text = str(text)
    return text if len(text) <= limit + _SLACK else f"{text[:limit]}... ({len(text):,} characters)"


def _escape_char(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: object, limit: int = LIMIT, keep: str = "") -> str:
    """`text` bounded, with every control, format and unassigned character (but those in `keep`) written
    as its escape sequence."""
    text = bounded(text, limit)
    if text.isascii() and text.isprintable():  # the common case, quickly
        return text
    return "".join(_escape_char(c) if c not in keep and unicodedata.category(c) in _INVISIBLE
                   else c for c in text)


def terminal(text: object, limit: int = LIMIT) -> str:
    """For a terminal: no escape sequence, carriage return or bidi override reaches it (newlines do)."""
    return visible(text, limit, keep="\n")


def markdown(text: object, table: bool = True, limit: int = LIMIT) -> str:
    """An inline code span holding `text` literally (CommonMark and GitHub's renderer); `table`: it sits
    in a GFM table cell, so `|` is escaped. Empty text is `-`."""
    text = visible(text, limit)
    if not text:
        return "-"
    if table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ")):
        text = f" {text} "
    return f"{fence}{text}{fence}"


def xml(text: object, limit: int = LIMIT) -> str:
    """Text an XML 1.0 document can hold: characters it cannot are written as escape sequences."""
    return _XML_VALID.sub(lambda m: _escape_char(m.group()), visible(text, limit, keep="\n\t"))


def html(text: object, limit: int = LIMIT) -> str:
    return _html.escape(visible(text, limit, keep="\n\t"))
