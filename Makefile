# The two commands of the README, plus the benchmark. Each prepares the machine first.
.PHONY: run test bench

run:
	@scripts/bootstrap.sh run
	@.venv/bin/python scripts/dev.py

test:
	@scripts/bootstrap.sh test
	@.venv/bin/python -m pytest

bench:
	@scripts/bootstrap.sh test
	@.venv/bin/python bench/bench_precall.py
