# udpprobe image: a static binary on an empty base, run as a non-root user.
# The image has no shell; the compose healthcheck runs `udpprobe healthcheck`.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The version is the build argument VERSION if given, else what git says of
# the checkout (the build context includes .git for it), else dev.
ARG VERSION
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)} \
        -X github.com/prometheus/common/version.Revision=$(git rev-parse HEAD 2>/dev/null) \
        -X github.com/prometheus/common/version.BuildUser=docker \
        -X github.com/prometheus/common/version.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)" \
      -o /out/udpprobe ./cmd/udpprobe

FROM scratch
COPY --from=build /out/udpprobe /udpprobe
USER 65532:65532
# 6464/udp probes; 8464 receiver, 8465 sender and 8466 mesh HTTP (/metrics, /-/healthy, /-/ready).
EXPOSE 6464/udp 8464 8465 8466
ENTRYPOINT ["/udpprobe"]
CMD ["help"]
