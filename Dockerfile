# Build: docker build -t chime-gateway .
#   The binary is built with profile-guided optimisation (benches/pgo.sh: an
#   instrumented build, trained for 40 s against the built-in simulated
#   Chime, then built again with the profile), which uses less CPU per
#   request than the plain release build (README, "Performance"), for two
#   release builds more. --build-arg PGO=0 makes the plain build.
# Run:   docker run -p 8080:8080 -p 127.0.0.1:9090:9090 \
#          -e CHIME_GATEWAY_ADMIN_TOKEN="$(openssl rand -hex 24)" \
#          -v $PWD/config:/etc/chime-gateway:ro chime-gateway
# The admin listener answers on all of the container's interfaces (for the
# orchestrator's probes), so its API needs the token: without one the gateway
# refuses to start. Mounted key files must be mode 0600/0640 and readable by
# uid 10001. Mounted read-only as above, the key file cannot be edited from
# the key page (503 key_store_unavailable): mount its folder writable by uid
# 10001, with the key file owned by uid 10001, for that (a key file in a
# group the gateway is not in cannot keep that group: the first edit leaves
# it 10001:10001, mode 0600), or use the PostgreSQL key store. For TLS mount
# the certificate and key and set [tls] in gateway.toml.

FROM rust:1-bookworm AS build
ARG PGO=1
WORKDIR /src
# The training load: wrk sends it, python3 and curl find ports and wait.
RUN if [ "$PGO" = 1 ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends wrk python3 curl \
      && rm -rf /var/lib/apt/lists/*; \
    fi
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
RUN if [ "$PGO" = 1 ]; then \
      bash benches/pgo.sh && cp target/pgo/release/chime-gateway /chime-gateway; \
    else \
      cargo build --release --locked --bin chime-gateway \
      && cp target/release/chime-gateway /chime-gateway; \
    fi

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin chime
COPY --from=build /chime-gateway /usr/local/bin/chime-gateway
COPY --chown=10001:10001 --chmod=0640 config/gateway.toml /etc/chime-gateway/gateway.toml
# The key store must not be readable by every user (the gateway refuses to start otherwise).
COPY --chown=10001:10001 --chmod=0600 config/keys.toml /etc/chime-gateway/keys.toml
# Listen on all interfaces inside the container; the admin listener too, so
# the orchestrator's probes reach it (do not publish 9090 publicly).
ENV CHIME_GATEWAY_LISTEN=0.0.0.0:8080 \
    CHIME_GATEWAY_ADMIN_LISTEN=0.0.0.0:9090
USER 10001:10001
EXPOSE 8080 9090
# The gateway asks its own admin listener (/healthz): no HTTP client in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/chime-gateway", "probe", "--config", "/etc/chime-gateway/gateway.toml"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chime-gateway"]
CMD ["serve", "--config", "/etc/chime-gateway/gateway.toml"]
