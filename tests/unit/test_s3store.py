"""What the S3 store adds to the Store contract (tests/unit/test_store.py runs that on RGW).

Against the lab's RGW: list paging, multipart objects, the HEAD-then-PUT fallback, a missing
bucket, refused credentials. With botocore's Stubber (answers RGW cannot be made to give on
demand, said so): clock skew, access denied, SlowDown after the retries, a PUT retried into
its own earlier attempt, a wrong Content-Range, a server that ignores Range.
"""

from __future__ import annotations

import datetime
import hashlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from mover.errors import ObjectMissing, RepositoryError
from mover.repo.s3store import S3Store, client_from_environment
from mover.repo.s3url import S3Location, parse_s3_url
from mover_lab import ObjectStore

# -- the URL ----------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "bucket", "prefix"), [
    ("s3://backups", "backups", ""),
    ("s3://backups/", "backups", ""),
    ("s3://backups/site-a/mover", "backups", "site-a/mover"),
    ("s3://my.bucket-1/p/", "my.bucket-1", "p"),
], ids=["bucket-only", "trailing-slash", "nested-prefix", "dotted-bucket"])
def test_parse_s3_url(url: str, bucket: str, prefix: str) -> None:
    location = parse_s3_url(url)
    assert location == S3Location(bucket, prefix)
    assert location.key("config.json") == (f"{prefix}/config.json" if prefix else "config.json")


@pytest.mark.parametrize(("url", "why"), [
    ("/srv/repo", "not an s3:// URL"),
    ("s3://Backups/x", "not a valid bucket name"),
    ("s3://ab/x", "not a valid bucket name"),
    ("s3://10.0.0.1/x", "not a valid bucket name"),
    ("s3://key:secret@bucket/x", "endpoint and credentials come from AWS_ENDPOINT_URL"),
    ("s3://bucket/a//b", "must be name components"),
    ("s3://bucket/../b", "must be name components"),
], ids=["path", "upper-case", "too-short", "address", "credentials", "empty-part", "dotdot"])
def test_parse_s3_url_refuses(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_s3_url(url)


# -- against RGW ------------------------------------------------------------------------


def test_list_pages_and_prefix_isolation(make_s3_store: Callable[..., S3Store]) -> None:
    store = make_s3_store(page_size=2)
    neighbour = S3Store(store.location.bucket, store.location.prefix + "x", store.client)
    neighbour.put("index/zz", b"not mine")      # shares the key prefix as a string
    names = [f"index/{i:02d}" for i in range(7)]
    for name in reversed(names):
        store.put(name, b"x")
    store.put("packs/ab/p", b"y")
    assert list(store.list("index/")) == names
    assert list(store.list("")) == [*names, "packs/ab/p"]


def test_multipart_object(make_s3_store: Callable[..., S3Store]) -> None:
    store = make_s3_store(multipart_threshold=6 << 20, part_size=5 << 20)
    data = os.urandom(11 << 20 | 12345)          # three parts, the last one short
    assert store.put("backups/vm/b/disk-2000.idx", data) is True
    assert store.put("backups/vm/b/disk-2000.idx", b"other" * (2 << 20)) is False
    assert store.get("backups/vm/b/disk-2000.idx") == data
    across = (5 << 20) - 100                   # a range across the first part boundary
    assert store.get("backups/vm/b/disk-2000.idx", across, 200) == data[across:across + 200]
    stat = store.stat("backups/vm/b/disk-2000.idx")
    assert stat is not None and stat.size == len(data)
    replacement = os.urandom(7 << 20)
    assert store.put("backups/vm/b/disk-2000.idx", replacement, replace=True) is True
    assert store.get("backups/vm/b/disk-2000.idx") == replacement
    uploads = store.client.list_multipart_uploads(Bucket=store.location.bucket,
                                                  Prefix=store.location.prefix)
    assert uploads.get("Uploads", []) == []     # the refused upload was never started


def test_delete_many_in_batches(make_s3_store: Callable[..., S3Store],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """(The contract suite on main has test_delete_many; this adds batches on RGW.)"""
    monkeypatch.setattr("mover.repo.s3store.DELETE_BATCH", 3)
    store = make_s3_store()
    names = [f"backups/vm/b1/journal-1/{i:010d}" for i in range(7)]
    for name in [*names, "backups/vm/b2/a"]:
        store.put(name, b"x")
    store.delete_many([*names, "backups/vm/b1/gone"])
    assert list(store.list("")) == ["backups/vm/b2/a"]
    store.delete_many([])


def test_unconditional_fallback(make_s3_store: Callable[..., S3Store]) -> None:
    store = make_s3_store(conditional=False)
    assert store.put("config.json", b"first") is True
    assert store.put("config.json", b"second") is False
    assert store.get("config.json") == b"first"


def test_missing_object_names_bucket_and_key(make_s3_store: Callable[..., S3Store]) -> None:
    store = make_s3_store()
    key = f"{store.location.prefix}/packs/ab/gone"
    with pytest.raises(ObjectMissing, match=f"s3://mover-tests/{key} does not exist"):
        store.get("packs/ab/gone")
    with pytest.raises(ObjectMissing):
        store.get("packs/ab/gone", 0, 0)
    with pytest.raises(ObjectMissing):
        store.get("packs/ab/gone", 5, 10)


def test_missing_bucket(s3_client: Any) -> None:
    store = S3Store("mover-no-such-bucket", "p", s3_client)
    with pytest.raises(RepositoryError, match=r"bucket 'mover-no-such-bucket' does not exist"
                                              r".*check the bucket name"):
        store.check_bucket()
    with pytest.raises(RepositoryError, match="'mover-no-such-bucket' does not exist"):
        store.get("config.json")


def test_created_bucket(s3_client: Any) -> None:
    name = f"mover-created-{os.getpid()}"
    store = S3Store(name, "", s3_client)
    store.check_bucket(create=True)
    store.check_bucket(create=True)                 # exists now: fine
    store.put("config.json", b"{}")
    store.delete("config.json")
    s3_client.delete_bucket(Bucket=name)


def test_refused_credentials_name_the_fix_not_the_secret(objectstore: ObjectStore) -> None:
    secret = "wrong-secret-" + "s" * 20
    client = boto3.client("s3", endpoint_url=objectstore.endpoint, region_name="us-east-1",
                          aws_access_key_id=objectstore.access_key,
                          aws_secret_access_key=secret,
                          config=Config(s3={"addressing_style": "path"},
                                        retries={"max_attempts": 1}))
    store = S3Store("mover-tests", "p", client)
    with pytest.raises(RepositoryError, match=r"refuses the credentials.*AWS_ACCESS_KEY_ID") \
            as caught:
        store.put("config.json", b"x")
    assert secret not in str(caught.value)


# -- stubbed answers --------------------------------------------------------------------


@pytest.fixture
def stubbed() -> Iterator[tuple[S3Store, Stubber]]:
    client = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                          aws_access_key_id="AKIDTEST", aws_secret_access_key="not-a-secret",
                          config=Config(s3={"addressing_style": "path"}))
    with Stubber(client) as stubber:
        yield S3Store("bkt", "repo", client), stubber
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize(("code", "status", "message"), [
    ("RequestTimeTooSkewed", 403, "clock differs.*fix the time"),
    ("AccessDenied", 403, "access denied.*bucket policy.*s3:PutObject.*'bkt'.*'repo'"),
    ("SlowDown", 503, "answered SlowDown \\(HTTP 503\\) after 6 attempts.*try later"),
    ("NoSuchBucket", 404, "bucket 'bkt' does not exist"),
    ("InternalError", 500, "after 6 attempts"),
], ids=["clock-skew", "access-denied", "slow-down", "no-such-bucket", "internal-error"])
def test_errors_name_bucket_key_and_fix(stubbed: tuple[S3Store, Stubber], code: str,
                                        status: int, message: str) -> None:
    store, stubber = stubbed
    stubber.add_client_error("put_object", code, http_status_code=status,
                             response_meta={"RetryAttempts": 5})
    with pytest.raises(RepositoryError, match=message) as caught:
        store.put("packs/ab/x", b"data")
    if code != "NoSuchBucket":
        assert "s3://bkt/repo/packs/ab/x" in str(caught.value)


def test_retried_put_that_had_landed_is_ours(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    data = b"our record"
    md5 = hashlib.md5(data).hexdigest()
    stubber.add_client_error("put_object", "PreconditionFailed", http_status_code=412,
                             response_meta={"RetryAttempts": 1})
    stubber.add_response("head_object", {"ContentLength": len(data), "ETag": f'"{md5}"'})
    assert store.put("backups/vm/b/backup.json", data) is True
    # Not retried: someone else's object, whatever it holds.
    stubber.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
    assert store.put("backups/vm/b/backup.json", data) is False
    # Retried, but the object is another writer's.
    stubber.add_client_error("put_object", "PreconditionFailed", http_status_code=412,
                             response_meta={"RetryAttempts": 2})
    stubber.add_response("head_object", {"ContentLength": 3, "ETag": '"0123"'})
    assert store.put("backups/vm/b/backup.json", data) is False


def test_conditional_conflict_is_asked_again(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed      # AWS answers 409 while another conditional PUT is running
    stubber.add_client_error("put_object", "ConditionalRequestConflict", http_status_code=409)
    stubber.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
    assert store.put("config.json", b"x") is False
    stubber.add_client_error("put_object", "ConditionalRequestConflict", http_status_code=409)
    stubber.add_response("put_object", {})
    assert store.put("config.json", b"x") is True


def test_delete_many_failures_and_fallback(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_response("delete_objects", {"Errors": [
        {"Key": "repo/index/a", "Code": "AccessDenied", "Message": "no"},
        {"Key": "repo/index/b", "Code": "NoSuchKey", "Message": "gone: fine"}]})
    with pytest.raises(RepositoryError, match=r"cannot delete s3://bkt/repo/index/a and 0 "
                                              r"more of 2 .*AccessDenied"):
        store.delete_many(["index/a", "index/b"])
    stubber.add_client_error("delete_objects", "NotImplemented", http_status_code=501)
    stubber.add_response("delete_object", {}, {"Bucket": "bkt", "Key": "repo/index/a"})
    stubber.add_response("delete_object", {}, {"Bucket": "bkt", "Key": "repo/index/b"})
    store.delete_many(["index/a", "index/b"])


def _body(data: bytes) -> Any:
    from io import BytesIO

    from botocore.response import StreamingBody
    return StreamingBody(BytesIO(data), len(data))


def test_wrong_content_range_is_refused(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_response("get_object", {"Body": _body(b"0123"), "ContentRange": "bytes 0-3/10",
                                        "ResponseMetadata": {"HTTPStatusCode": 206}})
    with pytest.raises(RepositoryError, match=r"Content-Range 'bytes 0-3/10'.*mangles"):
        store.get("o", 4, 4)
    stubber.add_response("get_object", {"Body": _body(b"45"), "ContentRange": "bytes 4-5/10",
                                        "ResponseMetadata": {"HTTPStatusCode": 206}})
    with pytest.raises(RepositoryError, match="mangles"):   # short, but not at the end
        store.get("o", 4, 4)


def test_ignored_range_is_cut_here(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_response("get_object", {"Body": _body(b"0123456789"),
                                        "ResponseMetadata": {"HTTPStatusCode": 200}})
    assert store.get("o", 3, 4) == b"3456"


def test_stat_reads_size_and_mtime(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    when = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
    stubber.add_response("head_object", {"ContentLength": 42, "LastModified": when})
    stat = store.stat("index/i")
    assert stat is not None and (stat.size, stat.mtime) == (42, when.timestamp())


# -- retries, bounds, an unreachable store ----------------------------------------------


class _Flaky(BaseHTTPRequestHandler):
    """A stand-in S3 endpoint that answers ``503 SlowDown`` to the first ``fail`` PUTs
    (RGW cannot be made to throttle on demand)."""

    protocol_version = "HTTP/1.1"   # answers botocore's "Expect: 100-continue" at once
    fail = 2
    puts = 0

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).puts += 1
        if type(self).puts <= type(self).fail:
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate."\
                   b"</Message></Error>"
            self.send_response(503)
        else:
            body = b""
            self.send_response(200)
            self.send_header("ETag", '"0"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_slow_down_is_retried_with_backoff(
        aws_sdk_env: Callable[[dict[str, str]], None]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        aws_sdk_env({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}",
                     "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "x",
                     "AWS_REGION": "us-east-1"})
        store = S3Store("bkt", "repo", client_from_environment())
        _Flaky.puts, _Flaky.fail = 0, 2
        assert store.put("packs/ab/x", b"data") is True
        assert _Flaky.puts == 3
        store = S3Store("bkt", "repo", client_from_environment(max_attempts=2))
        _Flaky.puts, _Flaky.fail = 0, 100                 # more than the retries allow
        with pytest.raises(RepositoryError, match=r"SlowDown \(HTTP 503\) after 2 attempts"):
            store.put("packs/ab/y", b"data")
        assert _Flaky.puts == 2
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_store_names_endpoint_and_fix() -> None:
    client = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                          aws_access_key_id="AKIDTEST", aws_secret_access_key="x",
                          config=Config(retries={"mode": "standard", "max_attempts": 1},
                                        s3={"addressing_style": "path"}))
    store = S3Store("bkt", "repo", client)
    with pytest.raises(RepositoryError, match=r"s3://bkt/repo/config.json: the object store "
                                              r"at http://127.0.0.1:9 cannot be reached"
                                              r".*AWS_ENDPOINT_URL"):
        store.get("config.json")


class _CountingClient:
    """Counts how many requests are in flight at once."""

    def __init__(self) -> None:
        self.meta = type("Meta", (), {"endpoint_url": "http://test"})()
        self.now = self.most = 0
        self.lock = threading.Lock()

    def put_object(self, **_: Any) -> dict[str, Any]:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.01)
        with self.lock:
            self.now -= 1
        return {}


def test_requests_in_flight_are_bounded() -> None:
    client = _CountingClient()
    store = S3Store("bkt", "", client, max_requests=3)
    with ThreadPoolExecutor(12) as pool:
        assert all(pool.map(lambda i: store.put(f"index/{i}", b"x"), range(48)))
    assert client.most == 3


def test_unknown_profile_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_PROFILE", "mover-no-such-profile")
    with pytest.raises(RepositoryError, match=r"mover-no-such-profile.*check AWS_PROFILE"):
        S3Store.from_url("s3://bkt/repo")


def _create_many_s3(bucket: str, prefix: str, barrier: Any, results: Any) -> None:
    store = S3Store(bucket, prefix, client_from_environment())   # one client per process
    barrier.wait()
    results.put([store.put(f"index/{i:03d}", str(i).encode() * 100) for i in range(20)])


def test_concurrent_creates_across_processes_on_rgw(
        s3_env: ObjectStore, make_s3_store: Callable[..., S3Store]) -> None:
    store = make_s3_store()
    ctx = multiprocessing.get_context("spawn")   # a fresh interpreter: no inherited pools
    workers = 4
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_create_many_s3,
                         args=(store.location.bucket, store.location.prefix, barrier, queue))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    for i in range(20):          # every object was created by exactly one process
        assert sum(r[i] for r in results) == 1
    assert len(list(store.list("index/"))) == 20


def test_two_gateways_one_store(objectstore: ObjectStore,
                                make_s3_store: Callable[..., S3Store]) -> None:
    """Writers behind different gateways of one cluster (two sites) see each other's
    objects and race on conditional creates with exactly one winner."""
    here = make_s3_store()
    client = boto3.client("s3", endpoint_url=objectstore.endpoints[1], region_name="us-east-1",
                          aws_access_key_id=objectstore.access_key,
                          aws_secret_access_key=objectstore.secret_key,
                          config=Config(s3={"addressing_style": "path"}))
    there = S3Store(here.location.bucket, here.location.prefix, client)
    assert here.endpoint != there.endpoint
    here.put("config.json", b"from a")
    assert there.get("config.json") == b"from a"
    assert there.put("config.json", b"from b") is False
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: (here, there)[i % 2].put(f"index/{i // 2}", b"x"),
                            range(32)))
    assert [won[2 * n] + won[2 * n + 1] for n in range(16)] == [1] * 16
