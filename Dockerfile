# syntax=docker/dockerfile:1
#
# The sweeper image, for hosts with Docker/BuildKit:
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg COMMIT=$(git rev-parse --short HEAD) -t sweeper:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 ...   # multi-arch
#
# Without a Docker daemon, `make image` builds the same image (static binary,
# /sweeper, user 65532, port 9090, OCI labels) with tools/cmd/imagebuild.
# tools/cmd/imagebuild's test checks that this file agrees with it.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/tasksweeper/sweeper/internal/version.Version=${VERSION} -X github.com/tasksweeper/sweeper/internal/version.Commit=${COMMIT}" \
      -o /out/sweeper ./cmd/sweeper

# distroless static: CA certificates, tzdata, /etc/passwd with nonroot
# (65532), no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="sweeper" \
      org.opencontainers.image.description="Stuck-task sweeper for the delegation ledger in PostgreSQL" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.source="https://github.com/tasksweeper/sweeper" \
      org.opencontainers.image.url="https://github.com/tasksweeper/sweeper" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /out/sweeper /sweeper
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/sweeper"]
