"""The HTTP front end: the only package that imports fastapi / sse_starlette."""
