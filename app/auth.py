"""API keys: who is calling, which of them are admins, and the owner tag that scopes what they
create.

A key is at least MIN_KEY_LENGTH characters: anything shorter is guessable over the network
even with failed attempts slowed down (app/api/middleware_auth.py)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

MIN_KEY_LENGTH = 20


def parse_keys(text: str, *, source: str) -> dict[str, str]:
    """`name:key` pairs, separated by commas or new lines (`#` starts a comment) -> key: name."""
    keys: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        name, sep, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        if not sep or not name or len(key) < MIN_KEY_LENGTH:
            # Never echo the entry: it may hold a key.
            raise ValueError(f"{source}: each entry must be `name:key` with a key of "
                             f"{MIN_KEY_LENGTH}+ characters")
        keys[key] = name
    return keys


def parse_admin_names(text: str, known: Iterable[str]) -> frozenset[str]:
    """RAFALE_ADMIN_KEYS (comma-separated key *names*, never keys), each one a configured key's
    name: a misspelt name would otherwise leave the operator without the detail they expect."""
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - set(known))
    if unknown:
        # Say which, as names are no secret; but an entry as long as a key may be one pasted
        # in the wrong place, and is never echoed.
        shown = ", ".join(n if len(n) < MIN_KEY_LENGTH else f"<{len(n)} characters>"
                          for n in unknown)
        raise ValueError(f"RAFALE_ADMIN_KEYS: {shown}: not the name of a key in "
                         "RAFALE_API_KEYS or RAFALE_API_KEYS_FILE (list names, not keys)")
    return names


class KeyRing:
    def __init__(self, keys: dict[str, str], admins: Iterable[str] = ()) -> None:
        # Indexed by digest, so a lookup costs the same whatever the presented key looks like.
        self._by_digest = {_digest(k): name for k, name in keys.items()}
        self.admins = frozenset(admins)

    @classmethod
    def load(cls, inline: str, file: str, admins: str = "") -> KeyRing | None:
        keys = parse_keys(inline, source="RAFALE_API_KEYS") if inline else {}
        if file:
            try:
                text = Path(file).read_text()
            except OSError as exc:
                raise ValueError(
                    f"RAFALE_API_KEYS_FILE: cannot read {file}: {exc.strerror}"
                ) from None
            keys.update(parse_keys(text, source="RAFALE_API_KEYS_FILE"))
        names = parse_admin_names(admins, keys.values())
        return cls(keys, names) if keys else None

    def owner(self, key: str) -> str | None:
        digest = _digest(key)
        for known, name in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return name
        return None

    def is_admin(self, name: str) -> bool:
        return name in self.admins

    def __len__(self) -> int:
        return len(self._by_digest)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def owner_tag(owner: str) -> str:
    """The part of a session queue's name that says whose it is ("anon" when Rafale runs open)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:16] if owner else "anon"
