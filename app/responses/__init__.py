"""OpenAI's Responses API on Rafale's fleet: a response is a queued chat task whose request is
translated onto chat completions (`request`), whose answer is assembled into output items
(`output`) and streamed as OpenAI's typed events (`stream`). The store keeps each response
(app/store/responses.py); the worker running it writes its final state (workers/responses.py)."""
