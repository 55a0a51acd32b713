#!/usr/bin/env bash
# The project's test command (README), and what CI runs through .ci/run.
#
# Steps: install the real peers the tests talk to, check formatting, lint,
# run the doc tests, then every test (unit, integration, binaries) with
# cargo-nextest (cargo test when nextest is missing), schemathesis against
# the running API (scripts/schemathesis.sh), then the ops checks.
# One build profile (debug) serves clippy's check build and the tests: the
# integration tests run the debug binaries cargo builds for them.
#
# Every step runs even when an earlier one failed, so that one run shows
# every problem; the script exits non-zero if any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."

results=()
failed=0

# step NAME COMMAND...: runs COMMAND, records whether it passed and its time.
step() {
  local name=$1
  shift
  local start=$SECONDS
  printf '\n==> %s\n' "$name"
  if "$@"; then
    results+=("ok      $name ($((SECONDS - start))s)")
  else
    results+=("FAILED  $name ($((SECONDS - start))s)")
    failed=1
  fi
}

run_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    # .config/nextest.toml sets the per-test time limits and parallelism.
    cargo nextest run --all-targets --no-fail-fast
  else
    cargo test --all-targets --no-fail-fast
  fi
}

step "install test dependencies" bash scripts/install-test-deps.sh
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --all-targets -- -D warnings
# Doc tests first: the test runner's closing line must be the last one.
step "doc tests" cargo test --doc
step "tests" run_tests
# The API against its OpenAPI document, on the debug binary the tests built.
step "schemathesis" bash scripts/schemathesis.sh

# ops checks
if [[ -f scripts/check-ops.sh ]]; then
  step "ops checks" bash scripts/check-ops.sh
fi

printf '\n==> summary\n'
printf '  %s\n' "${results[@]}"
if ((failed)); then
  printf 'scripts/test.sh: some steps FAILED\n'
  exit 1
fi
printf 'scripts/test.sh: every step ok\n'
