"""gateway.eventloop and `antiforgery serve --event-loop`: the loop is chosen, not guessed."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import uvloop

from gateway import eventloop
from gateway.cli import main as cli_main


def test_the_default_is_uvloop_and_asyncio_is_one_option_away() -> None:
    for name, kind in (("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
        loop = eventloop.new_event_loop(name)
        try:
            assert isinstance(loop, kind), (name, type(loop))
            assert loop.run_until_complete(asyncio.sleep(0, result=name)) == name
        finally:
            loop.close()
    assert eventloop.DEFAULT == "uvloop"


def test_an_unknown_loop_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown event loop 'trio': choose one of uvloop, asyncio"):
        eventloop.loop_factory("trio")


def test_serve_refuses_an_unknown_loop_with_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "antiforgery.toml"
    with pytest.raises(SystemExit) as exit_:
        cli_main(["--config", str(config), "serve", "--event-loop", "trio"], out=io.StringIO())
    assert exit_.value.code == 2
    assert "invalid choice: 'trio'" in capsys.readouterr().err
