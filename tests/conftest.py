"""Shared fixtures: the vSphere lab and the object store (docs/lab.md), each started once
per test session.

Generic on purpose: mover's own tests use `lab` and `unique_name` as well.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mover_lab import Lab

#: The lab's configuration as it starts; the `lab` fixture restores it after every test.
LAB_DEFAULT_CONFIG: dict[str, Any] = {
    "maxAreasPerReply": 2000,
    "granularity": 65536,
    "snapshotDigests": False,
}


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for the whole session (starting vcsim takes a moment)."""
    server = Lab.start(tmp_path_factory.mktemp("lab"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def lab(lab_server: Lab) -> Iterator[Lab]:
    """The session's lab with no faults, default configuration and zeroed counters."""
    lab_server.clear_faults()
    lab_server.configure(**LAB_DEFAULT_CONFIG)
    lab_server.reset_counters()
    yield lab_server
    lab_server.clear_faults()
    lab_server.configure(**LAB_DEFAULT_CONFIG)


_names = itertools.count(1)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """unique_name("vm") -> a VM name no other test in this session (or xdist worker) uses."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "w")
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:32].strip("-")

    def make(prefix: str = "vm") -> str:
        return f"{prefix}-{base}-{worker}-{next(_names)}"

    return make


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def objectstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The lab's object store (Ceph RGW, ``scripts/objectstore``) for the whole session: its
    JSON (endpoint, access_key, secret_key, pid, dir). If it cannot start, tests that use it
    fail with the reason under ``CI=true`` and are skipped with the reason elsewhere."""
    directory = tmp_path_factory.mktemp("objectstore")
    script = str(ROOT / "scripts" / "objectstore")
    try:
        proc = subprocess.run([script, "start", "--dir", str(directory)], capture_output=True,
                              text=True, timeout=600, stdin=subprocess.DEVNULL)
        (directory / "start.err").write_text(proc.stderr)
        # The script's own verdict is its last "objectstore:" line; the daemons' logs follow.
        verdicts = [line for line in proc.stderr.splitlines() if line.startswith("objectstore:")]
        failure = None if proc.returncode == 0 else \
            f"exit {proc.returncode}: {verdicts[-1] if verdicts else ''} (all of it: " \
            f"{directory / 'start.err'})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = str(exc)
    if failure is not None:
        reason = f"scripts/objectstore start could not start the object store: {failure}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield json.loads(proc.stdout)
    finally:
        subprocess.run([script, "stop", "--dir", str(directory)], capture_output=True,
                       timeout=120, stdin=subprocess.DEVNULL)


def point_aws_sdk_at(patch: pytest.MonkeyPatch, objectstore: dict[str, Any]) -> None:
    """Set the AWS SDK's variables to the lab's object store, with no profile or config
    file of this machine in the way."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3",
                 "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_CONFIG_FILE", os.devnull)
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    patch.setenv("AWS_ENDPOINT_URL", objectstore["endpoint"])
    patch.setenv("AWS_ACCESS_KEY_ID", objectstore["access_key"])
    patch.setenv("AWS_SECRET_ACCESS_KEY", objectstore["secret_key"])
    patch.setenv("AWS_REGION", "us-east-1")


@pytest.fixture
def aws_sdk_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, Any]], None]:
    """aws_sdk_env({"endpoint": ..., "access_key": ..., "secret_key": ...}) points the AWS
    SDK's variables at that endpoint for this test."""
    return lambda server: point_aws_sdk_at(monkeypatch, server)


@pytest.fixture
def s3_env(objectstore: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """AWS_* variables name the lab's object store for this test (as an operator sets
    them for mover); returns the object store's JSON."""
    point_aws_sdk_at(monkeypatch, objectstore)
    return objectstore


@pytest.fixture(scope="session")
def s3_client(objectstore: dict[str, Any]) -> Any:
    """A client made the way mover makes one: from the AWS_* variables."""
    from mover.repo.s3store import client_from_environment

    with pytest.MonkeyPatch.context() as patch:
        point_aws_sdk_at(patch, objectstore)
        return client_from_environment()


S3_TEST_BUCKET = "mover-tests"


@pytest.fixture(scope="session")
def s3_bucket(s3_client: Any) -> str:
    from mover.repo.s3store import S3Store

    S3Store(S3_TEST_BUCKET, "", s3_client).check_bucket(create=True)
    return S3_TEST_BUCKET


_prefixes = itertools.count(1)


@pytest.fixture
def make_s3_store(s3_client: Any, s3_bucket: str,
                  request: pytest.FixtureRequest) -> Callable[..., Any]:
    """make_s3_store(**options) -> an S3Store on the lab's RGW under a prefix no other
    store of this session uses (so every test starts with an empty store)."""
    from mover.repo.s3store import S3Store

    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")

    def make(**options: Any) -> Any:
        prefix = f"{base}-{os.getpid()}-{next(_prefixes)}"
        return S3Store(s3_bucket, prefix, s3_client, **options)

    return make
