# The proxy image: portcullis-proxy (portals, sidecars, and the binary the operator copies in
# front of stdio servers) plus portcullis-demo (the demo MCP servers).
# Built from the repository root: docker build -f docker/proxy.Dockerfile -t portcullis-proxy:dev .
FROM rust:1-trixie AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p portcullis-proxy -p portcullis-demo --bins \
 && install -D -m 0755 target/release/portcullis-proxy /out/portcullis-proxy \
 && install -D -m 0755 target/release/portcullis-demo /out/portcullis-demo

# Debian slim, not distroless: the operator's stdio init container runs `cp` from this image.
FROM debian:trixie-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/portcullis-proxy /out/portcullis-demo /usr/local/bin/
USER 65532:65532
EXPOSE 9180 9464
ENTRYPOINT ["/usr/local/bin/portcullis-proxy"]
