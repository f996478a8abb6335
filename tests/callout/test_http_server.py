"""The HTTP/JSON adapter: its request parser without a socket, and each route over a real one."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any
from urllib.parse import quote

import pytest
from adapter_support import unreachable_service
from service_harness import KEYRING, RunningService

from callout import http_server
from callout.http_server import MAX_BODY, MAX_HEAD, HttpRequest, RequestParser
from gateway.store import Mode, Store
from signed_sender import sign

# --- the parser, sans I/O ------------------------------------------------------------------------


def test_a_request_fed_byte_by_byte_is_parsed_once_complete() -> None:
    data = b'POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{"sender":""}'
    parser = RequestParser()
    seen: list[HttpRequest] = []
    for i in range(len(data)):
        seen += parser.feed(data[i : i + 1])
    assert len(seen) == 1 and parser.error is None
    assert (seen[0].method, seen[0].target, seen[0].body) == ("POST", "/v1/verify", b'{"sender":""}')
    assert seen[0].headers["content-length"] == "13" and seen[0].keep_alive


def test_pipelined_requests_before_a_malformed_one_are_kept() -> None:
    parser = RequestParser()
    requests = parser.feed(b"GET /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.0\r\n\r\nBROKEN\r\n\r\n")
    assert [r.version for r in requests] == ["1.1", "1.0"] and not requests[1].keep_alive
    assert parser.error is not None and parser.error.status == 400
    assert parser.feed(b"GET /healthz HTTP/1.1\r\n\r\n") == []


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET http://x/healthz HTTP/1.1\r\n\r\n", 400),  # only origin-form targets
        (b"GET /healthz HTTP/2.0\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\n\n", 400),
        (b"GET /h\xc3\xa9 HTTP/1.1\r\n\r\n", 400),
        (b"POST /v1/verify HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"POST /v1/verify HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /v1/verify HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"POST /v1/verify HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
        (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431),
    ],
)
def test_malformed_requests_are_errors_with_a_status(data: bytes, status: int) -> None:
    parser = RequestParser()
    assert parser.feed(data) == []
    assert parser.error is not None and parser.error.status == status


def test_a_content_length_of_thousands_of_digits_is_read_as_a_number() -> None:
    # Python refuses int() of over 4300 digits with ValueError (CVE-2020-10735): that must not
    # escape the parser, which would end the connection without any answer.
    huge = b"POST /v1/verify HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
    parser = RequestParser()
    assert parser.feed(huge) == [] and parser.error is not None and parser.error.status == 413
    padded = b"POST /v1/verify HTTP/1.1\r\nContent-Length: " + b"0" * 5000 + b'13\r\n\r\n{"sender":""}'
    (request,) = RequestParser().feed(padded)  # RFC 9110 section 8.6: 1*DIGIT, leading zeros allowed
    assert request.body == b'{"sender":""}'


# --- the routes over a socket --------------------------------------------------------------------


@pytest.fixture
def port(store: Store, request: pytest.FixtureRequest) -> int:
    """The directory first, then the service: its first load sees it all, and no refresh woken by
    a NOTIFY of one of these writes can race (and outlive) an explicit one."""
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    store.add_user("carol", "carol@example.ac.uk", mode=Mode.TESTING)
    running_service: RunningService = request.getfixturevalue("running_service")
    return running_service.listen("http", http_server.session_factory(running_service.service))


def call(port: int, method: str, target: str, body: bytes | None = None) -> tuple[int, dict[str, Any], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def raw(port: int, data: bytes) -> tuple[int, Any]:
    """Send bytes as they are; the server answers an error and closes, so read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"\r\nConnection: close" in head
    return int(head.split(b" ")[1]), json.loads(body)


def verify_get(port: int, sender: str, recipient: str = "") -> tuple[int, dict[str, Any], Any]:
    return call(port, "GET", f"/v1/verify?sender={quote(sender)}&recipient={quote(recipient)}")


def test_get_verify_rejects_a_forged_sender_with_the_whole_decision(port: int) -> None:
    status, _, body = verify_get(port, "alice@example.ac.uk", "x@other.org")
    assert status == 200
    assert body["text"].startswith("alice@example.ac.uk is protected against forgery")
    assert body == {
        "action": "reject",
        "reason": "unsigned",
        "code": 550,
        "enhanced": "5.7.1",
        "text": body["text"],
        "header": None,
        "checked": "alice@example.ac.uk",
        "role": "sender",
    }


def test_post_verify_accepts_a_signed_sender(port: int) -> None:
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    payload = json.dumps({"sender": signed, "recipient": "x@other.org", "client_address": "192.0.2.1"})
    status, _, body = call(port, "POST", "/v1/verify", payload.encode())
    assert status == 200 and (body["action"], body["reason"], body["code"]) == ("accept", "valid", 250)


