"""memory_search by keywords and meaning, against real Postgres and the fake model server's
embeddings (a hashed bag of five-letter word stems, see clawbus_fakes.models.fake_embedding):
paraphrases found only by meaning, lazy re-indexing on edit and delete, bounded indexing,
falling back to keywords when the embeddings call fails, and the tool's output."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
import redis.asyncio as aioredis
from clawbus_core.config import Endpoints
from clawbus_core.db import Pool, create_pool
from clawbus_core.store import memory_vectors as vectors
from clawbus_core.store import workspace as store
from clawbus_fakes.models import FakeModelServer, Reply
from clawbus_protocol.settings import ProviderConfig
from clawbus_runner.embeddings import Embedder
from clawbus_runner.settings import RunnerSettings
from clawbus_runner.tools.base import ToolContext, ToolPolicy
from clawbus_runner.tools.memory import MAX_INDEX_FILES, SNIPPET_CHARS, MemorySearchTool, fuse
from clawbus_runner.toolset import build_tools

DEFAULT_TENANT = uuid.UUID("00000000-0000-0000-0000-000000000001")
EMBED = "text-embedding-3-small"
MODEL_ID = f"openai/{EMBED}"

FOOD = "# Dana\n\nDana is vegetarian and never eats meat.\nShe loves spicy curry.\n"
TRIP = "Flights to Lisbon are booked for March; the hotel is near the river.\n"
CATS = "Miso the cat likes boxes.\n"

NewAgent = Callable[[], Awaitable[ToolContext]]


@pytest.fixture
async def pool(endpoints: Endpoints) -> AsyncIterator[Pool]:
    created = await create_pool(endpoints.database_url, min_size=1, max_size=4)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def new_agent(
    pool: Pool, endpoints: Endpoints, db: asyncpg.Connection
) -> AsyncIterator[NewAgent]:
    """Makes an agent of its own (unique key) and the ToolContext of a run of it."""
    made: list[uuid.UUID] = []
    redis = aioredis.Redis.from_url(endpoints.redis_url)  # in the context, unused here

    async def make() -> ToolContext:
        agent_id, key = uuid.uuid4(), f"mv-{secrets.token_hex(6)}"
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
    await db.execute("DELETE FROM agents WHERE id = ANY($1::uuid[])", made)
    await redis.aclose()


def runner_settings(fake: FakeModelServer, embedding_model: str | None) -> RunnerSettings:
    return RunnerSettings(
        providers={
            "openai": ProviderConfig(
                kind="openai", api_key="sk-fake", base_url=f"{fake.url}/v1", timeout_s=5
            )
        },
        embedding_model=embedding_model,
    )


@pytest.fixture
async def embedder(fake_models: FakeModelServer) -> AsyncIterator[Embedder]:
    made = Embedder.from_settings(runner_settings(fake_models, MODEL_ID))
    assert made is not None
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
def hybrid(embedder: Embedder) -> MemorySearchTool:
    return MemorySearchTool(embedder)


async def write(ctx: ToolContext, path: str, content: str) -> None:
    await store.write_file(ctx.pool, ctx.tenant_id, ctx.agent_id, path, content)


async def chunk_rows(db: asyncpg.Connection, ctx: ToolContext) -> dict[str, list[asyncpg.Record]]:
    rows = await db.fetch(
        "SELECT path, chunk_no, content, content_sha256, model, cardinality(embedding) AS dims "
        "FROM memory_chunks WHERE agent_id = $1 ORDER BY path, chunk_no",
        ctx.agent_id,
    )
    out: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        out.setdefault(row["path"], []).append(row)
    return out


def embedded_inputs(fake: FakeModelServer) -> list[list[str]]:
    return [r.body["input"] for r in fake.requests_for(EMBED)]


# --------------------------------------------------------------------------- search


async def test_a_paraphrase_is_found_by_meaning_not_by_keywords(
    new_agent: NewAgent, hybrid: MemorySearchTool, fake_models: FakeModelServer
) -> None:
    ctx = await new_agent()
    await write(ctx, "memory/food.md", FOOD)
    await write(ctx, "memory/trip.md", TRIP)
    await write(ctx, "notes/food.md", FOOD)  # not memory: never indexed nor found
    # "vegetables" is the lexeme 'veget', "vegetarian" is 'vegetarian': no keyword match.
    keywords_only = MemorySearchTool()
    assert await keywords_only.run(ctx, {"query": "vegetables"}) == (
        "no memory matches 'vegetables'"
    )
    assert fake_models.requests_for(EMBED) == []

    text = await hybrid.run(ctx, {"query": "vegetables"})
    first, snippet = text.split("\n")[:2]
    assert first.startswith("1. memory/food.md, lines 1-4 (meaning #1 (0.")
    assert snippet == "   # Dana Dana is vegetarian and never eats meat. She loves spicy curry."
    assert "trip.md" not in text  # nothing in common with the query
    assert "notes/" not in text
    # One call: the query, then every chunk of every memory file, newest first.
    assert embedded_inputs(fake_models) == [
        [
            "vegetables",
            TRIP.strip(),
            "# Dana\n\nDana is vegetarian and never eats meat.\nShe loves spicy curry.",
        ]
    ]
    # Searching again embeds only the query: nothing changed.
    assert await hybrid.run(ctx, {"query": "vegetables"}) == text
    assert embedded_inputs(fake_models)[1:] == [["vegetables"]]


async def test_keyword_and_meaning_hits_are_fused(
    new_agent: NewAgent, hybrid: MemorySearchTool
) -> None:
    ctx = await new_agent()
    await write(ctx, "memory/food.md", FOOD)
    await write(ctx, "memory/trip.md", TRIP)
    await write(ctx, "memory/cats.md", CATS)
    # Each file matches one word of the query by keyword and by meaning; their fused scores
    # tie (keywords #1 + meaning #2 = keywords #2 + meaning #1) and the path decides.
    text = await hybrid.run(ctx, {"query": "curry or hotels", "limit": 5})
    assert text == (
        "1. memory/food.md, lines 1-4 (keywords #1, meaning #2 (0.21))\n"
        "   Dana Dana is vegetarian and never eats meat. She loves spicy **curry**\n"
        "2. memory/trip.md, line 1 (keywords #2, meaning #1 (0.27))\n"
        "   Flights to Lisbon are booked for March; the **hotel** is near the river"
    )
    # No file has both words (keywords need all of them): the closest passages by meaning.
    text = await hybrid.run(ctx, {"query": "boxes vegetables"})
    assert text == (
        "1. memory/cats.md, line 1 (meaning #1 (0.35))\n"
        "   Miso the cat likes boxes.\n"
        "2. memory/food.md, lines 1-4 (meaning #2 (0.21))\n"
        "   # Dana Dana is vegetarian and never eats meat. She loves spicy curry."
    )


async def test_excluded_words_stay_out_of_the_embedded_query(
    new_agent: NewAgent, hybrid: MemorySearchTool, fake_models: FakeModelServer
) -> None:
    ctx = await new_agent()
    await write(ctx, "memory/cats.md", CATS)
    text = await hybrid.run(ctx, {"query": 'boxes -curry -"spicy food"'})
    assert text.startswith("1. memory/cats.md")
    assert embedded_inputs(fake_models)[-1][0] == "boxes"
    # Only exclusions: nothing to mean, so keywords answer (and indexing still happened).
    assert await hybrid.run(ctx, {"query": "-boxes"}) == "no memory matches '-boxes'"


async def test_an_edit_is_re_embedded_and_a_deleted_file_disappears(
    new_agent: NewAgent,
    hybrid: MemorySearchTool,
    fake_models: FakeModelServer,
    db: asyncpg.Connection,
) -> None:
    ctx = await new_agent()
    await write(ctx, "memory/food.md", FOOD)
    await write(ctx, "memory/trip.md", TRIP)
    await hybrid.run(ctx, {"query": "vegetables"})
    rows = await chunk_rows(db, ctx)
    assert set(rows) == {"memory/food.md", "memory/trip.md"}
    food = rows["memory/food.md"]
    assert [r["chunk_no"] for r in food] == [0]
    assert food[0]["content_sha256"] == hashlib.sha256(FOOD.encode()).digest()
    assert (food[0]["model"], food[0]["dims"]) == (MODEL_ID, 256)

    # Edited with the file tools (no hook): the next search re-embeds that file only.
    edited = FOOD.replace("vegetarian", "pescatarian") + "\n## Drinks\n\nOolong tea.\n"
    await write(ctx, "memory/food.md", edited)
    text = await hybrid.run(ctx, {"query": "vegetables"})
    assert "food.md" not in text
    assert embedded_inputs(fake_models)[-1] == [
        "vegetables",
        "# Dana\n\nDana is pescatarian and never eats meat.\nShe loves spicy curry.",
        "## Drinks\n\nOolong tea.",
    ]
    rows = await chunk_rows(db, ctx)
    assert [r["content_sha256"] for r in rows["memory/food.md"]] == [
        hashlib.sha256(edited.encode()).digest()
    ] * 2
    assert (await hybrid.run(ctx, {"query": "oolong"})).startswith(
        "1. memory/food.md, lines 6-8 (keywords #1, meaning #1"
    )

    # Deleted: its chunks go with it, and nothing is embedded for it.
    await store.delete_file(ctx.pool, ctx.tenant_id, ctx.agent_id, "memory/food.md")
    assert "memory/food.md" not in await chunk_rows(db, ctx)
    assert await hybrid.run(ctx, {"query": "oolong"}) == "no memory matches 'oolong'"
    assert embedded_inputs(fake_models)[-1] == ["oolong"]


async def test_a_file_without_text_is_indexed_once(
    new_agent: NewAgent,
    hybrid: MemorySearchTool,
    fake_models: FakeModelServer,
    db: asyncpg.Connection,
) -> None:
    ctx = await new_agent()
    await write(ctx, "memory/blank.md", "  \n\n")
    await hybrid.run(ctx, {"query": "anything"})
    [row] = (await chunk_rows(db, ctx))["memory/blank.md"]
    assert (row["chunk_no"], row["content"], row["dims"]) == (0, "", 0)
    await hybrid.run(ctx, {"query": "anything"})
    assert embedded_inputs(fake_models)[-1] == ["anything"]


async def test_indexing_is_bounded_per_search(
    new_agent: NewAgent,
    hybrid: MemorySearchTool,
    fake_models: FakeModelServer,
    db: asyncpg.Connection,
) -> None:
    ctx = await new_agent()
    total = MAX_INDEX_FILES + 4
    for n in range(total):
        await write(ctx, f"memory/day{n:02}.md", f"Entry {n}: watered the orchids.\n")
    text = await hybrid.run(ctx, {"query": "orchid", "limit": 20})
    # Newest first are indexed; the 4 oldest wait, found by keywords only this time.
    assert text.endswith(
        "\n[4 memory file(s) changed since they were indexed for meaning and were searched "
        "by keywords only; later searches index them]"
    )
    assert len(embedded_inputs(fake_models)[-1]) == 1 + MAX_INDEX_FILES
    assert len(await chunk_rows(db, ctx)) == MAX_INDEX_FILES
    for n in range(4):
        assert f"memory/day{n:02}.md (keywords #" in text
    text = await hybrid.run(ctx, {"query": "orchid", "limit": 20})
    assert "[" not in text
    assert len(embedded_inputs(fake_models)[-1]) == 1 + 4
    assert len(await chunk_rows(db, ctx)) == total


async def test_a_failing_embeddings_call_falls_back_to_keywords(
    new_agent: NewAgent,
    hybrid: MemorySearchTool,
    fake_models: FakeModelServer,
    db: asyncpg.Connection,
) -> None:
    ctx = await new_agent()
    await write(ctx, "memory/food.md", FOOD)
    fake_models.set_default(EMBED, Reply(status=500))
    keywords = await MemorySearchTool().run(ctx, {"query": "curry"})
    assert keywords.startswith("1. memory/food.md (rank ")
    text = await hybrid.run(ctx, {"query": "curry"})
    assert text == (
        f"{keywords}\n[searched by keywords only: meaning search failed: openai "
        f"({MODEL_ID}) failed with HTTP 500: The server had an error while processing your "
        "request.]"
    )
    assert await chunk_rows(db, ctx) == {}  # nothing half-indexed
    nothing = await hybrid.run(ctx, {"query": "vegetables"})
    assert nothing.startswith("no memory matches 'vegetables'\n[searched by keywords only")
    # The provider recovers: the next search indexes and finds by meaning.
    fake_models.reset()
    assert (await hybrid.run(ctx, {"query": "vegetables"})).startswith("1. memory/food.md")


async def test_vectors_are_scoped_to_the_agent_and_model(
    new_agent: NewAgent, hybrid: MemorySearchTool, embedder: Embedder
) -> None:
    alice, bob = await new_agent(), await new_agent()
    await write(alice, "memory/food.md", FOOD)
    await hybrid.run(alice, {"query": "vegetables"})
    assert (await hybrid.run(bob, {"query": "vegetables"})) == "no memory matches 'vegetables'"
    # Another model's vectors do not count: everything is stale for it.
    stale = await vectors.stale_memory(
        alice.pool, alice.tenant_id, alice.agent_id, "openai/other", 10
    )
    assert [f.path for f in stale.due] == ["memory/food.md"]
    fresh = await vectors.stale_memory(alice.pool, alice.tenant_id, alice.agent_id, MODEL_ID, 10)
    assert fresh == vectors.StaleMemory(due=[], waiting=[])
    [query] = await embedder.embed(["vegetables"])
    assert (
        await vectors.search_chunks(
            alice.pool, alice.tenant_id, alice.agent_id, query, model="openai/other", limit=5
        )
        == []
    )
    hits = await vectors.search_chunks(
        alice.pool, uuid.uuid4(), alice.agent_id, query, model=MODEL_ID, limit=5
    )
    assert hits == []  # another tenant's id finds nothing


# --------------------------------------------------------------------------- wiring


async def test_the_runner_wires_the_embedder_only_when_configured(
    fake_models: FakeModelServer,
) -> None:
    plain = build_tools(runner_settings(fake_models, None))
    hybrid = build_tools(runner_settings(fake_models, MODEL_ID))
    try:
        assert plain.embedder is None
        assert hybrid.embedder is not None
        assert hybrid.embedder.model == MODEL_ID
        search = hybrid.registry.get("memory_search")
        assert isinstance(search, MemorySearchTool)
        assert search.embedder is hybrid.embedder
        old = plain.registry.get("memory_search")
        assert isinstance(old, MemorySearchTool)
        assert old.embedder is None
        assert old.spec.description.startswith(
            "Search your memory (MEMORY.md and memory/*.md) by keywords."
        )
        assert "by meaning" in search.spec.description
        # Same tools, same order, either way.
        names = [[spec.name for spec in t.registry.specs(ToolPolicy())] for t in (plain, hybrid)]
        assert names[0] == names[1]
    finally:
        await plain.aclose()
        await hybrid.aclose()


# --------------------------------------------------------------------------- pieces


def test_chunks_follow_headings_and_paragraphs_with_line_numbers() -> None:
    text = (
        "# Title\nintro line\n\nsecond paragraph\n\n## Part\n\npart text\n"
        + "\n"
        + ("word " * 300).strip()
        + "\n"
    )
    chunks = vectors.chunk_text(text, size=200)
    assert chunks[0] == vectors.Chunk("# Title\n\nintro line\n\nsecond paragraph", 1, 4)
    assert chunks[1] == vectors.Chunk("## Part\n\npart text", 6, 8)
    long = chunks[2:]
    assert all(len(c.text) <= 200 for c in long)
    assert all((c.start_line, c.end_line) == (10, 10) for c in long)
    assert " ".join(c.text for c in long) == ("word " * 300).strip()
    assert vectors.chunk_text(" \n\t\n") == []
    assert vectors.chunk_text("x" * 450, size=200) == [
        vectors.Chunk("x" * 200, 1, 1),
        vectors.Chunk("x" * 200, 1, 1),
        vectors.Chunk("x" * 50, 1, 1),
    ]
    # Small paragraphs pack together up to the size.
    small = vectors.chunk_text("a\n\nb\n\nc", size=4)
    assert [c.text for c in small] == ["a\n\nb", "c"]


def test_fusion_prefers_files_both_rankings_agree_on() -> None:
    keyword = [
        store.MemoryHit("a.md", "**a**", 0.5),
        store.MemoryHit("b.md", "**b**", 0.4),
    ]
    meaning = [
        vectors.VectorHit("c.md", 0, "c text", 1, 2, 0.9),
        vectors.VectorHit("b.md", 1, "b text", 3, 4, 0.8),
    ]
    found = fuse(keyword, meaning)
    assert [f.path for f in found] == ["b.md", "a.md", "c.md"]
    b, a, c = found
    assert (b.keyword_rank, b.meaning_rank, b.snippet) == (2, 2, "**b**")
    assert (a.keyword_rank, a.meaning_rank, a.meaning) == (1, None, None)
    assert (c.keyword_rank, c.meaning_rank, c.snippet) == (None, 1, "c text")
    assert a.score == c.score  # a tie is broken by path
    [long] = fuse([], [vectors.VectorHit("d.md", 0, "word  \n" * 100, 1, 100, 0.5)])
    assert long.snippet.endswith("word…")
    assert len(long.snippet) <= SNIPPET_CHARS
