# The two commands of the README, plus the benchmark. Each prepares the machine first.
.PHONY: run test bench doctor

# make run PORT=8090 CLEANUP_PORT=8091 when 8080/8081 are taken.
PORT ?= 8080
CLEANUP_PORT ?= 8081

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
	@.venv/bin/python bench/quality_corpus_report.py
