"""One client transaction relayed as one upstream transaction per envelope sender.

Seed 003, "Envelope-dependent recipients": a message is signed once, but a recipient with a fixed
tag gets its own fixed sender. One SMTP transaction has one MAIL FROM, so the recipients are split
into groups by sender, each with its own upstream connection (an idle one from `upstream_pool`,
else a new one), taken when its first recipient arrives, whose RCPT goes with the group's MAIL (in
one write where the upstream offers PIPELINING). Every RCPT is sent to its group's upstream at once
and the client gets that upstream's own reply (design invariant 6: no 250 before the next
hop said 250); a group whose connection or MAIL FROM failed gives that failure to each of its
recipients. A reused connection the upstream closed while it was idle is found out by that MAIL
(no answer, or 421): the MAIL is sent once more on a new connection, since neither the client nor
the upstream has been told anything about the transaction yet (`upstream`); any other reply to
MAIL, such as 451 or 550 on a live connection, is the group's failure as it stands.

DATA, with several groups, cannot be atomic: the upstream accepts each copy separately, and an
accepted copy cannot be taken back. So the order is chosen to make a mixed result as rare as SMTP
allows, and to lose nothing when it happens anyway:

 1. every group gets DATA and the whole message, except the final `.CRLF`. If any group refuses
    DATA or fails while taking the octets, every copy is abandoned by closing its connection
    without the final dot (RFC 5321 section 3.3: such a transaction never happened) and the client
    gets that group's reply: nothing was accepted, the client keeps its message and may retry.
    A single group (the usual case) gets its final dot in the same write: there is no other copy
    to wait for, and a failure to take the octets is its reply all the same;
 2. then the groups are finished one by one. While none has accepted, a refusal abandons the rest
    the same way and the client gets the refusal: again nothing was accepted;
 3. once a copy was accepted, the remaining groups are still finished, and any that refuse are
    reported in a delivery status notification (`dsn`) handed to the upstream with the null sender,
    addressed to that group's (signed) sender; the client gets the first accepted copy's 250,
    because a failure reply would make it send the accepted recipients a second copy;
 4. if that report cannot be handed over, the client gets `451 4.3.0` naming who did receive it:
    a duplicate for some recipients on retry is the lesser evil than a silent loss (RFC 5321
    section 6.1), and a 5xx would make a relaying client bounce the message for every recipient,
    including those who received it.

A final reply that never comes (a timeout after our final dot) is ambiguous: the upstream may have
queued the copy. It counts as a failure; if it was the first, the client's retry may duplicate that
copy, which is how every SMTP client has to treat a lost final reply (RFC 1047).

A connection goes back to the pool only at a clean protocol boundary (`_release`): after the
upstream's own 2xx to our end of data, or after its 250 to RSET, sent after a 5xx there or when the
transaction ended before it (the client's RSET, a refused DATA, a group whose recipients were all
refused). RFC 5321 section 4.1.1.4 says the end of data ends the transaction whatever the reply,
but Postfix keeps it open after its end-of-data restrictions refuse a message (the next MAIL gets
`503 5.5.1 nested MAIL command`), hence the RSET. A connection in DATA is closed, since that is how
a copy is abandoned; a broken one, one answered 421, or one whose copy got a 4xx at the end of
data (an upstream in trouble: a full queue, a lost milter; a new connection gets a new smtpd
process) is closed too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .content import encode_for_data
from .dsn import Failed, failure_report, wants_report
from .esmtp import MailParams, ParamError, RcptParams, mail_arguments, rcpt_arguments
from .plan import MessageSigner
from .upstream import Reply, Upstream
from .upstream_pool import UpstreamPool

log = logging.getLogger("antiforgery.submission")

Opener = Callable[[], Awaitable["Upstream | Reply"]]


@dataclass
class Group:
    """The recipients that share one envelope sender, and their upstream transaction."""

    sender: str
    upstream: Upstream | None = None
    failure: Reply | None = None  # why this group cannot take recipients (connection or MAIL FROM)
    recipients: list[tuple[str, RcptParams]] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    reply: Reply  # what the client is told
    accepted: list[str]  # recipients whose copy the upstream accepted
    reported: list[str]  # recipients refused after another copy was accepted, sent a DSN


class Transaction:
    def __init__(
        self,
        signer: MessageSigner,
        params: MailParams,
        open_upstream: Opener,
        *,
        hostname: str,
        data_timeout: float,
        now: Callable[[], dt.datetime],
        pool: UpstreamPool | None = None,
    ) -> None:
        self.signer = signer
        self.params = params
        self.open_upstream = open_upstream
        self.pool = pool  # None: every connection is closed after its transaction
        self.hostname = hostname
        self.data_timeout = data_timeout
        self.now = now
        self.arrival = now()
        self.groups: dict[str, Group] = {}

    @property
    def recipients(self) -> list[str]:
        return [r for g in self.groups.values() for r, _ in g.recipients]

    @property
    def open(self) -> bool:
        """Whether any group still holds an upstream connection (that `abort` would end)."""
        return any(g.upstream is not None for g in self.groups.values())

    async def add_recipient(self, recipient: str, params: RcptParams) -> Reply:
        sender = self.signer.sender_for(recipient)
        group = self.groups.get(sender)
        if group is None:  # MAIL, and this first RCPT with it (pipelined where the upstream allows)
            group = self.groups[sender] = Group(sender)
            begun = await self._begin(
                sender,
                lambda upstream: mail_arguments(self.params, upstream.extensions),
                (recipient, lambda upstream: rcpt_arguments(params, upstream.extensions)),
            )
            if isinstance(begun, Reply):
                group.failure = begun
                return begun
            group.upstream, first_reply = begun
            assert first_reply is not None  # mail_rcpt answers RCPT whenever MAIL was accepted
            reply = first_reply
        elif group.failure is not None or group.upstream is None:
            return group.failure or Reply(451, ("4.3.0 Upstream transaction not open",), local=True)
        else:
            reply = await group.upstream.rcpt(recipient, rcpt_arguments(params, group.upstream.extensions))
        if reply.ok:
            group.recipients.append((recipient, params))
        return reply

    async def _begin(
        self,
        sender: str,
        arguments: Callable[[Upstream], list[str]],
        first: tuple[str, Callable[[Upstream], list[str]]] | None = None,
        *,
        reuse: bool = True,
    ) -> tuple[Upstream, Reply | None] | Reply:
        """A connection whose upstream accepted MAIL FROM:<sender> and the reply to the `first`
        recipient's RCPT sent with it (None without one), or the reply saying why there is none.

        `arguments` gives the MAIL parameters for the connection's extensions (ParamError: refused
        here), `first` the recipient and its RCPT parameters. A reused connection that turns out
        dead is retried once on a new one (module docstring).
        """
        upstream = self.pool.take() if reuse and self.pool is not None else None
        reused = upstream is not None
        if upstream is None:
            opened = await self.open_upstream()
            if isinstance(opened, Reply):
                return opened
            upstream = opened
        try:
            args = arguments(upstream)
        except ParamError as exc:
            await upstream.close()
            return Reply(int(exc.reply[:3]), (exc.reply[4:],), local=True)
        if first is None:
            reply, rcpt_reply = await upstream.mail(sender, args), None
        else:
            recipient, rcpt_arguments_for = first
            reply, rcpt_reply = await upstream.mail_rcpt(sender, args, recipient, rcpt_arguments_for(upstream))
        if reply.ok:
            return upstream, rcpt_reply
        lost = upstream.broken is not None  # no answer, closed, or 421: not a verdict on this MAIL
        await upstream.close()
        if reused and lost:
            log.info("idle upstream connection lost (%s); MAIL again on a new one", str(reply).replace("\r\n", " "))
            return await self._begin(sender, arguments, first, reuse=False)
        return reply

    async def deliver(self, message: bytes) -> Outcome:
        """Hand the message to every group's upstream; see the module docstring for the order."""
        live = [g for g in self.groups.values() if g.recipients and g.upstream is not None]
        encoded = encode_for_data(message)
        if len(live) == 1 and live[0].upstream is not None:
            # One copy: nothing to hold its end of data back for, so it goes in the same write.
            prepared = [await live[0].upstream.send_data(encoded, with_end=True)]
        else:
            prepared = await asyncio.gather(*(g.upstream.send_data(encoded) for g in live if g.upstream))
        refusal = next((r for r in prepared if r is not None), None)
        if refusal is not None:
            await self.abort()
            return Outcome(refusal, [], [])
        finished: list[tuple[Group, Reply]] = []
        for group in live:
            assert group.upstream is not None
            reply = await group.upstream.finish(self.data_timeout)
            finished.append((group, reply))
            if not any(r.ok for _, r in finished):
                await self._end(finished)  # and the groups not finished yet are abandoned
                return Outcome(reply, [], [])
        await self._end(finished)
        accepted = [(g, r) for g, r in finished if r.ok]
        refused = [(g, r) for g, r in finished if not r.ok]
        done = [r for g, _ in accepted for r, _ in g.recipients]
        if not refused:
            return Outcome(accepted[0][1], done, [])
        return await self._report(message, accepted[0][1], done, refused)

    async def _end(self, finished: list[tuple[Group, Reply]]) -> None:
        """Release the finished groups' connections after their final replies, then end every other group."""
        for group, reply in finished:
            if group.upstream is not None:
                upstream, group.upstream = group.upstream, None
                await self._release(upstream, reply)
        await self.abort()

    async def _report(
        self, message: bytes, first: Reply, done: list[str], refused: list[tuple[Group, Reply]]
    ) -> Outcome:
        """Step 3 and 4: a DSN per refused group, then 250 (or 451 if a report could not be queued)."""
        reported: list[str] = []
        for group, reply in refused:
            line = str(reply).replace("\r\n", " ")
            failed = [Failed(r, p, line) for r, p in group.recipients if wants_report(p)]
            log.warning(
                "split delivery: accepted for %d recipient(s), refused for %s: %s",
                len(done), ", ".join(r for r, _ in group.recipients), line,
            )
            if not failed:
                continue
            report = failure_report(
                hostname=self.hostname, recipient=group.sender, failed=failed, message=message,
                envid=self.params.envid, ret=self.params.ret, arrival=self.arrival, now=self.now(),
            )
            sent = await self._send_report(group.sender, report)
            if not sent.ok:
                log.error("failure report to %s not queued: %s", group.sender, sent)
                names = ", ".join(f"<{r}>" for r in done)
                text = f"4.3.0 Delivered to {names} but not to the others; the failure report was not queued"
                return Outcome(Reply(451, (text[:450],), local=True), done, reported)
            reported += [f.recipient for f in failed]
        return Outcome(first, done, reported)

    async def _send_report(self, recipient: str, report: bytes) -> Reply:
        def arguments(upstream: Upstream) -> list[str]:
            args = []
            if not report.isascii() and "8BITMIME" in upstream.extensions:
                args.append("BODY=8BITMIME")
            if self.params.smtputf8 and "SMTPUTF8" in upstream.extensions:
                args.append("SMTPUTF8")
            return args

        begun = await self._begin("", arguments)
        if isinstance(begun, Reply):
            return begun
        upstream, _ = begun
        end_of_data = None
        try:
            reply = await upstream.rcpt(recipient, [])
            if not reply.ok:
                return reply
            refusal = await upstream.send_data(encode_for_data(report))
            if refusal is not None:
                return refusal
            end_of_data = await upstream.finish(self.data_timeout)
            return end_of_data
        finally:
            await self._release(upstream, end_of_data)

    async def abort(self) -> None:
        """End the upstream transactions still open: a copy still in DATA is abandoned by closing its
        connection, never delivered; a connection between commands is reset and kept for reuse."""
        for group in list(self.groups.values()):
            if group.upstream is not None:
                upstream, group.upstream = group.upstream, None
                await self._release(upstream)

    async def _release(self, upstream: Upstream, end_of_data: Reply | None = None) -> None:
        """To the pool at a clean boundary (module docstring), else closed.

        `end_of_data` is the upstream's reply to our final dot. A 2xx ends the transaction; after a
        5xx, or without one (the transaction ended before it), the upstream must first say 250 to RSET."""
        if self.pool is not None and upstream.reusable:
            if end_of_data is not None and end_of_data.code < 500:
                clean = end_of_data.ok
            else:
                clean = (await upstream.reset()).ok
            if clean and upstream.reusable:
                self.pool.put(upstream)
                return
        await upstream.close()
