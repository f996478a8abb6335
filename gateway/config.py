"""One TOML file configures every service; it is loaded once, checked whole, and then passed around.

Style principle 6: no module reads files or the environment on its own. Every error names the
setting at fault, so a postmaster can fix the file without reading code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from signed_sender import Policy

from .store.db import check_url as check_store_url

DEFAULT_PATH = Path("/etc/antiforgery/antiforgery.toml")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and the setting."""


@dataclass(frozen=True)
class SiteConfig:
    #: Mail domains whose users can opt in; managed domains are added in the store.
    domains: tuple[str, ...] = ()
    #: RFC 8601 authserv-id for our Authentication-Results headers.
    authserv_id: str = "localhost"


@dataclass(frozen=True)
class StoreConfig:
    url: str = "sqlite:///antiforgery.db"


@dataclass(frozen=True)
class SigningConfig:
    key_file: Path = Path("keys.toml")
    separator: str = "="
    max_age_days: int = 7
    max_skew_seconds: int = 3600
    accept_prvs: bool = True

    def policy(self) -> Policy:
        return Policy(
            separator=self.separator,
            max_age=self.max_age_days * 86400,
            max_skew=self.max_skew_seconds,
            accept_prvs=self.accept_prvs,
        )


@dataclass(frozen=True)
class AuthConfig:
    """Whose passwords the submission proxy checks (RFC 4954 SMTP AUTH): the store's, or Dovecot's.

    With "dovecot" the gateway asks Dovecot's auth service as Postfix's `smtpd_sasl_type = dovecot`
    does, so users keep their IMAP password. Dovecot's user name becomes the gateway login
    lowercased; with `strip_domain`, "alice@example.ac.uk" becomes "alice" for [site] domains only.
    """

    backend: str = "store"  # "store" | "dovecot"
    #: "inet:127.0.0.1:12345" (an inet_listener of service auth) or "/run/dovecot/auth-client".
    dovecot_socket: str = "/run/dovecot/auth-client"
    strip_domain: bool = False
    #: Seconds for Dovecot's answer; a wrong password is answered late on purpose (auth_failure_delay).
    timeout: float = 10.0
    #: "store": seconds a verified login is remembered (`submission.auth.CredentialCache`), so that
    #: a client logging in for every message skips the Argon2id hash; 0 = hash every time.
    cache_seconds: float = 300.0
    #: "store": at most this many remembered logins.
    cache_size: int = 10_000


@dataclass(frozen=True)
class LocalConfig:
    """`antiforgery sendmail`: local submission on a Unix host (seed 003, "Satellite systems").

    The command maps the invoking Unix user to a gateway login, signs as the proxy does, and hands
    the message to `upstream` by SMTP.
    """

    #: The MTA that takes the signed mail, "host:port".
    upstream: str = "127.0.0.1:25"
    #: "unixname=login" where a Unix account's name is not its gateway login ("root=postmaster").
    users: tuple[str, ...] = ()
    #: Our name in EHLO; "" = this host's FQDN.
    hostname: str = ""
    #: Seconds for the upstream to answer one command (the end of data included).
    timeout: float = 120.0

    def user_map(self) -> dict[str, str]:
        """unixname -> login; ValueError names a malformed entry."""
        table = {}
        for entry in self.users:
            unix, eq, login = (part.strip() for part in entry.partition("="))
            if not (eq and unix and login):
                raise ValueError(f"{entry!r} is not unixname=login")
            table[unix] = login
        return table


