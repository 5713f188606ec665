"""A Redis Sentinel set of the test's own: a primary and a replica (AOF on) and three sentinels
(redis-server in sentinel mode), on free loopback ports."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis

from tests.faults.conftest import RedisServer
from tests.helpers import free_port, redis_server_binary, wait_until

MASTER_NAME = "relay-primary"


class DataNode(RedisServer):
    """A primary or replica of the set: AOF on, killed it restarts with what it had."""

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)


class SentinelSet:
    """Primary, replica and three sentinels (quorum 2, a primary is down after one silent second)."""

    def __init__(self) -> None:
        server = redis_server_binary()
        if server is None:
            pytest.skip("no redis-server binary: run the tests with `python3 dev.py test`")
        self.folder = Path(tempfile.mkdtemp(prefix="relay-sentinel-"))
        self.primary = DataNode(server)
        self.replica = DataNode(server, "--replicaof", "127.0.0.1", str(self.primary.port))
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        try:
            self._start_all(server)
        except BaseException:
            self.close()
            raise

    def _start_all(self, server: str) -> None:
        self.primary.start()
        self.replica.start()
        wait_until(lambda: self.replica.client().info("replication").get("master_link_status") == "up", timeout=20)
        for port in self.sentinel_ports:
            config = self.folder / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            # redis-sentinel is redis-server in sentinel mode: the same binary serves both.
            self.sentinels.append(subprocess.Popen([server, str(config), "--sentinel"], stdout=subprocess.DEVNULL))
        wait_until(lambda: self.sees_replica(), timeout=30, interval=0.2)

    @property
    def env(self) -> dict[str, str]:
        """The relay's settings for this set (REDIS_URL left unset)."""
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports),
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=1, decode_responses=True)

    def sees_replica(self) -> bool:
        """Every sentinel knows the replica and its peers (so that a failover can be agreed)."""
        try:
            for port in self.sentinel_ports:
                fields = self._sentinel(port).sentinel_master(MASTER_NAME)
                if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:
                    return False
            return True
        except (redis.RedisError, KeyError):
            return False

    def primary_address(self) -> str:
        """Where the sentinels say the primary is now."""
        master = self._sentinel(self.sentinel_ports[0]).sentinel_master(MASTER_NAME)
        return f"{master['ip']}:{master['port']}"

    def close(self) -> None:
        for process in self.sentinels:
            process.kill()
            process.wait(timeout=10)
        self.primary.close()
        self.replica.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
