"""The servers under test, each a private process on loopback ports, stopped when the block ends.

Our verification service runs as `antiforgery serve` from a generated configuration, as it is
deployed; postsrsd and postgrey run from their Debian packages with private state directories
(their system services are never started: scripts/setup-system stops them after installing).
The submission benchmark adds Postfix's smtp-sink (the proxy's next hop, and a baseline) and a
plain aiosmtpd sink (bench/sink.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import eventloop

from .client import wait_for_port
from .store import DOMAIN, BenchStore

ROOT = Path(__file__).resolve().parent.parent
ANTIFORGERY = ROOT / ".venv" / "bin" / "antiforgery"
#: The line `gateway.directory` logs when a snapshot is serving.
READY = "snapshot version"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    workdir: Path
    #: Seconds from start until the server answered (for ours: until the snapshot was loaded).
    ready_seconds: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def _workdir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)  # postgrey drops to its own user and must reach its db directory
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _running(
    name: str, argv: list[str], ports: dict[str, int], workdir: Path, wait: int, **popen: Any
) -> Iterator[Server]:
    """Start `argv` logging to workdir/server.log; yield once its first port answers; stop it after."""
    with (workdir / "server.log").open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **popen)
        server = Server(name, process, ports, workdir)
        try:
            wait_for_port(next(iter(ports.values())), wait)
            server.ready_seconds = time.monotonic() - started
            yield server
        finally:
            _stop(process)


def _submission(ports: dict[str, int], upstream: int) -> str:
    """The proxy as deployed (the example configuration's limits and Argon2id logins from the store),
    except that loopback clients may log in without STARTTLS: the sinks it is compared with have
    no TLS either, and a webmail on the same host is the case that setting exists for."""
    return f"""
[submission]
listen = "127.0.0.1:{ports["submission"]}"
hostname = "bench.{DOMAIN}"
upstream = "127.0.0.1:{upstream}"
allow_auth_without_tls_on_loopback = true
"""


def _config(store: BenchStore, ports: dict[str, int], upstream: int | None = None) -> str:
    submission = _submission(ports, upstream) if upstream is not None else ""
    return f"""[site]
domains = ["{DOMAIN}"]
authserv_id = "bench.{DOMAIN}"

[store]
url = "{store.url}"

[signing]
key_file = "{store.key_file}"

[verification]
policy_listen = "127.0.0.1:{ports["policy"]}"
socketmap_listen = "127.0.0.1:{ports["socketmap"]}"
callout_listen = "127.0.0.1:{ports["callout"]}"
readsocket_listen = ""
http_listen = ""
milter_listen = ""
metrics_listen = ""
callout_hostname = "bench.{DOMAIN}"
# Raised for the benchmark: one client sends every callout.
callout_rate = 1000000.0
callout_burst = 1000000
callout_max_recipients = 100000000
callout_max_sessions = 100
callout_session_seconds = 86400.0
{submission}"""


@contextlib.contextmanager
def antiforgery(
    store: BenchStore,
    log_level: str = "info",
    timeout: float = 900.0,
    submission_upstream: int | None = None,
    event_loop: str = eventloop.DEFAULT,
) -> Iterator[Server]:
    """`antiforgery serve` on the bench store; ready once its first snapshot is loaded.

    With `submission_upstream` (a port on loopback), the submission proxy runs too (port "submission").
    """
    with _workdir("antiforgery-bench-") as workdir:
        names = ("policy", "socketmap", "callout") + (("submission",) if submission_upstream is not None else ())
        ports = {name: free_port() for name in names}
        config = workdir / "antiforgery.toml"
        config.write_text(_config(store, ports, submission_upstream))
        config.chmod(0o600)
        log = (workdir / "server.log").open("wb")
        started = time.monotonic()
        process = subprocess.Popen(
            [str(ANTIFORGERY), "--config", str(config), "serve", "--log-level", log_level, "--event-loop", event_loop],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = Server("antiforgery", process, ports, workdir)
        try:
            # The adapters listen only once the snapshot is loaded (service.start() comes first).
            deadline = started + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"antiforgery serve exited {process.returncode}:\n{server.log()[-3000:]}")
                try:
                    socket.create_connection(("127.0.0.1", ports["policy"]), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"antiforgery serve did not listen in {timeout} s") from None
                    time.sleep(0.05)
            server.ready_seconds = time.monotonic() - started
            for port in ports.values():
                wait_for_port(port, 30)
            yield server
        finally:
            _stop(process)
            log.close()


@contextlib.contextmanager
def postsrsd(domain: str = "srs.example.net") -> Iterator[Server]:
    """postsrsd 1.x (Debian 12: 1.10) in the foreground: forward and reverse tcp_table ports."""
    binary = shutil.which("postsrsd") or "/usr/sbin/postsrsd"
    with _workdir("postsrsd-bench-") as workdir:
        secret = workdir / "secret"
        secret.write_text(secrets.token_urlsafe(32) + "\n")
        secret.chmod(0o600)
        ports = {"forward": free_port(), "reverse": free_port()}
        argv = [
            binary,
            f"-s{secret}",
            f"-d{domain}",
            "-l127.0.0.1",
            "-4",
            f"-f{ports['forward']}",
            f"-r{ports['reverse']}",
        ]
        with _running("postsrsd", argv, ports, workdir, 30) as server:
            yield server


@contextlib.contextmanager
def postgrey() -> Iterator[Server]:
    """postgrey (Debian 12: 1.37) in the foreground on a loopback port, with its own db directory."""
    binary = shutil.which("postgrey") or "/usr/sbin/postgrey"
    with _workdir("postgrey-bench-") as workdir:
        dbdir = workdir / "db"
        dbdir.mkdir()
        shutil.chown(dbdir, "postgrey", "postgrey")
        port = free_port()
        argv = [binary, f"--inet=127.0.0.1:{port}", f"--dbdir={dbdir}", "--delay=60"]
        env = {**os.environ, "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        with _running("postgrey", argv, {"policy": port}, workdir, 60, env=env) as server:
            yield server


@contextlib.contextmanager
def echo(kind: str, loop: str = eventloop.DEFAULT) -> Iterator[Server]:
    """bench/echo.py: the cost of an adapter that decides nothing ("streams" or "protocol") on `loop`;
    "c": the same echo compiled from bench/echo.c, served as postsrsd serves (`loop` is unused)."""
    with _workdir("echo-bench-") as workdir:
        port = free_port()
        if kind == "c":
            argv = [str(_compile(ROOT / "bench" / "echo.c", workdir / "echo")), str(port)]
        else:
            argv = [sys.executable, "-m", "bench.echo", kind, str(port), loop]
        with _running(f"echo ({kind}, {loop})", argv, {"echo": port}, workdir, 30, cwd=ROOT) as server:
            yield server


def _compile(source: Path, binary: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc) for bench/echo.c: Debian's gcc package (sudo scripts/setup-system)")
    subprocess.run([compiler, "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def _postfix_tool(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/lib/postfix/sbin") / name) if p.exists()), None
    )
    if found is None:
        raise RuntimeError(f"{name} not found: it comes with Debian's postfix package (sudo scripts/setup-system)")
    return found


def smtp_source() -> str:
    """Postfix's smtp-source, the load generator the sinks are also measured with."""
    return _postfix_tool("smtp-source")


@contextlib.contextmanager
def smtp_sink() -> Iterator[Server]:
    """Postfix's smtp-sink on a loopback port, appending every message to `dump` (one file, read by
    the benchmark to check what arrived), as the postfix user (it refuses to run as root)."""
    binary = _postfix_tool("smtp-sink")
    with _workdir("smtp-sink-bench-") as workdir:
        dumps = workdir / "dump"
        dumps.mkdir()
        if os.geteuid() == 0:
            shutil.chown(dumps, "postfix", "postfix")
        port = free_port()
        user = ["-u", "postfix"] if os.geteuid() == 0 else []
        argv = [binary, *user, "-D", str(dumps / "messages"), f"127.0.0.1:{port}", "1024"]
        with _running("smtp-sink", argv, {"smtp": port}, workdir, 30) as server:
            yield server


@contextlib.contextmanager
def aiosmtpd_sink(loop: str = eventloop.DEFAULT) -> Iterator[Server]:
    """bench/sink.py: aiosmtpd's SMTP engine answering 250 to every message, keeping nothing, on `loop`."""
    with _workdir("aiosmtpd-sink-bench-") as workdir:
        argv = [sys.executable, "-m", "bench.sink", str(port := free_port()), loop]
        with _running(f"aiosmtpd sink ({loop})", argv, {"smtp": port}, workdir, 30, cwd=ROOT) as server:
            yield server
