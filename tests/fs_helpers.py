"""Real read-only and full file systems for the tests: a small tmpfs mounted for the test (root with
CAP_SYS_ADMIN, as in CI and on the development machines), or permission bits for a user that is not root."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest


def conformance(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "conformance", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@contextlib.contextmanager
def tmpfs(path, size: str, read_only: bool = False):
    """Mount a tmpfs of `size` at path (created) for the block; skipped where this user cannot mount."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"needs permission to mount a tmpfs (root with CAP_SYS_ADMIN): {r.stderr.strip()[:100]}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only(path):
    """path, a folder, made read-only for the block: by mode bits for a user that is not root (root ignores
    them), else by a read-only tmpfs mounted over it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with tmpfs(path, "1m", read_only=True):
        yield path
