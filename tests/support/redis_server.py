"""Private Redis servers for tests: a single ``redis-server`` (restartable on the same port)
and a three-master Redis Cluster, both on loopback, both cleaned up by their owner.

    with RedisServer(appendonly=True) as server:
        ... server.url ...
        server.restart()      # same port, same data directory

Set ``CHATCORE_TEST_REDIS_URL`` (``CHATCORE_TEST_REDIS_CLUSTER_URL``) to use a server of your
own instead; without one and without a ``redis-server`` binary the Redis tests are skipped,
unless ``CHATCORE_REQUIRE_REDIS=1``, which makes that a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import pytest
import redis
import redis.crc

URL_ENV = "CHATCORE_TEST_REDIS_URL"
CLUSTER_URL_ENV = "CHATCORE_TEST_REDIS_CLUSTER_URL"
REQUIRE_ENV = "CHATCORE_REQUIRE_REDIS"


def redis_missing(reason: str) -> NoReturn:
    """Skip the calling test (or fixture), or fail it when Redis is required."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def redis_server_binary() -> str:
    """The path of ``redis-server``, or skip/fail the caller."""
    found = shutil.which("redis-server")
    if found is None:
        redis_missing("no redis-server binary on PATH and no " + URL_ENV)
    return found


def unique_prefix() -> str:
    """A key prefix no other test uses (tests share one server)."""
    return f"t{secrets.token_hex(5)}:"


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, cluster: bool = False) -> int:
    """A loopback port free right now (a cluster node also needs port + 10000)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not cluster or (port + 10000 < 65536 and _port_is_free(port + 10000)):
            return port
    raise RuntimeError("no free port found")


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, in its own temporary directory."""

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        cluster: bool = False,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 10.0,
    ) -> None:
        self.binary = redis_server_binary()
        self.cluster = cluster
        self.port = port if port is not None else free_port(cluster=cluster)
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.start_timeout = start_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="chatcore-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--daemonize", "no",
            "--dir", str(self.dir),
            "--logfile", "redis.log",
            "--appendonly", "yes" if self.appendonly else "no",
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendfsync", "always"]
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
            ]  # fmt: skip
        return args + list(self.extra_args)

    def client(self) -> redis.Redis:
        """A synchronous client for test plumbing (close it after use)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    async def until_blocked(self, count: int, *, command: str = "", timeout: float = 10.0) -> None:
        """Wait until ``count`` client connections are blocked in a command (``command``, e.g.
        ``xreadgroup``, if given), as Redis itself reports them: a test that needs a call to
        be waiting on the server sees it is, instead of sleeping and hoping."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.client() as admin:
            while True:
                clients: Any = admin.client_list()
                blocked = [
                    c
                    for c in clients
                    if "b" in c.get("flags", "") and (not command or c.get("cmd") == command)
                ]
                if len(blocked) >= count:
                    return
                if loop.time() > deadline:
                    raise AssertionError(f"{count} blocked clients expected, found {len(blocked)}")
                await asyncio.sleep(0.01)

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(
            self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {self.log_tail()}")
            with contextlib.suppress(redis.RedisError), self.client() as probe:
                if probe.ping():
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING: {self.log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM: an append-only file is flushed), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        """Crash the server (SIGKILL): nothing gets flushed."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        """Stop and start again on the same port with the same data directory."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.dir / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisClusterServers:
    """A Redis Cluster of ``masters`` nodes, each with ``replicas`` replicas, on loopback.

    Nodes fail over by the Cluster's own rules (``cluster-node-timeout`` 2 s): kill a master
    (:meth:`kill_master_of`) and one of its replicas is promoted."""

    def __init__(
        self,
        masters: int = 3,
        *,
        replicas: int = 0,
        ready_timeout: float = 30.0,
        appendonly: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if shutil.which("redis-cli") is None:
            redis_missing("no redis-cli binary on PATH (needed to create a cluster)")
        self.nodes = [
            RedisServer(cluster=True, appendonly=appendonly, extra_args=extra_args)
            for _ in range(masters * (1 + replicas))
        ]
        self.replicas = replicas
        self.ready_timeout = ready_timeout

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses,
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=self.ready_timeout,
        )  # fmt: skip
        self.wait_ready()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Until every running node says the cluster is ok and every slot is served (and,
        with replicas, every master has its replicas linked)."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while not self._ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters now (after a failover, a promoted replica)."""
        out = []
        for node in self.nodes:
            if not node.running:
                continue
            with node.client() as client:
                try:
                    role: Any = client.execute_command("ROLE")
                except redis.RedisError:
                    continue
            if role and role[0] in (b"master", "master"):
                out.append(node)
        return out

    def master_of(self, key: str) -> RedisServer:
        """The running master serving ``key``'s slot."""
        slot = redis.crc.key_slot(key.encode())
        for node in self.masters():
            with node.client() as client:
                ranges: Any = client.execute_command("CLUSTER", "SLOTS")
                myid: Any = client.execute_command("CLUSTER", "MYID")
            for start, end, master, *_ in ranges:
                if start <= slot <= end and master[2] in (myid, myid.decode()):
                    return node
        raise RuntimeError(f"no master serves slot {slot}")

    def kill_master_of(self, key: str) -> RedisServer:
        """SIGKILL the master of ``key``'s slot (its replica takes over); returns it."""
        node = self.master_of(key)
        node.kill()
        return node

    def _ready(self) -> bool:
        for node in self.nodes:
            if not node.running:
                continue
            with node.client() as client:
                try:
                    info = client.cluster("INFO")
                    replication: Any = client.info("replication") if self.replicas else {}
                except redis.RedisError:
                    return False
            # redis-py parses CLUSTER INFO into a dict of strings.
            if not isinstance(info, dict):
                return False
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                return False
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisClusterServers:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
