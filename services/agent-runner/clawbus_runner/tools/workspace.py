"""The file tools: read, write, edit and list the agent's workspace (rows in Postgres, never
the host disk; see clawbus_core.store.workspace).

Each tool works on the run's own (tenant, agent). What the store refuses (a bad path, a
missing file, an edit that does not match, a file over the size limit) reaches the model as a
ToolError with the store's message, so the model can correct itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from clawbus_core.store import workspace as store
from clawbus_protocol.errors import InvalidRequest, NotFound, PayloadTooLarge

from clawbus_runner.tools.base import MAX_RESULT_CHARS, Tool, ToolContext, ToolError, ToolSpec

# How many entries `list` shows; the rest are counted, not listed.
MAX_LIST_ENTRIES = 500
# Room kept under MAX_RESULT_CHARS for the note saying what was left out.
_NOTE_ROOM = 200

PATH_PARAM: Mapping[str, Any] = {
    "type": "string",
    "description": "Path relative to the workspace root, with '/' between folders "
    "(e.g. 'notes/todo.md'). No leading '/', no '..'.",
}
OFFSET_PARAM: Mapping[str, Any] = {
    "type": "integer",
    "minimum": 1,
    "description": "First line to return (1-based). Default: 1.",
}
LIMIT_PARAM: Mapping[str, Any] = {
    "type": "integer",
    "minimum": 1,
    "description": "How many lines to return. Default: to the end (output is capped).",
}


@contextmanager
def tool_errors() -> Iterator[None]:
    """Turn the store's refusals into errors the model sees."""
    try:
        yield
    except (InvalidRequest, NotFound, PayloadTooLarge) as exc:
        raise ToolError(exc.info.message) from exc


