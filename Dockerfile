FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 rafale
WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p app workers && touch app/__init__.py workers/__init__.py \
    && pip install . && pip uninstall -y rafale

COPY app ./app
COPY workers ./workers
COPY web ./web
COPY entrypoint.sh ./
RUN pip install --no-deps . && chmod +x entrypoint.sh \
    && mkdir -p /app/data && chown rafale /app/data

# Without DATABASE_URL the store is a SQLite file here: mount a volume to keep it.
ENV DATA_DIR=/app/data
VOLUME ["/app/data"]
USER rafale
EXPOSE 8007 50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8007\")}/health', timeout=2)" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/entrypoint.sh"]
CMD ["all"]
