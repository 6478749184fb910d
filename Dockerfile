# Multi-stage build: static binaries on a distroless base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# What ships, as make build: worker, enqueue and demotarget (the compose
# stack's target); VERSION (make up passes git describe) is what --version says.
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.buildVersion=${VERSION}" -o /out/ ./cmd/worker ./cmd/enqueue ./cmd/demotarget

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
COPY examples /examples
USER nonroot
ENTRYPOINT ["/usr/local/bin/worker"]
