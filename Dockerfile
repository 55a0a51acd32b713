# syntax=docker/dockerfile:1
#
# facteur container image: a release build in a Rust builder stage, copied
# into a small Debian runtime that holds nothing but the binary and a default
# configuration.
#
#   docker build -t facteur .
#   docker run -p 8025:8025 -p 2525:2525 -v facteur-spool:/var/lib/facteur \
#     -v "$PWD/config/facteur.toml:/etc/facteur/facteur.toml:ro" \
#     -e FACTEUR_API_KEYS=... -e FACTEUR_TRACKING_KEYS=... facteur
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

WORKDIR /src
COPY . .

# The cargo registry and target/ live in BuildKit caches so that a rebuild
# after a source change recompiles facteur, not its ~400 dependencies. The
# cache is not part of the image, so the binary is copied out in the same step.
# The builder image already has gcc, binutils and libc6-dev, which ring and
# the vendored zstd/bzip2/lzma sources (via mail-auth) need. The release
# profile keeps line tables (debug = 1) for local profiling; the image drops
# them and keeps the symbols, so backtraces still name functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin facteur \
    && install -D -m 0755 target/release/facteur /out/facteur \
    && strip --strip-debug /out/facteur

# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

LABEL org.opencontainers.image.title="facteur" \
      org.opencontainers.image.description="Email delivery and tracking service: REST in, durable sled spool, SMTP out, tracking, bounces." \
      org.opencontainers.image.licenses="Apache-2.0"

# An unprivileged user with a fixed uid/gid (10001), so that volume ownership
# and the Kubernetes securityContext (runAsUser: 10001) agree. The spool
# directory must exist and belong to it before the VOLUME line: a named volume
# is initialised from the image's directory, ownership included.
RUN groupadd --system --gid 10001 facteur \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/facteur --shell /usr/sbin/nologin facteur \
    && mkdir -p /var/lib/facteur /etc/facteur \
    && chown 10001:10001 /var/lib/facteur \
    && chmod 0750 /var/lib/facteur

COPY --from=builder /out/facteur /usr/local/bin/facteur
# A default configuration; mount your own over it (read-only is fine), and
# override single keys with FACTEUR_<SECTION>_<KEY> variables.
COPY config/facteur.toml /etc/facteur/facteur.toml

# Container defaults: listen on every interface (the config's default is
# loopback only), keep the spool on the volume, log JSON lines. Secrets
# (FACTEUR_API_KEYS, FACTEUR_TRACKING_KEYS, the DKIM key file) are never baked
# in: pass them at run time. Every FACTEUR_* variable must name a real
# section and key, or start-up stops with the variable's name.
ENV FACTEUR_API_LISTEN=0.0.0.0:8025 \
    FACTEUR_INBOUND_LISTEN=0.0.0.0:2525 \
    FACTEUR_SPOOL_DATA_DIR=/var/lib/facteur \
    FACTEUR_LOG_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/facteur
VOLUME ["/var/lib/facteur"]

# 8025: REST API, tracking (/t/o, /t/c, /u), /healthz, /readyz, /metrics.
# 2525: inbound SMTP (bounces, complaints, replies).
EXPOSE 8025 2525

# `facteur healthcheck` GETs http://127.0.0.1:8025/healthz and exits 0 or 1,
# so the image needs no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/facteur", "healthcheck"]

# facteur drains on SIGTERM within delivery.shutdown_deadline (25 s by
# default): give it more than that, e.g. `docker stop --time 30`.
STOPSIGNAL SIGTERM

ENTRYPOINT ["/usr/local/bin/facteur"]
CMD ["serve", "--config", "/etc/facteur/facteur.toml"]
