# Multi-stage build: static binaries on a distroless base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# ./cmd/... is what ships: worker, enqueue and demotarget (benchmarks live in bench/).
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/...

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
COPY examples /examples
USER nonroot
ENTRYPOINT ["/usr/local/bin/worker"]
