# syntax=docker/dockerfile:1
# One image for every tollgate service; the command picks it:
#   docker run tollgate:dev python -m tollgate_router   (or _cache, _orchestrator, _simulator, _operator)
# Built by `make image`. Runs as uid 10001 and works with a read-only root filesystem.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the locked dependencies in a venv, and the code compiled to bytecode -----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# requirements.lock (`make lock`): every runtime package, transitive ones too, pinned to the
# versions the tests ran with and checked against its hashes.
COPY requirements.lock .
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY services /app/services
COPY proto/gen/python /app/proto/gen/python
# Compile now: at run time the filesystem is read-only and __pycache__ cannot be written.
RUN /opt/venv/bin/python -m compileall -q /app/services /app/proto/gen/python

# --- runtime: the venv and the code, nothing else -------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tollgate" \
      org.opencontainers.image.description="LLM gateway: router, cache, orchestrator, simulator and operator" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 tollgate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin tollgate
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/services:/app/proto/gen/python \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001
# orchestrator HTTP and gRPC, router and cache gRPC and metrics, simulator, operator
EXPOSE 8080 50053 50051 9101 50052 9102 8090 8081 9104
CMD ["python", "-c", "import sys; sys.exit('choose a service: python -m tollgate_<router|cache|orchestrator|simulator|operator>')"]
