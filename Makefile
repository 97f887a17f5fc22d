# The two commands of the README, plus the benchmark. Each prepares the machine first.
.PHONY: run test bench doctor soak

# make run PORT=8090 when 8080/8081 are taken: cleanup_voices takes the next port (CLEANUP_PORT=... to choose it).
PORT ?= 8080
CLEANUP_PORT ?= $(shell expr $(PORT) + 1)

run:
	@scripts/bootstrap.sh run
	@.venv/bin/python scripts/dev.py --port $(PORT) --cleanup-port $(CLEANUP_PORT)

# make doctor ARGS="--service-url https://precall-webhook-....run.app --probe-labels": readiness checklist
# with the service's configuration from the environment (see README, "Deploying to Google Cloud").
doctor:
	@scripts/bootstrap.sh run
	@.venv/bin/python -m precall doctor $(ARGS)

test:
	@scripts/bootstrap.sh test
	@.venv/bin/python -m pytest

bench:
	@scripts/bootstrap.sh test
	@.venv/bin/python bench/bench_precall.py

# make soak [SEED=1] [CALLS=500]: hundreds of calls through the real services on both event paths while
# ElevenLabs fails at random and the services are killed; then checks that no clone is left (docs/soak.md).
SEED ?= 1
CALLS ?= 500
soak:
	@scripts/bootstrap.sh test
	@.venv/bin/python bench/soak.py --calls $(CALLS) --seed $(SEED)
