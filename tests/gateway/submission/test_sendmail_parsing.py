"""The sendmail interface without a process or a socket: flags, message lines, recipients, Bcc."""

from __future__ import annotations

import pytest

from gateway.submission.sendmail_args import Invocation, SendmailError, Sysexit, parse_args
from gateway.submission.sendmail_message import (
    checked_address,
    complete,
    header_recipients,
    parse_recipients,
    read_message,
    remove_blind,
)
from gateway.submission.sendmail_relay import Envelope, group_by_sender

# --- flags ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bob@x.org"], Invocation(("bob@x.org",))),
        (["-t", "-oi"], Invocation(extract_recipients=True, ignore_dots=True)),
        (["-ti"], Invocation(extract_recipients=True, ignore_dots=True)),
        (["-i", "-falice@x.org", "bob@x.org"], Invocation(("bob@x.org",), sender="alice@x.org", ignore_dots=True)),
        (
            ["-f", "alice@x.org", "-F", "Alice Liddell", "bob@x.org"],
            Invocation(("bob@x.org",), False, "alice@x.org", "Alice Liddell"),
        ),
        (["-r", "<>", "bob@x.org"], Invocation(("bob@x.org",), sender="<>")),
        (["-f", "", "bob@x.org"], Invocation(("bob@x.org",), sender="")),
        (["bob@x.org", "-oi", "carol@y.org"], Invocation(("bob@x.org", "carol@y.org"), ignore_dots=True)),
        (
            ["-bm", "-odi", "-oem", "-oQ/tmp", "-U", "-v", "-N", "never", "-Rhdrs", "-Vid", "bob@x.org"],
            Invocation(("bob@x.org",)),
        ),
        (
            ["-B", "8BITMIME", "-C/etc/mail", "-h", "5", "-Lmylabel", "-Ooption=1", "-em", "bob@x.org"],
            Invocation(("bob@x.org",)),
        ),
        (["-i", "--", "-odd@x.org"], Invocation(("-odd@x.org",), ignore_dots=True)),
    ],
)
def test_sendmail_flags_are_read_as_postfix_reads_them(argv: list[str], expected: Invocation) -> None:
    assert parse_args(argv) == expected


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-bs"], "mode -bs is not supported"),
        (["-bp"], "mode -bp"),
        (["-bv", "bob@x.org"], "mode -bv"),
        (["-q"], "queue runs"),
        (["-q30m"], "queue runs"),
        (["-I"], "newaliases"),
        (["-Z"], "option -Z not recognized"),
        (["-f"], "option -f requires argument"),
    ],
)
def test_unsupported_modes_and_unknown_flags_are_usage_errors(argv: list[str], words: str) -> None:
    with pytest.raises(SendmailError, match=words) as caught:
        parse_args(argv)
    assert caught.value.status is Sysexit.USAGE


# --- the message ---------------------------------------------------------------------------------


def test_lf_lines_become_crlf_and_the_header_ends_at_the_empty_line() -> None:
    message = read_message(b"Subject: hi\nTo: bob@x.org,\n\tcarol@y.org\n\nbody\r\nmore\n", ignore_dots=False)
    assert message.headers == [b"Subject: hi\r\n", b"To: bob@x.org,\r\n\tcarol@y.org\r\n"]
    assert message.body == b"body\r\nmore\r\n"
    assert message.values("to") == ["bob@x.org,\tcarol@y.org"]


def test_lone_dot_ends_input_unless_i_is_given() -> None:
    data = b"Subject: dots\n\nbefore\n.\nafter\n"
    assert read_message(data, ignore_dots=False).body == b"before\r\n"
    assert read_message(data, ignore_dots=True).body == b"before\r\n.\r\nafter\r\n"


def test_a_line_that_is_no_header_field_starts_the_body() -> None:
    message = read_message(b"Subject: x\nthis is text, not a field\nTo: not@a.header\n", ignore_dots=False)
    assert message.headers == [b"Subject: x\r\n"]
    assert message.body == b"this is text, not a field\r\nTo: not@a.header\r\n"
    assert read_message(b"no header at all\n", ignore_dots=False).headers == []


