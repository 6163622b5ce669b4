"""A ``Store`` in an S3 bucket: object ``NAME`` is key ``PREFIX/NAME`` (``s3://BUCKET/PREFIX``).

Client: ``boto3`` (botocore's thread-safe client over urllib3's connection pool). The
``Store`` protocol is synchronous and the repository calls it from several threads, so a
blocking client is the direct fit; aiobotocore would need a private event-loop thread and a
hand-off per call. Measured against the lab's RGW (8 threads, same run): 1 MiB PUT 55-60 vs
57 MiB/s, GET 126-143 vs 88-97 MiB/s, 16 MiB PUT 104-126 vs 97-126 MiB/s, HEAD 4.5-5.7 vs
6.3-7.4 ms for boto3 vs aiobotocore: no gain to pay the extra thread and lifecycle for.

How the contract is kept:

* **Create if absent**: ``PUT`` with ``If-None-Match: *``; the store answers 412 when the key
  exists (AWS S3 since 2024, Ceph RGW, MinIO). A 412 after botocore *retried* the PUT may be
  our own first attempt, which landed before its reply was lost: then the object's ETag is
  our data's MD5 and we created it. AWS answers 409 ``ConditionalRequestConflict`` while
  another conditional write of the key is in flight: asked again. Objects above
  ``multipart_threshold`` go up in parts; ``CompleteMultipartUpload`` carries
  ``If-None-Match: *`` too, which AWS honours and RGW 16 ignores, so there a ``HEAD``
  before the upload is the check and its race window is the upload's duration: of two
  writers completing one new key then, the last one wins and both get True. Only objects
  larger than any pack go that way (big disk indexes, written once under a backup id of
  their own), so no two writers race on them. ``conditional=False`` is the same
  HEAD-then-PUT fallback for servers that ignore ``If-None-Match`` on PUT.
* **Atomic, durable on return**: a PUT or a completed multipart upload is all or nothing
  and acknowledged only once stored. Every PUT carries ``Content-MD5``, so bytes damaged on
  the way are refused (``BadDigest``) instead of stored.
* **Ranged get**: ``Range: bytes=A-B``; a 206 reply must start at A and be no longer than
  asked (shorter only at the object's end); a 200 (the server ignored Range) is cut here;
  416 means the range starts at or past the end: ``b""``.
* **List**: ``ListObjectsV2``, page by page (``page_size`` keys), in S3's UTF-8 byte order,
  which is the sorted order of mover's ASCII names; keys that are not valid names (a
  console's "folder" marker) are not objects of the repository and are skipped.
* **Delete**: one ``DeleteObject``, or ``DeleteObjects`` batches for ``delete_many``; a
  deletion the store acknowledged is durable (no separate sync, as for a put).
* **Bounded**: at most ``max_requests`` requests of this store in flight (a semaphore; the
  connection pool has as many connections); a multipart upload sends its parts one by one.
* **Retries**: botocore's ``standard`` mode retries 5xx, ``SlowDown`` and other throttling
  answers, timeouts and dropped connections with exponential backoff and jitter; what still
  fails is mapped to ``RepositoryError`` naming the bucket, the key and the fix.

Endpoint, region and credentials only through the AWS SDK's conventions
(``client_from_environment``); nothing here logs a credential.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from mover.errors import ObjectMissing, RepositoryError
from mover.repo.s3url import S3Location, parse_s3_url
from mover.repo.store import Stat, check_name, check_prefix

#: Objects up to this size are one PUT (conditional on every server). Packs are at most
#: 16 MiB (``PACK_TARGET``) plus one chunk, so every pack is one request.
MULTIPART_THRESHOLD = 32 << 20
#: Part size of larger objects: a failed part is retried alone (S3 allows 5 MiB .. 5 GiB).
PART_SIZE = 16 << 20
MAX_REQUESTS = 16
DELETE_BATCH = 1000     # keys per DeleteObjects, S3's limit
CONFLICT_RETRIES = 5    # 409 ConditionalRequestConflict: asked again this many times in all
MAX_ATTEMPTS = 6        # in all, the first included: about 15 s of backoff (30 s at worst)

REQUESTS: Counter[str] = Counter()
"""HTTP requests this process sent to object stores, by S3 operation (``PutObject``, ...),
retries included: what a request-priced store bills (the bench reports requests per GiB)."""
_REQUESTS_GUARD = threading.Lock()

_MISSING = {"NoSuchKey", "NotFound", "404"}
_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                "ExpiredToken", "TokenRefreshRequired"}
_PERMISSIONS = "s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket"


def client_from_environment(max_connections: int = MAX_REQUESTS,
                            max_attempts: int = MAX_ATTEMPTS) -> Any:
    """An S3 client configured only by the AWS SDK's conventions: ``AWS_ENDPOINT_URL``
    (or ``AWS_ENDPOINT_URL_S3``), ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
    ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` (with ``~/.aws/config`` and ``credentials``),
    ``AWS_REGION``/``AWS_DEFAULT_REGION`` and ``AWS_CA_BUNDLE``; botocore reads them."""
    core = botocore.session.get_session()
    try:
        session = boto3.session.Session(botocore_session=core)
        custom_endpoint = bool(os.environ.get("AWS_ENDPOINT_URL_S3")
                               or os.environ.get("AWS_ENDPOINT_URL")
                               or core.get_scoped_config().get("endpoint_url"))
    except BotoCoreError as exc:        # AWS_PROFILE names no profile, a config is broken
        raise RepositoryError(f"cannot configure the S3 client: {exc}; check AWS_PROFILE "
                              "and the AWS config files") from exc
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=max_connections,
        connect_timeout=10,
        read_timeout=120,
        # Plain Content-MD5 (sent by S3Store) instead of aws-chunked trailing checksums,
        # which older S3-compatible servers (RGW 16, older MinIO) refuse.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # Bucket names in the host work only where DNS is set up for it (AWS itself).
        s3={"addressing_style": "path"} if custom_endpoint else {},
    )
    return session.client("s3", region_name=session.region_name or "us-east-1",
                          config=config)


class S3Store:
    """See the module docstring; the ``Store`` protocol says what callers may rely on."""

    def __init__(self, bucket: str, prefix: str, client: Any, *,
                 max_requests: int = MAX_REQUESTS,
                 multipart_threshold: int = MULTIPART_THRESHOLD,
                 part_size: int = PART_SIZE, page_size: int = 1000,
                 conditional: bool = True) -> None:
        prefix = prefix.strip("/")
        self.location = S3Location(bucket, check_name(prefix) if prefix else "")
        self.client = client
        self.endpoint = str(client.meta.endpoint_url)
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.page_size = page_size
        self.conditional = conditional
        self._slots = threading.BoundedSemaphore(max_requests)
        # Once per client, however many stores share it (the unique id deduplicates); a
        # client without botocore's events (a test's stand-in) is not counted.
        events = getattr(client.meta, "events", None)
        if events is not None:
            events.register("before-send.s3", _count_request,
                            unique_id="mover-count-requests")

    @classmethod
    def from_url(cls, url: str, *, create_bucket: bool = False, **options: Any) -> S3Store:
        """The store of ``s3://BUCKET/PREFIX`` through a client from the environment; the
        bucket is checked (and created if missing and ``create_bucket``)."""
        try:
            location = parse_s3_url(url)
        except ValueError as exc:
            raise RepositoryError(str(exc)) from None
        store = cls(location.bucket, location.prefix, client_from_environment(), **options)
        store.check_bucket(create=create_bucket)
        return store

    def describe(self) -> str:
        """``s3://BUCKET/PREFIX``; the store's own errors name the endpoint as well."""
        return str(self.location)

    # -- the protocol ---------------------------------------------------------------------

    def put(self, name: str, data: bytes | bytearray | memoryview, *,
            replace: bool = False) -> bool:
        key = self.location.key(check_name(name))
        body = data if isinstance(data, bytes) else bytes(data)
        if len(body) > self.multipart_threshold:
            return self._put_multipart(key, body, replace)
        if not replace and not self.conditional and self._head(key) is not None:
            return False  # fallback: the race window is this HEAD's to the PUT's end
        md5 = hashlib.md5(body, usedforsecurity=False)
        args: dict[str, Any] = {"Bucket": self.location.bucket, "Key": key, "Body": body,
                                "ContentMD5": base64.b64encode(md5.digest()).decode()}
        if not replace and self.conditional:
            args["IfNoneMatch"] = "*"
        for conflicts in itertools.count(1):
            try:
                with self._slots:
                    self.client.put_object(**args)
                return True
            except ClientError as exc:
                if not replace and _status(exc) == 412:
                    return self._retried_into_ourselves(key, exc, md5.hexdigest())
                if _code(exc) == "ConditionalRequestConflict" and conflicts < CONFLICT_RETRIES:
                    # AWS: another conditional write of this key is in flight; the outcome
                    # of ours is decided once it ends, so ask again (then 412 or 200).
                    time.sleep(0.05 * conflicts)
                    continue
                raise self._error("write", key, exc) from exc
            except BotoCoreError as exc:
                raise self._error("write", key, exc) from exc
        raise AssertionError("unreachable")

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self.location.key(check_name(name))
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"bad range offset={offset} length={length}")
        if length == 0:
            if self._head(key) is None:
                raise self._missing(key)
            return b""
        ranged = offset > 0 or length is not None
        args: dict[str, Any] = {"Bucket": self.location.bucket, "Key": key}
        if ranged:
            end = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{end}"
        try:
            with self._slots:
                reply = self.client.get_object(**args)
                body: bytes = reply["Body"].read()
        except ClientError as exc:
            if _status(exc) == 416:
                return b""  # the object exists and the range starts at or past its end
            raise self._error("read", key, exc) from exc
        except (BotoCoreError, OSError) as exc:
            raise self._error("read", key, exc) from exc
        if not ranged:
            return body
        return self._checked_range(key, offset, length, reply, body)

    def stat(self, name: str) -> Stat | None:
        head = self._head(self.location.key(check_name(name)))
        if head is None:
            return None
        return Stat(int(head["ContentLength"]), head["LastModified"].timestamp())

    def list(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix)
        strip = len(self.location.key(""))
        start = self.location.key(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.location.bucket, Prefix=start,
                                        PaginationConfig={"PageSize": self.page_size}))
        try:
            while True:
                with self._slots:
                    page = next(pages, None)
                if page is None:
                    return
                for item in page.get("Contents", ()):
                    name = item["Key"][strip:]
                    with contextlib.suppress(ValueError):
                        yield check_name(name)
        except (ClientError, BotoCoreError) as exc:
            raise self._error("list", start + "*", exc) from exc

    def delete(self, name: str) -> None:
        key = self.location.key(check_name(name))
        try:
            with self._slots:
                self.client.delete_object(Bucket=self.location.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return
            raise self._error("delete", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("delete", key, exc) from exc

    def delete_many(self, names: Iterable[str]) -> None:
        """``DeleteObjects`` of up to 1,000 keys a request (a missing key is no error);
        stores without it (``NotImplemented``) get one ``DeleteObject`` a key."""
        keys = [self.location.key(check_name(name)) for name in names]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start:start + DELETE_BATCH]
            try:
                with self._slots:
                    reply = self.client.delete_objects(
                        Bucket=self.location.bucket,
                        Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
            except ClientError as exc:
                if _code(exc) != "NotImplemented":
                    raise self._error("delete", batch[0], exc) from exc
                strip = len(self.location.key(""))
                for key in batch:
                    self.delete(key[strip:])
                continue
            except BotoCoreError as exc:
                raise self._error("delete", batch[0], exc) from exc
            failed = [e for e in reply.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
            if failed:
                first = failed[0]
                raise RepositoryError(
                    f"cannot delete {self._where(str(first.get('Key')))} and "
                    f"{len(failed) - 1} more of {len(batch)} ({self.endpoint}): "
                    f"{first.get('Code')}: {first.get('Message', '')}")

    # -- the bucket -----------------------------------------------------------------------

    def check_bucket(self, create: bool = False) -> None:
        """RepositoryError unless the bucket exists and answers; with ``create`` a missing
        bucket is created (in the client's region)."""
        bucket = self.location.bucket
        try:
            with self._slots:
                self.client.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if _status(exc) != 404:
                raise self._error("open", "", exc) from exc
            if not create:
                raise self._no_bucket("open") from exc
        except BotoCoreError as exc:
            raise self._error("open", "", exc) from exc
        args: dict[str, Any] = {"Bucket": bucket}
        region = self.client.meta.region_name
        if region and region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            with self._slots:
                self.client.create_bucket(**args)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou",):
                raise self._error("create the bucket for", "", exc) from exc
        except BotoCoreError as exc:
            raise self._error("create the bucket for", "", exc) from exc

    # -- helpers --------------------------------------------------------------------------

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            with self._slots:
                head: dict[str, Any] = self.client.head_object(Bucket=self.location.bucket,
                                                               Key=key)
                return head
        except ClientError as exc:
            if _code(exc) in _MISSING or _status(exc) == 404:
                return None
            raise self._error("stat", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("stat", key, exc) from exc

    def _retried_into_ourselves(self, key: str, exc: ClientError, md5_hex: str) -> bool:
        """A 412: someone else's object, unless botocore retried and our own earlier
        attempt is what exists (same MD5 as ETag: a single-part object without SSE-KMS)."""
        attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
        if not attempts:
            return False
        head = self._head(key)
        return head is not None and str(head.get("ETag", "")).strip('"') == md5_hex

    def _put_multipart(self, key: str, body: bytes, replace: bool) -> bool:
        if not replace and self._head(key) is not None:
            return False
        bucket = self.location.bucket
        try:
            with self._slots:
                upload_id = self.client.create_multipart_upload(Bucket=bucket,
                                                                Key=key)["UploadId"]
        except (ClientError, BotoCoreError) as exc:
            raise self._error("write", key, exc) from exc
        try:
            parts = []
            view = memoryview(body)
            for number, start in enumerate(range(0, len(body), self.part_size), 1):
                part = bytes(view[start:start + self.part_size])
                digest = base64.b64encode(hashlib.md5(part, usedforsecurity=False).digest())
                with self._slots:
                    reply = self.client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        Body=part, ContentMD5=digest.decode())
                parts.append({"ETag": reply["ETag"], "PartNumber": number})
            args: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id,
                                    "MultipartUpload": {"Parts": parts}}
            if not replace:
                args["IfNoneMatch"] = "*"
            with self._slots:
                self.client.complete_multipart_upload(**args)
        except BaseException as exc:
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(Bucket=bucket, Key=key,
                                                   UploadId=upload_id)
            if isinstance(exc, ClientError) and not replace and _status(exc) == 412:
                return False
            if isinstance(exc, (ClientError, BotoCoreError)):
                raise self._error("write", key, exc) from exc
            raise
        return True

    def _checked_range(self, key: str, offset: int, length: int | None,
                       reply: dict[str, Any], body: bytes) -> bytes:
        status = reply.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 200:  # the server ignored Range and sent the whole object
            return body[offset:None if length is None else offset + length]
        answered = str(reply.get("ContentRange", ""))
        try:
            unit, _, spec = answered.partition(" ")
            span, _, total_text = spec.partition("/")
            first, _, last = span.partition("-")
            start, end, total = int(first), int(last), int(total_text)
        except ValueError:
            start = end = total = -1
        ok = (unit == "bytes" and start == offset and len(body) == end - start + 1
              and (length is None or len(body) == length
                   or (len(body) < length and end == total - 1)))
        if not ok:
            raise RepositoryError(
                f"reading {self._where(key)} at {offset} (length {length}): the object "
                f"store answered Content-Range {answered!r} with {len(body)} bytes; a "
                f"proxy or the store at {self.endpoint} mangles ranged reads")
        return body

    def _where(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{key}"

    def _missing(self, key: str) -> ObjectMissing:
        return ObjectMissing(f"{self._where(key)} does not exist ({self.endpoint})")

    def _no_bucket(self, what: str) -> RepositoryError:
        return RepositoryError(
            f"cannot {what} {self.location}: bucket {self.location.bucket!r} does not exist "
            f"at {self.endpoint}; check the bucket name in the repository URL (mover creates "
            "a bucket only when it creates a repository) and AWS_ENDPOINT_URL/AWS_REGION")

    def _error(self, what: str, key: str, exc: BaseException) -> RepositoryError:
        where = self._where(key)
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            message = exc.response.get("Error", {}).get("Message") or ""
            attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            if code in _MISSING and what == "read":
                return self._missing(key)
            if code == "NoSuchBucket":
                return self._no_bucket(what)
            if code == "RequestTimeTooSkewed":
                return RepositoryError(
                    f"cannot {what} {where}: this machine's clock differs from the object "
                    f"store's ({self.endpoint}) by more than S3 allows (15 minutes); fix "
                    "the time (NTP) and run again")
            if code in _CREDENTIALS:
                return RepositoryError(
                    f"cannot {what} {where}: the object store at {self.endpoint} refuses "
                    f"the credentials ({code}); check AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or the profile that AWS_PROFILE names")
            if status == 403:
                return RepositoryError(
                    f"cannot {what} {where}: access denied ({code}) by {self.endpoint}; the "
                    f"bucket policy or the user's policy must allow {_PERMISSIONS} on "
                    f"bucket {self.location.bucket!r} and prefix "
                    f"{self.location.prefix or '/'!r} (or the credentials are not the "
                    "intended user's)")
            if code == "SlowDown" or status >= 500:
                return RepositoryError(
                    f"cannot {what} {where}: the object store at {self.endpoint} answered "
                    f"{code or status} (HTTP {status}) after {attempts + 1} attempts; it is "
                    "overloaded or failing: lower the concurrency or try later (a backup "
                    "resumes where it stopped)")
            detail = f"{code} (HTTP {status})" + (f": {message}" if message else "")
            return RepositoryError(f"cannot {what} {where}: {detail}")
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return RepositoryError(
                f"cannot {what} {where}: no S3 credentials; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
        if isinstance(exc, EndpointConnectionError):
            return RepositoryError(
                f"cannot {what} {where}: the object store at {self.endpoint} cannot be "
                "reached; check AWS_ENDPOINT_URL and that the store is running (a backup "
                "resumes where it stopped)")
        return RepositoryError(f"cannot {what} {where} ({self.endpoint}): {exc}")


def _count_request(event_name: str = "", **_: Any) -> None:
    """botocore's ``before-send.s3.<Operation>`` hook: one HTTP request about to go out."""
    with _REQUESTS_GUARD:
        REQUESTS[event_name.rsplit(".", 1)[-1]] += 1


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))

