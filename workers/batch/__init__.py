"""The batch side of a worker, one room per job:

- runner.py: consume `llm_batch` and the control fanout, dispatch; the surface `Worker` uses
- plan.py: validate a batch's input and fan its lines out as groups
- group.py: run one group of lines under one claim, writing results as they come
- calls.py: one line's provider call (chat or translate), the response cache, cooldowns
- stops.py: which batches are cancelled or expired, here and across the fleet
- gate.py: fleet-wide per-provider caps (PROVIDER_CONCURRENCY), in slots
- finalize.py: write the result files and end a batch; the periodic sweep
- files.py: the output and error files
- dead.py: settle a batch message the broker dead-lettered
- outage.py: wait out a store that cannot be reached (nothing fails, nothing is requeued)

Words: a *slot* is one unit of a provider's fleet-wide cap (gate.py); a *lane* is one unit of
this worker's own BATCH_CONCURRENCY. A *group* is one `batch_items` message."""
