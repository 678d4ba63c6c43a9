.PHONY: run test bench lint

run:            ## the gateway on config.yaml in front of the demo app
	./scripts/run

test:           ## ruff, mypy and the whole pytest suite
	./scripts/test

bench:          ## wrk: upstream direct vs minimal proxy vs gateway
	./benchmarks/run

lint:
	.venv/bin/ruff check --fix gateway tests benchmarks demo && .venv/bin/ruff format gateway tests benchmarks demo
