# shipper as a container image, e.g. a Kubernetes sidecar (deploy/kubernetes/sidecar.yaml).
#
#   docker build -t shipper .
#   docker run --rm -v "$PWD/config.toml:/etc/shipper/config.toml:ro" \
#       -v /var/log/app:/var/log/app -v shipper-state:/var/lib/shipper shipper
#
# The config is mounted at /etc/shipper/config.toml, the daemon's default path.
# Credentials come from boto3's default chain (environment, IRSA web identity,
# instance role), never from the image or the config.

# --- builder: the wheel, installed with its dependencies into a venv -------------
# Both stages use the same base image, so the venv's interpreter symlink and the
# absolute paths in its scripts stay valid when the venv is copied across.
FROM python:3.11.14-slim-trixie AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

WORKDIR /src
RUN python -m venv /opt/shipper

# Only what the wheel is built from (the rest of the context is .dockerignored).
COPY pyproject.toml README.md ./
COPY shipper ./shipper

# The wheel alone first (--no-deps), then the wheel with its pinned-range
# dependencies from the index, the same way a user's pip would install it.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /src/dist . \
    && /opt/shipper/bin/python -m pip install --no-cache-dir /src/dist/shipper-*.whl \
    && /opt/shipper/bin/shipper --version

# --- runtime: the venv, a non-root user and nothing else -------------------------
FROM python:3.11.14-slim-trixie

# A fixed UID/GID, so a pod's runAsUser/fsGroup and a host's file ownership can
# name it. The state directory belongs to it; the config directory is read-only.
RUN groupadd --system --gid 10001 shipper \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/shipper --shell /usr/sbin/nologin shipper \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/shipper \
    && install -d -m 0755 /etc/shipper

COPY --from=builder /opt/shipper /opt/shipper

# pip compiled the bytecode at install time, so a read-only root filesystem
# costs nothing; unbuffered output keeps the JSON log lines whole and current.
ENV PATH=/opt/shipper/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Checkpoints, spool and delivered ranges (state.db): losing them means reading files
# again from their start. Mount a volume that outlives the container.
VOLUME ["/var/lib/shipper"]

USER 10001:10001

# /healthz, /readyz, /status and /metrics. The default listen address is loopback,
# which this check reaches; set [health] listen = "0.0.0.0:8686" for kubelet probes.
EXPOSE 8686

# No curl in a slim image: python's urllib, 200 or a non-zero exit.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8686/healthz', timeout=4).status != 200)"]

# SIGTERM drains for up to shutdown_timeout_secs (30 by default): give
# `docker stop` a longer -t, and Kubernetes a longer terminationGracePeriodSeconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["shipper", "run"]
