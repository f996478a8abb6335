"""Who a limit counts: every throttle (callouts, submission AUTH, web logins) uses the same unit."""

from __future__ import annotations

import ipaddress


def client_key(address: str) -> str:
    """An IPv4 address, or an IPv6 /64 (one host is usually given a whole /64).

    An IPv4-mapped IPv6 address counts as the IPv4 address it maps; a zone id is ignored; text that
    is not an address is its own key.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
