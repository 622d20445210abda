"""Telegram's text formatting as the Bot API parses it: MarkdownV2, legacy Markdown and HTML.

Ports of tdlib's `parse_markdown_v2`, `parse_markdown` and `parse_html`
(td/telegram/MessageEntity.cpp), walking UTF-8 bytes like the original so that error messages
carry the same byte offsets. Entity offsets and lengths are in UTF-16 code units, as on the
wire. URL normalisation is simplified: a link the fake cannot make sense of is dropped
silently, as tdlib drops an invalid one.
`find_entities` detects the mentions, bot commands and URLs Telegram marks in incoming text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["MarkupError", "find_entities", "parse", "utf16_len"]


class MarkupError(ValueError):
    """Text that Telegram refuses with "Bad Request: can't parse entities: <message>"."""


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse(text: str, parse_mode: str | None) -> tuple[str, list[dict[str, Any]]]:
    """(plain text, entities) for `text` in `parse_mode` (case-insensitive; None/"" is plain)."""
    mode = (parse_mode or "").lower()
    if mode == "":
        return text, []
    if mode == "markdownv2":
        return _MarkdownV2(text).run()
    if mode == "markdown":
        return _parse_markdown(text)
    if mode == "html":
        return _Html(text).run()
    raise ValueError(f"unsupported parse_mode {parse_mode!r}")


# --------------------------------------------------------------------------- shared


# tdlib's type names, as its error messages spell them, and the Bot API's entity types.
_API_TYPE: Final = {
    "Bold": "bold",
    "Italic": "italic",
    "Underline": "underline",
    "Strikethrough": "strikethrough",
    "Spoiler": "spoiler",
    "Code": "code",
    "Pre": "pre",
    "PreCode": "pre",
    "TextUrl": "text_link",
    "CustomEmoji": "custom_emoji",
    "BlockQuote": "blockquote",
    "ExpandableBlockQuote": "expandable_blockquote",
}
_SPACES: Final = frozenset(b" \t\r\n\v\f\x00")  # td::is_space, which counts the terminator
_BACKSLASH, _NL, _CR = 0x5C, 0x0A, 0x0D


def _utf16_units(byte: int) -> int:
    """UTF-16 units a UTF-8 lead byte starts (0 for a continuation byte)."""
    if byte & 0xC0 == 0x80:
        return 0
    return 2 if byte >= 0xF0 else 1


def _entity(kind: str, offset: int, length: int, argument: str = "") -> dict[str, Any]:
    entity: dict[str, Any] = {"type": _API_TYPE[kind], "offset": offset, "length": length}
    if kind == "PreCode":
        entity["language"] = argument
    elif kind == "TextUrl":
        user_id = _link_user_id(argument)
        if user_id is not None:
            entity["type"] = "text_mention"
            entity["user"] = {"id": user_id, "is_bot": False, "first_name": ""}
        else:
            entity["url"] = argument
    elif kind == "CustomEmoji":
        entity["custom_emoji_id"] = argument
    return entity


def _sorted(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entities, key=lambda e: (e["offset"], -e["length"]))


_USER_LINK_RE: Final = re.compile(r"^tg:(?://)?user/?\?(?P<query>[^#]*)", re.IGNORECASE)
_SCHEME_RE: Final = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*):(?P<slashes>//)?", re.IGNORECASE)


def _link_user_id(url: str) -> int | None:
    match = _USER_LINK_RE.match(url)
    if match is None:
        return None
    for pair in match["query"].split("&"):
        key, _, value = pair.partition("=")
        if key == "id":
            return int(value) if value.isdigit() else None
    return None


def _checked_link(url: str) -> str | None:
    """tdlib's LinkManager::get_checked_link, simplified: a normalised URL or None."""
    url = url.strip()
    if not url or any(c.isspace() for c in url):
        return None
    if _link_user_id(url) is not None:
        return url
    match = _SCHEME_RE.match(url)
    scheme = "http"
    rest = url
    if match is not None:
        scheme = match["scheme"].lower()
        if scheme in ("tg", "ton", "tonsite"):
            return url
        if scheme not in ("http", "https", "ftp") or match["slashes"] is None:
            return None
        rest = url[match.end() :]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    host, tail = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    if not host or ("." not in host and host.lower() != "localhost"):
        return None
    return f"{scheme}://{host.lower()}{tail if tail.startswith('/') else '/' + tail}"


