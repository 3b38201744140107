# Two entry points do all the set-up on a fresh machine (see README.md):
#   make run    - create .venv, install dream3d (CPU torch), generate the default prompt with the bundled prior
#                 (the 3D Gaussian recipe, configs/gaussian.yaml)
#   make test   - create .venv, install dream3d + test tools, run the test suite (all of it, the slow tests too)
# The install prints one line per step and pip's output only when something fails.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROMPT ?= a red cube
TORCH ?= torch==2.13.0
# the CPU build of torch; TORCH_INDEX_TIMEOUT: seconds pip waits for it before the fallback (offline machines)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_TIMEOUT ?= 15
CACHE ?= .cache
LOG = $(CACHE)/install.log
# pip quietly, its output kept in $(LOG) and shown only when the command fails
PIP = run() { "$$@" >>$(LOG) 2>&1 || { cat $(LOG); echo "install failed: $$*" >&2; exit 1; }; }; run $(BIN)/pip

$(BIN)/dream3d: pyproject.toml
	@mkdir -p $(CACHE) && : > $(LOG)
	@echo "setting up $(VENV) (pip's output: $(LOG))"
	@$(PY) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip
	@# torch before dream3d, so that nothing pulls the multi-GB CUDA build on a machine without a GPU: with
	@# nvidia-smi, torch as pip resolves it (the CUDA build); otherwise the CPU index first, then plain pip (a local
	@# wheel or pip's index, for machines that cannot reach download.pytorch.org)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "installing $(TORCH) (CUDA build: nvidia-smi found)"; $(PIP) install -q "$(TORCH)"; \
	else \
	  echo "installing $(TORCH) (CPU build)"; \
	  $(BIN)/pip install -q --timeout $(TORCH_INDEX_TIMEOUT) --retries 0 --index-url $(TORCH_CPU_INDEX) "$(TORCH)" \
	    >>$(LOG) 2>&1 || { echo "  (the CPU index is out of reach; trying pip's own sources)"; \
	                       $(PIP) install -q "$(TORCH)"; }; \
	fi
	@echo "installing dream3d and its dependencies"
	@$(PIP) install -q -e '.[dev]'
	@touch $@

.cache/node/node_modules/gltf-validator/package.json:
	@echo "installing the Khronos glTF validator (npm)"
	@npm install --silent --prefix .cache/node gltf-validator@2.0.0-dev.3.10

# the web-app and batch tests: gradio (the [app] extra), Ray (the [distributed] extra), Playwright for Python (PyPI)
# and Debian's Chromium without its recommended packages (as root; elsewhere the browser tests skip with a reason).
# Every package already installed keeps at least its version ($(CACHE)/keep-versions.txt: no downgrade).
$(CACHE)/app-test-deps: pyproject.toml $(BIN)/dream3d
	@echo "installing the test tools (gradio, ray, playwright)"
	@$(BIN)/python -m pip list --format=freeze 2>/dev/null | grep -v -i '^dream3d==' | sed -e 's/==/>=/' -e 's/+.*$$//' \
	  >$(CACHE)/keep-versions.txt
	@$(PIP) install -q -c $(CACHE)/keep-versions.txt -e '.[app,distributed]' 'playwright>=1.45,<2'
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing chromium (apt-get)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium; } >>$(LOG) 2>&1 || { cat $(LOG); exit 1; }; \
	  else echo "note: /usr/bin/chromium missing (as root: apt-get install --no-install-recommends chromium); browser tests will skip"; fi; \
	fi
	@touch $@

.PHONY: install run test test-quick
install: $(BIN)/dream3d

run: $(BIN)/dream3d
	$(BIN)/dream3d generate --config gaussian "$(PROMPT)"

test: $(BIN)/dream3d .cache/node/node_modules/gltf-validator/package.json $(CACHE)/app-test-deps
	$(BIN)/python -m pytest -q

# the edit-test loop: everything but the tests marked slow (see README, Tests)
test-quick: $(BIN)/dream3d
	$(BIN)/python -m pytest -q -m "not slow"
