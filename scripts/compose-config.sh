#!/usr/bin/env bash
# Validates docker-compose.yml with `docker compose config`. Machines without
# a Docker engine often lack the Compose v2 plugin too; it is a Go program, so
# when missing it is built from the Go module proxy (a few minutes, once) and
# installed as a Docker CLI plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPOSE_VERSION=${COMPOSE_VERSION:-v2.40.3}

if ! docker compose version >/dev/null 2>&1; then
  echo "docker compose plugin not found; building docker/compose $COMPOSE_VERSION from the Go module proxy..." >&2
  dir=$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  src=$(mktemp -d)
  trap 'rm -rf "$src"' EXIT
  cp -r "$dir"/. "$src" && chmod -R u+w "$src"
  mkdir -p "$HOME/.docker/cli-plugins"
  # Built as its own main module: its go.mod has exclude directives that
  # `go install pkg@version` refuses.
  (cd "$src" && GOFLAGS=-buildvcs=false go build -o "$HOME/.docker/cli-plugins/docker-compose" ./cmd)
fi
docker compose config --quiet
echo "docker-compose.yml is valid ($(docker compose config --services | wc -l) services)"
