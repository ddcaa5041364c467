# udpprobe image: a static binary on an empty base, run as a non-root user.
# The image has no shell; the compose healthcheck runs `udpprobe healthcheck`.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=${VERSION}" \
      -o /out/udpprobe ./cmd/udpprobe

FROM scratch
COPY --from=build /out/udpprobe /udpprobe
USER 65532:65532
# 6464/udp probes; 8464 receiver and 8465 sender HTTP (/metrics, /-/healthy, /-/ready).
EXPOSE 6464/udp 8464 8465
ENTRYPOINT ["/udpprobe"]
CMD ["help"]