@dataclass(frozen=True)
class VerificationConfig:
    """The verification service (`antiforgery serve`): which adapters listen where, and its rules.

    A listen address is "host:port" ("[::1]:port" for IPv6); an empty string turns the adapter off.
    """

    policy_listen: str = "127.0.0.1:10040"  # Postfix check_policy_service
    socketmap_listen: str = "127.0.0.1:10041"  # Postfix socketmap: sign and verify maps
    readsocket_listen: str = "127.0.0.1:10042"  # Exim ${readsocket}
    callout_listen: str = ""  # SMTP callout responder; public, so off until configured
    http_listen: str = "127.0.0.1:10080"  # JSON for webmail and list servers
    #: A file (mode 0600) holding the bearer token a trusted webmail presents to POST /v1/sign;
    #: "" = the route does not exist. Relative to this file. See docs/webmail.md.
    webmail_token_file: str = ""
    milter_listen: str = "127.0.0.1:10043"  # Postfix smtpd_milters: our Authentication-Results
    metrics_listen: str = "127.0.0.1:9125"  # Prometheus
    refresh_seconds: float = 1.0
    probe_senders: tuple[str, ...] = ("double-bounce",)
    bounce_like_senders: tuple[str, ...] = ("mailer-daemon", "postmaster")
    recipient_delimiters: str = ""  # default: the signing separator
    submission_service: str = "the authenticated submission service"
    warning_header: str = "X-Antiforgery-Warning"
    #: Add our Authentication-Results (RFC 8601) at the DATA stage; strip foreign copies first (deploy/).
    authentication_results: bool = True
    #: Add an SPF result to it as a hint; costs DNS lookups on the policy path.
    spf_hint: bool = False
    #: Our name in the callout responder's greeting and in the callout client's EHLO; "" = this host's FQDN.
    callout_hostname: str = ""
    #: Callout responder limits, per client (IPv4 address or IPv6 /64), so callouts are no oracle:
    #: RCPTs per second refilled continuously, and how many may come at once before the rate applies.
    callout_rate: float = 1.0
    callout_burst: int = 30
    callout_max_recipients: int = 10  # RCPTs in one SMTP session
    callout_max_sessions: int = 5  # sessions open at once
    callout_session_seconds: float = 60.0  # a session is closed after this long, busy or idle
    #: Internal domains (departmental and college servers) whose senders, and bounce recipients, are
    #: verified by call-forward to their own mail server (seed 003, "Standardization").
    callout_domains: tuple[str, ...] = ()
    #: "domain=host:port": where to call for a domain instead of its MX hosts.
    callout_routes: tuple[str, ...] = ()
    callout_timeout: float = 30.0  # one call-forward: MX lookup, connection and dialogue
    callout_positive_ttl: float = 86400.0  # seconds a 2xx answer is cached
    callout_negative_ttl: float = 600.0  # seconds a 5xx answer is cached; short, new mailboxes appear


@dataclass(frozen=True)
class SubmissionConfig:
    """The submission proxy (seed 003, "Message submission"): users authenticate, it signs and relays.

    Off until `listen` is set; `antiforgery serve` then starts it next to the verification service.
    Paths are relative to the configuration file.
    """

    #: "host:port" for mail user agents (RFC 6409: port 587); "" = no submission proxy.
    listen: str = ""
    #: Our name in the greeting, EHLO and Received headers; "" = this host's FQDN.
    hostname: str = ""
    #: The MTA that takes the signed mail ("host:port"), talked to during the client's own session.
    upstream: str = "127.0.0.1:10025"
    #: Seconds for the upstream to accept a connection or answer one command; then the client gets a 4xx.
    upstream_timeout: float = 60.0
    #: Seconds for the upstream's reply after the end of a message (RFC 5321 section 4.5.3.2.6: 10 minutes).
    upstream_data_timeout: float = 600.0
    #: Seconds an upstream connection is kept open after a transaction, for the next one to skip
    #: connecting, the greeting and EHLO (Postfix's smtp_connection_cache_time_limit); each idle
    #: connection holds an smtpd process upstream. 0 = a new connection for every transaction.
    upstream_reuse_seconds: float = 2.0
    #: Seconds after it was opened that a connection is no longer reused, however busy it is kept
    #: (Postfix's smtp_connection_reuse_time_limit), and how many idle ones are kept at most.
    upstream_reuse_max_seconds: float = 300.0
    upstream_reuse_max_idle: int = 10
    #: PEM certificate chain and private key for STARTTLS (RFC 3207); both or neither.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: Offer AUTH without TLS to loopback clients (tests, a webmail on this host); never to anyone else.
    allow_auth_without_tls_on_loopback: bool = False
    #: Limits, each refused with its own reply: message octets (advertised as SIZE, RFC 1870),
    #: recipients per message (452 4.5.3), octets per line without CRLF (RFC 5322 section 2.1.1: 998),
    #: commands per session, and seconds a client has for each complete command line, however
    #: slowly its bytes come (RFC 5321 section 4.5.3.2.7: at least 5 minutes).
    max_message_size: int = 26_214_400
    max_recipients: int = 100
    max_line_length: int = 998
    max_commands: int = 1000
    idle_timeout: float = 300.0
    #: Octets per second a client must average while sending a message (Postfix smtpd_min_data_rate):
    #: the data deadline starts at `idle_timeout` and each octet adds 1/data_min_rate seconds, up to
    #: `idle_timeout` ahead. A client slower than that gets 421 4.4.2 and nothing is relayed.
    data_min_rate: int = 500
    #: The longest a session may last, however busy: a client sending one command per idle_timeout
    #: would otherwise hold a connection for max_commands of them (over three days by default).
    session_seconds: float = 3600.0
    #: Failed logins per client (IPv4 address or IPv6 /64) before it is locked out for
    #: `auth_lockout_seconds`; each failure's 535 is delayed, starting at `auth_failure_delay`
    #: seconds and doubling.
    auth_max_failures: int = 5
    auth_lockout_seconds: float = 900.0
    auth_failure_delay: float = 1.0
    #: DKIM signing (RFC 6376) of submitted mail: "domain=selector:key-file", an RSA private key (PEM)
    #: readable by its owner only. Mail is signed for the domain of its From: address.
    dkim_keys: tuple[str, ...] = ()

    def dkim_entries(self) -> list[tuple[str, str, Path]]:
        """(domain, selector, key file) for each `dkim_keys` entry; ValueError names a malformed one."""
        entries = []
        for entry in self.dkim_keys:
            domain, eq, rest = entry.partition("=")
            selector, colon, key_file = rest.partition(":")
            if not (eq and colon and domain.strip() and selector.strip() and key_file.strip()):
                raise ValueError(f"{entry!r} is not domain=selector:key-file")
            entries.append((domain.strip().lower(), selector.strip(), Path(key_file.strip())))
        return entries


