# The two set-up commands of the README, and what they need.
#   make run   — the main job: the pr harness on this host (embedded coordinator + local agent)
#   make test  — every test (TensorFlow tests included, outputs checked by real consumers)
# libtensorflow comes from the tensorflow-cpu wheel on PyPI, into a cache folder outside git.

CACHE ?= $(or $(FLEETGATE_CACHE_DIR),$(HOME)/.cache/fleetgate)
TENSORFLOW_DIR ?= $(CACHE)/tensorflow-2.21.0
export TENSORFLOW_DIR
export TF_CPP_MIN_LOG_LEVEL ?= 2
# The real consumers the tests check outputs with (browser, validators, metrics and health
# clients): Debian packages plus a Python virtual environment here.
FLEETGATE_TEST_TOOLS ?= $(CACHE)/test-tools
export FLEETGATE_TEST_TOOLS

.PHONY: run test tensorflow test-tools

tensorflow:
	deploy/tensorflow/fetch-libtensorflow.sh "$(TENSORFLOW_DIR)"

test-tools:
	deploy/tests/install-test-tools.sh "$(FLEETGATE_TEST_TOOLS)"

run: tensorflow
	cargo run --release --locked -p fleetgate-coordinator --bin fleetgate -- run --profile pr

test: tensorflow test-tools
	cargo test --workspace --locked
