"""Tables: files (and their bytes, in parts), batches, and one row per batch request.

Everything the fleet shares lives here, so API replicas and worker hosts need nothing but
RabbitMQ and this database. Times are epoch seconds (OpenAI's objects speak in them)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """One row: the schema version, so a later release can migrate what an earlier made."""

    __tablename__ = "rafale_meta"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(64))


class FileRow(Base):
    __tablename__ = "files"

    # Ids start with a time prefix, so `ORDER BY id` is creation order and a cursor is an id.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # False while an upload is still being written: such a file is invisible.
    complete: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (Index("ix_files_owner_id", "owner", "id"),
                      Index("ix_files_expires_at", "expires_at"))


class FilePart(Base):
    """A file's bytes in ~1 MiB parts: uploads and downloads stream, and any host can serve
    any file (nothing lives on one machine's disk)."""

    __tablename__ = "file_parts"

    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class BatchRow(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    metadata_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    # output_expires_after.seconds: the result files expire that long after they are made.
    output_expires_after: Mapped[int | None] = mapped_column(Integer, nullable=True)
    errors_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    in_progress_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finalizing_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expired_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cancelling_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    output_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Counts and usage are derived from the items while a batch runs, and frozen here when it
    # ends, so they always equal the lines of its files.
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    usage_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    # How it is to end once nothing runs: None (completed) | "cancel" | "expire".
    ending: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # True once every line has its row and its group message (or planning stopped for good):
    # only then may the batch be finalized.
    planned: Mapped[bool] = mapped_column(default=False)
    # Whoever writes the result files holds this claim; a stale claim (a finalizer that died)
    # is taken over by the sweep.
    finalizer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    finalizer_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (Index("ix_batches_owner_id", "owner", "id"),
                      Index("ix_batches_status", "status"))


class ItemRow(Base):
    """One request of a batch, keyed by its 1-based input line: the key that makes running an
    item twice harmless."""

    __tablename__ = "batch_items"

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    custom_id: Mapped[str] = mapped_column(String(512))
    # pending -> running -> done | failed; pending/running -> cancelled | expired
    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Who runs the line now: only the holder of this claim may write its result.
    claim: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The output line's `response` object (status_code, request_id, body) once it ran.
    response_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (Index("ix_items_batch_status", "batch_id", "status"),)


class CacheRow(Base):
    """Response cache: a request's hash -> the response object it got. A row without a
    response is a claim: one worker is calling the provider and the others wait for it."""

    __tablename__ = "response_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    response_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class SlotRow(Base):
    """One slot of a provider's fleet-wide cap (PROVIDER_CONCURRENCY): free, or leased to the
    call of one worker. A live worker renews its leases; a dead one's slots free themselves
    when the lease runs out."""

    __tablename__ = "provider_slots"

    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker: Mapped[str | None] = mapped_column(String(96), nullable=True)
    token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)


# --- per-key limits: app/store/quota.py


class QuotaBucket(Base):
    """A key's rate-limit bucket (GCRA, app/ratelimit.py): its theoretical arrival time.
    `kind` is `requests` or `tokens`."""

    __tablename__ = "quota_buckets"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    tat: Mapped[float] = mapped_column(Float, default=0.0)


class SessionCount(Base):
    """How many `live_sessions` rows a key has (`*`: all keys), kept with the rows in the same
    transactions, so an admission reads one row instead of counting. Rows past their expiry
    still count here until a purge removes them, which an admission at its cap runs first."""

    __tablename__ = "session_counts"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)


class LiveSession(Base):
    """A session a key holds: queued, generating, or finished and not read yet. Admission
    inserts it; the API that delivers its last event (or deletes it) removes it; one nobody
    reads expires with its queue (SESSION_TTL)."""

    __tablename__ = "live_sessions"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_live_sessions_key", "key", "expires_at"),
                      Index("ix_live_sessions_expiry", "expires_at"))


# --- usage and spend (S3): app/store/usage.py


class UsageRow(Base):
    """One finished request (app/usage.py's UsageRecord). `key` is the API key's name ("" when
    open); cost in nano-dollars, so sums are exact. The id is the record's own, so a batch
    written twice (a commit whose answer was lost) is counted once."""

    __tablename__ = "usage_records"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    day: Mapped[str] = mapped_column(String(10))  # UTC `YYYY-MM-DD`, for group_by=day
    key: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(512))
    provider: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_nano: Mapped[int] = mapped_column(BigInteger)
    estimated: Mapped[bool] = mapped_column()
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    request_id: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_usage_key_created", "key", "created_at"),
                      Index("ix_usage_created", "created_at"))


class SpendRow(Base):
    """A key's running totals for one UTC calendar month, kept in the transaction that writes
    its usage rows: a budget check reads one row, never sums the month."""

    __tablename__ = "usage_month_totals"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # `YYYY-MM`
    cost_nano: Mapped[int] = mapped_column(BigInteger, default=0)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)


# --- stored conversations: app/store/conversations.py


class ConversationRow(Base):
    """A conversation a key keeps on the server (OpenAI's Conversations API, and the history
    Rafale's chat routes send when a request names it). `updated_at` moves with every item
    added: retention (CONVERSATION_RETENTION_DAYS) counts from the last use, not the first."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    metadata_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    # The next item's position: kept on the row, so an append reads and bumps it under the
    # row's lock (PostgreSQL) or the write lock (SQLite) and positions never collide.
    next_position: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_conversations_owner_id", "owner", "id"),
                      Index("ix_conversations_updated", "updated_at"))


class ConversationItemRow(Base):
    """One item of a conversation (a message, or another Responses item kept as it came), in
    `position` order. `turn` is the chat task that wrote it: a redelivered task finds its
    turn already stored and replaces the answer instead of adding a second one."""

    __tablename__ = "conversation_items"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    item_json: Mapped[str] = mapped_column(Text)  # the item as OpenAI shows it, without its id
    turn: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ux_conversation_items_position", "conversation_id", "position",
                            unique=True),
                      Index("ix_conversation_items_turn", "conversation_id", "turn"))


class ResponseRow(Base):
    """A stored Responses API response (`store: true`), owned by the key that made it.

    Added to an existing database by create_all (a new table, nothing else changes), so the
    schema version stays: a release without this table runs on a database that has it."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger)
    # queued | in_progress | completed | incomplete | failed | cancelled
    status: Mapped[str] = mapped_column(String(16))
    # The session queue's id: where the answer streams while it is made (and a cancel ends).
    session_id: Mapped[str] = mapped_column(String(64))
    # The response object's fixed part (id, model, the echoed parameters).
    base_json: Mapped[str] = mapped_column(Text)
    input_json: Mapped[str] = mapped_column(Text)  # this response's own input items
    # The chat messages before this response's answer (earlier turns + this input, without
    # `instructions`, which OpenAI does not carry over a previous_response_id chain).
    messages_json: Mapped[str] = mapped_column(Text)
    output_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    usage_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    incomplete_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_responses_owner_id", "owner", "id"),)
