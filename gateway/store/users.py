"""Users, their addresses, managed domains and aliases, and where an address leads.

Every address is in the store at most once, in one role: a user's primary address, an extra
address of a user, or an alias. Seed 003, "Managed mail domains": an alias that leads to one user
is protected like that user; an alias with several targets is not checked further.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from . import convert
from .base import StoreBase
from .errors import Duplicate, InvalidValue
from .models import AddressRow, AliasRow, AliasTargetRow, DomainRow, UserRow
from .records import Alias, Domain, Mode, Resolution, ResolutionKind, User
from .resolve import Target, follow


def _mode(mode: Mode | str) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise InvalidValue(f"mode must be one of {', '.join(m.value for m in Mode)}, not {mode!r}") from None


class SessionDirectory:
    """`resolve.Directory` answered by queries in one session."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def owner(self, address: str) -> int | None:
        found = self._session.scalar(select(UserRow.id).where(UserRow.primary_address == address))
        if found is None:
            found = self._session.scalar(select(AddressRow.user_id).where(AddressRow.address == address))
        return found

    def alias_targets(self, address: str) -> Sequence[Target] | None:
        alias = self._session.scalar(
            select(AliasRow).where(AliasRow.address == address).options(selectinload(AliasRow.targets))
        )
        if alias is None:
            return None
        return [Target(t.target_user_id, t.target_address) for t in alias.targets]


