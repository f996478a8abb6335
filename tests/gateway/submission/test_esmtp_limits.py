"""MAIL/RCPT parameters, what goes upstream, the AUTH throttle and the Received header, without sockets."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.submission.dsn import Failed, failure_report, status_of
from gateway.submission.esmtp import (
    MailParams,
    ParamError,
    RcptParams,
    mail_arguments,
    parse_mail,
    parse_rcpt,
    rcpt_arguments,
)
from gateway.submission.limits import AuthThrottle
from gateway.submission.received import TLSInfo, received

ALL = {"SIZE": "10000000", "8BITMIME": "", "SMTPUTF8": "", "DSN": ""}


def test_parameters_keep_the_case_of_their_values() -> None:
    params = parse_mail(["size=123", "body=8bitmime", "SMTPUTF8", "RET=hdrs", "ENVID=Q+2Bx1", "AUTH=<>"], 1000)
    assert params == MailParams(size=123, body="8BITMIME", smtputf8=True, ret="HDRS", envid="Q+2Bx1")
    assert mail_arguments(params, ALL) == ["SIZE=123", "BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=Q+2Bx1"]
    rcpt = parse_rcpt(["NOTIFY=failure,delay", "ORCPT=rfc822;Bob+40x@Example.org"])
    assert rcpt_arguments(rcpt, ALL) == ["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;Bob+40x@Example.org"]


def test_only_what_the_upstream_offers_goes_upstream() -> None:
    params = parse_mail(["SIZE=5", "BODY=7BIT", "RET=FULL"], 1000)
    assert mail_arguments(params, {}) == []
    assert rcpt_arguments(RcptParams(notify=("NEVER",)), {"SIZE": ""}) == []
    with pytest.raises(ParamError, match=r"^554 5\.6\.3"):
        mail_arguments(MailParams(body="8BITMIME"), {})
    with pytest.raises(ParamError, match=r"^553 5\.6\.7"):
        mail_arguments(MailParams(smtputf8=True), {"8BITMIME": ""})


@pytest.mark.parametrize(
    ("words", "reply"),
    [
        (["SIZE=2000"], "552 5.3.4"),
        (["SIZE=x"], "501 5.5.4"),
        (["BODY=BINARYMIME"], "501 5.5.4"),
        (["SMTPUTF8=yes"], "501 5.5.4"),
        (["RET=ALL"], "501 5.5.4"),
        (["ENVID=a b"], "501 5.5.4"),
        (["ENVID=" + "x" * 101], "501 5.5.4"),
        (["XFORWARD=1"], "555 5.5.4"),
        (["SIZE=1", "size=2"], "501 5.5.4"),
    ],
)
def test_bad_mail_parameters(words: list[str], reply: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_mail(words, 1000)
    assert caught.value.reply.startswith(reply)


@pytest.mark.parametrize("words", [["NOTIFY=NEVER,FAILURE"], ["NOTIFY=SOMETIMES"], ["ORCPT=bob@x"], ["FOO=1"]])
def test_bad_rcpt_parameters(words: list[str]) -> None:
    with pytest.raises(ParamError):
        parse_rcpt(words)


def test_throttle_doubles_the_delay_then_locks_out_then_forgets() -> None:
    throttle = AuthThrottle(max_failures=3, lockout_seconds=100, delay=0.5)
    assert [throttle.failed("192.0.2.1", 10) for _ in range(3)] == [0.5, 1.0, 2.0]
    assert throttle.locked("192.0.2.1", 50) == 60 and throttle.locked("192.0.2.2", 50) == 0
    assert throttle.locked("192.0.2.1", 110) == 0 and throttle.failures("192.0.2.1", 110) == 0


def test_throttle_counts_an_ipv6_64_as_one_client_and_success_resets() -> None:
    throttle = AuthThrottle(max_failures=2, lockout_seconds=100, delay=1)
    throttle.failed("2001:db8::1", 0)
    throttle.failed("2001:db8::2", 0)
    assert throttle.locked("2001:db8::ffff", 1) > 0
    throttle.succeeded("2001:db8::3")
    assert throttle.locked("2001:db8::1", 1) == 0


def test_old_failures_are_forgotten() -> None:
    throttle = AuthThrottle(max_failures=2, lockout_seconds=100, delay=1)
    throttle.failed("192.0.2.1", 0)
    throttle.failed("192.0.2.1", 500)
    assert throttle.locked("192.0.2.1", 501) == 0


NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)


def test_received_names_the_hop_the_protocol_and_tls() -> None:
    header = received(
        helo="laptop.example.org", client_ip="192.0.2.7", hostname="smtp.example.ac.uk",
        tls=TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256), authenticated=True, smtputf8=False,
        transaction_id="T1", recipients=["bob@other.org"], now=NOW,
    )
    assert header == (
        b"Received: from laptop.example.org ([192.0.2.7])\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
        b"\tby smtp.example.ac.uk (antiforgery) with ESMTPSA id T1\r\n"
        b"\tfor <bob@other.org>; Mon, 23 Nov 2026 09:00:00 +0000\r\n"
    )


def test_received_leaves_out_a_bogus_helo_and_several_recipients() -> None:
    header = received(
        helo="x;(evil)", client_ip="2001:db8::1", hostname="h", tls=None, authenticated=True, smtputf8=True,
        transaction_id="T2", recipients=["a@b", "c@d"], now=NOW,
    )
    assert header.startswith(b"Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])\r\n\tby h (antiforgery)")
    assert b"with UTF8SMTPA id T2;" in header and b"for <" not in header and b"evil" not in header


def test_failure_report_is_a_delivery_status_notification() -> None:
    failed = [Failed("list@lists.example.org", RcptParams(orcpt="rfc822;List+40x@lists.example.org"), "554 5.7.1 no")]
    report = failure_report(
        hostname="smtp.example.ac.uk", recipient="alice=fx@example.ac.uk", failed=failed,
        message=b"Subject: hi\r\n\r\nsecret body\r\n", envid="E1", ret=None, arrival=NOW, now=NOW,
    )
    text = report.decode()
    assert "report-type=delivery-status" in text and "To: <alice=fx@example.ac.uk>" in text
    assert "Original-Envelope-Id: E1" in text and "Original-Recipient: rfc822; List@x@lists.example.org" in text
    assert "Status: 5.7.1" in text and "Diagnostic-Code: smtp; 554 5.7.1 no" in text
    assert "Subject: hi" in text and "secret body" not in text  # RET=HDRS by default
    assert status_of("451 4.4.2 gone") == "5.4.2" and status_of("550 no") == "5.0.0"
