"""The forms, each with Flask-WTF's CSRF token and limits that turn bad input into a message.

Lengths follow the store's columns (gateway/store/models.py): an address is at most 254
octets (RFC 5321 section 4.5.3.1.3), a note or reason 200 characters. The store checks again;
these limits only make the error a sentence next to the field instead of a failed write.
"""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, RadioField, SelectField, StringField
from wtforms.validators import InputRequired, Length, Optional, ValidationError

from gateway.store import Mode

ADDRESS_LIMIT = 254
#: A signed address is longer than its base: the local part may grow to 64 octets.
SIGNED_ADDRESS_LIMIT = 320
TEXT_LIMIT = 200
#: Values only (the label is the value): the pages name the modes themselves, with explanations.
MODE_CHOICES = [mode.value for mode in Mode]


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def has_control_characters(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def one_line(form: FlaskForm, field: Any) -> None:
    """Refuse control characters: the values end up in logs and in SMTP replies."""
    if has_control_characters(field.data or ""):
        raise ValidationError("Use one line of text without control characters.")


class LoginForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    login = StringField("Login", [InputRequired(), Length(max=ADDRESS_LIMIT), one_line], filters=[_strip])
    password = PasswordField("Password", [InputRequired(), Length(max=1024)])


class ModeForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    mode = RadioField("Protection", [InputRequired()], choices=MODE_CHOICES)
    confirm = BooleanField("I send all my mail from these addresses through the authenticated service")


class LeakForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    signed_address = StringField(
        "Signed address", [InputRequired(), Length(max=SIGNED_ADDRESS_LIMIT), one_line], filters=[_strip]
    )
    reason = StringField(
        "Where did you see it? (optional)", [Optional(), Length(max=TEXT_LIMIT), one_line], filters=[_strip]
    )


class FixedTagForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    recipient = StringField(
        "Recipient address, or *@domain for a whole domain",
        [InputRequired(), Length(max=ADDRESS_LIMIT), one_line],
        filters=[_strip],
    )
    note = StringField("Note (optional)", [Optional(), Length(max=TEXT_LIMIT), one_line], filters=[_strip])


class AdminModeForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    mode = SelectField("Protection", [InputRequired()], choices=MODE_CHOICES)


class ActionForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no type hints
    """A button with nothing but the CSRF token: logging out, revoking."""
