#!/usr/bin/env bash
# Runs every test chatstream has: formatting, clippy, then the whole
# workspace's tests (unit, backend conformance suites, and end-to-end tests
# that start the real binary). Needs only cargo; whatever service a test
# needs is started here.
set -euo pipefail
cd "$(dirname "$0")/.."


step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
    # nextest does not run doctests.
    cargo test --workspace --locked --doc
else
    echo "cargo-nextest not installed; using cargo test"
    cargo test --workspace --locked --no-fail-fast "$@"
fi
