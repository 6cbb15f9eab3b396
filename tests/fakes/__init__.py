"""Fake providers: real local HTTP servers speaking each provider's wire protocol."""
