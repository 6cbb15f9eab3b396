"""The worker fleet: `python -m workers` supervises LLM_WORKERS consumer processes."""
