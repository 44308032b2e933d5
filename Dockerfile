# syntax=docker/dockerfile:1
# Image with both replog binaries, `master` and `secondary`, used by docker-compose.yml.
# Build: docker build -t replog:local .   (or: docker compose build)

# --- build: compile the workspace's binaries in release mode ---------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and the target dir between builds, so an edit
# recompiles only replog itself; the binaries are copied out because the mount is not in the
# image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --bins \
    && mkdir -p /out \
    && cp target/release/master target/release/secondary /out/

# --- runtime: small Debian with just what the nodes and their healthchecks need --------------
FROM debian:bookworm-slim
# ca-certificates for amqps:// URLs; curl for the compose healthchecks on /health.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# An unprivileged user owns /data, so a fresh named volume mounted there is writable by it.
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin replog \
    && mkdir -p /data \
    && chown replog:replog /data
COPY --from=build /out/master /out/secondary /usr/local/bin/
USER replog
WORKDIR /data
EXPOSE 8000 8001 8002
# docker-compose.yml sets the command per service; this default runs a master.
CMD ["master", "--listen", "0.0.0.0:8000"]
