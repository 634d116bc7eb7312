# syntax=docker/dockerfile:1
# One image for every tollgate service; the command picks it:
#   docker run tollgate:dev python -m tollgate_router   (or _cache, _orchestrator, _simulator, _operator)
# Built by `make image` (tools/image.sh: docker or podman). Runs as uid 10001 and works with a
# read-only root filesystem. No HEALTHCHECK: Kubernetes probes (and make image-test) check it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the locked dependencies in a venv, and the code compiled to bytecode -----
FROM ${PYTHON_IMAGE} AS build
# PIP_CERT: the system bundle, which `tools/image.sh` replaces with the host's under podman
# (a TLS proxy's CA); the venv's own pip would otherwise trust only its vendored certifi.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# requirements.lock (`make lock`): every runtime package, transitive ones too, pinned to the
# versions the tests ran with and checked against its hashes.
COPY requirements.lock .
# Then the installers go (pip, setuptools: nothing imports them at run time) and so do the
# packages' own test folders; the image's SBOM (.image/sbom.json) lists what is left.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock \
    && /opt/venv/bin/pip uninstall --yes --quiet setuptools pip \
    && rm -f /opt/venv/lib/python3.11/site-packages/distutils-precedence.pth \
    && find /opt/venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +
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
# The version (tollgate_common.__version__), the commit and the source are labels too:
# tools/image.sh adds them with --label at commit time (buildah's layer cache reuses a LABEL
# step whose build args changed, so a build arg would leave a stale commit on a cached build).
CMD ["python", "-c", "import sys; sys.exit('choose a service: python -m tollgate_<router|cache|orchestrator|simulator|operator>')"]
