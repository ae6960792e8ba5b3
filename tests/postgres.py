"""A PostgreSQL server of the tests' own: a fresh cluster in a temporary folder, on a free port and a socket
folder of its own, stopped (and started again, for the outage tests) by its postmaster's pid.

The server refuses to run as root: as root it runs as the ``postgres`` user. The binaries are found in
``LIGHTNING_PROXY_PG_BIN`` or ``/usr/lib/postgresql/*/bin``.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (the newest installed version), or None."""
    given = os.environ.get("LIGHTNING_PROXY_PG_BIN")
    found = [given] if given else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    return next((Path(p) for p in reversed(found) if (Path(p) / "initdb").is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One cluster; :meth:`database` makes a fresh database and gives its URL."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="lightning-proxy-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "sockets"
        self.sockets.mkdir()
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.root, self.user)
            shutil.chown(self.sockets, self.user)
        self._as_server([self.bin / "initdb", "-D", self.data, "--auth=trust", "-U", "postgres", "--no-sync"])
        self.pid: int | None = None
        self.databases = 0
        self.start()

    def _as_server(self, command: list[object], **kwargs: object) -> subprocess.CompletedProcess:
        args = [str(a) for a in command]
        if self.user:
            args = ["runuser", "-u", self.user, "--", *args]
        return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120, **kwargs)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_server([self.bin / "pg_ctl", "-D", self.data, "-o", options, "-l", self.root / "log", "-w", "start"])
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """A fast shutdown by the postmaster's pid: open connections are cut, as in a crash or a restart."""
        if self.pid is None:
            return
        os.kill(self.pid, signal.SIGINT)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.pid = None

    def database(self) -> str:
        """A fresh, empty database's URL."""
        self.databases += 1
        name = f"sweep{self.databases}"
        psql = ["psql", "-h", self.sockets, "-p", self.port, "-U", "postgres"]
        self._as_server([*psql, "-c", f"CREATE DATABASE {name}"])
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
