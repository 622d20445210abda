"""`web_fetch`: fetch a URL and return what the model can read, behind the SSRF guard.

Every hop (the URL and each redirect) is checked by `clawbus_core.netguard` before it is
requested, and the connection goes only to the addresses the check resolved. The body is
read up to a byte cap within one time limit for the whole fetch; HTML comes back as its
readable text, text and JSON as they are, anything else as a one-line description (its bytes
are never kept).
"""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from typing import Any

import aiohttp
from clawbus_core.netguard import CheckedResolver, NetPolicy, check_url
from clawbus_protocol.errors import ClawbusError
from yarl import URL

from clawbus_runner.tools.base import MAX_RESULT_CHARS, ToolContext, ToolError, ToolSpec

__all__ = ["WebFetchTool", "readable_text"]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_CHUNK_BYTES = 64 * 1024
_WHITESPACE = re.compile(r"\s+")

_SPEC = ToolSpec(
    name="web_fetch",
    description=(
        "Fetch a public http(s) URL and return its readable text (HTML is reduced to text; "
        "text and JSON are returned as they are; other content is only described). "
        "Private and internal network addresses are refused."
    ),
    parameters={
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "The http or https URL to fetch."},
            "max_chars": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_RESULT_CHARS,
                "description": f"Return at most this many characters (default {MAX_RESULT_CHARS}).",
            },
        },
        "required": ["url"],
        "additionalProperties": False,
    },
    policy="safe",
)


class _TextExtractor(HTMLParser):
    """The text a reader sees: no scripts, styles or tags; blocks on their own lines.

    Whitespace is collapsed everywhere, `<pre>` included: the model reads words, not layout.
    """

    _SKIPPED = frozenset({"script", "style", "noscript", "template", "svg"})
    _BLOCKS = frozenset(
        {
            "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
            "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
            "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table",
            "title", "tr", "ul",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIPPED:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self._parts.append("\n")
        elif tag in ("td", "th"):
            self._parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS:
            self._parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            # Line breaks in the source are spaces to a reader; only blocks start a line.
            self._parts.append(_WHITESPACE.sub(" ", data))

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self._parts).split("\n"))
        return "\n".join(line for line in lines if line)


def readable_text(html: str) -> str:
    """The readable text of an HTML document, whitespace collapsed."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    return extractor.text()


def _is_text(content_type: str) -> bool:
    return (
        content_type.startswith("text/")
        or content_type in ("application/json", "application/xml")
        or content_type.endswith(("+json", "+xml"))
    )


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset name Python does not know
        return body.decode("utf-8", errors="replace")


class WebFetchTool:
    """The `web_fetch` tool. Owns one aiohttp session, opened on first use; `aclose()` it."""

    spec = _SPEC

    def __init__(
        self,
        policy: NetPolicy,
        *,
        max_bytes: int = 2 * 1024 * 1024,
        timeout_s: float = 15.0,
        max_redirects: int = 5,
    ) -> None:
        self._policy = policy
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._max_redirects = max_redirects
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # Resolves through the guard: connects only to the addresses it checked.
                # No DNS cache, so every new connection is checked against a fresh answer.
                connector=aiohttp.TCPConnector(
                    resolver=CheckedResolver(self._policy), use_dns_cache=False
                ),
                # One session serves every tenant: cookies must not carry over between runs.
                cookie_jar=aiohttp.DummyCookieJar(),
                # Proxies from the environment would connect on our behalf, past the guard.
                trust_env=False,
                headers={"User-Agent": "clawbus-web-fetch/0.1"},
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        url = args.get("url")
        if not isinstance(url, str) or not url.strip():
            raise ToolError("`url` must be a non-empty string")
        max_chars = args.get("max_chars", MAX_RESULT_CHARS)
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise ToolError("`max_chars` must be a positive integer")
        try:
            async with asyncio.timeout(self._timeout_s):
                text = await self._fetch(url.strip())
        except ClawbusError as exc:  # refused by the guard, or not a URL
            raise ToolError(f"cannot fetch {url}: {exc.info.message}") from None
        except TimeoutError:
            raise ToolError(f"fetching {url} timed out after {self._timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise ToolError(f"cannot fetch {url}: {exc}") from None
        limit = min(max_chars, MAX_RESULT_CHARS)
        if len(text) > limit:
            text = f"{text[:limit]}\n[truncated: {len(text) - limit} more characters]"
        return text

    async def _fetch(self, raw_url: str) -> str:
        url: URL | str = raw_url
        for _ in range(self._max_redirects + 1):
            checked = check_url(url, self._policy)
            async with self._client().get(checked, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status in _REDIRECT_STATUSES and location:
                    try:
                        url = checked.join(URL(location))
                    except ValueError as exc:
                        raise ToolError(f"{checked} redirected to a bad URL: {exc}") from None
                    continue
                if resp.status >= 400:
                    raise ToolError(f"{checked} answered HTTP {resp.status} {resp.reason or ''}")
                return await self._describe(resp, checked)
        raise ToolError(f"{raw_url} redirected more than {self._max_redirects} times")

    async def _describe(self, resp: aiohttp.ClientResponse, url: URL) -> str:
        content_type = resp.content_type
        head = (
            f"URL: {url}\nStatus: {resp.status} {resp.reason or ''}\nContent-Type: {content_type}"
        )
        if not _is_text(content_type) and content_type not in _HTML_TYPES:
            size = resp.content_length
            if size is None:  # count it without keeping it
                size, more = await self._drain(resp)
                described = f"more than {self._max_bytes} bytes" if more else f"{size} bytes"
            else:
                described = f"{size} bytes"
            return f"{head}\n\n[{content_type} content, {described}: not shown]"
        body, truncated = await self._read(resp)
        text = _decode(body, resp.charset)
        if content_type in _HTML_TYPES:
            text = readable_text(text)
        note = f"\n[content truncated at {self._max_bytes} bytes]" if truncated else ""
        return f"{head}{note}\n\n{text}"

    async def _read(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """The body up to max_bytes, and whether there was more."""
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
            room = self._max_bytes - len(body)
            body += chunk[:room]
            if len(chunk) > room:
                return bytes(body), True
        return bytes(body), False

    async def _drain(self, resp: aiohttp.ClientResponse) -> tuple[int, bool]:
        """The body's size, counted up to max_bytes and discarded, and whether there was more."""
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
            size += len(chunk)
            if size > self._max_bytes:
                return size, True
        return size, False