class UsersMixin(StoreBase):
    @staticmethod
    def _check_address_free(session: Session, address: str) -> None:
        """Refuse an address already in use in any role: one address, one meaning."""
        if (login := session.scalar(select(UserRow.login).where(UserRow.primary_address == address))) is not None:
            raise Duplicate(f"{address} is already the primary address of {login}")
        owner = session.scalar(select(UserRow.login).join(AddressRow.user).where(AddressRow.address == address))
        if owner is not None:
            raise Duplicate(f"{address} is already an address of {owner}")
        if session.scalar(select(AliasRow.id).where(AliasRow.address == address)) is not None:
            raise Duplicate(f"{address} is already an alias")

    def add_user(
        self,
        login: str,
        address: str,
        mode: Mode = Mode.OFF,
        password_hash: str | None = None,
        is_admin: bool = False,
    ) -> User:
        """Add a user with their primary address; Duplicate if the login or the address is taken."""
        login, address, mode = convert.login(login), convert.address(address), _mode(mode)
        password_hash = convert.password_hash(password_hash)
        with self._write() as write:
            session = write.session
            if session.scalar(select(UserRow.id).where(UserRow.login == login)) is not None:
                raise Duplicate(f"a user with login {login} exists already")
            self._check_address_free(session, address)
            now = self._clock()
            row = UserRow(
                login=login,
                primary_address=address,
                mode=mode,
                password_hash=password_hash,
                is_admin=is_admin,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            return convert.user(row)

    def get_user(self, login: str) -> User:
        with self._read() as session:
            return convert.user(self._user_row(session, login))

    def list_users(self) -> list[User]:
        with self._read() as session:
            return [convert.user(row) for row in session.scalars(select(UserRow).order_by(UserRow.login))]

    def _update_user(self, login: str, **values: object) -> User:
        with self._write() as write:
            row = self._user_row(write.session, login)
            if all(getattr(row, key) == value for key, value in values.items()):
                write.changed = False
                return convert.user(row)
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = self._clock()
            write.session.flush()
            return convert.user(row)

    def set_mode(self, login: str, mode: Mode) -> User:
        return self._update_user(login, mode=_mode(mode))

    def set_password_hash(self, login: str, password_hash: str | None) -> User:
        """Store a hash from `gateway.passwords.hash_password`; None removes the password."""
        return self._update_user(login, password_hash=convert.password_hash(password_hash))

    def set_admin(self, login: str, is_admin: bool) -> User:
        return self._update_user(login, is_admin=bool(is_admin))

    def add_address(self, login: str, address: str) -> str:
        """Give a user another address of their own; return it as stored (lower-cased)."""
        address = convert.address(address)
        with self._write() as write:
            user = self._user_row(write.session, login)
            self._check_address_free(write.session, address)
            write.session.add(AddressRow(address=address, user_id=user.id))
            return address

    def addresses_of(self, login: str) -> list[str]:
        """A user's own addresses: the primary one first, then the extra ones in order."""
        with self._read() as session:
            user = self._user_row(session, login)
            return [user.primary_address, *(a.address for a in user.addresses)]

    def add_domain(self, name: str, description: str = "") -> Domain:
        name, description = convert.domain(name), convert.short_text(description, "a description")
        with self._write() as write:
            if write.session.scalar(select(DomainRow.id).where(DomainRow.name == name)) is not None:
                raise Duplicate(f"domain {name} is already managed")
            write.session.add(DomainRow(name=name, description=description))
            return Domain(name, description)

    def list_domains(self) -> list[Domain]:
        with self._read() as session:
            rows = session.scalars(select(DomainRow).order_by(DomainRow.name))
            return [Domain(row.name, row.description) for row in rows]

    def is_managed_domain(self, name: str) -> bool:
        with self._read() as session:
            key = name.strip().lower().removesuffix(".")
            return session.scalar(select(DomainRow.id).where(DomainRow.name == key)) is not None

    def add_alias(self, address: str, targets: Sequence[str], description: str = "") -> Alias:
        """Add an alias; each target is an existing user's login or else an address.

        With one target the alias is protected like the user it leads to; with more it is
        multi-target and not checked further (design invariant 5). An alias that would close a
        loop, or make a chain longer than the depth limit, is refused.
        """
        address, description = convert.address(address), convert.short_text(description, "a description")
        if isinstance(targets, str):
            targets = [targets]
        if not targets:
            raise InvalidValue(f"alias {address} needs at least one target")
        with self._write() as write:
            session = write.session
            self._check_address_free(session, address)
            alias = AliasRow(address=address, description=description)
            shown: list[str] = []
            for given in targets:
                key = given.strip().lower() if isinstance(given, str) else ""
                user = session.scalar(select(UserRow).where(UserRow.login == key)) if key else None
                if user is not None:
                    target = AliasTargetRow(target_user_id=user.id)
                else:
                    try:
                        key = convert.address(given)
                    except InvalidValue:
                        raise InvalidValue(f"alias target {given!r} is neither a user's login nor an address") from None
                    if key == address:
                        raise InvalidValue(f"alias {address} cannot have itself as a target")
                    target = AliasTargetRow(target_address=key)
                if key in shown:
                    raise InvalidValue(f"alias target {key} is given twice")
                shown.append(key)
                alias.targets.append(target)
            session.add(alias)
            session.flush()
            route = follow(address, SessionDirectory(session))
            if route.kind in (ResolutionKind.CYCLE, ResolutionKind.TOO_DEEP):
                chain = " -> ".join(route.via)
                problem = "would make a loop" if route.kind is ResolutionKind.CYCLE else "would make too long a chain"
                raise InvalidValue(f"alias {address} {problem}: {chain}")
            return Alias(address, tuple(shown), description)

    def list_aliases(self) -> list[Alias]:
        with self._read() as session:
            rows = session.scalars(
                select(AliasRow)
                .order_by(AliasRow.address)
                .options(selectinload(AliasRow.targets).selectinload(AliasTargetRow.target_user))
            )
            return [
                Alias(
                    row.address,
                    tuple(
                        t.target_user.login if t.target_user is not None else t.target_address or ""
                        for t in row.targets
                    ),
                    row.description,
                )
                for row in rows
            ]

    def resolve(self, address: str) -> Resolution:
        """Which user an address belongs to, compared case-insensitively (seed 003, "Managed mail domains").

        Text that is not an address resolves to UNKNOWN: no stored address can match it.
        """
        try:
            key = convert.address(address)
        except InvalidValue:
            return Resolution(ResolutionKind.UNKNOWN, address.strip().lower() if isinstance(address, str) else "")
        with self._read() as session:
            route = follow(key, SessionDirectory(session))
            user = session.get(UserRow, route.user_id) if route.user_id is not None else None
            return Resolution(route.kind, key, convert.user(user) if user is not None else None, route.via)

    def user_of(self, address: str) -> int | None:
        """The id of the one user an address leads to, else None (for `gateway.tagcheck.TagFacts`)."""
        return self.resolve(address).user_id
