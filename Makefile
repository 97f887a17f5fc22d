# The two commands of the README, plus the benchmark. Each prepares the machine first.
.PHONY: run test bench doctor soak FORCE

# make run PORT=8090 when 8080/8081 are taken: cleanup_voices takes the next port (CLEANUP_PORT=... to choose it);
# ARGS=--no-emulator skips the Pub/Sub emulator.
PORT ?= 8080
CLEANUP_PORT ?= $(shell expr $(PORT) + 1)
# The running stack's state file (URLs, the sandbox's key and secrets) for the operator commands. It is
# also how the stack hears that make itself was interrupted: make forwards only SIGTERM to a recipe, but
# on SIGINT, SIGTERM or SIGHUP it deletes the file of the target being made, and scripts/dev.py stops
# when its state file is gone. So this file is the target, and run depends on it.
STACK_STATE ?= .dev/stack.json

run: $(STACK_STATE)

$(STACK_STATE): FORCE
	@scripts/bootstrap.sh run
	@exec .venv/bin/python scripts/dev.py --port $(PORT) --cleanup-port $(CLEANUP_PORT) --state-file $@ $(ARGS)

FORCE:

# make doctor ARGS="--service-url https://precall-webhook-....run.app --probe-labels": readiness checklist
# with the service's configuration from the environment (docs/deploying.md, "Last step: doctor").
doctor:
	@scripts/bootstrap.sh run
	@.venv/bin/python -m doctor $(ARGS)

test:
	@scripts/bootstrap.sh test
	@.venv/bin/python -m pytest

bench:
	@scripts/bootstrap.sh test
	@.venv/bin/python bench/bench_precall.py
	@.venv/bin/python bench/bench_telephony.py
	@.venv/bin/python bench/quality_corpus_report.py

# make soak [SEED=1] [CALLS=500]: hundreds of calls through the real services on both event paths while
# ElevenLabs fails at random and the services are killed; then checks that no clone is left (docs/soak.md).
SEED ?= 1
CALLS ?= 500
soak:
	@scripts/bootstrap.sh test
	@.venv/bin/python bench/soak.py --calls $(CALLS) --seed $(SEED)
