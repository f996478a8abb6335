"""Every failure ends in a short page with a status code, never a traceback.

Bad input is a 4xx with a sentence to act on; trouble on our side (store down, key file
unreadable) is a 503 saying to try again later, with the detail in the log, never on the page
(the detail may name files; design invariant 9 keeps secrets out of both).
"""

from __future__ import annotations

import logging

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from gateway.keyfile import KeyFileError
from gateway.store import InvalidValue, NotFound, StoreError, UnknownUser

log = logging.getLogger(__name__)

UNAVAILABLE = "The service cannot reach its data just now. Please try again in a few minutes."


def _page(code: int, title: str, message: str) -> tuple[str, int]:
    return render_template("error.html", code=code, title=title, message=message), code


def _http(exc: HTTPException) -> tuple[str, int]:
    code = exc.code or 500
    return _page(code, exc.name, exc.description or "")


def _csrf(exc: CSRFError) -> tuple[str, int]:
    return _page(
        400,
        "Form expired",
        "The form was not sent from this site's page, or it is too old. Go back, reload the page and try again.",
    )


def _store(exc: StoreError) -> tuple[str, int]:
    if isinstance(exc, UnknownUser | NotFound):
        return _page(404, "Not Found", "There is no such entry.")
    if isinstance(exc, InvalidValue):
        return _page(400, "Bad Request", str(exc))
    log.error("store error: %s", exc)
    return _page(503, "Service Unavailable", UNAVAILABLE)


def _database(exc: SQLAlchemyError) -> tuple[str, int]:
    # The URL may hold a password: log the driver's first line only.
    log.error("database error: %s", str(getattr(exc, "orig", None) or exc).splitlines()[0])
    return _page(503, "Service Unavailable", UNAVAILABLE)


def _key_file(exc: KeyFileError) -> tuple[str, int]:
    log.error("%s", exc)
    return _page(503, "Service Unavailable", UNAVAILABLE)


def _unexpected(exc: Exception) -> tuple[str, int]:
    if isinstance(exc, HTTPException):
        return _http(exc)
    log.exception("unexpected error")
    return _page(500, "Internal Server Error", "Something went wrong on our side; it has been logged.")


def register(app: Flask) -> None:
    app.register_error_handler(CSRFError, _csrf)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(StoreError, _store)
    app.register_error_handler(SQLAlchemyError, _database)
    app.register_error_handler(KeyFileError, _key_file)
    app.register_error_handler(Exception, _unexpected)
