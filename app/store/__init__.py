"""The store: files, batches and batch results (SQLAlchemy async; SQLite or PostgreSQL)."""

from app.store.db import Store, database_url, new_id

__all__ = ["Store", "database_url", "new_id"]