@dataclass(frozen=True)
class WebConfig:
    """The opt-in web pages (webopt): users choose their protection, postmasters see statistics.

    Production runs webopt under a WSGI server; `antiforgery web` serves `listen` for development.
    Paths are relative to the configuration file.
    """

    #: "host:port" for `antiforgery web` (werkzeug's development server).
    listen: str = "127.0.0.1:8080"
    #: Signs the session cookies: 32 or more random characters, mode 0600, identical on every node.
    #: 'antiforgery init' creates it.
    secret_key_file: Path = Path("web-secret.key")
    #: Take the login from REMOTE_USER, set by a front web server after single sign-on. Only for a
    #: server that authenticates every request itself: anyone who can set REMOTE_USER is anyone.
    trust_remote_user: bool = False
    #: Send session cookies with the Secure attribute (HTTPS only); false only for plain-HTTP tests.
    secure_cookies: bool = True
    #: Seconds a login lasts.
    session_seconds: float = 28800.0
    #: Failed password logins, per client (IPv4 address or IPv6 /64) and per login, before further
    #: attempts are refused (HTTP 429) for `login_lockout_seconds`. Counted per server process.
    login_max_failures: int = 5
    login_lockout_seconds: float = 900.0
    #: Reverse proxies in front whose X-Forwarded-For is trusted for the client address (0 = none).
    proxy_hops: int = 0


