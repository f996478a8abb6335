"""Fixed tags (seed 003, "Envelope-dependent recipients") and the blacklist of leaked tags
(seed 003, "Cryptography": "we could note it on a blacklist of compromised addresses")."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, joinedload

from ..addresses import recipient_matches
from . import convert
from .base import Write
from .errors import InvalidValue, NotFound
from .models import BlacklistRow, FixedTagRow, UserRow
from .records import BlacklistEntry, FixedTag, ResolutionKind
from .users import UsersMixin


class TagsMixin(UsersMixin):
    def _issue_fixed_tag(self, write: Write, user: UserRow, recipient: str, note: str) -> FixedTag:
        existing = write.session.scalar(
            select(FixedTagRow).where(
                FixedTagRow.user_id == user.id, FixedTagRow.recipient == recipient, FixedTagRow.revoked_at.is_(None)
            )
        )
        if existing is not None:
            write.changed = False
            return convert.fixed_tag(existing)
        row = FixedTagRow(user=user, recipient=recipient, note=note, created_at=self._clock())
        write.session.add(row)
        write.session.flush()
        return convert.fixed_tag(row)

    def add_fixed_tag(self, login: str, recipient: str, note: str = "") -> FixedTag:
        """The active fixed tag for mail from this user to `recipient` (an address or `*@domain`);
        an existing one is returned, else a new one is made. Its id goes into the signed address."""
        recipient, note = convert.recipient(recipient), convert.short_text(note, "a note")
        with self._write() as write:
            return self._issue_fixed_tag(write, self._user_row(write.session, login), recipient, note)

    def add_fixed_tag_for_address(self, address: str, recipient: str, note: str = "") -> FixedTag:
        """As `add_fixed_tag`, for the user that `address` leads to (their address or an alias)."""
        resolution = self.resolve(address)
        if resolution.kind is not ResolutionKind.USER or resolution.user is None:
            raise NotFound(f"{resolution.address} is not an address of a user ({resolution.kind.value})")
        recipient, note = convert.recipient(recipient), convert.short_text(note, "a note")
        with self._write() as write:
            user = self._user_row(write.session, resolution.user.login)
            return self._issue_fixed_tag(write, user, recipient, note)

    @staticmethod
    def _fixed_tag_row(session: Session, fixed_id: int) -> FixedTagRow:
        row = session.get(FixedTagRow, fixed_id, options=[joinedload(FixedTagRow.user)])
        if row is None:
            raise NotFound(f"no fixed tag with id {fixed_id}")
        return row

    def revoke_fixed_tag(self, fixed_id: int) -> FixedTag:
        """Revoke for good: the id is never reused, and issuing again makes a new id."""
        with self._write() as write:
            row = self._fixed_tag_row(write.session, fixed_id)
            if row.revoked_at is not None:
                write.changed = False
            else:
                row.revoked_at = self._clock()
                write.session.flush()
            return convert.fixed_tag(row)

    def get_fixed_tag(self, fixed_id: int) -> FixedTag:
        with self._read() as session:
            return convert.fixed_tag(self._fixed_tag_row(session, fixed_id))

    def list_fixed_tags(self, login: str | None = None, *, include_revoked: bool = False) -> list[FixedTag]:
        with self._read() as session:
            query = select(FixedTagRow).options(joinedload(FixedTagRow.user)).order_by(FixedTagRow.id)
            if login is not None:
                query = query.where(FixedTagRow.user_id == self._user_row(session, login).id)
            if not include_revoked:
                query = query.where(FixedTagRow.revoked_at.is_(None))
            return [convert.fixed_tag(row) for row in session.scalars(query)]

    def fixed_tag_for(self, login: str, recipient: str) -> FixedTag | None:
        """The active fixed tag to sign mail from `login` to `recipient` with, if any;
        a tag for the exact address wins over a `*@domain` one."""
        try:
            key = convert.address(recipient)
        except InvalidValue:
            return None
        matching = [tag for tag in self.list_fixed_tags(login) if recipient_matches(tag.recipient, key)]
        matching.sort(key=lambda tag: tag.recipient != key)
        return matching[0] if matching else None

    def fixed_tag_user(self, fixed_id: int) -> int | None:
        """The user id an active fixed tag belongs to, or None if unknown or revoked (for tagcheck)."""
        with self._read() as session:
            return session.scalar(
                select(FixedTagRow.user_id).where(FixedTagRow.id == fixed_id, FixedTagRow.revoked_at.is_(None))
            )

    def blacklist_add(
        self, signed_address: str, base_address: str, reason: str, expires_at: dt.datetime
    ) -> BlacklistEntry:
        """Blacklist a leaked signed address until its tag expires anyway.

        Adding an entry again keeps the first reason and moves the expiry only forward.
        """
        signed_address, base_address = convert.address(signed_address), convert.address(base_address)
        reason, expires_at = convert.short_text(reason, "a reason"), convert.aware(expires_at, "expires_at")
        with self._write() as write:
            session = write.session
            row = session.scalar(select(BlacklistRow).where(BlacklistRow.signed_address == signed_address))
            if row is None:
                row = BlacklistRow(
                    signed_address=signed_address,
                    base_address=base_address,
                    reason=reason,
                    added_at=self._clock(),
                    expires_at=expires_at,
                )
                session.add(row)
            elif row.expires_at < expires_at:
                row.expires_at = expires_at
            else:
                write.changed = False
            session.flush()
            return convert.blacklist_entry(row)

    def blacklist_list(self) -> list[BlacklistEntry]:
        with self._read() as session:
            rows = session.scalars(select(BlacklistRow).order_by(BlacklistRow.expires_at, BlacklistRow.signed_address))
            return [convert.blacklist_entry(row) for row in rows]

    def blacklist_purge(self, now: dt.datetime) -> int:
        """Drop entries that expired before `now`: their tags no longer verify anyway."""
        now = convert.aware(now, "now")
        with self._write() as write:
            result = write.session.execute(delete(BlacklistRow).where(BlacklistRow.expires_at < now))
            count = int(getattr(result, "rowcount", 0) or 0)
            write.changed = count > 0
            return count

    def is_blacklisted(self, signed_address: str) -> bool:
        """True if this signed address (in any case) is blacklisted (for tagcheck)."""
        key = signed_address.strip().lower()
        with self._read() as session:
            return session.scalar(select(BlacklistRow.id).where(BlacklistRow.signed_address == key)) is not None
