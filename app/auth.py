"""API keys: who is calling, and the owner tag that scopes what they create."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path


def parse_keys(text: str, *, source: str) -> dict[str, str]:
    """`name:key` pairs, separated by commas or new lines (`#` starts a comment) -> key: name."""
    keys: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        name, sep, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        if not sep or not name or len(key) < 8:
            # Never echo the entry: it may hold a key.
            raise ValueError(f"{source}: each entry must be `name:key` with a key of 8+ characters")
        keys[key] = name
    return keys


class KeyRing:
    def __init__(self, keys: dict[str, str]) -> None:
        # Indexed by digest, so a lookup costs the same whatever the presented key looks like.
        self._by_digest = {_digest(k): name for k, name in keys.items()}

    @classmethod
    def load(cls, inline: str, file: str) -> KeyRing | None:
        keys = parse_keys(inline, source="RAFALE_API_KEYS") if inline else {}
        if file:
            try:
                text = Path(file).read_text()
            except OSError as exc:
                raise ValueError(
                    f"RAFALE_API_KEYS_FILE: cannot read {file}: {exc.strerror}"
                ) from None
            keys.update(parse_keys(text, source="RAFALE_API_KEYS_FILE"))
        return cls(keys) if keys else None

    def owner(self, key: str) -> str | None:
        digest = _digest(key)
        for known, name in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return name
        return None

    def __len__(self) -> int:
        return len(self._by_digest)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def owner_tag(owner: str) -> str:
    """The part of a session queue's name that says whose it is ("anon" when Rafale runs open)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:16] if owner else "anon"
