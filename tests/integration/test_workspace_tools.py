"""The file and memory tools against real Postgres and Redis: round trips, refusals that
write nothing, isolation between agents and tenants, memory search, size and count limits."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from clawbus_core.config import Endpoints
from clawbus_core.db import Pool, create_pool
from clawbus_core.store import workspace as store
from clawbus_runner.tools.base import MAX_RESULT_CHARS, Tool, ToolContext, ToolError
from clawbus_runner.tools.workspace import workspace_tools

DEFAULT_TENANT = uuid.UUID("00000000-0000-0000-0000-000000000001")

NewAgent = Callable[[], Awaitable[ToolContext]]


@pytest.fixture
async def pool(endpoints: Endpoints) -> AsyncIterator[Pool]:
    created = await create_pool(endpoints.database_url, min_size=1, max_size=8)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def redis(endpoints: Endpoints) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(endpoints.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def new_agent(
    pool: Pool, redis: aioredis.Redis, db: asyncpg.Connection
) -> AsyncIterator[NewAgent]:
    """Makes an agent of its own (unique key) and the ToolContext of a run of it."""
    made: list[uuid.UUID] = []

    async def make() -> ToolContext:
        agent_id, key = uuid.uuid4(), f"ws-{secrets.token_hex(6)}"
        await db.execute(
            "INSERT INTO agents (id, tenant_id, key, name) VALUES ($1, $2, $3, $3)",
            agent_id,
            DEFAULT_TENANT,
            key,
        )
        made.append(agent_id)
        return ToolContext(
            pool=pool,
            redis=redis,
            tenant_id=DEFAULT_TENANT,
            agent_id=agent_id,
            agent_key=key,
            session_id=uuid.uuid4(),
            session_key=f"agent:{key}:main",
            run_id=uuid.uuid4(),
        )

    yield make
    # Deleting the agent deletes its files (ON DELETE CASCADE).
    await db.execute("DELETE FROM agents WHERE id = ANY($1::uuid[])", made)


@pytest.fixture
def tools() -> dict[str, Tool]:
    return {tool.spec.name: tool for tool in workspace_tools()}


async def files_of(db: asyncpg.Connection, ctx: ToolContext) -> dict[str, str]:
    rows = await db.fetch(
        "SELECT path, content FROM workspace_files WHERE agent_id = $1", ctx.agent_id
    )
    return {r["path"]: r["content"] for r in rows}


async def refused(tool: Tool, ctx: ToolContext, args: dict[str, Any]) -> str:
    with pytest.raises(ToolError) as caught:
        await tool.run(ctx, args)
    return str(caught.value)


def test_the_factory_gives_six_safe_tools_with_described_schemas() -> None:
    specs = [tool.spec for tool in workspace_tools()]
    assert [s.name for s in specs] == [
        "read",
        "write",
        "edit",
        "list",
        "memory_search",
        "memory_get",
    ]
    for spec in specs:
        assert spec.policy == "safe"
        assert spec.description
        assert spec.parameters["type"] == "object"
        for name, schema in spec.parameters["properties"].items():
            assert schema.get("description"), f"{spec.name}.{name} has no description"
        assert set(spec.parameters.get("required", [])) <= set(spec.parameters["properties"])


async def test_write_read_edit_list_round_trip(
    new_agent: NewAgent, tools: dict[str, Tool], db: asyncpg.Connection
) -> None:
    ctx = await new_agent()
    read, write, edit, listing = tools["read"], tools["write"], tools["edit"], tools["list"]

    assert await listing.run(ctx, {}) == "no files"
    assert await write.run(ctx, {"path": "./notes//a.md", "content": "hello world\n"}) == (
        "wrote notes/a.md (12 bytes, new file)"
    )
    assert await read.run(ctx, {"path": "notes/a.md"}) == "hello world"

    assert await edit.run(
        ctx, {"path": "notes/a.md", "old_text": "world", "new_text": "there"}
    ) == ("edited notes/a.md: replaced 1 occurrence")
    assert await read.run(ctx, {"path": "notes/a.md"}) == "hello there"

    assert await write.run(ctx, {"path": "notes/a.md", "content": "one\ntwo\nthree\nfour\n"}) == (
        "wrote notes/a.md (19 bytes)"
    )
    assert await read.run(ctx, {"path": "notes/a.md", "offset": 2, "limit": 2}) == (
        "two\nthree\n[lines 2-3 of 4 in notes/a.md; read on with offset=4]"
    )
    assert await read.run(ctx, {"path": "notes/a.md", "offset": 4}) == (
        "four\n[lines 4-4 of 4 in notes/a.md]"
    )
    assert "past the end" in await refused(read, ctx, {"path": "notes/a.md", "offset": 9})

    await write.run(ctx, {"path": "MEMORY.md", "content": "x y x"})
    await write.run(ctx, {"path": "empty.md", "content": ""})
    assert await read.run(ctx, {"path": "empty.md"}) == "(empty.md is empty)"
    assert await edit.run(
        ctx, {"path": "MEMORY.md", "old_text": "x", "new_text": "z", "replace_all": True}
    ) == ("edited MEMORY.md: replaced 2 occurrences")

    everything = (await listing.run(ctx, {})).splitlines()
    assert [line.split("  ")[:2] for line in everything] == [
        ["MEMORY.md", "5 bytes"],
        ["empty.md", "0 bytes"],
        ["notes/a.md", "19 bytes"],
    ]
    assert [
        line.split("  ")[0] for line in (await listing.run(ctx, {"path": "notes"})).split("\n")
    ] == ["notes/a.md"]
    assert await listing.run(ctx, {"path": "notes/a.md"}) == "no files under notes/a.md"
    assert await files_of(db, ctx) == {
        "MEMORY.md": "z y z",
        "empty.md": "",
        "notes/a.md": "one\ntwo\nthree\nfour\n",
    }


async def test_edit_refuses_a_missing_or_ambiguous_match(
    new_agent: NewAgent, tools: dict[str, Tool], db: asyncpg.Connection
) -> None:
    ctx = await new_agent()
    edit = tools["edit"]
    await tools["write"].run(ctx, {"path": "a.md", "content": "ab ab"})

    assert "does not occur" in await refused(
        edit, ctx, {"path": "a.md", "old_text": "zz", "new_text": "y"}
    )
    assert "occurs 2 times" in await refused(
        edit, ctx, {"path": "a.md", "old_text": "ab", "new_text": "y"}
    )
    assert "must not be empty" in await refused(
        edit, ctx, {"path": "a.md", "old_text": "", "new_text": "y"}
    )
    assert "no file gone.md" in await refused(
        edit, ctx, {"path": "gone.md", "old_text": "a", "new_text": "b"}
    )
    assert "no file gone.md" in await refused(tools["read"], ctx, {"path": "gone.md"})
    assert await files_of(db, ctx) == {"a.md": "ab ab"}


async def test_concurrent_edits_are_all_applied(
    new_agent: NewAgent, tools: dict[str, Tool], db: asyncpg.Connection
) -> None:
    ctx = await new_agent()
    marks = [f"<{i}>" for i in range(12)]
    await tools["write"].run(ctx, {"path": "a.md", "content": " ".join(marks)})
    await asyncio.gather(
        *(
            tools["edit"].run(ctx, {"path": "a.md", "old_text": m, "new_text": m + "!"})
            for m in marks
        )
    )
    assert await files_of(db, ctx) == {"a.md": " ".join(m + "!" for m in marks)}


ESCAPES = [
    "/etc/passwd",
    "//etc/passwd",
    "C:\\Windows\\win.ini",
    "c:/x.md",
    "\\\\server\\share\\x.md",
    "..",
    "../x.md",
    "notes/../../x.md",
    "notes/..",
    "./../MEMORY.md",
    "...",
    "%2e%2e/x.md",
    "%2E%2E%2Fx.md",
    "notes%2f..%2fx.md",
    "%252e%252e/x.md",
    "x.md%00.txt",
    "x.md\x00.txt",
    "x\n.md",
    "x\x1b.md",
    "a\u202egpj.md",
    "notes\\x.md",
    "\uff0e\uff0e/x.md",
    "notes\uff0fx.md",
    "notes\u2215x.md",
    "x" * 600,
    "d/" + "x" * 300,
]


def escape_calls(path: str, marker: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("read", {"path": path}),
        ("write", {"path": path, "content": marker}),
        ("edit", {"path": path, "old_text": "a", "new_text": marker}),
        ("list", {"path": path}),
        ("memory_get", {"path": path}),
    ]


async def test_every_file_tool_refuses_every_escape_and_writes_nothing(
    new_agent: NewAgent, tools: dict[str, Tool], db: asyncpg.Connection
) -> None:
    ctx = await new_agent()
    await tools["write"].run(ctx, {"path": "MEMORY.md", "content": "a"})
    marker = f"pwned-{secrets.token_hex(6)}"
    for path in ESCAPES:
        for name, args in escape_calls(path, marker):
            message = await refused(tools[name], ctx, args)
            assert message.startswith("invalid path"), (name, path, message)
    assert await files_of(db, ctx) == {"MEMORY.md": "a"}
    # Not written under any agent either.
    assert not await db.fetch("SELECT path FROM workspace_files WHERE content = $1", marker)


async def test_bad_arguments_are_tool_errors(new_agent: NewAgent, tools: dict[str, Tool]) -> None:
    ctx = await new_agent()
    assert "'path' is required" in await refused(tools["read"], ctx, {})
    assert "'path' is required" in await refused(tools["write"], ctx, {"content": "x"})
    assert "'content' is required" in await refused(tools["write"], ctx, {"path": "a.md"})
    assert "'offset' must be an integer" in await refused(
        tools["read"], ctx, {"path": "a.md", "offset": "2"}
    )
    assert "'limit' must be at least 1" in await refused(
        tools["read"], ctx, {"path": "a.md", "limit": 0}
    )
    assert "'replace_all' must be true or false" in await refused(
        tools["edit"], ctx, {"path": "a.md", "old_text": "a", "new_text": "b", "replace_all": 1}
    )
    assert "'limit' must be from 1 to 20" in await refused(
        tools["memory_search"], ctx, {"query": "x", "limit": 21}
    )
    assert "NUL" in await refused(tools["write"], ctx, {"path": "a.md", "content": "a\x00b"})


async def test_agents_and_tenants_never_see_each_others_files(
    new_agent: NewAgent, tools: dict[str, Tool], db: asyncpg.Connection
) -> None:
    alice, bob = await new_agent(), await new_agent()
    await tools["write"].run(alice, {"path": "MEMORY.md", "content": "the vault code is 4711"})
    await tools["write"].run(alice, {"path": "secret.md", "content": "alice only"})

    assert "no file secret.md" in await refused(tools["read"], bob, {"path": "secret.md"})
    assert "no file MEMORY.md" in await refused(tools["memory_get"], bob, {"path": "MEMORY.md"})
    assert "no file secret.md" in await refused(
        tools["edit"], bob, {"path": "secret.md", "old_text": "alice", "new_text": "bob"}
    )
    assert await tools["list"].run(bob, {}) == "no files"
    assert await tools["memory_search"].run(bob, {"query": "vault code"}) == (
        "no memory matches 'vault code'"
    )
    # The same path is a different file for each agent.
    assert await tools["write"].run(bob, {"path": "secret.md", "content": "bob's"}) == (
        "wrote secret.md (5 bytes, new file)"
    )
    assert await tools["read"].run(alice, {"path": "secret.md"}) == "alice only"
    assert await tools["read"].run(bob, {"path": "secret.md"}) == "bob's"

    # A run of another tenant naming alice's agent id sees nothing and writes nothing.
    stranger = ToolContext(
        pool=alice.pool,
        redis=alice.redis,
        tenant_id=uuid.uuid4(),
        agent_id=alice.agent_id,
        agent_key=alice.agent_key,
        session_id=uuid.uuid4(),
        session_key="x",
        run_id=uuid.uuid4(),
    )
    assert "no file secret.md" in await refused(tools["read"], stranger, {"path": "secret.md"})
    assert "not found" in await refused(
        tools["write"], stranger, {"path": "secret.md", "content": "overwritten"}
    )
    assert "not found" in await refused(tools["write"], stranger, {"path": "new.md", "content": ""})
    assert await tools["list"].run(stranger, {}) == "no files"
    assert await files_of(db, alice) == {
        "MEMORY.md": "the vault code is 4711",
        "secret.md": "alice only",
    }


async def test_memory_search_ranks_relevant_memory_first_and_ignores_other_files(
    new_agent: NewAgent, tools: dict[str, Tool], pool: Pool
) -> None:
    ctx = await new_agent()
    write = tools["write"]
    await write.run(
        ctx,
        {
            "path": "MEMORY.md",
            "content": "# Memory\nThe user likes tea. We once talked about a database.\n"
            "Their cat is called Miso.\n",
        },
    )
    await write.run(
        ctx,
        {
            "path": "memory/2026-11-20.md",
            "content": "Migrated the database to Postgres. Postgres replication is set up; "
            "the Postgres backups run nightly and the databases are vacuumed.\n",
        },
    )
    await write.run(ctx, {"path": "memory/cats.md", "content": "Miso the cat likes boxes.\n"})
    # Not memory: a note, a nested file and a non-markdown file, all full of the query.
    for path in ("notes/postgres.md", "memory/old/postgres.md", "memory/postgres.txt"):
        await write.run(ctx, {"path": path, "content": "postgres database " * 50})

    hits = await store.search_memory(pool, ctx.tenant_id, ctx.agent_id, "postgres database")
    assert [h.path for h in hits] == ["memory/2026-11-20.md"]
    hits = await store.search_memory(pool, ctx.tenant_id, ctx.agent_id, "database")
    assert [h.path for h in hits] == ["memory/2026-11-20.md", "MEMORY.md"]
    assert hits[0].rank > hits[1].rank
    assert "**database**" in hits[0].snippet

    text = await tools["memory_search"].run(ctx, {"query": "database"})
    lines = text.splitlines()
    assert lines[0].startswith("1. memory/2026-11-20.md (rank ")
    assert lines[2].startswith("2. MEMORY.md (rank ")
    assert "**database**" in lines[1]
    assert "notes/" not in text
    assert "memory/old" not in text
    assert "postgres.txt" not in text

    # Stemming and websearch syntax.
    cats = await tools["memory_search"].run(ctx, {"query": "cats"})
    assert "memory/cats.md" in cats
    assert "MEMORY.md" in cats
    only_cats = await tools["memory_search"].run(ctx, {"query": "miso -tea"})
    assert only_cats.startswith("1. memory/cats.md")
    assert "MEMORY.md" not in only_cats
    one = await tools["memory_search"].run(ctx, {"query": "cat", "limit": 1})
    assert len(one.splitlines()) == 2
    assert "empty" in await refused(tools["memory_search"], ctx, {"query": "  "})


async def test_memory_get_reads_memory_only(new_agent: NewAgent, tools: dict[str, Tool]) -> None:
    ctx = await new_agent()
    memory_get = tools["memory_get"]
    await tools["write"].run(ctx, {"path": "MEMORY.md", "content": "a\nb\nc\n"})
    await tools["write"].run(ctx, {"path": "memory/day.md", "content": "today\n"})
    await tools["write"].run(ctx, {"path": "notes/a.md", "content": "note"})
    await tools["write"].run(ctx, {"path": "memory/sub/x.md", "content": "nested"})

    assert await memory_get.run(ctx, {"path": "MEMORY.md"}) == "a\nb\nc"
    assert await memory_get.run(ctx, {"path": "MEMORY.md", "offset": 2, "limit": 1}) == (
        "b\n[lines 2-2 of 3 in MEMORY.md; read on with offset=3]"
    )
    assert await memory_get.run(ctx, {"path": "./memory//day.md"}) == "today"
    for path in ("notes/a.md", "memory/sub/x.md", "memory.md", "AGENTS.md", "memory"):
        assert "not a memory file" in await refused(memory_get, ctx, {"path": path})
    assert "no file memory/none.md" in await refused(memory_get, ctx, {"path": "memory/none.md"})


async def test_size_limit(
    new_agent: NewAgent, tools: dict[str, Tool], db: asyncpg.Connection
) -> None:
    ctx = await new_agent()
    write, edit = tools["write"], tools["edit"]
    limit = store.MAX_FILE_BYTES

    assert f"at most {limit}" in await refused(
        write, ctx, {"path": "big.md", "content": "x" * (limit + 1)}
    )
    # Bytes, not characters: "é" is two bytes in UTF-8.
    assert f"at most {limit}" in await refused(
        write, ctx, {"path": "big.md", "content": "\u00e9" * (limit // 2 + 1)}
    )
    assert await files_of(db, ctx) == {}

    assert await write.run(ctx, {"path": "big.md", "content": "x" * (limit - 1)}) == (
        f"wrote big.md ({limit - 1} bytes, new file)"
    )
    assert f"at most {limit}" in await refused(
        edit, ctx, {"path": "big.md", "old_text": "xx", "new_text": "yyy", "replace_all": True}
    )
    assert (await files_of(db, ctx))["big.md"] == "x" * (limit - 1)

    # A big file is read in parts within the cap, with the offset to go on from.
    await write.run(
        ctx, {"path": "lines.md", "content": "".join(f"{i:09}\n" for i in range(20_000))}
    )
    first = await tools["read"].run(ctx, {"path": "lines.md"})
    assert len(first) <= MAX_RESULT_CHARS
    shown = first.splitlines()[:-1]
    assert shown[0] == "000000000"
    assert first.splitlines()[-1] == (
        f"[lines 1-{len(shown)} of 20000 in lines.md; read on with offset={len(shown) + 1}]"
    )
    nxt = await tools["read"].run(ctx, {"path": "lines.md", "offset": len(shown) + 1})
    assert nxt.startswith(f"{len(shown):09}\n")
    one_line = await tools["read"].run(ctx, {"path": "big.md"})
    assert len(one_line) <= MAX_RESULT_CHARS
    assert one_line.endswith("characters]")


async def test_file_count_limit(
    new_agent: NewAgent, tools: dict[str, Tool], db: asyncpg.Connection
) -> None:
    ctx = await new_agent()
    await db.execute(
        "INSERT INTO workspace_files (tenant_id, agent_id, path) "
        "SELECT $1, $2, 'f/' || n FROM generate_series(1, $3::int - 1) AS n",
        ctx.tenant_id,
        ctx.agent_id,
        store.MAX_FILES_PER_AGENT,
    )
    write = tools["write"]
    assert await write.run(ctx, {"path": "last.md", "content": "x"}) == (
        "wrote last.md (1 bytes, new file)"
    )
    assert "delete some first" in await refused(write, ctx, {"path": "one-more.md", "content": "x"})
    # Replacing an existing file still works at the limit.
    assert await write.run(ctx, {"path": "f/1", "content": "changed"}) == "wrote f/1 (7 bytes)"
    listing = (await tools["list"].run(ctx, {})).splitlines()
    assert listing[-1] == "[only the first 500 files are listed]"
    assert len(listing) == 501
    await store.delete_file(ctx.pool, ctx.tenant_id, ctx.agent_id, "f/2")
    assert await write.run(ctx, {"path": "one-more.md", "content": "x"}) == (
        "wrote one-more.md (1 bytes, new file)"
    )
    assert (
        await db.fetchval("SELECT count(*) FROM workspace_files WHERE agent_id = $1", ctx.agent_id)
        == store.MAX_FILES_PER_AGENT
    )
