"""API keys: parsing `name:key` lists, looking a key up, the owner tag of session queues."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.auth import KeyRing, owner_tag, parse_keys


def test_commas_and_new_lines_both_separate_entries() -> None:
    assert parse_keys("alice:0123456789,bob:abcdefghij\ncarol:ABCDEFGHIJ", source="S") == {
        "0123456789": "alice", "abcdefghij": "bob", "ABCDEFGHIJ": "carol"}


def test_comments_blank_lines_and_spaces_are_ignored() -> None:
    text = "# team keys\n\n  alice : 0123456789  # laptop\n,,\n   \n"
    assert parse_keys(text, source="S") == {"0123456789": "alice"}


def test_a_key_may_contain_colons() -> None:
    assert parse_keys("svc:abc:defgh12", source="S") == {"abc:defgh12": "svc"}


def test_nothing_but_comments_is_no_keys() -> None:
    assert parse_keys("# none yet", source="S") == {}
    assert parse_keys("", source="S") == {}


@pytest.mark.parametrize("text", ["alice", "alice:", ":0123456789", "alice:1234567",
                                  "alice:0123456789,bob"])
def test_a_bad_entry_names_the_source_and_never_the_entry(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_keys(text, source="RAFALE_API_KEYS")
    msg = str(info.value)
    assert msg.startswith("RAFALE_API_KEYS: ")
    assert "1234567" not in msg and "alice" not in msg


def test_the_keyring_finds_the_owner_of_a_known_key_only() -> None:
    ring = KeyRing({"0123456789": "alice", "abcdefghij": "bob"})
    assert ring.owner("0123456789") == "alice"
    assert ring.owner("abcdefghij") == "bob"
    assert ring.owner("0123456788") is None
    assert ring.owner("") is None
    assert ring.owner("alice") is None
    assert len(ring) == 2


def test_the_keyring_keeps_no_key_in_clear() -> None:
    ring = KeyRing({"0123456789": "alice"})
    assert "0123456789" not in repr(vars(ring))


def test_no_keys_anywhere_means_an_open_deployment() -> None:
    assert KeyRing.load("", "") is None
    assert KeyRing.load("# nothing", "") is None


def test_inline_keys_and_a_file_are_merged(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("bob:abcdefghij\n")
    ring = KeyRing.load("alice:0123456789", str(path))
    assert ring is not None and len(ring) == 2
    assert ring.owner("abcdefghij") == "bob" and ring.owner("0123456789") == "alice"


def test_an_unreadable_keys_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^RAFALE_API_KEYS_FILE: cannot read .*nope"):
        KeyRing.load("", str(tmp_path / "nope"))


def test_a_bad_entry_in_the_file_names_the_file_setting(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("alice:short\n")
    with pytest.raises(ValueError, match=r"^RAFALE_API_KEYS_FILE: "):
        KeyRing.load("", str(path))


def test_owner_tag_is_anon_when_open_and_a_short_stable_digest_otherwise() -> None:
    assert owner_tag("") == "anon"
    tag = owner_tag("alice")
    assert tag == owner_tag("alice") and tag != owner_tag("bob")
    assert len(tag) == 16 and int(tag, 16) >= 0
    assert tag == "2bd806c97f0e00af"  # queue names outlive processes: the tag must not drift
    assert "alice" not in tag
