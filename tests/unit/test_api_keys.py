"""API keys as configured: hashes only, scopes, rate limits; mistakes named by field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from proj.api.keys import KeyRing, hash_key, new_key, parse_keys, toml_entry
from proj.errors import ConfigError
from proj.resilience.ratelimit import RateLimit


def test_a_new_key_is_found_by_its_hash_and_never_stored_in_clear(tmp_path: Path) -> None:
    key = new_key()
    assert key.startswith("pk_") and len(key) > 40
    entry = toml_entry("crm", key, ["batches:write"], "20/s")
    assert key not in entry and hash_key(key) in entry
    path = tmp_path / "keys.toml"
    path.write_text(entry)
    ring = KeyRing.load(path)
    found = ring.find(key)
    assert found is not None and found.name == "crm"
    assert found.allows("batches:write") and not found.allows("batches:read")
    assert found.rate_limit == RateLimit(20.0, 1.0, 20)  # "20/s": a burst of 20
    assert ring.find(key + "x") is None
    assert ring.find(hash_key(key)) is None  # the hash itself is no key


def test_every_scope_and_an_explicit_burst() -> None:
    table = tomllib.loads(
        f'[keys.ops]\nsha256 = "{"a" * 64}"\nscopes = ["*"]\n'
        'rate_limit = { rate = "10/s", burst = 3 }\n'
    )["keys"]
    (key,) = parse_keys(table, where="f.toml")
    assert key.allows("tasks:write") and key.rate_limit == RateLimit(10.0, 1.0, 3)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('sha256 = "abc"', r"f.toml: keys.k.sha256: must be 64 hex digits, got 'abc'"),
        (
            f'sha256 = "{"a" * 64}"\nscopes = ["batches:delete"]',
            r"keys.k.scopes: \['batches:delete'\]",
        ),
        (f'sha256 = "{"a" * 64}"\nrate_limit = "fast"', r"keys.k.rate_limit: a rate is like"),
    ],
)
def test_a_bad_entry_is_named_by_field(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_keys(tomllib.loads(f"[keys.k]\n{entry}\n")["keys"], where="f.toml")


def test_a_missing_file_is_no_keys_and_a_broken_one_is_named(tmp_path: Path) -> None:
    assert len(KeyRing.load(tmp_path / "absent.toml")) == 0
    broken = tmp_path / "broken.toml"
    broken.write_text("[keys.x\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        KeyRing.load(broken)


def test_a_ring_follows_its_file_and_keeps_its_keys_when_the_file_breaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = new_key(), new_key()
    path = tmp_path / "keys.toml"
    path.write_text(toml_entry("a", a, ["*"], None))
    ring = KeyRing.load(path)
    ring.RELOAD_S = 0.0  # look at the file at every request
    assert ring.find(a) is not None and ring.find(b) is None
    path.write_text(toml_entry("b", b, ["batches:read"], None))  # a rotated
    assert ring.find(a) is None
    found = ring.find(b)
    assert found is not None and found.name == "b"
    path.write_text("[keys.b\n" + " " * 50)  # a broken edit
    assert ring.find(b) is not None and ring.find(b) is not None
    errors = [r for r in caplog.records if "API keys not reloaded" in r.getMessage()]
    assert len(errors) == 1 and "keys.toml" in errors[0].getMessage()
    path.write_bytes(b"\xff\xfe not UTF-8")  # an editor's wrong encoding
    assert ring.find(b) is not None
    path.unlink()
    assert ring.find(b) is not None  # the file gone: the keys in force stay, said in the log
    assert any("the file is gone" in r.getMessage() for r in caplog.records)