def _custom_emoji_id(url: str) -> str:
    rest = url.lower()
    if not rest.startswith("tg:"):
        raise MarkupError("Custom emoji URL must have scheme tg")
    rest = rest[3:].removeprefix("//")
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if host != "emoji":
        raise MarkupError('Custom emoji URL must have host "emoji"')
    rest = rest[len(host) :].removeprefix("/")
    query = rest[1:].partition("#")[0] if rest.startswith("?") else ""
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == "id":
            if not value.isdigit() or value.startswith("0"):
                raise MarkupError("Invalid custom emoji identifier specified")
            return value
    raise MarkupError("Custom emoji URL must have an emoji identifier")


# --------------------------------------------------------------------------- MarkdownV2


@dataclass(slots=True)
class _Open:
    kind: str
    argument: str
    offset: int  # UTF-16 offset in the result
    byte_offset: int  # in the source, for error messages
    result_pos: int  # byte position in the result


_RESERVED_V2: Final = frozenset(b"_*[]()~`>#+-=|{}.!\n")
_CODE_KINDS: Final = frozenset({"Code", "Pre", "PreCode"})


class _MarkdownV2:
    def __init__(self, text: str) -> None:
        self.src = text.encode()
        self.out = bytearray()
        self.entities: list[dict[str, Any]] = []
        self.nested: list[_Open] = []
        self.utf16 = 0
        self.i = 0

    def at(self, j: int) -> int:
        return self.src[j] if j < len(self.src) else 0

    def run(self) -> tuple[str, list[dict[str, Any]]]:
        src, n = self.src, len(self.src)
        have_blockquote = False
        can_start_blockquote = True
        self.i = -1
        while True:
            self.i += 1
            i = self.i
            if i >= n:
                break
            c = src[i]
            if c == _BACKSLASH and 0 < self.at(i + 1) <= 126:
                self.i += 1
                self.utf16 += 1
                self.out.append(src[self.i])
                if src[self.i] != _CR:
                    can_start_blockquote = src[self.i] == _NL
                continue
            in_code = bool(self.nested) and self.nested[-1].kind in _CODE_KINDS
            if (c != ord("`")) if in_code else (c not in _RESERVED_V2):
                units = _utf16_units(c)
                self.utf16 += units
                if units and c != _CR:
                    can_start_blockquote = False
                self.out.append(c)
                continue
            if not self._is_end(c, have_blockquote):
                kind = self._begin(c, can_start_blockquote, have_blockquote)
                if c == _NL:
                    can_start_blockquote = True
                if kind == "BlockQuote":
                    have_blockquote = True
                continue
            kind = self.nested[-1].kind
            if c == _NL and kind != "BlockQuote":
                top = self.nested[-1]
                closes_spoiler = top.byte_offset == i - 2 or (
                    top.byte_offset == i - 3 and self.out[-1:] == b"\r"
                )
                if kind != "Spoiler" or not closes_spoiler:
                    raise self._unclosed(top)
                self.nested.pop()
                if self.nested[-1].kind != "BlockQuote":
                    raise self._unclosed(self.nested[-1])
                kind = "ExpandableBlockQuote"
            if kind in ("BlockQuote", "ExpandableBlockQuote"):
                have_blockquote = False
                can_start_blockquote = True
            self._end(kind)
        if have_blockquote:
            kind = "BlockQuote"
            if self.nested[-1].kind == "Spoiler" and self.nested[-1].byte_offset == n - 2:
                self.nested.pop()
                kind = "ExpandableBlockQuote"
            if self.nested[-1].kind == "BlockQuote":
                top = self.nested.pop()
                if self.utf16 != top.offset:
                    self.entities.append(_entity(kind, top.offset, self.utf16 - top.offset))
        if self.nested:
            raise self._unclosed(self.nested[-1])
        return self.out.decode(), _sorted(self.entities)

    def _is_end(self, c: int, have_blockquote: bool) -> bool:
        if not self.nested:
            return False
        i = self.i
        if have_blockquote and c == _NL and self.at(i + 1) != ord(">"):
            return True
        nxt, nxt2 = self.at(i + 1), self.at(i + 2)
        match self.nested[-1].kind:
            case "Bold":
                return c == ord("*")
            case "Italic":
                return c == ord("_") and nxt != ord("_")
            case "Underline":
                return c == ord("_") and nxt == ord("_")
            case "Code":
                return c == ord("`")
            case "Pre" | "PreCode":
                return c == nxt == nxt2 == ord("`")
            case "TextUrl" | "CustomEmoji":
                return c == ord("]")
            case "Strikethrough":
                return c == ord("~")
            case "Spoiler":
                return c == nxt == ord("|")
        return False  # BlockQuote ends only at a line without '>'

    def _begin(self, c: int, can_start_blockquote: bool, have_blockquote: bool) -> str | None:
        """Open the entity starting at `c`; None for a line break or a quote continuation."""
        src, i = self.src, self.i
        byte_offset = i
        argument = ""
        nxt = self.at(i + 1)
        if c == ord("_"):
            kind = "Underline" if nxt == ord("_") else "Italic"
            self.i += kind == "Underline"
        elif c == ord("*"):
            kind = "Bold"
        elif c == ord("~"):
            kind = "Strikethrough"
        elif c == ord("|") and nxt == ord("|"):
            kind = "Spoiler"
            self.i += 1
        elif c == ord("["):
            kind = "TextUrl"
        elif c == ord("`") and nxt == self.at(i + 2) == ord("`"):
            kind, argument = self._begin_pre()
        elif c == ord("`"):
            kind = "Code"
        elif c == ord("!") and nxt == ord("["):
            kind = "CustomEmoji"
            self.i += 1
        elif c == _NL:
            self.utf16 += 1
            self.out.append(_NL)
            return None
        elif c == ord(">") and can_start_blockquote:
            if have_blockquote:
                return None
            kind = "BlockQuote"
        else:
            char = chr(src[i])
            raise MarkupError(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        self.nested.append(_Open(kind, argument, self.utf16, byte_offset, len(self.out)))
        return kind

    def _begin_pre(self) -> tuple[str, str]:
        self.i += 3
        i = self.i
        kind, argument = "Pre", ""
        end = i
        while self.at(end) not in _SPACES and self.at(end) != ord("`"):
            end += 1
        if i != end and end < len(self.src) and self.at(end) != ord("`"):
            kind, argument = "PreCode", self.src[i:end].decode(errors="replace")
            i = end
        if self.at(i) in (_NL, _CR):  # one line break after the fence is skipped
            pair = self.at(i + 1) in (_NL, _CR) and self.at(i) != self.at(i + 1)
            i += 2 if pair else 1
        self.i = i - 1
        return kind, argument

    def _end(self, kind: str) -> None:
        top = self.nested[-1]
        argument = top.argument
        skip = self.utf16 == top.offset
        if kind in ("Underline", "Spoiler"):
            self.i += 1
        elif kind in ("Pre", "PreCode"):
            self.i += 2
        elif kind == "TextUrl":
            if self.at(self.i + 1) != ord("("):
                url = self.out[top.result_pos :].decode(errors="replace")
            else:
                url = self._url("Can't find end of a URL at byte offset")
            checked = url if _link_user_id(url) is not None else _checked_link(url)
            if checked is None:
                skip = True
            else:
                argument = checked
        elif kind == "CustomEmoji":
            if self.at(self.i + 1) != ord("("):
                raise MarkupError("Custom emoji entity must contain a tg://emoji URL")
            argument = _custom_emoji_id(
                self._url("Can't find end of a custom emoji URL at byte offset")
            )
        elif kind in ("BlockQuote", "ExpandableBlockQuote"):
            self.out.append(self.src[self.i])
            self.utf16 += 1
            skip = False
        if not skip:
            self.entities.append(_entity(kind, top.offset, self.utf16 - top.offset, argument))
        self.nested.pop()

    def _url(self, unclosed: str) -> str:
        self.i += 2
        begin = self.i
        url = bytearray()
        src, n = self.src, len(self.src)
        while self.i < n and src[self.i] != ord(")"):
            if src[self.i] == _BACKSLASH and 0 < self.at(self.i + 1) <= 126:
                url.append(src[self.i + 1])
                self.i += 2
                continue
            url.append(src[self.i])
            self.i += 1
        if self.at(self.i) != ord(")"):
            raise MarkupError(f"{unclosed} {begin}")
        return url.decode(errors="replace")

    @staticmethod
    def _unclosed(top: _Open) -> MarkupError:
        return MarkupError(f"Can't find end of {top.kind} entity at byte offset {top.byte_offset}")


# --------------------------------------------------------------------------- legacy Markdown


def _parse_markdown(text: str) -> tuple[str, list[dict[str, Any]]]:
    src = text.encode()
    n = len(src)

    def at(j: int) -> int:
        return src[j] if j < n else 0

    out = bytearray()
    entities: list[dict[str, Any]] = []
    utf16 = 0
    i = 0
    while i < n:
        c = src[i]
        if c == _BACKSLASH and at(i + 1) in b"_*`[":
            out.append(src[i + 1])
            utf16 += 1
            i += 2
            continue
        if c not in b"_*`[":
            utf16 += _utf16_units(c)
            out.append(c)
            i += 1
            continue
        begin = i
        end_char = ord("]") if c == ord("[") else c
        is_pre = False
        language = ""
        i += 1
        if c == ord("`") and at(i) == at(i + 1) == ord("`"):
            i += 2
            is_pre = True
            end = i
            while at(end) not in _SPACES and at(end) != ord("`"):
                end += 1
            if i != end and end < n and at(end) != ord("`"):
                language = src[i:end].decode(errors="replace")
                i = end
            if at(i) in (_NL, _CR):
                i += 2 if at(i + 1) in (_NL, _CR) and at(i) != at(i + 1) else 1
        offset = utf16
        while i < n and (src[i] != end_char or (is_pre and not at(i + 1) == at(i + 2) == ord("`"))):
            utf16 += _utf16_units(src[i])
            out.append(src[i])
            i += 1
        if i == n:
            raise MarkupError(f"Can't find end of the entity starting at byte offset {begin}")
        if utf16 != offset:
            kind = {ord("_"): "Italic", ord("*"): "Bold", ord("["): "TextUrl"}.get(c, "Code")
            argument = ""
            if c == ord("["):
                if at(i + 1) != ord("("):
                    url = src[begin + 1 : i].decode(errors="replace")
                else:
                    i += 2
                    start = i
                    while i < n and src[i] != ord(")"):
                        i += 1
                    url = src[start:i].decode(errors="replace")
                checked = url if _link_user_id(url) is not None else _checked_link(url)
                kind = "" if checked is None else kind
                argument = checked or ""
            elif is_pre:
                kind, argument = ("PreCode", language) if language else ("Pre", "")
            if kind:
                entities.append(_entity(kind, offset, utf16 - offset, argument))
        i += 3 if is_pre else 1
    return out.decode(), _sorted(entities)


# --------------------------------------------------------------------------- HTML


_HTML_TAGS: Final = frozenset({
    "a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler", "tg-emoji",
    "span", "pre", "code", "blockquote",
})  # fmt: skip
_HTML_KIND: Final = {
    "b": "Bold", "strong": "Bold", "i": "Italic", "em": "Italic", "u": "Underline",
    "ins": "Underline", "s": "Strikethrough", "strike": "Strikethrough", "del": "Strikethrough",
    "tg-spoiler": "Spoiler", "span": "Spoiler",
}  # fmt: skip
_NAMED_ENTITIES: Final = {b"lt": "<", b"gt": ">", b"amp": "&", b"quot": '"'}
_SURROGATE_ERROR: Final = (
    "Text contains invalid Unicode characters after decoding HTML entities, "
    "check for unmatched surrogate code units"
)


class _Html:
    def __init__(self, text: str) -> None:
        self.src = text.encode()
        self.out = bytearray()
        self.entities: list[dict[str, Any]] = []
        self.nested: list[_Open] = []
        self.utf16 = 0
        self.i = 0

    def at(self, j: int) -> int:
        return self.src[j] if j < len(self.src) else 0

    def decode_entity(self) -> str | None:
        """The character an `&...;` reference at `self.i` stands for (advancing past it)."""
        src, pos = self.src, self.i
        end = pos + 1
        if self.at(pos + 1) == ord("#"):
            end += 1
            code = 0
            hexadecimal = self.at(pos + 2) == ord("x")
            end += hexadecimal
            digits = b"0123456789abcdefABCDEF" if hexadecimal else b"0123456789"
            while self.at(end) != 0 and self.at(end) in digits:
                code = code * (16 if hexadecimal else 10) + int(chr(src[end]), 16)
                end += 1
            if code == 0 or code >= 0x10FFFF or end - pos >= 10:
                return None
            if 0xD800 <= code <= 0xDFFF:
                raise MarkupError(_SURROGATE_ERROR)
            char = chr(code)
        else:
            while chr(self.at(end)).isascii() and chr(self.at(end)).isalpha():
                end += 1
            named = _NAMED_ENTITIES.get(src[pos + 1 : end])
            if named is None:
                return None
            char = named
        self.i = end + 1 if self.at(end) == ord(";") else end
        return char

    def run(self) -> tuple[str, list[dict[str, Any]]]:
        n = len(self.src)
        while self.i < n:
            c = self.src[self.i]
            if c == ord("&"):
                char = self.decode_entity()
                if char is not None:
                    self.utf16 += utf16_len(char)
                    self.out += char.encode()
                    continue
            if c != ord("<"):
                self.utf16 += _utf16_units(c)
                self.out.append(c)
                self.i += 1
                continue
            if self.at(self.i + 1) != ord("/"):
                self._start_tag()
            else:
                self._end_tag()
            self.i += 1
        if self.nested:
            tag = self.nested[-1].kind
            raise MarkupError(f'Can\'t find end tag corresponding to start tag "{tag}"')
        for entity in self.entities:
            if entity["type"] == "code":  # a language only counts on a <pre>
                entity.pop("language", None)
        return self.out.decode(), _sorted(self.entities)

    def _start_tag(self) -> None:
        begin = self.i
        self.i += 1
        while self.at(self.i) not in _SPACES and self.at(self.i) != ord(">"):
            self.i += 1
        if self.at(self.i) == 0:
            raise MarkupError(f"Unclosed start tag at byte offset {begin}")
        tag = self.src[begin + 1 : self.i].decode(errors="replace").lower()
        if tag not in _HTML_TAGS:
            raise MarkupError(f'Unsupported start tag "{tag}" at byte offset {begin}')
        argument = ""
        while self.at(self.i) != ord(">"):
            self._skip_spaces()
            if self.at(self.i) == ord(">"):
                break
            name_begin = self.i
            while self.at(self.i) not in _SPACES and self.at(self.i) not in b"=>/\"'":
                self.i += 1
            name = self.src[name_begin : self.i].decode(errors="replace")
            if not name:
                raise MarkupError(f'Empty attribute name in the tag "{tag}" at byte offset {begin}')
            self._skip_spaces()
            if self.at(self.i) != ord("="):
                if self.at(self.i) == 0:
                    raise MarkupError(f'Unclosed start tag "{tag}" at byte offset {begin}')
                if tag == "blockquote" and name == "expandable":
                    argument = "1"
                continue
            self.i += 1
            self._skip_spaces()
            if self.at(self.i) == 0:
                raise MarkupError(f'Unclosed start tag "{tag}" at byte offset {begin}')
            value = self._attribute_value()
            if self.at(self.i) == 0:
                raise MarkupError(f"Unclosed start tag at byte offset {begin}")
            if tag == "a" and name == "href":
                argument = value
            elif tag == "code" and name == "class" and value.startswith("language-"):
                argument = value.removeprefix("language-")
            elif tag == "span" and name == "class" and value.startswith("tg-"):
                argument = value.removeprefix("tg-")
            elif (tag == "tg-emoji" and name == "emoji-id") or (
                tag == "blockquote" and name == "expandable"
            ):
                argument = value if tag == "tg-emoji" else "1"
        if tag == "span" and argument != "spoiler":
            raise MarkupError(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
        self.nested.append(_Open(tag, argument, self.utf16, begin, len(self.out)))

    def _skip_spaces(self) -> None:
        while self.at(self.i) != 0 and self.at(self.i) in _SPACES:
            self.i += 1

    def _attribute_value(self) -> str:
        quote = self.at(self.i)
        if quote not in (ord("'"), ord('"')):
            begin = self.i  # a name token: letters, digits, periods and hyphens
            while chr(self.at(self.i)).isascii() and (
                chr(self.at(self.i)).isalnum() or self.at(self.i) in b".-"
            ):
                self.i += 1
            if self.at(self.i) not in _SPACES and self.at(self.i) != ord(">"):
                raise MarkupError(f"Unexpected end of name token at byte offset {begin}")
            return self.src[begin : self.i].decode(errors="replace").lower()
        self.i += 1
        value = bytearray()
        while self.at(self.i) not in (quote, 0):
            if self.at(self.i) == ord("&"):
                char = self.decode_entity()
                if char is not None:
                    value += char.encode()
                    continue
            value.append(self.src[self.i])
            self.i += 1
        if self.at(self.i) == quote:
            self.i += 1
        return value.decode(errors="replace")

    def _end_tag(self) -> None:
        begin = self.i
        if not self.nested:
            raise MarkupError(f"Unexpected end tag at byte offset {begin}")
        self.i += 2
        while self.at(self.i) not in _SPACES and self.at(self.i) != ord(">"):
            self.i += 1
        end_tag = self.src[begin + 2 : self.i].decode(errors="replace").lower()
        while self.at(self.i) != 0 and self.at(self.i) in _SPACES:
            self.i += 1
        if self.at(self.i) != ord(">"):
            raise MarkupError(f"Unclosed end tag at byte offset {begin}")
        top = self.nested.pop()
        if end_tag and end_tag != top.kind:
            raise MarkupError(
                f'Unmatched end tag at byte offset {begin}, expected "</{top.kind}>", '
                f'found "</{end_tag}>"'
            )
        if self.utf16 > top.offset:
            self._add(top)

    def _add(self, top: _Open) -> None:
        offset, length, tag = top.offset, self.utf16 - top.offset, top.kind
        last = self.entities[-1] if self.entities else None
        same_span = last is not None and (last["offset"], last["length"]) == (offset, length)
        if tag in _HTML_KIND:
            self.entities.append(_entity(_HTML_KIND[tag], offset, length))
        elif tag == "tg-emoji":
            if not top.argument.isdigit() or int(top.argument) == 0:
                raise MarkupError("Invalid custom emoji identifier specified")
            self.entities.append(_entity("CustomEmoji", offset, length, str(int(top.argument))))
        elif tag == "a":
            url = top.argument or self.out[top.result_pos :].decode(errors="replace")
            checked = url if _link_user_id(url) is not None else _checked_link(url)
            if checked is not None:
                self.entities.append(_entity("TextUrl", offset, length, checked))
        elif tag == "pre":
            if same_span and last is not None and last["type"] == "code" and last.get("language"):
                last["type"] = "pre"
            else:
                self.entities.append(_entity("Pre", offset, length))
        elif tag == "code":
            if same_span and last is not None and last["type"] == "pre" and top.argument:
                last["language"] = top.argument
            else:
                code = _entity("Code", offset, length)
                if top.argument:  # kept until the end, for an enclosing <pre> to take it
                    code["language"] = top.argument
                self.entities.append(code)
        elif tag == "blockquote":
            kind = "ExpandableBlockQuote" if top.argument else "BlockQuote"
            self.entities.append(_entity(kind, offset, length))


# --------------------------------------------------------------------------- detection

# tdlib's match_mentions / match_bot_commands, with Python's \w standing in for its word class.
_MENTION_RE: Final = re.compile(r"(?<!\w)@[A-Za-z0-9_]{2,32}(?!\w)")
_COMMAND_RE: Final = re.compile(
    r"(?<![\w/<>])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/<>])"
)
_URL_RE: Final = re.compile(r"\bhttps?://[^\s<>\"]+", re.IGNORECASE)


def find_entities(text: str) -> list[dict[str, Any]]:
    """The mention, bot_command and url entities Telegram attaches to an incoming text."""
    patterns = (("mention", _MENTION_RE), ("bot_command", _COMMAND_RE), ("url", _URL_RE))
    return _sorted(
        [
            {
                "type": kind,
                "offset": utf16_len(text[: match.start()]),
                "length": utf16_len(match.group()),
            }
            for kind, pattern in patterns
            for match in pattern.finditer(text)
        ]
    )
