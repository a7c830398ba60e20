# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-sqlite test-postgresql lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## run: a fresh clone to a running app (SQLite in instance/, mails in the dev mailbox)
run: $(STAMP)
	FLASK_DEBUG=1 $(BIN)/newsletter db upgrade
	FLASK_DEBUG=1 $(BIN)/newsletter list ensure-default
	$(BIN)/newsletter run

## test: lint, types, then the whole suite on SQLite and on PostgreSQL
test: $(STAMP) lint test-sqlite test-postgresql

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-sqlite: $(STAMP)
	NEWSLETTER_TEST_BACKEND=sqlite $(BIN)/python -m pytest

test-postgresql: $(STAMP)
	@$(BIN)/python scripts/postgres_available.py || exit_code=$$?; \
	if [ "$${exit_code:-0}" = "0" ]; then \
		NEWSLETTER_TEST_BACKEND=postgresql $(BIN)/python -m pytest; \
	elif [ "$$CI" = "true" ]; then \
		echo "PostgreSQL is not reachable and CI=true: failing."; exit 1; \
	else \
		echo "PostgreSQL is not reachable: SKIPPED the PostgreSQL run (the SQLite run above still counts)."; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
