"""API keys: parsing `name:key` lists, looking a key up, admin names, the owner tag of session
queues."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.auth import MIN_KEY_LENGTH, KeyRing, owner_tag, parse_admin_names, parse_keys

A = "0123456789-0123456789"
B = "abcdefghij-abcdefghij"
C = "ABCDEFGHIJ-ABCDEFGHIJ"


def test_commas_and_new_lines_both_separate_entries() -> None:
    assert parse_keys(f"alice:{A},bob:{B}\ncarol:{C}", source="S") == {
        A: "alice", B: "bob", C: "carol"}


def test_comments_blank_lines_and_spaces_are_ignored() -> None:
    text = f"# team keys\n\n  alice : {A}  # laptop\n,,\n   \n"
    assert parse_keys(text, source="S") == {A: "alice"}


def test_a_key_may_contain_colons() -> None:
    assert parse_keys("svc:abc:defgh12-0123456789", source="S") == {"abc:defgh12-0123456789": "svc"}


def test_nothing_but_comments_is_no_keys() -> None:
    assert parse_keys("# none yet", source="S") == {}
    assert parse_keys("", source="S") == {}


def test_a_key_of_twenty_characters_is_the_shortest_accepted() -> None:
    assert MIN_KEY_LENGTH == 20
    assert parse_keys("alice:" + "k" * 20, source="S") == {"k" * 20: "alice"}
    with pytest.raises(ValueError, match="20\\+ characters"):
        parse_keys("alice:" + "k" * 19, source="S")


@pytest.mark.parametrize("text", ["alice", "alice:", f":{A}", "alice:1234567",
                                  "alice:0123456789", f"alice:{A},bob",
                                  f"alice:{A},bob:kkkkkkkkkkkkkkkkkkk"])
def test_a_bad_entry_names_the_source_and_never_the_entry(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_keys(text, source="RAFALE_API_KEYS")
    msg = str(info.value)
    assert msg.startswith("RAFALE_API_KEYS: ")
    assert "1234567" not in msg and "alice" not in msg and "kkkk" not in msg


def test_the_keyring_finds_the_owner_of_a_known_key_only() -> None:
    ring = KeyRing({A: "alice", B: "bob"})
    assert ring.owner(A) == "alice"
    assert ring.owner(B) == "bob"
    assert ring.owner(A[:-1] + "8") is None
    assert ring.owner("") is None
    assert ring.owner("alice") is None
    assert len(ring) == 2


def test_the_keyring_keeps_no_key_in_clear() -> None:
    ring = KeyRing({A: "alice"}, admins={"alice"})
    assert A not in repr(vars(ring))


def test_no_keys_anywhere_means_no_keyring() -> None:
    assert KeyRing.load("", "") is None
    assert KeyRing.load("# nothing", "") is None


def test_inline_keys_and_a_file_are_merged(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"bob:{B}\n")
    ring = KeyRing.load(f"alice:{A}", str(path))
    assert ring is not None and len(ring) == 2
    assert ring.owner(B) == "bob" and ring.owner(A) == "alice"


def test_an_unreadable_keys_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^RAFALE_API_KEYS_FILE: cannot read .*nope"):
        KeyRing.load("", str(tmp_path / "nope"))


def test_a_bad_entry_in_the_file_names_the_file_setting(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("alice:short\n")
    with pytest.raises(ValueError, match=r"^RAFALE_API_KEYS_FILE: "):
        KeyRing.load("", str(path))


def test_admins_are_named_by_key_name_from_either_source(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"ops:{C}\n")
    ring = KeyRing.load(f"alice:{A},bob:{B}", str(path), admins=" ops , alice,")
    assert ring is not None
    assert ring.admins == {"ops", "alice"}
    assert ring.is_admin("ops") and ring.is_admin("alice") and not ring.is_admin("bob")
    assert not KeyRing({A: "alice"}).is_admin("alice")


@pytest.mark.parametrize(("admins", "keys", "shown"), [
    ("carol", f"alice:{A}", "carol"),
    ("alice,carol ,dave", f"alice:{A}", "carol, dave"),
    ("alice", "", "alice"),
    (A, f"alice:{A}", f"<{len(A)} characters>"),  # a key pasted where its name belongs
])
def test_an_admin_name_that_names_no_key_fails_naming_it_but_never_a_key(
        admins: str, keys: str, shown: str) -> None:
    with pytest.raises(ValueError) as info:
        KeyRing.load(keys, "", admins=admins)
    msg = str(info.value)
    assert msg.startswith(f"RAFALE_ADMIN_KEYS: {shown}: not the name of a key")
    assert A not in msg


def test_parse_admin_names_ignores_blanks() -> None:
    assert parse_admin_names(" , ,", ["alice"]) == frozenset()
    assert parse_admin_names("alice", ["alice", "bob"]) == {"alice"}


def test_owner_tag_is_anon_when_open_and_a_short_stable_digest_otherwise() -> None:
    assert owner_tag("") == "anon"
    tag = owner_tag("alice")
    assert tag == owner_tag("alice") and tag != owner_tag("bob")
    assert len(tag) == 16 and int(tag, 16) >= 0
    assert tag == "2bd806c97f0e00af"  # queue names outlive processes: the tag must not drift
    assert "alice" not in tag
