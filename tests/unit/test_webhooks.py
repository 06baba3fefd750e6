"""Callback signatures and the destinations callbacks may go to (pure: no sockets)."""

from __future__ import annotations

import re

import pytest

from proj.webhooks import AllowList, Refused, sign, verify

SECRET = "whsec-unit"


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    body = b'{"batch": 1}'
    header = sign(SECRET, body, now=1_000_000)
    assert header.startswith("t=1000000,v1=")
    assert verify(SECRET, body, header, now=1_000_010)
    assert not verify(SECRET, body + b" ", header, now=1_000_010)
    assert not verify("other", body, header, now=1_000_010)
    assert not verify(SECRET, body, header, now=1_000_000 + 301)  # replayed too late
    assert not verify(SECRET, body, header.replace("t=1000000", "t=1000100"), now=1_000_100)
    for broken in ("", "v1=abc", "t=x,v1=abc", "t=1000000"):
        assert not verify(SECRET, body, broken, now=1_000_000)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/x", True),
        ("https://HOOKS.example.com:8443/x", True),
        ("https://a.b.acme.io/x", True),
        ("https://acme.io/x", False),  # *.acme.io is its subdomains only
        ("http://10.1.2.3/x", True),
        ("http://10.2.0.1/x", False),
        ("http://127.0.0.1:9/x", False),
        ("http://169.254.169.254/latest", False),
        ("http://[::1]/x", False),
        ("https://evil.example.com.attacker.net/x", False),
        ("https://example.com/x", False),
    ],
)
def test_a_url_is_allowed_only_when_its_host_is_listed(url: str, allowed: bool) -> None:
    allow = AllowList.parse("hooks.example.com, *.acme.io, 10.1.0.0/16")
    if allowed:
        allow.check_url(url)
    else:
        with pytest.raises(Refused, match="not on PROJ_API_CALLBACK_ALLOW"):
            allow.check_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.com/x", "not an http(s) URL"),
        ("hooks.example.com/x", "not an http(s) URL"),
        ("https://user:pw@hooks.example.com/x", "must not carry credentials"),
        ("https://hooks.example.com:99999/x", "is not a URL"),
    ],
)
def test_a_url_that_is_not_a_plain_http_url_is_refused(url: str, why: str) -> None:
    with pytest.raises(Refused, match=re.escape(why)):
        AllowList.parse("hooks.example.com").check_url(url)


def test_an_empty_list_allows_nothing() -> None:
    with pytest.raises(Refused, match="PROJ_API_CALLBACK_ALLOW is empty"):
        AllowList.parse("").check_url("https://hooks.example.com/")


@pytest.mark.parametrize(
    ("addresses", "refused"),
    [
        (["93.184.216.34"], None),
        (["2606:2800:220:1::1"], None),
        (["127.0.0.1"], "127.0.0.1"),
        (["93.184.216.34", "10.0.0.5"], "10.0.0.5"),  # one inward address is enough
        (["169.254.169.254"], "169.254.169.254"),
        (["::1"], "::1"),
        (["fe80::1%eth0"], "fe80::1"),
        (["192.168.1.1"], "192.168.1.1"),
        (["172.20.0.1"], None),  # listed below
        (["::ffff:127.0.0.1"], "(127.0.0.1)"),  # IPv4-mapped
        (["64:ff9b::a9fe:a9fe"], "(169.254.169.254)"),  # NAT64 to the metadata service
        (["2002:7f00:1::"], "(127.0.0.1)"),  # 6to4
        (["::127.0.0.1"], "(127.0.0.1)"),  # IPv4-compatible
        (["64:ff9b::5db8:d822"], None),  # NAT64 to a public address
        ([], "does not resolve"),
    ],
)
def test_a_listed_name_must_resolve_to_public_or_listed_addresses(
    addresses: list[str], refused: str | None
) -> None:
    allow = AllowList.parse("hooks.example.com,172.20.0.0/16")
    if refused is None:
        allow.check_addresses("hooks.example.com", addresses)
    else:
        with pytest.raises(Refused, match=re.escape(refused)):
            allow.check_addresses("hooks.example.com", addresses)


def test_a_bad_entry_is_named() -> None:
    with pytest.raises(ValueError, match="'hooks/x' is not a host name"):
        AllowList.parse("ok.example.com, hooks/x")
