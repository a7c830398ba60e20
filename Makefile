# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-sqlite test-postgresql lint install lock clean translations messages test-tools

# Translations: the catalogues (.po) are in the repo, the compiled .mo files are
# not; `make run` and `make test` compile them. `make messages` re-extracts every
# msgid and merges it into the catalogues for translating.
TRANSLATIONS := newsletter/translations
CATALOGUES := $(wildcard $(TRANSLATIONS)/*/LC_MESSAGES/messages.po)
COMPILED := $(CATALOGUES:.po=.mo)
BABEL_KEYWORDS := -k _l -k lazy_gettext

# Test-only tools from npm (axe-core, the Nu HTML Checker), pinned by package-lock.json.
TEST_TOOLS := tests/js
TEST_TOOLS_STAMP := $(TEST_TOOLS)/node_modules/.installed

# Dependencies are installed from the lock (exact versions, hashes checked);
# the project itself on top, without resolving anything again.
LOCK := requirements/dev.lock
PIP_COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

## lock: refresh requirements/*.lock to the newest versions pyproject.toml's ranges allow
lock: $(STAMP)
	$(PIP_COMPILE) --upgrade -o requirements/runtime.lock pyproject.toml
	$(PIP_COMPILE) --upgrade --extra dev -o $(LOCK) pyproject.toml

$(TRANSLATIONS)/%/LC_MESSAGES/messages.mo: $(TRANSLATIONS)/%/LC_MESSAGES/messages.po $(STAMP)
	$(BIN)/pybabel compile --statistics -i $< -o $@

translations: $(COMPILED)

messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg $(BABEL_KEYWORDS) --no-location --omit-header --width 100 -o messages.pot .
	$(BIN)/pybabel update --no-fuzzy-matching --ignore-obsolete --width 100 -i messages.pot -d $(TRANSLATIONS)

$(TEST_TOOLS_STAMP): $(TEST_TOOLS)/package.json $(TEST_TOOLS)/package-lock.json
	cd $(TEST_TOOLS) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

test-tools: $(TEST_TOOLS_STAMP)

## run: a fresh clone to a running app (SQLite in instance/, mails in the dev mailbox)
run: $(STAMP) translations
	FLASK_DEBUG=1 $(BIN)/newsletter db upgrade
	FLASK_DEBUG=1 $(BIN)/newsletter list ensure-default
	$(BIN)/newsletter run

## test: lint, types, then the whole suite on SQLite and on PostgreSQL
test: $(STAMP) translations test-tools lint test-sqlite test-postgresql

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-sqlite: $(STAMP) translations test-tools
	NEWSLETTER_TEST_BACKEND=sqlite $(BIN)/python -m pytest

test-postgresql: $(STAMP) translations test-tools
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
