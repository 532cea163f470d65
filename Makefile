# The two commands of the README: `make run` and `make test`. Everything else is set up here:
# a virtual environment with the pinned Python dependencies, and the engine jar (Maven wrapper).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080
INSTANCES ?= 20
# The bundled engine: camunda (Camunda 7.24.0) or operaton (Operaton 1.0.3, derived from the same
# engine/ sources); make run ENGINE=operaton.
ENGINE ?= camunda

.PHONY: run stop status test check lint format engine install clean docs lint-deploy compat

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

engine: $(STAMP)
	$(BIN)/python -c "from camunda_relay.bundled_engine import EngineFlavour, ensure_built; \
	print(ensure_built(progress=print, flavour=EngineFlavour.parse('$(ENGINE)')))"

run: engine
	CAMUNDA_URL=http://localhost:$(PORT)/engine-rest $(BIN)/camunda-relay demo --engine $(ENGINE) \
	    --instances $(INSTANCES)

stop: $(STAMP)
	$(BIN)/camunda-relay engine down

status: $(STAMP)
	$(BIN)/camunda-relay engine status

check: $(STAMP)
	$(BIN)/ruff check src tests harness docs bench
	$(BIN)/ruff format --check src tests harness docs bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests harness docs bench
	$(BIN)/ruff check --fix src tests harness docs bench

# The documentation (mkdocs.yml) into site/, warnings as errors: a renamed function, option or
# page fails the build. Not --quiet: mkdocs 1.6 then drops the warnings that --strict counts.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# tests/packaging builds the sdist and the wheel, installs the wheel into a fresh virtual
# environment and runs the README's commands from there (its own engine build: a minute or
# two); PYTEST_ARGS="-m 'not packaging'" leaves it out.
test: check lint-deploy docs engine
	$(BIN)/pytest $(PYTEST_ARGS)