def test_null_sender_checks_the_bounce_recipient(port: int) -> None:
    _, _, body = verify_get(port, "", "alice@example.ac.uk")
    assert (body["action"], body["role"], body["checked"]) == ("reject", "bounce_recipient", "alice@example.ac.uk")
    _, _, body = call(port, "POST", "/v1/verify", b'{"sender": "<>", "recipient": "alice@example.ac.uk"}')
    assert body["action"] == "reject" and body["role"] == "bounce_recipient"


def test_testing_mode_answers_warn_with_the_header(port: int) -> None:
    _, _, body = verify_get(port, "carol@example.ac.uk", "x@other.org")
    assert body["action"] == "warn"
    assert body["header"] == "X-Antiforgery-Warning: sender carol@example.ac.uk failed the forgery check (unsigned)"


def test_healthz_reports_the_loaded_snapshot(port: int) -> None:
    status, _, body = call(port, "GET", "/healthz")
    assert status == 200 and body["status"] == "ok" and body["snapshot_version"] >= 1


def test_unloaded_directory_is_503_on_healthz_and_defer_on_verify() -> None:
    running = unreachable_service()
    try:
        port = running.listen("http", http_server.session_factory(running.service))
        assert call(port, "GET", "/healthz")[0] == 503
        status, _, body = verify_get(port, "alice@example.ac.uk", "x@other.org")
        assert status == 200 and (body["action"], body["code"], body["enhanced"]) == ("defer", 451, "4.3.0")
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("method", "target", "body", "status", "words"),
    [
        ("GET", "/v1/verify?recipient=x%40y.org", None, 400, "sender is required"),
        ("GET", "/v1/verify", None, 400, "sender is required"),
        ("GET", "/v1/verify?sender=a%40b&sender=c%40d", None, 400, "twice"),
        ("GET", "/v1/verify?sender=a%40b&colour=red", None, 400, "unknown field"),
        ("GET", "/v1/verify?sender=%ff", None, 400, "malformed query"),
        ("GET", "/v1/verify?sender=a%0a%40b", None, 400, "control characters"),
        ("POST", "/v1/verify", b"{not json", 400, "not valid JSON"),
        ("POST", "/v1/verify", b'["alice@example.ac.uk"]', 400, "JSON object"),
        ("POST", "/v1/verify", b'{"sender": null}', 400, "must be a string"),
        ("POST", "/v1/verify", b'{"recipient": "x@y.org"}', 400, "sender is required"),
        ("POST", "/v1/verify", b'{"sender": "' + b"a" * 2000 + b'"}', 400, "too long"),
        ("DELETE", "/v1/verify", None, 405, "use GET or POST"),
        ("POST", "/healthz", b"{}", 405, "use GET"),
        ("GET", "/v2/verify", None, 404, "no such resource"),
        ("GET", "/", None, 404, "no such resource"),
    ],
)
def test_bad_requests_get_a_4xx_json_error(
    port: int, method: str, target: str, body: bytes | None, status: int, words: str
) -> None:
    got, headers, payload = call(port, method, target, body)
    assert got == status and words in payload["error"] and set(payload) == {"error"}
    if status == 405:
        assert headers["Allow"] in ("GET", "GET, POST")


def test_oversized_body_is_413_before_it_is_sent(port: int) -> None:
    status, body = raw(port, b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    assert status == 413 and "exceeds" in body["error"]


def test_chunked_bodies_are_501_and_garbage_is_400(port: int) -> None:
    assert raw(port, b"POST /v1/verify HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")[0] == 501
    assert raw(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")[0] == 400  # a TLS hello


def test_requests_on_one_kept_alive_connection_and_connection_close(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for sender in ("alice@example.ac.uk", "someone@other.org"):
            connection.request("GET", f"/v1/verify?sender={quote(sender)}")
            response = connection.getresponse()
            assert response.status == 200 and response.getheader("Connection") is None
            response.read()
        connection.request("GET", "/healthz", headers={"Connection": "close"})
        response = connection.getresponse()
        assert response.getheader("Connection") == "close"
        response.read()
    finally:
        connection.close()


def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    one = b"GET /v1/verify?sender=alice%40example.ac.uk HTTP/1.1\r\nHost: x\r\n\r\n"
    two = b"GET /v1/verify?sender=bob%40other.org HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(one + two)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    actions = [json.loads(part.split(b"\r\n\r\n", 1)[1])["action"] for part in received.split(b"HTTP/1.1 200 OK")[1:]]
    assert actions == ["reject", "accept"]
