# syntax=docker/dockerfile:1
#
# meshrole's webhook server image: a static, trimmed /webhook on distroless (no shell, no
# package manager), running as the non-root user 65532 that the chart's securityContext expects
# (runAsNonRoot, readOnlyRootFilesystem; the serving certificate is mounted at
# /etc/meshrole/tls).
#
#   docker build -t meshrole-webhook:0.1.0 .       (make image)
#   docker buildx build --platform linux/amd64,linux/arm64 -t <repository>:<tag> --push .
#
# go.mod's `go` line must not be newer than the golang:1.26 image's toolchain (the official
# images set GOTOOLCHAIN=local).

# The builder runs on the build machine's platform and cross-compiles (no emulation needed).
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src

# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

# Only what the server is built from (see .dockerignore).
COPY cmd/ cmd/
COPY pkg/ pkg/
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH:-amd64} \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /webhook ./cmd/webhook

FROM gcr.io/distroless/static:nonroot
COPY --from=build /webhook /webhook
USER 65532:65532
ENTRYPOINT ["/webhook"]