# The deployment files: the Containerfiles (hadolint) and the Kubernetes manifests (their
# schemas, offline, unknown fields refused); tests/unit/test_deploy_files.py checks the
# variables they set against the settings.
MANIFESTS := $(filter-out %/kustomization.yaml,$(wildcard deploy/kubernetes/*.yaml))
lint-deploy: $(STAMP)
	$(BIN)/hadolint --config deploy/containers/hadolint.yaml deploy/containers/*.Containerfile
	$(BIN)/kubernetes-validate --strict --quiet $(MANIFESTS)

# The images (deploy/containers): docker where its daemon answers, podman otherwise
# (CONTAINER_ENGINE=... to choose), tagged with the package's version.
.PHONY: images e2e-containers
images: $(STAMP)
	$(BIN)/python -c "from harness.containers import main; raise SystemExit(main(['--build-only']))"

# The seed flow through the images: PostgreSQL, two engine containers, two worker containers,
# one of each killed mid-run, every instance checked in the history; about 3 minutes with the
# base image made and the build caches warm. .ci/run runs it after make test.
# E2E_ARGS="--instances 200 --no-build".
e2e-containers: $(STAMP)
	$(BIN)/python -m harness.containers $(E2E_ARGS)

# Tracing in a real Jaeger (v1.75.0, built once from the Go module proxy into build/e2e-tracing/,
# never committed): one trace per instance from the starter's span through the worker's spans to
# the next worker downstream, read back from Jaeger's query API, and a screenshot of one trace's
# page (Chromium: apt-get install -y chromium) in build/e2e-tracing/trace.png. A binary built from
# the Go module has no UI assets (Jaeger's placeholder page is shot then);
# E2E_TRACING_ARGS="--ui-assets DIR" serves a jaeger-ui build (a clone of jaeger-ui at v1.75.0,
# npm ci, npm run build: DIR is its packages/jaeger-ui/build). About 3 minutes once Jaeger is built.
# E2E_TRACING_ARGS="--instances 20".
.PHONY: e2e-tracing
e2e-tracing: engine
	$(BIN)/python -m harness.e2e_tracing $(E2E_TRACING_ARGS)

# Compatibility (tests/compat.py): the engine-backed tests on Camunda 7.24.0, 7.23.0, 7.22.0,
# 7.21.0 and Operaton 1.0.3, the unit and fake-engine tests on Python 3.11, 3.12 and 3.13 (from
# the PATH or pyenv), then one table (also in build/compat/results.md). About an hour.
# COMPAT_ARGS="--engines operaton --pythons none --smoke" is .ci/run's Operaton run.
compat: $(STAMP)
	$(BIN)/python -m tests.compat $(COMPAT_ARGS)

# The fault-injection suite against the real engine (S1-S28); FAULTS_ARGS="--scenario S5 --seed 7".
.PHONY: faults
faults: engine
	$(BIN)/python -m harness.run $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) engine/target .pytest_cache .mypy_cache .ruff_cache site build dist

# Benchmarks (docs/benchmarks.md), each a ratio to the ideal raw-REST driver of the same run:
# H2 (every contender, then the scale run with 10,000 jobs for the ideal driver and
# camunda-relay), PostgreSQL (its contenders, then 1, 2 and 3 worker processes on one
# PostgreSQL journal), 100,000 pending jobs in one worker, then the goals of all three in one
# table. About an hour and a half; each part alone: make bench-h2, bench-postgres, bench-large.
# Options: INSTANCES=1000 SCALE_JOBS=10000 LARGE_JOBS=100000 BENCH_ARGS="..." (python -m bench.run).
.PHONY: bench bench-h2 bench-postgres bench-large bench-tracing
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) bench/requirements.lock
	$(BIN)/pip install --quiet -r bench/requirements.lock
	touch $(BENCH_STAMP)

bench bench-h2 bench-postgres: INSTANCES = 1000
SCALE_JOBS ?= 10000
LARGE_JOBS ?= 100000
bench: bench-h2 bench-postgres bench-large bench-tracing
	$(BIN)/python -m bench.report --summary

bench-h2: $(BENCH_STAMP) engine
	$(BIN)/python -m bench.run --instances $(INSTANCES) --db h2 --scale-jobs $(SCALE_JOBS) \
	    $(BENCH_ARGS)

bench-postgres: $(BENCH_STAMP) engine
	$(BIN)/python -m bench.run --instances $(INSTANCES) --db postgres --no-scale $(BENCH_ARGS)

# The worker's CPU per reply job with tracing on (OTLP/HTTP to a sink) vs off, alternating in one
# run (docs/benchmarks.md, "Tracing"); TRACING_ARGS="--before build/before/src" adds the code of
# another commit (git archive REV src | tar -x -C build/before) with tracing off. About 10 minutes.
TRACING_ARGS ?= --instances 300 --rounds 3
bench-tracing: $(STAMP) engine
	$(BIN)/python -m bench.tracing_cost $(TRACING_ARGS)

bench-large: $(BENCH_STAMP) engine
	$(BIN)/python -m bench.run --only none --scale-kinds relay --scale-jobs $(LARGE_JOBS) \
	    --block scale-large $(BENCH_ARGS)

# Pickup latency with two bundled engines on one PostgreSQL database: a worker with one URL
# (node 1) vs every node (docs/benchmarks.md, "An engine cluster"); about 3 minutes.
# The HTTP client stacks (httpx, httpx2, httpx-aiohttp, aiohttp, the raw client) against the
# bundled engine: CPU per request (docs/benchmarks.md, "The HTTP stack"); about 5 minutes.
.PHONY: bench-http
bench-http: $(BENCH_STAMP) engine
	$(BIN)/pip install --quiet httpx2==2.16.2 httpx-aiohttp==0.2.0 aiohttp==3.14.5
	$(BIN)/python -m bench.http_stacks $(BENCH_ARGS)

.PHONY: bench-cluster
bench-cluster: $(STAMP) engine
	$(BIN)/python -m bench.cluster $(BENCH_ARGS)

# The worker's HTTP server under abuse (harness/abuse.py): 1,000 slow connections and 1,000
# requests with a wrong secret against a worker draining a batch on the bundled engine; prints
# the drain, the /healthz latency, the worker's threads and memory, and the log's size. Not in
# make test (it measures, it asserts nothing timed); about two minutes. ABUSE_ARGS="--src DIR"
# runs the worker from another checkout's src.
.PHONY: abuse
abuse: engine
	$(BIN)/python -m harness.abuse $(ABUSE_ARGS)
