"""`antiforgery serve`: start the configured adapters around one verification service.

With `[submission] listen` set, the submission proxy runs here too, on the same directory snapshot
as the verification service (one `gateway.directory.Directory`, one refresh loop): a user who opts
in is signed at submission from the same moment their unsigned address starts being refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from pathlib import Path
from typing import Protocol, runtime_checkable

from prometheus_client import start_http_server
from sqlalchemy.exc import SQLAlchemyError

from gateway import keyfile
from gateway.config import Config, parse_listen
from gateway.directory import Directory
from gateway.store import Store
from gateway.submission import proxy
from gateway.submission.auth import authenticator_from

from . import (
    authresults,
    callout_responder,
    http_server,
    milter_server,
    policy_server,
    readsocket_server,
    socketmap_server,
)
from .exchange import Exchanges, serve
from .forward import forward_from
from .rules import rules_from
from .service import VerificationService

log = logging.getLogger("antiforgery.serve")


@runtime_checkable
class Listener(Protocol):
    """An adapter that runs its own asyncio protocol (the callout responder, the proxy: aiosmtpd), not an Exchange."""

    async def listen(self, host: str, port: int) -> asyncio.Server: ...


@runtime_checkable
class Closing(Protocol):
    """A listener that holds more than its server: the proxy's idle upstream connections."""

    async def close(self) -> None: ...


Adapter = Exchanges | Listener


def open_store(url: str) -> Store:
    """Open the store; if it is unreachable, start anyway and defer until it comes back."""
    try:
        return Store.open(url)
    except SQLAlchemyError as exc:
        log.warning("store unreachable at start (%s); deferring requests until it answers", type(exc).__name__)
        return Store.open(url, check_schema=False)


def adapters(config: Config, service: VerificationService) -> dict[str, tuple[str, Adapter]]:
    """Adapter name -> (listen address, session or listener); only those with an address are started."""
    verification = config.verification
    # Read once at start, like the key file: a missing or too readable token file stops `serve`.
    token_file = verification.webmail_token_file
    webmail_token = keyfile.load_token(Path(token_file)) if token_file else None
    authserv_id = config.site.authserv_id if verification.authentication_results else None
    spf_check = authresults.pyspf_check if verification.spf_hint else None
    forward = forward_from(config, service)  # one callout cache for every adapter
    table: dict[str, tuple[str, Adapter]] = {
        "policy": (
            verification.policy_listen,
            policy_server.session_factory(service, authserv_id, spf_check, forward),
        ),
        "socketmap": (verification.socketmap_listen, socketmap_server.session_factory(service)),
        "readsocket": (verification.readsocket_listen, readsocket_server.session_factory(service, authserv_id)),
        "http": (verification.http_listen, http_server.session_factory(service, webmail_token)),
    }
    if authserv_id:
        milter = milter_server.session_factory(service, authserv_id, spf_check)
        table["milter"] = (verification.milter_listen, milter)
    if verification.callout_listen:  # public: off unless configured
        table["callout"] = (verification.callout_listen, callout_responder.handler_from(config, service, forward))
    if config.submission.listen:
        authenticator = authenticator_from(config, service.store)
        submission = proxy.handler_from(config, service.directory, service.rules.keyring, authenticator)
        table["submission"] = (config.submission.listen, submission)
    return {name: (listen, session) for name, (listen, session) in table.items() if listen}


async def run(config: Config, stop: asyncio.Event | None = None) -> None:
    keyring = keyfile.load(config.signing.key_file)
    store = await asyncio.to_thread(open_store, config.store.url)
    rules = rules_from(config, keyring)
    directory = Directory(store, refresh_seconds=config.verification.refresh_seconds)  # shared, see above
    service = VerificationService(store, rules, directory=directory)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not in the main thread (tests): the standard loop raises RuntimeError there, uvloop ValueError.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    await directory.start()
    await service.start()
    servers = []
    closing: list[Closing] = []
    try:
        for name, (listen, adapter) in adapters(config, service).items():
            host, port = parse_listen(listen)
            if isinstance(adapter, Closing):
                closing.append(adapter)
            if isinstance(adapter, Listener):
                servers.append(await adapter.listen(host, port))
            else:
                servers.append(await serve(name, host, port, adapter))
        if config.verification.metrics_listen:
            host, port = parse_listen(config.verification.metrics_listen)
            start_http_server(port, host)
            log.info("metrics listening on %s:%d", host, port)
        # What exists now (modules, the first snapshot) lives as long as the process: spare the
        # garbage collector walking it at every full collection (issue 7: 78 ms, a pause for every
        # request in flight). Later snapshots hold no cycles, so refcounting frees the old ones.
        gc.collect()
        gc.freeze()
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for holder in closing:
            await holder.close()
        await service.stop()
        await directory.stop()
        store.close()
