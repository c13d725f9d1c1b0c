# syntax=docker/dockerfile:1
# Build: docker build -t chime-gateway .
# Run:   docker run -p 8080:8080 -p 9090:9090 -v $PWD/config:/etc/chime-gateway:ro chime-gateway
# (mounted key files must be mode 0600/0640 and readable by uid 10001; for
# TLS mount the certificate and key and set [tls] in gateway.toml)

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
RUN cargo build --release --locked --bin chime-gateway

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin chime
COPY --from=build /src/target/release/chime-gateway /usr/local/bin/chime-gateway
COPY --chown=10001:10001 --chmod=0640 config/gateway.toml /etc/chime-gateway/gateway.toml
# The key store must not be readable by every user (the gateway refuses to start otherwise).
COPY --chown=10001:10001 --chmod=0600 config/keys.toml /etc/chime-gateway/keys.toml
# Listen on all interfaces inside the container; the admin listener too, so
# the orchestrator's probes reach it (do not publish 9090 publicly).
ENV CHIME_GATEWAY_LISTEN=0.0.0.0:8080 \
    CHIME_GATEWAY_ADMIN_LISTEN=0.0.0.0:9090
USER 10001:10001
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chime-gateway"]
CMD ["serve", "--config", "/etc/chime-gateway/gateway.toml"]
