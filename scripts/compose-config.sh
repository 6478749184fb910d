#!/usr/bin/env bash
# Validates docker-compose.yml: with `docker compose config` where the
# Compose plugin is installed, else with the Compose Specification's own
# validator (compose-go, the loader docker compose uses) run from the Go
# module proxy into the build cache. Nothing is installed (no Docker CLI
# plugin in the user's home), and no Docker engine is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPOSE_GO=${COMPOSE_GO:-github.com/compose-spec/compose-go/v2/cmd@v2.16.2}

if docker compose version >/dev/null 2>&1; then
  docker compose config --quiet
  echo "docker-compose.yml is valid ($(docker compose config --services | wc -l) services; docker compose config)"
  exit 0
fi
echo "docker compose not found: validating with $COMPOSE_GO (the first run builds it, about a minute)..." >&2
go run "$COMPOSE_GO" docker-compose.yml >/dev/null
echo "docker-compose.yml is valid (compose-go)"
