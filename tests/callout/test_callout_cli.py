"""`antiforgery callout ADDRESS`: one line of answer, exit 0 positive, 1 negative, 2 temporary or bad input."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from smtp_servers import Scripted, Servers, unused_port

from gateway.cli import main


@pytest.fixture
def servers() -> Iterator[Servers]:
    running = Servers()
    yield running
    running.close()


def run(config: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["--config", str(config), "callout", *args], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "antiforgery.toml"
    path.write_text('[verification]\ncallout_hostname = "gateway.test"\ncallout_timeout = 5\n')
    return path


def test_an_accepted_address_is_positive_with_exit_0(config: Path, servers: Servers) -> None:
    handler = Scripted()
    port = servers.smtp(handler)
    assert run(config, "bob@dept.test", "--route", f"127.0.0.1:{port}") == (0, "positive\n", "")
    assert handler.seen[0] == "EHLO gateway.test"


def test_a_refused_address_is_negative_with_the_reply_and_exit_1(config: Path, servers: Servers) -> None:
    port = servers.smtp(Scripted("550 5.1.1 No such user here"))
    status, out, _ = run(config, "ghost@dept.test", "--route", f"127.0.0.1:{port}")
    assert (status, out) == (1, "negative: 550 5.1.1 No such user here\n")


def test_an_unreachable_server_is_temporary_with_exit_2(config: Path) -> None:
    port = unused_port()
    status, out, _ = run(config, "bob@dept.test", "--route", f"127.0.0.1:{port}")
    assert status == 2 and out.startswith(f"temporary: 127.0.0.1:{port}: cannot connect")


def test_a_silent_server_is_temporary_after_the_given_timeout(config: Path, servers: Servers) -> None:
    port = servers.silent()
    status, out, _ = run(config, "bob@dept.test", "--route", f"127.0.0.1:{port}", "--timeout", "0.3")
    assert status == 2 and "no greeting within 0.3 s" in out


def test_the_configured_route_is_used_without_route_option(tmp_path: Path, servers: Servers) -> None:
    port = servers.smtp(Scripted())
    path = tmp_path / "antiforgery.toml"
    path.write_text(f'[verification]\ncallout_routes = ["dept.test=127.0.0.1:{port}"]\n')
    assert run(path, "bob@dept.test")[:2] == (0, "positive\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-an-address"], "is not an address"),
        (["a@dept.test\r\nDATA"], "characters not allowed"),
        (["bob@dept.test", "--route", "nowhere"], "is not host:port"),
        (["bob@dept.test", "--timeout", "0"], "--timeout must be a positive number"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_exit_2(config: Path, args: list[str], message: str) -> None:
    status, out, err = run(config, *args)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("antiforgery: error: ") and message in err
