"""One request loop for every server and protocol, so that only the server differs between two runs.

Each connection sends one request, waits for its whole reply, and sends the next, as Postfix does
on a socketmap, tcp_table or policy connection. A protocol is just two functions: how a request is
framed (`encode`, done before the clock starts) and where a reply ends (`split`).
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Returns (reply, rest of the buffer) once a whole reply is in the buffer, else None.
Splitter = Callable[[bytes], tuple[bytes, bytes] | None]


@dataclass(frozen=True)
class Protocol:
    name: str
    encode: Callable[[str], bytes]
    split: Splitter


def _netstring_encode(payload: str) -> bytes:
    data = payload.encode()
    return b"%d:%s," % (len(data), data)


def _netstring_split(buffer: bytes) -> tuple[bytes, bytes] | None:
    colon = buffer.find(b":")
    if colon < 0:
        return None
    end = colon + 1 + int(buffer[:colon])
    if len(buffer) <= end:
        return None
    return buffer[colon + 1 : end], buffer[end + 1 :]


def _until(terminator: bytes) -> Splitter:
    def split(buffer: bytes) -> tuple[bytes, bytes] | None:
        head, found, rest = buffer.partition(terminator)
        return (head, rest) if found else None

    return split


#: Postfix socketmap_table(5): `name key` in a netstring; our `sign` map.
SOCKETMAP_SIGN = Protocol("socketmap sign", lambda key: _netstring_encode(f"sign {key}"), _netstring_split)
#: Postfix tcp_table(5): `get <url-encoded key>` LF; `200 <value>` or `500 <why>` LF. postsrsd 1.x.
TCP_TABLE = Protocol(
    "tcp_table get", lambda key: b"get " + urllib.parse.quote(key, safe="@=+").encode() + b"\n", _until(b"\n")
)


def policy_request(sender: str, recipient: str, client_address: str, instance: str) -> str:
    """Postfix SMTPD_POLICY_README: the attributes Postfix sends at RCPT, an empty line to end."""
    attributes = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": client_address,
        "client_name": "mx.other.org",
        "reverse_client_name": "mx.other.org",
        "helo_name": "mx.other.org",
        "sender": sender,
        "recipient": recipient,
        "recipient_count": "0",
        "queue_id": "",
        "instance": instance,
        "size": "0",
    }
    return "".join(f"{name}={value}\n" for name, value in attributes.items()) + "\n"


#: Postfix policy delegation: the request text is already whole (see `policy_request`).
POLICY = Protocol("policy", lambda text: text.encode(), _until(b"\n\n"))


@dataclass
class Run:
    """What a run measured: latencies in nanoseconds, the wall time, and replies by first word."""

    latencies: list[int] = field(default_factory=list)
    seconds: float = 0.0
    replies: Counter[str] = field(default_factory=Counter)
    errors: int = 0

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds (nearest rank)."""
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1e6


class Connection:
    def __init__(self, port: int, protocol: Protocol, timeout: float = 10.0) -> None:
        self.protocol = protocol
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def ask(self, request: bytes) -> bytes:
        self.sock.sendall(request)
        while (found := self.protocol.split(self.buffer)) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buffer += chunk
        reply, self.buffer = found
        return reply

    def close(self) -> None:
        self.sock.close()


def _word(reply: bytes) -> str:
    text = reply.decode(errors="replace")
    if text.startswith("action="):
        text = text[7:]
    return text.split(" ", 1)[0] or "(empty)"


def drive(
    connections: Sequence[Connection],
    requests: Sequence[bytes],
    total: int,
    deadline: float | None = None,
    between: Callable[[int], None] | None = None,
) -> Run:
    """Send `total` requests spread over the connections (one thread each), cycling through `requests`.

    Stops early at `deadline` (time.monotonic()). `between(done)` is called by the first thread
    every 1000 requests (the soak samples memory there).
    """
    run = Run()
    lock = threading.Lock()
    share = [total // len(connections) + (1 if k < total % len(connections) else 0) for k in range(len(connections))]

    def worker(k: int) -> None:
        latencies: list[int] = []
        replies: Counter[str] = Counter()
        errors = 0
        connection = connections[k]
        for n in range(share[k]):
            request = requests[(n * len(connections) + k) % len(requests)]
            started = time.perf_counter_ns()
            try:
                reply = connection.ask(request)
            except OSError:
                errors += 1
                break
            latencies.append(time.perf_counter_ns() - started)
            replies[_word(reply)] += 1
            if n % 1000 == 999:
                if between is not None and k == 0:
                    between(n + 1)
                if deadline is not None and time.monotonic() > deadline:
                    break
        with lock:
            run.latencies.extend(latencies)
            run.replies.update(replies)
            run.errors += errors

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(connections))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - started
    return run


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
