"""API keys: who is calling, which of them are admins, the limits a key's own line sets, and the
owner tag that scopes what they create.

A key is at least MIN_KEY_LENGTH characters: anything shorter is guessable over the network
even with failed attempts slowed down (app/api/middleware_auth.py)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

MIN_KEY_LENGTH = 20
# What a key's line may set for itself (`name:key rpm=600 tpm=200000 sessions=50`); the rest of
# the keys take the KEY_* settings (app/limits.py).
LIMIT_NAMES = ("sessions", "rpm", "tpm", "budget_usd", "storage_bytes")
Overrides = dict[str, float]


def parse_keys(text: str, *, source: str) -> dict[str, str]:
    """`name:key` pairs, separated by commas or new lines (`#` starts a comment) -> key: name."""
    return {key: name for name, key, _ in parse_entries(text, source=source)}


def parse_entries(text: str, *, source: str) -> list[tuple[str, str, Overrides]]:
    """Each entry as (name, key, the limits its line sets)."""
    entries = []
    for raw in text.replace(",", "\n").splitlines():
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        name, sep, rest = entry.partition(":")
        key, *options = rest.split() or [""]
        name = name.strip()
        if not sep or not name or len(key) < MIN_KEY_LENGTH:
            # Never echo the entry: it may hold a key.
            raise ValueError(f"{source}: each entry must be `name:key` with a key of "
                             f"{MIN_KEY_LENGTH}+ characters")
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
    def __init__(self, keys: dict[str, str], admins: Iterable[str] = (),
                 limits: dict[str, Overrides] | None = None) -> None:
        # Indexed by digest, so a lookup costs the same whatever the presented key looks like.
        self._by_digest = {_digest(k): name for k, name in keys.items()}
        self.admins = frozenset(admins)
        self._limits = limits or {}

    @classmethod
    def load(cls, inline: str, file: str, admins: str = "") -> KeyRing | None:
        entries = parse_entries(inline, source="RAFALE_API_KEYS") if inline else []
        if file:
            try:
                text = Path(file).read_text()
            except OSError as exc:
                raise ValueError(
                    f"RAFALE_API_KEYS_FILE: cannot read {file}: {exc.strerror}"
                ) from None
            entries += parse_entries(text, source="RAFALE_API_KEYS_FILE")
        keys = {key: name for name, key, _ in entries}
        names = parse_admin_names(admins, keys.values())
        if not keys:
            return None
        # A name listed again (with a second key, say) keeps the limits of its last line.
        return cls(keys, names, {name: overrides for name, _, overrides in entries})

    def owner(self, key: str) -> str | None:
        digest = _digest(key)
        for known, name in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return name
        return None

    def is_admin(self, name: str) -> bool:
        return name in self.admins

    def limits(self, name: str) -> Overrides:
        """The limits a key's own line sets (the others come from the KEY_* settings)."""
        return self._limits.get(name, {})

    def all_limits(self) -> list[Overrides]:
        return list(self._limits.values())

    def __len__(self) -> int:
        return len(self._by_digest)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def owner_tag(owner: str) -> str:
    """The part of a session queue's name that says whose it is ("anon" when Rafale runs open)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:16] if owner else "anon"