def text_arg(args: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise ToolError(f"'{name}' is required and must be a string")
    if not value and not allow_empty:
        raise ToolError(f"'{name}' must not be empty")
    return value


def int_arg(
    args: Mapping[str, Any], name: str, *, low: int = 1, high: int | None = None
) -> int | None:
    value = args.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolError(f"'{name}' must be an integer")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ToolError(f"'{name}' must be {bounds}, not {value}")
    return value


def bool_arg(args: Mapping[str, Any], name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        raise ToolError(f"'{name}' must be true or false")
    return value


def render_lines(file: store.WorkspaceFile, offset: int | None, limit: int | None) -> str:
    """The file's lines from `offset` (1-based), at most `limit` of them, within
    MAX_RESULT_CHARS; a closing note says what was left out and how to read on."""
    lines = file.content.split("\n")
    if lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it does not start another
    total = len(lines)
    if total == 0:
        return f"({file.path} is empty)"
    start = (offset or 1) - 1
    if start >= total:
        raise ToolError(f"{file.path} has {total} lines; offset {start + 1} is past the end")
    end = total if limit is None else min(total, start + limit)
    budget = MAX_RESULT_CHARS - _NOTE_ROOM
    shown: list[str] = []
    used = 0
    cut = False
    for line in lines[start:end]:
        if used + len(line) + 1 > budget:
            if not shown:  # one huge line: show its beginning rather than nothing
                shown.append(line[:budget])
                cut = True
            break
        shown.append(line)
        used += len(line) + 1
    text = "\n".join(shown)
    last = start + len(shown)
    if cut:
        return f"{text}\n[line {last} of {file.path} cut at {budget} characters]"
    if start > 0 or last < total:
        more = f"; read on with offset={last + 1}" if last < total else ""
        return f"{text}\n[lines {start + 1}-{last} of {total} in {file.path}{more}]"
    return text


class ReadTool:
    spec = ToolSpec(
        name="read",
        http=True,  # reads the agent's own store
        description="Read a text file from your workspace. Long files come back in part, "
        "with a note giving the offset to continue from.",
        parameters={
            "type": "object",
            "properties": {"path": PATH_PARAM, "offset": OFFSET_PARAM, "limit": LIMIT_PARAM},
            "required": ["path"],
            "additionalProperties": False,
        },
    )

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        path = text_arg(args, "path")
        offset, limit = int_arg(args, "offset"), int_arg(args, "limit")
        with tool_errors():
            file = await store.read_file(ctx.pool, ctx.tenant_id, ctx.agent_id, path)
        return render_lines(file, offset, limit)


class WriteTool:
    spec = ToolSpec(
        name="write",
        description="Create a file in your workspace, or replace its whole content. Folders "
        f"need no creating. At most {store.MAX_FILE_BYTES} bytes per file. To change part "
        "of an existing file, use `edit`.",
        parameters={
            "type": "object",
            "properties": {
                "path": PATH_PARAM,
                "content": {"type": "string", "description": "The complete new content."},
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        },
    )

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        raw, content = text_arg(args, "path"), text_arg(args, "content", allow_empty=True)
        with tool_errors():
            path = store.normalize_path(raw)
            created = await store.write_file(ctx.pool, ctx.tenant_id, ctx.agent_id, path, content)
        size = len(content.encode())
        return f"wrote {path} ({size} bytes{', new file' if created else ''})"


class EditTool:
    spec = ToolSpec(
        name="edit",
        description="Replace an exact piece of text in a workspace file. `old_text` must "
        "match the file character for character (whitespace included) and occur exactly "
        "once, unless `replace_all` is true.",
        parameters={
            "type": "object",
            "properties": {
                "path": PATH_PARAM,
                "old_text": {"type": "string", "description": "The exact text to replace."},
                "new_text": {"type": "string", "description": "The text to put in its place."},
                "replace_all": {
                    "type": "boolean",
                    "description": "Replace every occurrence. Default: false.",
                },
            },
            "required": ["path", "old_text", "new_text"],
            "additionalProperties": False,
        },
    )

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        raw = text_arg(args, "path")
        old = text_arg(args, "old_text")
        new = text_arg(args, "new_text", allow_empty=True)
        replace_all = bool_arg(args, "replace_all")
        with tool_errors():
            path = store.normalize_path(raw)
            count = await store.edit_file(
                ctx.pool,
                ctx.tenant_id,
                ctx.agent_id,
                path,
                old=old,
                new=new,
                replace_all=replace_all,
            )
        return f"edited {path}: replaced {count} occurrence{'s' if count != 1 else ''}"


class ListTool:
    spec = ToolSpec(
        name="list",
        http=True,  # reads the agent's own store
        description="List the files in your workspace (all of them, or those under a "
        "folder), with their sizes in bytes and when they last changed.",
        parameters={
            "type": "object",
            "properties": {
                "path": {
                    "type": "string",
                    "description": "Folder to list, relative to the workspace root "
                    "(e.g. 'memory'). Default: the whole workspace.",
                },
            },
            "additionalProperties": False,
        },
    )

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        directory = args.get("path")
        if directory is not None and not isinstance(directory, str):
            raise ToolError("'path' must be a string")
        with tool_errors():
            files = await store.list_files(
                ctx.pool, ctx.tenant_id, ctx.agent_id, directory, limit=MAX_LIST_ENTRIES + 1
            )
        where = f" under {directory}" if directory else ""
        if not files:
            return f"no files{where}"
        lines = [
            f"{f.path}  {f.size} bytes  {f.updated_at:%Y-%m-%d %H:%M}"
            for f in files[:MAX_LIST_ENTRIES]
        ]
        if len(files) > MAX_LIST_ENTRIES:
            lines.append(f"[only the first {MAX_LIST_ENTRIES} files{where} are listed]")
        return "\n".join(lines)


def workspace_tools() -> list[Tool]:
    """The file and memory tools, for the runner to register in one line."""
    # Imported here: the memory tools build on this module's helpers.
    from clawbus_runner.tools.memory import memory_tools

    return [ReadTool(), WriteTool(), EditTool(), ListTool(), *memory_tools()]
