"""Real components the tests drive, and how to start them: Exim, Postfix and smtp-sink, Dovecot.

Imported by tests/conftest.py, whose fixtures start them, and by test modules that need the
classes themselves (a module of its own, so that no test imports a conftest by name).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent


EXIM_BINARY = ROOT / ".cache" / "exim" / "usr" / "sbin" / "exim4"


EXIM_USER = "Debian-exim"  # compiled into Debian's binary; Exim refuses to start without it


def require_component(name: str, why: str) -> NoReturn:
    """Stop the current test because a real component is missing: skip locally, fail under CI=true."""
    message = f"{name} unavailable: {why}. Run `sudo scripts/setup-system` to install it."
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing component is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


class EximError(RuntimeError):
    """Exim exited non-zero or reported a failed expansion."""


BASE_EXIM_OPTIONS = {
    "primary_hostname": "gateway.test",
    "exim_user": EXIM_USER,
    "exim_group": EXIM_USER,
    "keep_environment": "",  # silences "purging the environment" on every run
    "queue_only": "true",  # -bs accepts into the spool and delivers nothing behind the test's back
}


_OPTION_NAME = re.compile(r"^\s*(?:no_|not_)?([a-z][a-z0-9_]*)\s*(?:=|$)")


_BEGIN = re.compile(r"^\s*begin\s+\w+", re.MULTILINE)


class Exim:
    """The real Exim binary run with a throw-away configuration; no daemon is ever started.

    Each command runs `exim4 -C <config> ...` as root. The base configuration sets the host name,
    the Exim user, a private spool and log directory, and `queue_only`; `config_text` is appended
    to it (main options, then `begin acl` and so on), and a main option it sets replaces the base one.
    """

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.spool_directory = workdir / "spool"
        self.log_directory = workdir / "log"

    def config_file(self, config_text: str | None = None) -> Path:
        """Write (once per distinct text) and return a configuration file Exim accepts with -C."""
        extra = config_text or ""
        main_section = _BEGIN.split(extra, maxsplit=1)[0]
        overridden = {m[1] for line in main_section.splitlines() if (m := _OPTION_NAME.match(line))}
        options = {
            **BASE_EXIM_OPTIONS,
            "spool_directory": str(self.spool_directory),
            "log_file_path": f"{self.log_directory}/%slog",
        }
        base = "".join(f"{key} = {value}\n" for key, value in options.items() if key not in overridden)
        text = base + extra + ("" if extra.endswith("\n") or not extra else "\n")
        path = self.workdir / f"exim-{hashlib.sha256(text.encode()).hexdigest()[:16]}.conf"
        if not path.exists():
            # Exim refuses a -C file that is not owned by root or is writable by group or others.
            path.write_text(text)
            path.chmod(0o644)
        return path

    def run(
        self,
        args: Sequence[str],
        input: str | None = None,
        config_text: str | None = None,
        check: bool = True,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """Run exim4 with the test configuration and `args` (-bh 192.0.2.1, -bs, ...)."""
        command = [str(self.binary), "-C", str(self.config_file(config_text)), *args]
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise EximError(
                f"{' '.join(command)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def expand(self, expr: str, config_text: str | None = None) -> str:
        """Return what `exim4 -be expr` expands to (without the newline Exim appends).

        Exim exits 0 even when an expansion fails and prints `Failed: <reason>` instead: that
        becomes an EximError, as a forced failure (`fail`) does.
        """
        result = self.run(["-be", expr], config_text=config_text)
        output = result.stdout.removesuffix("\n")
        if output.startswith("Failed: "):
            raise EximError(f"expansion of {expr!r} failed: {output[8:]}\nstderr:\n{result.stderr}")
        return output


POSTFIX_BINARY = Path("/usr/sbin/postfix")


SMTP_SINK = Path("/usr/sbin/smtp-sink")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """Postfix's smtp-sink writing each received message to a file: the next hop, observed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)  # smtp-sink drops privileges to the postfix user before writing
        self.process = subprocess.Popen(
            [str(SMTP_SINK), "-u", "postfix", "-d", f"{directory}/%M.", f"127.0.0.1:{self.port}", "10"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def messages(self, count: int = 1, timeout: float = 10.0) -> list[str]:
        """Wait until `count` messages arrived and are completely written; return them oldest first."""
        import time

        deadline = time.time() + timeout
        previous: list[tuple[str, int]] = []
        while True:
            files = sorted(self.directory.iterdir(), key=lambda p: (p.stat().st_mtime, p.name))
            sizes = [(f.name, f.stat().st_size) for f in files]
            # smtp-sink writes while it receives: a file is complete once it stops growing.
            if (len(files) >= count and sizes == previous) or time.time() > deadline:
                return [f.read_text(errors="replace") for f in files]
            previous = sizes
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


class Postfix:
    """A private Postfix instance: its own config and queue directories, loopback high ports.

    `main_cf` lines are appended to a base that relays everything to `relay_port` (an smtp-sink),
    logs to `maillog`, and accepts mail for example.ac.uk and other.org on `port`.
    """

    def __init__(self, root: Path, relay_port: int, main_cf: str = "", master_cf: str = "") -> None:
        self.root = root
        self.port = free_port()
        self.config_dir = root / "etc"
        for sub in ("etc", "spool", "data"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(root / "data", "postfix")
        master = Path("/usr/share/postfix/master.cf.dist").read_text()
        # No chroot (the private spool has no chroot skeleton); smtpd only on our loopback port.
        master = re.sub(r"^(\S+\s+\S+\s+\S+\s+\S+\s+)y(\s)", r"\1n\2", master, flags=re.MULTILINE)
        master = re.sub(r"^smtp\s+inet\s.*$", f"127.0.0.1:{self.port} inet n - n - - smtpd", master, flags=re.MULTILINE)
        master += "postlog   unix-dgram n  -       n       -       1       postlogd\n" + master_cf
        (self.config_dir / "master.cf").write_text(master)
        (self.config_dir / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.example.ac.uk
mydestination =
relay_domains = example.ac.uk other.org
relayhost = [127.0.0.1]:{relay_port}
smtp_tls_security_level = none
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
alias_maps =
alias_database =
master_service_disable = pickup.unix
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
"""
            + main_cf
        )

    def postfix(self, *args: str) -> str:
        # Postfix reports fatal errors to syslog or a terminal only: give it a pseudo-terminal.
        command = " ".join([str(POSTFIX_BINARY), "-c", str(self.config_dir), *args])
        result = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed:\n{result.stdout}{self.log()}")
        return result.stdout

    def start(self) -> Postfix:
        self.postfix("start")
        return self

    def stop(self) -> None:
        self.postfix("stop")

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate a daemon started in the foreground (killed if it will not go) and close its stderr."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    if process.stderr is not None:
        process.stderr.close()


DOVECOT_BINARY = Path("/usr/sbin/dovecot")


class Dovecot:
    """A private Dovecot serving only its auth service: no IMAP or POP3, no TLS, logs to a file.

    The auth service listens on a loopback port and on `socket_path` (base_dir/auth-client), both
    as a submission server reaches it. `passdb` is the body of the passdb block; the default is a
    passwd-file of `users` (name -> "{SCHEME}secret").
    """

    def __init__(self, root: Path, users: dict[str, str], passdb: str = "") -> None:
        self.root = root
        self.port = free_port()
        self.base_dir = root / "run"
        self.socket_path = self.base_dir / "auth-client"
        self.log_path = root / "dovecot.log"
        (root / "state").mkdir()
        users_file = root / "users"
        users_file.write_text("".join(f"{name}:{password}::::::\n" for name, password in users.items()))
        passdb = passdb or f"driver = passwd-file\n  args = {users_file}"
        self.config = root / "dovecot.conf"
        self.config.write_text(
            f"""protocols =
base_dir = {self.base_dir}
state_dir = {root}/state
log_path = {self.log_path}
ssl = no
auth_mechanisms = plain login
# No deliberate delay before a failure reply: the tests run many of them.
auth_failure_delay = 0
passdb {{
  {passdb}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {self.port}
  }}
  unix_listener auth-client {{
    mode = 0666
  }}
}}
"""
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Dovecot:
        import socket
        import time

        self.process = subprocess.Popen(
            [str(DOVECOT_BINARY), "-c", str(self.config), "-F"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited {self.process.returncode}: {self.stderr()}{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if self.socket_path.exists():
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dovecot did not listen on 127.0.0.1:{self.port}: {self.log()}")

    def stderr(self) -> str:
        if self.process is None or self.process.stderr is None or self.process.poll() is None:
            return ""
        return self.process.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def dovecot_password_hash(password: str, scheme: str = "SHA512-CRYPT") -> str:
    """`{SCHEME}hash` made by Dovecot's own `doveadm pw`."""
    result = subprocess.run(
        ["doveadm", "pw", "-s", scheme, "-p", password], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.strip()
