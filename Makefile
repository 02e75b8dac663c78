# TaskHub: `make run` starts the whole suite in one process; `make test` runs every test.
PYTHON ?= python3
UV := $(PYTHON) -m uv
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run run-distributed test test-unit test-e2e test-faults fuzz test-compose lint format dlq bench bench-tasks \
	bench-comments bench-files bench-gateway bench-notifier bench-analytics analytics-rebuild \
	bench-live image up down

install:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@$(UV) sync --frozen --quiet

## The embedded mode: PostgreSQL from a wheel, in-process bus, data under var/. Ctrl-C stops it.
run: install
	HOST=$(HOST) PORT=$(PORT) .venv/bin/python -m gateway.embedded

## The distributed mode on local PostgreSQL, RabbitMQ and Redis: one process per service,
## gateway on PORT, identity on 8001.
run-distributed: install
	$(UV) run --frozen python -m tests.e2e.stack

## Every test; needs PostgreSQL, RabbitMQ and Redis on localhost (.ci/run starts them).
## tests/run.sh: the suite (testpaths) with the fuzz suite beside it, then the fault suite, whose
## stack starts once the end-to-end stacks have stopped (decisions 0055, 0057).
test: install
	@UV="$(UV)" tests/run.sh

test-unit: install
	$(UV) run --frozen pytest libs services

## Broker and database cuts and SIGKILLs mid-burst on a distributed stack (docs/operations.md).
test-faults: install
	$(UV) run --frozen pytest tests/faults

## schemathesis against the merged OpenAPI of an embedded stack (docs/operations.md).
fuzz: install
	$(UV) run --frozen pytest tests/fuzz

test-e2e: install
	$(UV) run --frozen pytest tests/e2e

## docker-compose.yml for real: its own Docker engine, images built from a debootstrapped base,
## the end-to-end suite through the gateway container (deploy/compose-test.sh; needs root).
test-compose: install
	deploy/compose-test.sh

## Dead letters: `make dlq` lists every service's, SERVICE=tasks one's; add REPLAY=1 to replay.
dlq: install
	$(UV) run --frozen python -m taskhub_common.dlq $(SERVICE) $(if $(REPLAY),--replay)

## Benchmarks print figures (they are not tests); they need the local servers like `make test`.
bench: bench-tasks bench-comments bench-files bench-gateway bench-notifier bench-analytics \
	bench-live

bench-tasks: install
	$(UV) run --frozen python -m bench.tasks.run

bench-comments: install
	$(UV) run --frozen python -m bench.comments.run

bench-files: install
	$(UV) run --frozen python -m bench.files.run

## The gateway's cost: each endpoint through the gateway and straight to its service, both modes.
bench-gateway: install
	$(UV) run --frozen python -m bench.gateway.run

bench-notifier: install
	$(UV) run --frozen python -m bench.notifier.run

## Analytics with 100,000 tasks through the gateway: `make bench-analytics TASKS=100000` (the
## default run is short).
bench-analytics: install
	$(UV) run --frozen python -m bench.analytics.run $(if $(TASKS),--tasks $(TASKS))

## Read the tasks service's export into the analytics read model again (the running service
## keeps taking events meanwhile); uses the same settings (.env) as the analytics service.
analytics-rebuild: install
	$(UV) run --frozen python -m analytics.rebuild

## The one image of every service (Dockerfile; docs/operations.md).
image:
	docker build -t taskhub:dev .

## Everything in containers (docker-compose.yml): the gateway on 8000. The first `make up`
## writes .env with a fresh SECRET_KEY.
up:
	@test -f .env || echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(32))')" > .env
	docker compose up --build --detach --wait

down:
	docker compose down

## Live updates: idle sockets per gateway process (RSS) and event-to-client latency.
bench-live: install
	$(UV) run --frozen python -m bench.live.run

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: install
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .
