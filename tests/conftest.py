"""Shared fixtures: the vSphere lab and the object store (docs/lab.md), each started once
per test session.

Generic on purpose: mover's own tests use `lab` and `unique_name` as well.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mover_lab import Lab, ObjectStore, ObjectStoreError

#: The lab's configuration as it starts; the `lab` fixture restores it after every test.
LAB_DEFAULT_CONFIG: dict[str, Any] = {
    "maxAreasPerReply": 2000,
    "granularity": 65536,
    "snapshotDigests": False,
    "folderConnectionBps": 0,
    "folderTotalBps": 0,
    "folderMaxRequests": 0,
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


@pytest.fixture(scope="session")
def objectstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """The lab's object store (Ceph RGW, ``scripts/objectstore``) for the whole session,
    with two gateways on its one cluster (two sites or machines). If it cannot start, tests
    that use it fail with the reason under ``CI=true`` and are skipped with it elsewhere."""
    try:
        server = ObjectStore.start(tmp_path_factory.mktemp("objectstore"), gateways=2)
    except ObjectStoreError as exc:
        reason = f"the lab's object store could not start: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.stop()


def point_aws_sdk_at(patch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    """Set the AWS SDK's variables to ``environment`` (``ObjectStore.environment()``), with
    no profile or config file of this machine in the way."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3",
                 "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_CONFIG_FILE", os.devnull)
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name, value in environment.items():
        patch.setenv(name, value)


@pytest.fixture
def aws_sdk_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """aws_sdk_env({"AWS_ENDPOINT_URL": ..., ...}) sets the AWS SDK's variables for this
    test (and nothing of this machine's AWS configuration)."""
    return lambda environment: point_aws_sdk_at(monkeypatch, environment)


@pytest.fixture
def s3_env(objectstore: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    """AWS_* variables name the lab's object store for this test (as an operator sets
    them for mover)."""
    point_aws_sdk_at(monkeypatch, objectstore.environment())
    return objectstore


@pytest.fixture(scope="session")
def s3_client(objectstore: ObjectStore) -> Any:
    """A client made the way mover makes one: from the AWS_* variables."""
    from mover.repo.s3store import client_from_environment

    with pytest.MonkeyPatch.context() as patch:
        point_aws_sdk_at(patch, objectstore.environment())
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
