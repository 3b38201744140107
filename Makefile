# Two entry points do all the set-up on a fresh machine (see README.md):
#   make run    - create .venv, install dream3d (CPU torch), generate the default prompt with the bundled prior
#   make test   - create .venv, install dream3d + test tools, run the test suite (all of it, the slow tests too)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROMPT ?= a red cube
TORCH ?= torch==2.13.0

$(BIN)/dream3d: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first, so that nothing pulls a multi-GB CUDA build on a machine without a GPU
	$(BIN)/pip install -q "$(TORCH)" || $(BIN)/pip install -q "$(TORCH)" --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.cache/node/node_modules/gltf-validator/package.json:
	npm install --silent --prefix .cache/node gltf-validator@2.0.0-dev.3.10

# the web-app and batch tests: gradio (the [app] extra), Ray (the [distributed] extra), Playwright for Python (PyPI) and Debian's Chromium (as root;
# elsewhere the browser tests skip with a reason)
.cache/app-test-deps: pyproject.toml $(BIN)/dream3d
	$(BIN)/pip install -q -e '.[app,distributed]' 'playwright>=1.45,<2'
	if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "note: /usr/bin/chromium missing (apt-get install chromium as root); browser tests will skip"; fi; \
	fi
	mkdir -p .cache && touch $@

.PHONY: install run test test-quick
install: $(BIN)/dream3d

run: $(BIN)/dream3d
	$(BIN)/dream3d generate "$(PROMPT)"

test: $(BIN)/dream3d .cache/node/node_modules/gltf-validator/package.json .cache/app-test-deps
	$(BIN)/python -m pytest -q

# the edit-test loop: everything but the tests marked slow (see README, Tests)
test-quick: $(BIN)/dream3d
	$(BIN)/python -m pytest -q -m "not slow"
