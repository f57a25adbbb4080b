"""A real PostgreSQL server for tests and benchmarks: initdb + pg_ctl in a temporary directory, on a free
loopback port, its unix socket in that directory too. Debian's ``postgresql`` package (./setup.sh installs it).

initdb refuses to run as root, so as root the server runs as the ``postgres`` system user (runuser); as any
other user it runs as that user. Either way the superuser is named ``postgres`` and loopback auth is ``trust``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def unavailable_reason() -> str:
    """Why no server can be started here ('' when one can)."""
    if not (_bin("initdb") and _bin("pg_ctl")):
        return "PostgreSQL's initdb/pg_ctl not found: run ./setup.sh (installs Debian's postgresql)"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root without runuser: cannot start PostgreSQL as a non-root user"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One postgres on 127.0.0.1:``port``; ``url`` connects as superuser to database ``postgres``."""

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable  # False: fsync off (tests); True: PostgreSQL's defaults (benchmarks)
        self.root = Path(tempfile.mkdtemp(prefix="cai-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=180)
        if proc.returncode:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}{tail}")

    def start(self) -> PostgresServer:
        """initdb, then start and wait until it accepts connections."""
        self._run(str(_bin("initdb")), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        return self.resume()

    def resume(self) -> PostgresServer:
        """Start the server on its data directory and wait until it accepts connections."""
        self._run(str(_bin("pg_ctl")), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "120",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
                  + ("" if self.durable else " -c fsync=off"), "start")
        return self

    def halt(self) -> None:
        """Stop the server (an outage), keeping its data for :meth:`resume`."""
        self._run(str(_bin("pg_ctl")), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        """A fresh database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop fast and remove the directory."""
        try:
            self.halt()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (skips with the reason when none can be started here)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    yield server
    server.stop()
