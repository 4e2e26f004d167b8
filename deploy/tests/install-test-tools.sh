#!/usr/bin/env bash
# Installs the real consumers that the tests feed fleetgate's outputs to:
#   - Debian packages: chromium (headless browser for the HTML report), libxml2-utils (xmllint),
#     docker-compose (`docker-compose config` on the compose fleet);
#   - PyPI packages from deploy/tests/requirements.txt into a virtual environment at $1
#     (schema, Markdown, metrics and health clients, manifest validators).
# Idempotent: a venv whose requirements stamp matches is kept; packages present are not
# reinstalled. Usage: install-test-tools.sh VENV_DIR
set -euo pipefail
venv="${1:?usage: install-test-tools.sh VENV_DIR}"
here="$(cd "$(dirname "$0")" && pwd)"
requirements="$here/requirements.txt"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v xmllint >/dev/null 2>&1 || missing+=(libxml2-utils)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "install-test-tools: installing ${missing[*]} from Debian" >&2
    $sudo apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
fi

# kubectl renders the Kubernetes overlays (`kubectl kustomize`) for the manifest tests and
# checkov's kustomize scan. It comes with the machine; Debian bookworm's kubernetes-client
# (1.20, kustomize v2) is too old for the overlays, so it is only checked here.
if ! kubectl kustomize --help >/dev/null 2>&1; then
    echo "install-test-tools: kubectl (with kustomize v4 or later) is not on the PATH: the deploy_validators tests will fail" >&2
fi

stamp="$venv/.requirements"
if [ -f "$stamp" ] && cmp -s "$stamp" "$requirements"; then
    exit 0
fi
echo "install-test-tools: creating $venv from $requirements" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2
cp "$requirements" "$stamp"
