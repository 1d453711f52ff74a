# VM Recovery service image.
#
#   docker build -t vmrecovery .
#   docker run -d --name vmrecovery -p 8080:8080 -v vmrecovery:/var/lib/vmrecovery vmrecovery
#   docker exec vmrecovery vmrecovery create-operator-key
#
# With no configuration the catalog is SQLite and the secret key a file, both in the
# /var/lib/vmrecovery volume. For PostgreSQL pass -e VMR_DATABASE_URL=postgresql+asyncpg://...
# The entrypoint applies migrations ('vmrecovery migrate') before it starts serving; arguments
# after the image name go to 'vmrecovery serve'.

# --- build: the project as a wheel (it carries the migrations as app/_migrations) ----------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VMR_DATA_DIR=/var/lib/vmrecovery \
    VMR_HOST=0.0.0.0 \
    VMR_PORT=8080

# Every dependency ships binary wheels, so no compiler is needed here.
COPY --from=build /wheels /tmp/wheels
RUN pip install /tmp/wheels/*.whl && rm -rf /tmp/wheels

RUN groupadd --system --gid 10001 vmrecovery \
    && useradd --system --uid 10001 --gid vmrecovery --home-dir /var/lib/vmrecovery \
        --shell /usr/sbin/nologin vmrecovery \
    && install -d -o vmrecovery -g vmrecovery -m 0750 /var/lib/vmrecovery
USER vmrecovery
WORKDIR /var/lib/vmrecovery
VOLUME ["/var/lib/vmrecovery"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VMR_PORT', '8080'), timeout=4)"]

# Migrate, then replace the shell with the server so it gets the signals (docker stop).
ENTRYPOINT ["/bin/sh", "-c", "vmrecovery migrate && exec vmrecovery serve \"$@\"", "vmrecovery"]
CMD []
