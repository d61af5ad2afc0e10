# One image for both processes: `python -m ingest` (the API) and `python -m consumer`.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md schema.sql ./
COPY core core
COPY ingest ingest
COPY consumer consumer
RUN pip install .
# The API binds all interfaces inside the container; compose publishes it on loopback only.
ENV HOST=0.0.0.0
EXPOSE 3001
CMD ["python", "-m", "ingest"]
