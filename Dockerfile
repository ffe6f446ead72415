# syntax=docker/dockerfile:1
#
# The Equipoise image: the one `equipoise` binary, which serves every
# service (`equipoise serve --target all|randomisation|blinding|safety`),
# plus grpc_health_probe for the production overlay's mTLS probes.
#
#   docker build -t ghcr.io/equipoise/equipoise:0.1.0 .
#
# The Kubernetes manifests (k8s/) run it as user and group 65532 with a
# read-only root filesystem, an emptyDir at /var/lib/equipoise (data_dir)
# and at /tmp, and every key file mounted from a Secret under /etc/equipoise.

ARG RUST_VERSION=1.95
ARG GO_VERSION=1.25

# --- the binary --------------------------------------------------------------
# Debian 12 (bookworm), like the runtime image, so glibc matches. The slim
# image has gcc and libc6-dev, which SQLite's bundled C source needs; protoc
# comes vendored with the build (protoc-bin-vendored).
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p equipoise \
 && install -D -m 0755 target/release/equipoise /out/equipoise \
 && mkdir -p /out/data

# --- grpc_health_probe -------------------------------------------------------
# The kubelet's own gRPC probe cannot present a client certificate, so with
# mTLS (overlays/production) the probes exec this instead. Static (no cgo).
FROM golang:${GO_VERSION}-bookworm AS health-probe
ARG GRPC_HEALTH_PROBE_VERSION=v0.4.54
RUN CGO_ENABLED=0 GOBIN=/out \
    go install "github.com/grpc-ecosystem/grpc-health-probe@${GRPC_HEALTH_PROBE_VERSION}"

# --- runtime -----------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/equipoise /usr/local/bin/equipoise
COPY --from=health-probe /out/grpc-health-probe /usr/local/bin/grpc_health_probe
# data_dir for `docker run`; Kubernetes mounts an emptyDir over it.
COPY --from=build --chown=65532:65532 /out/data /var/lib/equipoise
ENV EQUIPOISE_LISTEN=0.0.0.0:50051 \
    EQUIPOISE_DATA_DIR=/var/lib/equipoise
WORKDIR /var/lib/equipoise
# The distroless "nonroot" user, by number so that runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/equipoise"]
CMD ["serve", "--target", "all"]
