# One image for every process: `python -m ingest` (the API), `python -m consumer`, and
# `python -m consumer.migrate`, which brings the database to this version's schema and must
# run before this version's consumers start (compose runs it as the one-shot `migrate`).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# consumer/migrations/schema.sql links to the root schema.sql: both are copied, and the
# wheel carries the file itself.
COPY pyproject.toml README.md schema.sql ./
COPY core core
COPY ingest ingest
COPY consumer consumer
# Installed, then the sources removed: the processes read their SQL from the package.
RUN pip install . && rm -rf /src
WORKDIR /app
# The API binds all interfaces inside the container; compose publishes it on loopback only.
ENV HOST=0.0.0.0
EXPOSE 3001
CMD ["python", "-m", "ingest"]
