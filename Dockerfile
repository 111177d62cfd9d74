# syntax=docker/dockerfile:1
# One image with both binaries; the command picks one:
#   inlet-ingest --config /etc/inlet/inlet.toml
#   inlet-worker --config /etc/inlet/inlet.toml

FROM rust:1.95-bookworm AS builder
WORKDIR /app
COPY . .
# The cache mounts keep downloaded crates between builds; target/ stays in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo build --release --locked --bins

FROM debian:bookworm-slim
# curl is for the compose healthchecks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# /var/lib/inlet is owned by inlet so a named volume mounted there starts out writable.
RUN groupadd --system --gid 10001 inlet \
    && useradd --system --uid 10001 --gid inlet --home-dir /var/lib/inlet --shell /usr/sbin/nologin inlet \
    && mkdir -p /var/lib/inlet /etc/inlet \
    && chown inlet:inlet /var/lib/inlet
COPY --from=builder /app/target/release/inlet-ingest /app/target/release/inlet-worker /usr/local/bin/
ENV INLET_CONFIG=/etc/inlet/inlet.toml
USER inlet
WORKDIR /var/lib/inlet
EXPOSE 8080 9180 8090 9181
