"""Prometheus metrics of one API process (``/metrics``).

Every app gets its own registry (tests run several apps in one process). Reply timings are
measured from the events that flow through this process's live feed, using the events' own
timestamps (written by the worker), so they do not depend on when this process saw them:
``reply_started`` to the first ``reply_delta`` is the time to first token, and the completion
tokens over the streaming time give tokens per second. The in-process worker's outcomes are
read from its counters at scrape time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chatcore.events import (
    MessageSubmitted,
    Recorded,
    ReplyCancelled,
    ReplyCompleted,
    ReplyDelta,
    ReplyFailed,
    ReplyStarted,
)
from chatcore.worker import WorkerLoop

_T = TypeVar("_T")

CLIENT_FRAME_TYPES = frozenset(
    {
        "hello",
        "send",
        "cancel",
        "start_conversation",
        "rename_conversation",
        "set_profile",
        "ping",
    }
)


class _ReplyTiming:
    __slots__ = ("first_delta", "started")

    def __init__(self, started: datetime) -> None:
        self.started = started
        self.first_delta: datetime | None = None


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections_open = Gauge(
            "chatcore_ws_connections_open", "WebSocket connections open now.", registry=r
        )
        self.connections_total = Counter(
            "chatcore_ws_connections", "WebSocket connections accepted.", registry=r
        )
        self.closes = Counter(
            "chatcore_ws_closes",
            "WebSocket connections closed by the server, by code.",
            ["code"],
            registry=r,
        )
        self.frames_in = Counter(
            "chatcore_ws_frames_received",
            "Frames received from clients, by type ('invalid' when unreadable).",
            ["type"],
            registry=r,
        )
        self.frames_out = Counter(
            "chatcore_ws_frames_sent", "Frames sent to clients, by type.", ["type"], registry=r
        )
        self.errors_sent = Counter(
            "chatcore_ws_errors", "Error frames sent, by code.", ["code"], registry=r
        )
        self.sessions_created = Counter(
            "chatcore_sessions_created", "Sessions created through POST /api/sessions.", registry=r
        )
        self.messages_accepted = Counter(
            "chatcore_messages_accepted",
            "User messages accepted (duplicate='true' for a retry of an accepted message).",
            ["duplicate"],
            registry=r,
        )
        self.rate_limited = Counter(
            "chatcore_rate_limited", "Actions refused by a rate limit.", ["what"], registry=r
        )
        self.replies_observed = Counter(
            "chatcore_replies_observed",
            "Replies that ended, seen on this process's live feed, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "chatcore_reply_queue_wait_seconds",
            "From a user message to the start of its reply.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "chatcore_reply_time_to_first_token_seconds",
            "From the start of a reply to its first text.",
            buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60),
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "chatcore_reply_tokens_per_second",
            "Completion tokens per second of streaming, per completed reply.",
            buckets=(1, 5, 10, 20, 40, 60, 80, 100, 150, 200, 400, 1000),
            registry=r,
        )
        self.feed_sessions = Gauge(
            "chatcore_feed_sessions", "Sessions this process follows live.", registry=r
        )
        self.feed_errors = Counter(
            "chatcore_feed_errors",
            "Live subscription losses and failed re-subscriptions (each then caught up).",
            registry=r,
        )
        self._replies: OrderedDict[str, _ReplyTiming] = OrderedDict()
        self._submitted: OrderedDict[str, datetime] = OrderedDict()
        self._max_tracked = 20_000
        # The labelled counters of every frame, looked up once per label (a few kinds).
        self._frames_in: dict[str, Any] = {}
        self._frames_out: dict[str, Any] = {}

    def frame_in(self, frame_type: str) -> None:
        kind = frame_type if frame_type in CLIENT_FRAME_TYPES else "invalid"
        _child(self.frames_in, self._frames_in, kind).inc()

    def frame_out(self, kind: str) -> None:
        _child(self.frames_out, self._frames_out, kind).inc()

    def observe_events(self, records: Sequence[Recorded]) -> None:
        """Learn reply timings from events on their way to clients."""
        for record in records:
            event = record.event
            if isinstance(event, MessageSubmitted):
                self._track(self._submitted, event.message_id, event.at)
            elif isinstance(event, ReplyStarted):
                submitted = self._submitted.pop(event.in_reply_to, None)
                if submitted is not None:
                    self.queue_wait.observe(max(0.0, (event.at - submitted).total_seconds()))
                self._track(self._replies, event.reply_id, _ReplyTiming(event.at))
            elif isinstance(event, ReplyDelta):
                timing = self._replies.get(event.reply_id)
                if timing is not None and timing.first_delta is None:
                    timing.first_delta = event.at
                    seconds = (event.at - timing.started).total_seconds()
                    self.time_to_first_token.observe(max(0.0, seconds))
            elif isinstance(event, ReplyCompleted):
                self.replies_observed.labels("completed").inc()
                timing = self._replies.pop(event.reply_id, None)
                if timing is not None and timing.first_delta is not None:
                    seconds = (event.at - timing.first_delta).total_seconds()
                    tokens = event.usage.completion_tokens
                    if seconds > 0 and tokens > 0:
                        self.tokens_per_second.observe(tokens / seconds)
            elif isinstance(event, ReplyFailed | ReplyCancelled):
                outcome = "failed" if isinstance(event, ReplyFailed) else "cancelled"
                self.replies_observed.labels(outcome).inc()
                if event.reply_id is not None:
                    self._replies.pop(event.reply_id, None)

    def _track(self, table: OrderedDict[str, _T], key: str, value: _T) -> None:
        table[key] = value
        while len(table) > self._max_tracked:
            table.popitem(last=False)

    def watch_worker(self, worker: WorkerLoop) -> None:
        self.registry.register(_WorkerCollector(worker))


class _WorkerCollector(Collector):
    """The in-process worker's own counters, read when Prometheus scrapes."""

    def __init__(self, worker: WorkerLoop) -> None:
        self._worker = worker

    def collect(self) -> Iterable[Metric]:
        stats = self._worker.stats
        outcomes = CounterMetricFamily(
            "chatcore_worker_replies",
            "Work items finished by the in-process worker, by outcome.",
            labels=["outcome"],
        )
        for outcome, count in sorted(stats.outcomes.items()):
            outcomes.add_metric([outcome], count)
        yield outcomes
        dead = CounterMetricFamily(
            "chatcore_worker_dead_lettered", "Messages given up after too many deliveries."
        )
        dead.add_metric([], stats.dead_lettered)
        yield dead
        errors = CounterMetricFamily(
            "chatcore_worker_errors", "Errors the in-process worker recovered from."
        )
        errors.add_metric([], stats.errors)
        yield errors
        in_flight = GaugeMetricFamily(
            "chatcore_worker_in_flight", "Replies the in-process worker is generating now."
        )
        in_flight.add_metric([], len(self._worker.in_flight))
        yield in_flight

    def describe(self) -> Iterable[Metric]:
        return []


def _child(metric: Counter, children: dict[str, Any], label: str) -> Any:
    """``metric.labels(label)``, kept in ``children`` (prometheus_client's lookup takes a lock
    and checks the labels on every call; a frame's counter is counted several times a turn)."""
    child = children.get(label)
    if child is None:
        child = children[label] = metric.labels(label)
    return child