def test_a_leading_mbox_from_line_is_dropped() -> None:
    message = read_message(b"From alice Thu Jan  1 00:00:00 2026\nSubject: x\n\nbody\n", ignore_dots=False)
    assert message.headers == [b"Subject: x\r\n"]


def test_t_reads_to_cc_and_bcc_with_names_and_groups() -> None:
    message = read_message(
        b'To: "Bob, B." <bob@x.org>, carol@y.org\nCc: team: dan@z.org, erin@z.org;\nBcc: frank@w.org\n'
        b"Subject: x\n\nbody mentions To: eve@evil.org\n",
        ignore_dots=False,
    )
    assert header_recipients(message) == ["bob@x.org", "carol@y.org", "dan@z.org", "erin@z.org", "frank@w.org"]


def test_resent_headers_replace_the_original_recipients() -> None:
    message = read_message(b"To: bob@x.org\nResent-To: carol@y.org\nResent-Bcc: dan@z.org\n\n", ignore_dots=False)
    assert header_recipients(message) == ["carol@y.org", "dan@z.org"]


def test_bcc_and_resent_bcc_are_removed_whole() -> None:
    message = read_message(b"To: bob@x.org\nBCC: secret@y.org,\n  other@y.org\nResent-Bcc: s@z.org\n\nb\n", False)
    remove_blind(message)
    assert message.to_bytes() == b"To: bob@x.org\r\n\r\nb\r\n"


def test_missing_from_date_and_message_id_are_added_existing_ones_kept() -> None:
    message = read_message(b"Subject: x\n\nbody\n", ignore_dots=False)
    complete(message, "alice@example.ac.uk", "Alice Liddell", 1_700_000_000)
    text = message.to_bytes().decode()
    assert "\r\nFrom: Alice Liddell <alice@example.ac.uk>\r\n" in text
    assert "\r\nDate: " in text and "2023" in text
    assert "\r\nMessage-ID: <" in text and "@example.ac.uk>\r\n" in text
    kept = read_message(b"from: me@x.org\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-Id: <a@b>\n\n", False)
    complete(kept, "alice@example.ac.uk", "", 0)
    assert len(kept.headers) == 3


def test_a_non_ascii_full_name_is_encoded() -> None:
    message = read_message(b"\n", ignore_dots=False)
    complete(message, "alice@example.ac.uk", "Al\u00efce", 0)
    assert message.headers[0] == b"From: =?utf-8?b?QWzDr2Nl?= <alice@example.ac.uk>\r\n"


@pytest.mark.parametrize("address", ["bob", "bob@", "@x.org", "b ob@x.org", "b\u00f6b@x.org", "bob@-x.org"])
def test_recipients_must_be_full_ascii_addresses(address: str) -> None:
    with pytest.raises(SendmailError, match="not a full address") as caught:
        checked_address(address, "recipient")
    assert caught.value.status is Sysexit.NOUSER


@pytest.mark.parametrize(
    "address",
    ["bob%evil.example@x.org", "evil.example!bob@x.org", "bob@[192.0.2.1]", "b" * 65 + "@x.org", "a..b@x.org"],
)
def test_local_submission_refuses_what_the_proxy_refuses(address: str) -> None:
    """Routing syntax, address literals and malformed local parts: plan.address_syntax's rule."""
    with pytest.raises(SendmailError, match="recipient refused") as caught:
        checked_address(address, "recipient")
    assert caught.value.status is Sysexit.NOUSER


def test_recipient_arguments_may_be_lists_with_names() -> None:
    assert parse_recipients(["bob@x.org, Carol <carol@y.org>", "dan@z.org"], "recipient") == [
        "bob@x.org",
        "carol@y.org",
        "dan@z.org",
    ]


def test_recipients_are_grouped_by_envelope_sender_in_order() -> None:
    senders = {"a@x.org": "s1", "lists@y.org": "fixed", "b@x.org": "s1"}
    assert group_by_sender(senders) == [Envelope("s1", ("a@x.org", "b@x.org")), Envelope("fixed", ("lists@y.org",))]
