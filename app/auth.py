"""API keys: who is calling, and the owner tag that scopes what they create."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

# What a key's line may set for itself (`name:key rpm=600 tpm=200000 sessions=50`); the rest of
# the keys take the KEY_* settings (app/limits.py).
LIMIT_NAMES = ("sessions", "rpm", "tpm", "budget_usd", "storage_bytes")
Overrides = dict[str, float]


def parse_keys(text: str, *, source: str) -> dict[str, str]:
    """`name:key` pairs, separated by commas or new lines (`#` starts a comment) -> key: name."""
    return {key: name for name, key, _ in parse_entries(text, source=source)}


def parse_entries(text: str, *, source: str) -> list[tuple[str, str, Overrides]]:
    """Each entry as (name, key, its limit overrides)."""
    entries = []
    for raw in text.replace(",", "\n").splitlines():
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        name, sep, rest = entry.partition(":")
        key, *options = rest.split() or [""]
        name = name.strip()
        if not sep or not name or len(key) < 8:
            # Never echo the entry: it may hold a key.
            raise ValueError(f"{source}: each entry must be `name:key` with a key of 8+ characters")
        entries.append((name, key, _overrides(options, name, source)))
    return entries


def _overrides(options: list[str], name: str, source: str) -> Overrides:
    out: Overrides = {}
    for option in options:
        field, _, value = option.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if field not in LIMIT_NAMES or not number >= 0:
            raise ValueError(f"{source}: key `{name}`: `{option}` is not one of "
                             f"{', '.join(n + '=N' for n in LIMIT_NAMES)} (N >= 0, 0 = off)")
        out[field] = number
    return out


class KeyRing:
    def __init__(self, keys: dict[str, str], limits: dict[str, Overrides] | None = None) -> None:
        # Indexed by digest, so a lookup costs the same whatever the presented key looks like.
        self._by_digest = {_digest(k): name for k, name in keys.items()}
        self._limits = limits or {}

    @classmethod
    def load(cls, inline: str, file: str) -> KeyRing | None:
        entries = parse_entries(inline, source="RAFALE_API_KEYS") if inline else []
        if file:
            try:
                text = Path(file).read_text()
            except OSError as exc:
                raise ValueError(
                    f"RAFALE_API_KEYS_FILE: cannot read {file}: {exc.strerror}"
                ) from None
            entries += parse_entries(text, source="RAFALE_API_KEYS_FILE")
        if not entries:
            return None
        # A name listed again (with a second key, say) keeps the limits of its last line.
        limits = {name: overrides for name, _, overrides in entries}
        return cls({key: name for name, key, _ in entries}, limits)

    def limits(self, name: str) -> Overrides:
        """The limits a key's own line sets (the others come from the KEY_* settings)."""
        return self._limits.get(name, {})

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
