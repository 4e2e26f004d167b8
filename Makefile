# The two set-up commands of the README, and what they need.
#   make run   — the main job: the pr harness on this host (embedded coordinator + local agent)
#   make test  — every test (TensorFlow tests included)
# libtensorflow comes from the tensorflow-cpu wheel on PyPI, into a cache folder outside git.

CACHE ?= $(or $(FLEETGATE_CACHE_DIR),$(HOME)/.cache/fleetgate)
TENSORFLOW_DIR ?= $(CACHE)/tensorflow-2.21.0
export TENSORFLOW_DIR
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run test tensorflow

tensorflow:
	deploy/tensorflow/fetch-libtensorflow.sh "$(TENSORFLOW_DIR)"

run: tensorflow
	cargo run --release --locked -p fleetgate-coordinator --bin fleetgate -- run --profile pr

test: tensorflow
	cargo test --workspace --locked
