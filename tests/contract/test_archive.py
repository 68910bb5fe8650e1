"""Moving sessions between stores (``chatcore_adapters.archive``), on real stores: SQLite files
in ``tmp_path``, the private Redis server and Cluster of the test fixtures, and memory.

A source deployment on SQLite gets sessions of every kind (a finished exchange, a conversation
deleted, a message awaiting its answer, a reply cut off half way); it is exported while it is
open, imported into each target, and the target must give the same views at the same
positions, queue exactly the turns awaiting an answer, and have a worker answer them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chatcore import decisions
from chatcore.events import (
    ReplyAbandoned,
    ReplyCompleted,
    ReplyDelta,
    ReplyStarted,
)
from chatcore.ports import Delivery, WorkItem
from chatcore.view import SessionView
from chatcore_adapters.archive import (
    ArchiveReader,
    ImportSummary,
    SessionLog,
    Written,
    export_archive,
    import_archive,
    log_import,
    log_source,
)
from chatcore_adapters.bootstrap import Chatcore, bootstrap
from chatcore_adapters.codec import encode_view
from chatcore_adapters.redis import RedisEventStore, RedisWorkQueue
from chatcore_adapters.redis.archive import RedisLogArchive
from chatcore_adapters.settings import ChatcoreSettings, RedisOptions, RetentionOptions
from chatcore_adapters.sqlite.archive import SqliteLogReader
from chatcore_adapters.system import SystemClock
from tests.support.redis_server import unique_prefix
from tests.support.scripted_llm import ScriptedLLM

NOW = datetime.now(UTC)


@dataclass
class Source:
    """The SQLite deployment being moved, with what each session holds."""

    chat: Chatcore
    answered: str  # a finished exchange, and a deleted conversation
    waiting: tuple[str, str, str]  # (session, conversation, message) not answered yet
    cut_off: tuple[str, str, str]  # (session, conversation, message) whose reply stopped

    @property
    def sessions(self) -> list[str]:
        return [self.answered, self.waiting[0], self.cut_off[0]]


async def _answer_all(chat: Chatcore) -> int:
    """Take every queued item and answer it with the chat's model, as a worker does."""
    answered = 0
    while deliveries := await chat.queue.claim("mover-test", count=10, block=0.05):
        for delivery in deliveries:
            await chat.generator.generate(
                delivery.item, delivery_id=delivery.delivery_id, owner="mover-test"
            )
            await chat.queue.ack(delivery)
            answered += 1
    return answered


async def _ask(chat: Chatcore, text: str) -> tuple[str, str, str]:
    opened = await chat.service.open_session(display_name="Ada")
    result = await chat.service.submit_message(
        opened.session_id, conversation_id=opened.conversation_id, client_message_id="c1", text=text
    )
    return opened.session_id, opened.conversation_id, result.message_id


async def _make_source(tmp_path: Path) -> Source:
    chat = bootstrap(
        ChatcoreSettings(storage="sqlite", data_dir=tmp_path / "source"), llm=ScriptedLLM()
    )
    svc = chat.service
    answered, conv, _ = await _ask(chat, "First question")
    await _answer_all(chat)
    doomed, _ = await svc.start_conversation(answered, title="to delete")
    await svc.submit_message(answered, conversation_id=doomed, client_message_id="c2", text="x")
    await _answer_all(chat)
    await svc.delete_conversation(answered, conversation_id=doomed)
    await svc.rename_conversation(answered, conversation_id=conv, title="Kept")

    waiting = await _ask(chat, "Nobody answered this yet")
    cut_off = await _ask(chat, "This answer stops half way")
    # Drop the queued work of both (the source's workers never get to them)...
    while deliveries := await chat.queue.claim("gone", count=10, block=0.05):
        for delivery in deliveries:
            await chat.queue.ack(delivery)
    # ...and the second one's reply started and said something before its worker stopped.
    sid, cid, mid = cut_off
    view = await svc.load(sid)
    await svc.execute(
        sid,
        view,
        lambda v: decisions.start_reply(
            v, NOW, message_id=mid, reply_id="rep_cut", model="scripted"
        ),
    )
    await svc.execute(
        sid,
        view,
        lambda v: [ReplyDelta(at=NOW, conversation_id=cid, reply_id="rep_cut", text="Half an")],
    )
    return Source(chat, answered, waiting, cut_off)


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[Source]:
    made = await _make_source(tmp_path)
    try:
        yield made
    finally:
        await made.chat.aclose()


