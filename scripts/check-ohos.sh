#!/usr/bin/env bash
# Builds and checks, without the OpenHarmony NDK, the C ABI library for the ohos targets:
# libreceipt_ffi.{a,so} (and the rlibs under it) for aarch64-unknown-linux-ohos (devices) and
# x86_64-unknown-linux-ohos (emulator), linked against Debian's musl; the .so must carry its
# SONAME and need only libc, and a C program built for the target loads it and calls it.
# No tests: scripts/test-ohos.sh runs them (this is its --build-only mode).
#
#   scripts/check-ohos.sh [target...]      default: both targets
exec "$(dirname "${BASH_SOURCE[0]}")/test-ohos.sh" --build-only "$@"
