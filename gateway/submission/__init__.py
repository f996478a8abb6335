"""Message submission (seed 003, "Message submission"): authenticate, authorise, sign once, relay.

`plan` decides who may send as what and which envelope sender each recipient gets; `auth` checks
credentials; the proxy moves the bytes. The first two are pure of sockets, so every rule is
tested without an SMTP session.
"""
