# Prack front server. Build: docker build -t prack .
# Run:   docker run -p 8080:8080 -p 127.0.0.1:4242:4242 --shm-size 256m prack
# Deploy new code without downtime: docker exec <container> kill -USR2 1
# (the master is PID 1 and re-executes in place; see docs/operations.md).

# -- build stage: compile the C core (cffi) into a virtualenv -----------------
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN python -m venv /opt/prack \
 && /opt/prack/bin/pip install --no-cache-dir --disable-pip-version-check .

# -- runtime stage: the virtualenv, the configuration, no compiler ------------
FROM python:3.11-slim
COPY --from=build /opt/prack /opt/prack
COPY docker/prack.toml /etc/prack/prack.toml
COPY examples/demo_worker.py /opt/prack/examples/demo_worker.py
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --shell /usr/sbin/nologin prack \
 && mkdir -p /run/prack && chown prack:prack /run/prack
# Logs go to stderr unbuffered; every setting can be overridden with
# PRACK_<SECTION>_<KEY> (docs/configuration.md).
ENV PATH=/opt/prack/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PRACK_CONFIG=/etc/prack/prack.toml \
    PRACK_SERVER_RUNTIME_DIR=/run/prack
USER prack
EXPOSE 8080 4242
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:4242/livez', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["prack-server", "-c", "/etc/prack/prack.toml"]
