"""`antiforgery init --self-signed-cert` and `antiforgery serve` with [submission] listen: the whole path.

The proxy started by `serve` reads the verification service's own directory: opting a user out
takes effect at submission with the next refresh, with no second copy of the directory.
"""

from __future__ import annotations

import asyncio
import io
import re
import smtplib
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

from components import free_port
from cryptography import x509
from recording_upstream import RecordingUpstream

from callout.rules import rules_from
from callout.serve import adapters, run
from callout.service import VerificationService
from gateway import eventloop, keyfile
from gateway.cli import main as cli_main
from gateway.config import load
from gateway.store import Store
from gateway.store.records import Mode
from gateway.submission.proxy import SubmissionHandler

OFF = "".join(f'{n}_listen = ""\n' for n in ("policy", "socketmap", "readsocket", "http", "milter", "metrics"))


def init_site(config_path: Path, upstream_port: int, listen_port: int) -> None:
    out = io.StringIO()
    assert cli_main(["--config", str(config_path), "init", "--domain", "example.ac.uk", "--self-signed-cert",
                     "smtp.example.ac.uk"], out=out) == 0
    assert "wrote self-signed certificate" in out.getvalue()
    sys_stdin, sys.stdin = sys.stdin, io.StringIO("s3cret password\n")
    try:
        assert cli_main(["--config", str(config_path), "user", "add", "alice", "--address", "alice@example.ac.uk",
                         "--mode", "full", "--password-stdin"], out=io.StringIO()) == 0
    finally:
        sys.stdin = sys_stdin
    text = config_path.read_text()
    text = text.replace('listen = ""\n# The MTA that takes the signed mail', f'listen = "127.0.0.1:{listen_port}"\n#')
    text = text.replace('upstream = "127.0.0.1:10025"', f'upstream = "127.0.0.1:{upstream_port}"')
    config_path.write_text(text.replace("[verification]\n", "[verification]\n" + OFF) if "[verification]" in text
                           else text + "\n[verification]\n" + OFF + "refresh_seconds = 0.2\n")


def test_init_makes_a_certificate_for_the_proxy(tmp_path: Path) -> None:
    config_path = tmp_path / "antiforgery.toml"
    init_site(config_path, 25, 587)
    submission = load(config_path).submission
    assert submission.tls_cert_file == str(tmp_path.resolve() / "tls.crt")
    cert = x509.load_pem_x509_certificate(Path(submission.tls_cert_file).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "smtp.example.ac.uk" in names.get_values_for_type(x509.DNSName)
    assert Path(submission.tls_key_file).stat().st_mode & 0o077 == 0
    out = io.StringIO()  # a second init keeps the pair
    assert cli_main(["--config", str(config_path), "init", "--self-signed-cert"], out=out) == 0
    assert "exists; keeping them" in out.getvalue()


def test_the_proxy_shares_the_verification_services_directory(tmp_path: Path) -> None:
    config_path = tmp_path / "antiforgery.toml"
    init_site(config_path, 25, free_port())
    config = load(config_path)
    store = Store.open(config.store.url)
    try:
        service = VerificationService(store, rules_from(config, keyfile.load(config.signing.key_file)))
        listen, handler = adapters(config, service)["submission"]
        assert isinstance(handler, SubmissionHandler) and listen == config.submission.listen
        assert handler.directory is service.directory
        assert handler.pool is not None and (handler.pool.idle_seconds, handler.pool.max_idle) == (2.0, 10)
    finally:
        store.close()


def sender_of(captured: str) -> str:
    match = re.search(r"^X-Mail-Args: <([^>]*)>", captured, re.MULTILINE)
    assert match, captured
    return match[1]


class Serving:
    """`antiforgery serve` (callout.serve.run) on a loop thread of its own, and a client that submits to it."""

    def __init__(self, config_path: Path, port: int) -> None:
        self.config = load(config_path)
        self.port = port
        self.loop, self.stop_event = eventloop.new_event_loop(), asyncio.Event()  # as `serve` runs
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(run(self.config, self.stop_event),), daemon=True
        )
        self.thread.start()
        self.context = ssl.create_default_context(cafile=self.config.submission.tls_cert_file)

    def send(self, message: bytes = b"From: alice@example.ac.uk\r\nSubject: x\r\n\r\nhi\r\n") -> None:
        """Submit one message as alice, waiting for the proxy to listen first."""
        deadline = time.monotonic() + 10
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
                    client.starttls(context=self.context)  # verified against the certificate's 127.0.0.1 name
                    client.login("alice", "s3cret password")
                    client.sendmail("alice@example.ac.uk", ["bob@other.org"], message)
                return
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and self.thread.is_alive(), "the proxy never listened"
                time.sleep(0.1)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)
        self.loop.close()


def test_serve_runs_the_proxy_and_an_opt_out_reaches_it(tmp_path: Path, smtp_sink: Any) -> None:
    config_path, port = tmp_path / "antiforgery.toml", free_port()
    init_site(config_path, smtp_sink.port, port)
    serving = Serving(config_path, port)
    try:
        serving.send()
        assert sender_of(smtp_sink.messages(1)[0]).startswith("alice=s")
        store = Store.open(serving.config.store.url)
        store.set_mode("alice", Mode.OFF)
        store.close()
        time.sleep(1.0)  # refresh_seconds = 0.2
        serving.send()
        signed, plain = smtp_sink.messages(2)
        assert sender_of(plain) == "alice@example.ac.uk" and sender_of(signed) != sender_of(plain)
    finally:
        serving.stop()


def test_serve_quits_idle_upstream_connections_when_it_stops(tmp_path: Path, upstream: RecordingUpstream) -> None:
    config_path, port = tmp_path / "antiforgery.toml", free_port()
    init_site(config_path, upstream.port, port)
    text = config_path.read_text().replace("[submission]\n", "[submission]\nupstream_reuse_seconds = 60\n", 1)
    config_path.write_text(text)
    serving = Serving(config_path, port)
    try:
        serving.send()
        serving.send()  # a second session, the same upstream connection
        assert upstream.connections == 1 and upstream.closed == 0
    finally:
        serving.stop()
    assert not serving.thread.is_alive()
    upstream.until(lambda: upstream.closed == 1, "the idle connection closed at shutdown")
    assert upstream.verbs(0) == ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA", "QUIT"]