@dataclass(frozen=True)
class Config:
    path: Path
    site: SiteConfig = field(default_factory=SiteConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    web: WebConfig = field(default_factory=WebConfig)


_SECTIONS: dict[str, type] = {
    "site": SiteConfig,
    "store": StoreConfig,
    "signing": SigningConfig,
    "auth": AuthConfig,
    "local": LocalConfig,
    "verification": VerificationConfig,
    "submission": SubmissionConfig,
    "web": WebConfig,
}

#: Lists whose entries are not folded to lower case (they hold file names).
_KEEP_CASE = {"dkim_keys"}
#: Numbers for which 0 means "off" rather than a mistake.
_ZERO_IS_OFF = {"upstream_reuse_seconds", "cache_seconds"}


def _coerce(where: str, expected: Any, value: Any, keep_case: bool = False, zero_is_off: bool = False) -> Any:
    """Check one value against its dataclass field type, converting the few TOML-to-Python cases."""
    if expected == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(v.strip() if keep_case else v.strip().lower() for v in value)
    if expected == "Path":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty path string")
        return Path(value)
    if expected == "float":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or value < 0 or (value == 0 and not zero_is_off):
            raise ConfigError(f"{where} must be {'0 (off) or ' if zero_is_off else ''}a positive number")
        return float(value)
    python_type = {"str": str, "int": int, "bool": bool}[expected]
    if not isinstance(value, python_type) or (python_type is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be of type {expected}, not {type(value).__name__}")
    return value


def _section(path: Path, name: str, raw: Any) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {', '.join(f'[{name}] {k}' for k in unknown)}")
    values = {
        k: _coerce(f"{path}: [{name}] {k}", known[k].type, v, k in _KEEP_CASE, k in _ZERO_IS_OFF)
        for k, v in raw.items()
    }
    return cls(**values)


def parse_listen(value: str) -> tuple[str, int]:
    """ "127.0.0.1:10040" or "[::1]:10040" to (host, port)."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return host, int(port)


def parse_socket(value: str) -> str | tuple[str, int]:
    """Postfix's way to name a socket: "inet:host:port" to (host, port); "unix:/path" or "/path" to the path."""
    if value.startswith("inet:"):
        try:
            return parse_listen(value[5:])
        except ValueError:
            raise ValueError(f"{value!r} is not inet:host:port") from None
    socket_path = value.removeprefix("unix:")
    if not socket_path.startswith("/"):
        raise ValueError(f"{value!r} is neither inet:host:port nor an absolute unix socket path")
    return socket_path


def _resolve(base: Path, value: Path) -> Path:
    return value if value.is_absolute() else base / value


def _resolve_sqlite(base: Path, url: str) -> str:
    """Relative SQLite paths are relative to the config file, not to wherever the CLI was run."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(base / url[len(prefix) :])
    return url


def parse(path: Path, text: str) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section {', '.join(f'[{k}]' for k in unknown)}")
    sections = {name: _section(path, name, raw[name]) for name in _SECTIONS if name in raw}
    base = path.parent.resolve()
    config = Config(path=path, **sections)
    signing = config.signing
    try:
        signing.policy()
    except ValueError as exc:
        raise ConfigError(f"{path}: [signing]: {exc}") from None
    if signing.max_age_days < 1 or signing.max_age_days > 60:
        raise ConfigError(f"{path}: [signing] max_age_days must be between 1 and 60")
    verification = config.verification
    for name in (
        "policy_listen",
        "socketmap_listen",
        "readsocket_listen",
        "callout_listen",
        "http_listen",
        "milter_listen",
        "metrics_listen",
    ):
        value = getattr(verification, name)
        if value:
            try:
                parse_listen(value)
            except ValueError as exc:
                raise ConfigError(f"{path}: [verification] {name}: {exc}") from None
    try:
        check_store_url(config.store.url)
    except ValueError as exc:
        raise ConfigError(f"{path}: [store] url: {exc}") from None
    if verification.webmail_token_file:
        verification = replace(
            verification, webmail_token_file=str(_resolve(base, Path(verification.webmail_token_file)))
        )
    return Config(
        path=path,
        site=config.site,
        auth=_check_auth(path, config.auth),
        local=_check_local(path, config.local),
        verification=verification,
        submission=_check_submission(path, base, config.submission),
        web=_check_web(path, base, config.web),
        store=StoreConfig(url=_resolve_sqlite(base, config.store.url)),
        signing=SigningConfig(
            key_file=_resolve(base, signing.key_file),
            separator=signing.separator,
            max_age_days=signing.max_age_days,
            max_skew_seconds=signing.max_skew_seconds,
            accept_prvs=signing.accept_prvs,
        ),
    )


def _check_submission(path: Path, base: Path, submission: SubmissionConfig) -> SubmissionConfig:
    """Validate [submission] and make its file names absolute (relative to the configuration file)."""
    where = f"{path}: [submission]"
    for name in ("listen", "upstream"):
        value = getattr(submission, name)
        if value or name == "upstream":
            try:
                parse_listen(value)
            except ValueError as exc:
                raise ConfigError(f"{where} {name}: {exc}") from None
    for name in (
        "max_message_size",
        "max_recipients",
        "max_commands",
        "data_min_rate",
        "auth_max_failures",
        "upstream_reuse_max_idle",
    ):
        if getattr(submission, name) < 1:
            raise ConfigError(f"{where} {name} must be at least 1")
    if submission.session_seconds <= 0:
        raise ConfigError(f"{where} session_seconds must be a positive number")
    if not 78 <= submission.max_line_length <= 998:
        raise ConfigError(f"{where} max_line_length must be between 78 and 998 (RFC 5322 section 2.1.1)")
    if bool(submission.tls_cert_file) != bool(submission.tls_key_file):
        raise ConfigError(f"{where} tls_cert_file and tls_key_file are set together or not at all")
    if submission.listen and not submission.tls_cert_file and not submission.allow_auth_without_tls_on_loopback:
        raise ConfigError(f"{where} listen is set but tls_cert_file is not: without TLS nobody could log in")
    try:
        entries = submission.dkim_entries()
    except ValueError as exc:
        raise ConfigError(f"{where} dkim_keys: {exc}") from None

    def absolute(value: str) -> str:
        return str(_resolve(base, Path(value))) if value else ""

    dkim = tuple(f"{domain}={selector}:{_resolve(base, key)}" for domain, selector, key in entries)
    return replace(
        submission,
        dkim_keys=dkim,
        tls_cert_file=absolute(submission.tls_cert_file),
        tls_key_file=absolute(submission.tls_key_file),
    )


def _check_web(path: Path, base: Path, web: WebConfig) -> WebConfig:
    """Validate [web] and make the secret key file absolute (relative to the configuration file)."""
    try:
        parse_listen(web.listen)
    except ValueError as exc:
        raise ConfigError(f"{path}: [web] listen: {exc}") from None
    if web.login_max_failures < 1:
        raise ConfigError(f"{path}: [web] login_max_failures must be at least 1")
    if not 0 <= web.proxy_hops <= 5:
        raise ConfigError(f"{path}: [web] proxy_hops must be between 0 and 5")
    return replace(web, secret_key_file=_resolve(base, web.secret_key_file))


def _check_auth(path: Path, auth: AuthConfig) -> AuthConfig:
    if auth.backend not in ("store", "dovecot"):
        raise ConfigError(f'{path}: [auth] backend must be "store" or "dovecot", not {auth.backend!r}')
    if auth.backend == "dovecot":
        try:
            parse_socket(auth.dovecot_socket)
        except ValueError as exc:
            raise ConfigError(f"{path}: [auth] dovecot_socket: {exc}") from None
    if auth.timeout <= 0:
        raise ConfigError(f"{path}: [auth] timeout must be a positive number")
    if auth.cache_seconds < 0 or auth.cache_size < 1:
        raise ConfigError(f"{path}: [auth] cache_seconds must be 0 or more and cache_size at least 1")
    return auth


def _check_local(path: Path, local: LocalConfig) -> LocalConfig:
    try:
        parse_listen(local.upstream)
    except ValueError as exc:
        raise ConfigError(f"{path}: [local] upstream: {exc}") from None
    try:
        local.user_map()
    except ValueError as exc:
        raise ConfigError(f"{path}: [local] users: {exc}") from None
    return local


def load(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file (create one with 'antiforgery init')") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(path, text)


def template(
    domains: list[str], store_url: str = "sqlite:///antiforgery.db", tls_files: tuple[str, str] = ("", "")
) -> str:
    """The file `antiforgery init` writes: every setting, commented, at its default."""
    domain_list = ", ".join(f'"{d}"' for d in domains)
    cert_file, key_file = tls_files
    return f"""\
# antiforgery configuration. Relative paths are relative to this file.
# deploy/antiforgery.example.toml documents every setting.

[site]
# Mail domains whose users can opt in to forgery protection.
domains = [{domain_list}]
# authserv-id used in the Authentication-Results headers we add (RFC 8601).
authserv_id = "{domains[0] if domains else "localhost"}"

[store]
# SQLAlchemy URL: SQLite for one node, PostgreSQL for several
# (postgresql+psycopg://user@host/dbname).
url = "{store_url}"

[signing]
# Secrets, one per key id; mode 0600. Manage with 'antiforgery keys rotate|list'.
key_file = "keys.toml"
# Character between the local part and the tag; the MTA's recipient delimiter must include it.
separator = "="
# How long a signed sender stays valid, and the clock skew tolerated between nodes.
max_age_days = 7
max_skew_seconds = 3600
# Also accept BATV prvs= senders (Exim's ${{prvs}}) signed with the same keys.
accept_prvs = true

[submission]
# The submission proxy for mail user agents (RFC 6409), e.g. "0.0.0.0:587"; "" = off.
listen = ""
# The MTA that takes the signed mail, during the client's session (a Postfix smtpd on loopback).
upstream = "127.0.0.1:10025"
# STARTTLS certificate chain and private key (PEM); AUTH is offered only after STARTTLS.
# 'antiforgery init --self-signed-cert' makes a pair for tests.
tls_cert_file = "{cert_file}"
tls_key_file = "{key_file}"
# DKIM signing per From: domain: ["example.ac.uk=selector:dkim/example.ac.uk.pem"] (key mode 0600).
dkim_keys = []
"""