async def _export_sqlite(source: Source, path: Path) -> None:
    """Export the source's file with the reader a separate process uses, while the source's
    own database is open (as beside a running server)."""
    reader = SqliteLogReader.open(source.chat.settings.database_path, clock=SystemClock())
    try:
        with path.open("wb") as out:
            summary = await export_archive(out, reader, kind="sqlite", exported_at=NOW)
    finally:
        await reader.close()
    assert (summary.sessions, summary.left_out) == (3, [])


async def _views(chat: Chatcore, sessions: list[str]) -> dict[str, SessionView]:
    return {sid: await chat.service.load(sid) for sid in sessions}


async def _logs(chat: Chatcore, sessions: list[str]) -> dict[str, list[Any]]:
    return {sid: [(r.position, r.event) for r in await chat.store.read(sid)] for sid in sessions}


async def _claimed(chat: Chatcore) -> list[Delivery]:
    out: list[Delivery] = []
    while found := await chat.queue.claim("check", count=10, block=0.05):
        out += found
    return out


async def _import(target: Chatcore, archive: Path) -> ImportSummary:
    retention = target.settings.retention.idle_ttl
    return await import_archive(
        archive, log_import(target), clock=target.clock, retention=retention
    )


async def _moved_and_answered(
    source: Source,
    target: Chatcore,
    archive: Path,
    imported: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The whole check of one move: the archive into ``target`` (then ``imported()``, before
    anything reads the target), then a second time."""
    before = await _views(source.chat, source.sessions)
    logs_before = await _logs(source.chat, source.sessions)
    summary = await import_archive(
        archive,
        log_import(target),
        clock=target.clock,
        retention=target.settings.retention.idle_ttl,
    )
    if imported is not None:
        await imported()
    events = sum(len(log) for log in logs_before.values())
    assert (summary.sessions, summary.events, summary.queued, summary.skipped) == (3, events, 2, 0)

    # The same logs at the same positions, and so the same views (a cursor means the same).
    assert await _logs(target, source.sessions) == logs_before
    assert await _views(target, source.sessions) == before

    # Again: every session is refused, nothing is written or queued twice.
    again = await import_archive(
        archive,
        log_import(target),
        clock=target.clock,
        retention=target.settings.retention.idle_ttl,
    )
    assert (again.sessions, again.queued, sorted(again.existing)) == (0, 0, sorted(source.sessions))
    assert await _logs(target, source.sessions) == logs_before

    # Exactly the two turns awaiting an answer were queued; a worker answers both, closing the
    # cut-off attempt first.
    work = await _claimed(target)
    assert sorted(d.item.message_id for d in work) == sorted([source.waiting[2], source.cut_off[2]])
    for delivery in work:
        await target.generator.generate(
            delivery.item, delivery_id=delivery.delivery_id, owner="check"
        )
        await target.queue.ack(delivery)
    for sid, _, mid in (source.waiting, source.cut_off):
        records = await target.store.read(sid)
        assert records[0].position == logs_before[sid][0][0]
        kinds = [type(r.event) for r in records if getattr(r.event, "in_reply_to", None) == mid]
        assert kinds[-1] is ReplyCompleted
        # new events come after every imported position
        assert len(records) > len(logs_before[sid])
    cut = await target.store.read(source.cut_off[0])
    abandoned = [r.event for r in cut if isinstance(r.event, ReplyAbandoned)]
    assert [e.reply_id for e in abandoned] == ["rep_cut"]
    started = [r.event for r in cut if isinstance(r.event, ReplyStarted)]
    assert [e.attempt for e in started] == [1, 2]


@pytest.fixture
async def archive(source: Source, tmp_path: Path) -> Path:
    path = tmp_path / "move.jsonl"
    await _export_sqlite(source, path)
    return path


async def test_sqlite_to_memory_keeps_positions_and_views_and_answers_waiting_turns(
    source: Source, archive: Path
) -> None:
    await _moved_and_answered(source, bootstrap(llm=ScriptedLLM()), archive)


def _rows(path: Path, sid: str) -> list[tuple[int, int, bytes]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT ms, seq, body FROM events JOIN streams USING (stream) "
            "WHERE session_id = ? ORDER BY ms, seq",
            (sid,),
        ).fetchall()


async def test_sqlite_to_sqlite_keeps_every_stored_byte_and_drops_a_stale_cached_view(
    source: Source, archive: Path, tmp_path: Path
) -> None:
    target = bootstrap(
        ChatcoreSettings(storage="sqlite", data_dir=tmp_path / "target"), llm=ScriptedLLM()
    )
    db = target.settings.database_path
    # A stale view of a session left in the target's cache (a session it once had).
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO session_cache (session_id, expires_ms, view) VALUES (?, ?, ?)",
            (source.answered, 2**62, encode_view(SessionView(session_id=source.answered))),
        )

    async def dropped() -> None:
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM session_cache").fetchone()[0] == 0

    try:
        await _moved_and_answered(source, target, archive, dropped)
    finally:
        await target.aclose()
    # The events as stored, byte for byte (the answered session was not written to since).
    source_rows = _rows(source.chat.settings.database_path, source.answered)
    assert _rows(db, source.answered) == source_rows


async def test_sessions_older_than_the_target_s_retention_are_not_written(
    source: Source, archive: Path
) -> None:
    target = bootstrap(llm=ScriptedLLM())
    summary = await import_archive(archive, log_import(target), clock=target.clock, retention=1e-3)
    assert (summary.sessions, summary.expired, summary.queued) == (0, 3, 0)
    assert [await target.store.last_position(sid) for sid in source.sessions] == [None] * 3


# --- Redis ------------------------------------------------------------------------------------


def _redis_chat(url: str, *, cluster: bool, retention: float | None = 86_400.0) -> Chatcore:
    settings = ChatcoreSettings(
        redis_url=url,
        redis=RedisOptions(
            prefix=unique_prefix(), cluster=cluster, queue_shards=3 if cluster else 1
        ),
        retention=RetentionOptions(idle_ttl=retention),
    )
    return bootstrap(settings, llm=ScriptedLLM(), client_name="chatcore-test-move")


async def _redis_target_checks(source: Source, target: Chatcore, archive: Path) -> None:
    conn = target.redis
    assert conn is not None
    keys, client = conn.keys, conn.client
    view_key = keys.view(source.answered)
    # A stale cached view the target holds for one of the sessions (one it once had).
    await client.set(view_key, b"stale")

    async def dropped() -> None:
        assert not await client.exists(view_key)

    await _moved_and_answered(source, target, archive, dropped)
    for sid in source.sessions:
        assert not await client.exists(keys.import_staging(sid))
        assert not await client.exists(keys.import_work(sid))
    # The log expires at its last event's time plus the retention time (as on SQLite; the
    # answered session was not written to since).
    logs = await target.store.read(source.answered)
    expire_at = await client.pexpiretime(keys.events(source.answered))
    assert expire_at == int(logs[-1].position.split("-")[0]) + 86_400_000


@pytest.mark.redis
@pytest.mark.parametrize("cluster", [False, pytest.param(True, marks=pytest.mark.cluster)])
async def test_sqlite_to_redis(
    source: Source, archive: Path, cluster: bool, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    target = _redis_chat(url, cluster=cluster)
    try:
        await _redis_target_checks(source, target, archive)
    finally:
        await target.aclose()


class _StopsBeforeQueueing(RedisLogArchive):
    """An import that stops (once) after writing a session, before queueing its work: what a
    process killed at that moment leaves on a Cluster."""

    stopped = False

    async def _queue(self, session_id: str, work: Any) -> None:
        if not self.stopped:
            self.stopped = True
            raise ConnectionError("the import process stopped here")
        await super()._queue(session_id, work)


@pytest.mark.redis
@pytest.mark.cluster
async def test_an_import_interrupted_on_a_cluster_queues_the_rest_when_run_again(
    source: Source, archive: Path, redis_cluster_url: str
) -> None:
    target = _redis_chat(redis_cluster_url, cluster=True)
    try:
        store, queue = target.store, target.queue
        assert isinstance(store, RedisEventStore) and isinstance(queue, RedisWorkQueue)
        importer = _StopsBeforeQueueing(store, queue)
        retention = target.settings.retention.idle_ttl
        with pytest.raises(ConnectionError):
            await import_archive(archive, importer, clock=target.clock, retention=retention)
        # Run again: the sessions written before are refused, but the one whose work was not
        # queued gets it queued now; the rest is imported.
        summary: ImportSummary = await import_archive(
            archive, importer, clock=target.clock, retention=retention
        )
        assert summary.resumed + summary.sessions + len(summary.existing) == 3
        assert summary.resumed == 1
        work = await _claimed(target)
        assert sorted(d.item.message_id for d in work) == sorted(
            [source.waiting[2], source.cut_off[2]]
        )
    finally:
        await target.aclose()


@pytest.mark.redis
async def test_redis_to_sqlite(
    source: Source, archive: Path, tmp_path: Path, redis_url: str
) -> None:
    first = archive
    on_redis = _redis_chat(redis_url, cluster=False)
    target = bootstrap(
        ChatcoreSettings(storage="sqlite", data_dir=tmp_path / "back"), llm=ScriptedLLM()
    )
    try:
        await import_archive(first, log_import(on_redis), clock=on_redis.clock, retention=None)
        back = tmp_path / "from-redis.jsonl"
        with back.open("wb") as out:
            summary = await export_archive(
                out, log_source(on_redis), kind="redis", exported_at=NOW, key_ids=["abcdefgh"]
            )
        assert summary.sessions == 3
        assert ArchiveReader(back).header().key_ids == ["abcdefgh"]
        # (the turns awaiting an answer are queued on Redis too; this test leaves them there)
        await _moved_and_answered(source, target, back)
    finally:
        await on_redis.aclose()
        await target.aclose()


@pytest.mark.redis
@pytest.mark.cluster
async def test_a_cluster_lists_the_sessions_of_every_master(redis_cluster_url: str) -> None:
    chat = _redis_chat(redis_cluster_url, cluster=True)
    try:
        made = {(await chat.service.open_session()).session_id for _ in range(30)}
        assert chat.redis is not None
        # Keys beside a log (an import's staging stream) are not sessions.
        staging = chat.redis.keys.import_staging(next(iter(made)))
        await chat.redis.client.xadd(staging, {"e": b"{}"})
        listed = [sid async for sid in log_source(chat).session_ids()]
        assert sorted(listed) == sorted(made)
        masters = {chat.redis.node_of(chat.redis.keys.events(sid)).name for sid in made}  # type: ignore[union-attr]
        assert len(masters) == 3
    finally:
        await chat.aclose()


async def test_a_memory_source_and_target_round_trip(tmp_path: Path) -> None:
    chat = bootstrap(llm=ScriptedLLM())
    sid, _, _ = await _ask(chat, "In memory")
    archive = tmp_path / "m.jsonl"
    with archive.open("wb") as out:
        await export_archive(out, log_source(chat), kind="memory", exported_at=NOW)
    target = bootstrap(llm=ScriptedLLM())
    summary = await import_archive(archive, log_import(target), clock=target.clock, retention=None)
    assert (summary.sessions, summary.queued) == (1, 1)
    assert await target.service.load(sid) == await chat.service.load(sid)
    item = (await _claimed(target))[0].item
    assert isinstance(item, WorkItem) and item.session_id == sid


async def test_a_log_import_refuses_a_session_it_has_and_writes_nothing(tmp_path: Path) -> None:
    chat = bootstrap(llm=ScriptedLLM())
    sid, _, _ = await _ask(chat, "Already here")
    before = await chat.store.read(sid)
    entries = [(r.position, b"") for r in before]
    log = SessionLog(sid, entries, before)
    written = await log_import(chat).import_log(log, work=[], expire_at_ms=None)
    assert written is Written.EXISTS
    assert await chat.store.read(sid) == before
