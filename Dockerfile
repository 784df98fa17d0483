# syntax=docker/dockerfile:1
# mtg-multi in a container: a fully static binary in an image FROM scratch.
#
#   docker build -t mtg-multi .
#   docker run -d --name mtg-multi -p 443:443 -v "$PWD/config.toml:/config/config.toml:ro" mtg-multi
#
# The config is /config/config.toml (the default one only listens on 0.0.0.0:443: set
# SECRET=... in the environment, or mount your own). Environment overlays: SECRET/MTG_SECRET,
# SECRET_HOST, TAG/MTG_TAG, MTG_BIND_TO (see README.md). The process runs as nobody (65534);
# Docker lets containers bind ports below 1024 without privileges (not with --network host:
# there, listen on a high port or add --user 0); podman needs
# --sysctl net.ipv4.ip_unprivileged_port_start=0.

###############################################################################
# Build stage: the official Rust image (Debian, glibc), linked statically.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# crt-static links glibc into the binary; with --target the flag does not reach build
# scripts and proc macros, which must stay dynamic.
RUN set -eux; \
    target="$(rustc -vV | sed -n 's/^host: //p')"; \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked -p mtg-app --target "$target"; \
    mkdir -p /out/config; \
    cp "target/$target/release/mtg-multi" /out/mtg-multi; \
    cp contrib/docker/config.toml /out/config/config.toml; \
    if ldd /out/mtg-multi 2>&1 | grep -q '=>'; then echo "not static"; exit 1; fi; \
    /out/mtg-multi --version

###############################################################################
# The image: the binary and a default config, nothing else.
FROM scratch
COPY --from=build /out/mtg-multi /mtg-multi
COPY --from=build --chown=65534:65534 /out/config /config
USER 65534:65534
EXPOSE 443
ENTRYPOINT ["/mtg-multi"]
CMD ["run", "/config/config.toml"]
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["/mtg-multi", "healthcheck", "/config/config.toml"]
