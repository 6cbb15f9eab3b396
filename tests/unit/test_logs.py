"""Log set-up: uvicorn's access log line never carries a query string."""

from __future__ import annotations

import logging

from app.logs import RedactQuery, redact_access_log


def access_record(path: str) -> logging.LogRecord:
    # What uvicorn's h11 and httptools protocols log for every response.
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                             '%s - "%s %s HTTP/%s" %d',
                             ("127.0.0.1:5000", "GET", path, "1.1", 401), None)


def test_the_query_string_is_redacted_and_the_rest_of_the_line_kept() -> None:
    record = access_record("/v1/models?api_key=sk-secret-123&x=1")
    assert RedactQuery().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /v1/models?[redacted] HTTP/1.1" 401'
    plain = access_record("/health")
    assert RedactQuery().filter(plain)
    assert plain.getMessage() == '127.0.0.1:5000 - "GET /health HTTP/1.1" 401'


def test_other_records_pass_untouched() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "odd %s",
                               ("a?b",), None)
    assert RedactQuery().filter(record) and record.getMessage() == "odd a?b"


def test_installing_twice_adds_one_filter() -> None:
    access = logging.getLogger("uvicorn.access")
    before = list(access.filters)
    try:
        redact_access_log()
        redact_access_log()
        assert sum(isinstance(f, RedactQuery) for f in access.filters) == 1
    finally:
        access.filters[:] = before
