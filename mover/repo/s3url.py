"""Repository URLs of the form ``s3://BUCKET/PREFIX``: parsed here, purely (no I/O).

Only the bucket and the key prefix are in the URL. The endpoint, region and credentials
come from the AWS SDK's own conventions (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ...), never
from the URL or the command line, so no secret ends up in a job file, a process list or a log.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

# S3's rules for new buckets (3-63 characters; lower-case letters, digits, dots and hyphens;
# starting and ending with a letter or digit), without dotted ones that look like addresses.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")
_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str           # "" (the whole bucket) or components joined by "/", no slashes around

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, name: str) -> str:
        """The S3 key of store object ``name``."""
        return f"{self.prefix}/{name}" if self.prefix else name


def is_s3_url(text: str) -> bool:
    return text.startswith("s3://")


def parse_s3_url(url: str) -> S3Location:
    """``s3://BUCKET[/PREFIX[/]]`` as a location; ValueError saying what is wrong otherwise.

    The prefix is one or more name components (letters, digits, ``._-``, not starting with a
    dot) so that every key mover writes is a plain name; a trailing ``/`` is ignored.
    """
    if not is_s3_url(url):
        raise ValueError(f"{url!r} is not an s3:// URL (s3://BUCKET/PREFIX)")
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if "?" in rest or "#" in rest or "@" in bucket or ":" in bucket:
        raise ValueError(f"{url!r}: an s3:// URL holds only a bucket and a prefix; the "
                         "endpoint and credentials come from AWS_ENDPOINT_URL, AWS_PROFILE "
                         "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _ADDRESS.fullmatch(bucket):
        raise ValueError(f"{url!r}: {bucket!r} is not a valid bucket name (3-63 lower-case "
                         "letters, digits, '.' and '-', starting and ending with a letter "
                         "or digit)")
    prefix = prefix.removesuffix("/")
    if prefix and not all(_COMPONENT.fullmatch(part) for part in prefix.split("/")):
        raise ValueError(f"{url!r}: the prefix {prefix!r} must be name components of "
                         "letters, digits and '._-' separated by single '/'")
    return S3Location(bucket, prefix)


REPO = "DIR|s3://BUCKET/PREFIX"   # --repo's metavar
RepoLocation = Path | str
"""Where a repository is: a directory, or an ``s3://BUCKET/PREFIX`` URL (kept as the text)."""


def repo_location(text: str) -> RepoLocation:
    """``--repo``'s argument type: an s3:// URL (checked here, so a bad one is a usage error
    naming what is wrong) or a directory path."""
    if not is_s3_url(text):
        return Path(text)
    try:
        parse_s3_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
