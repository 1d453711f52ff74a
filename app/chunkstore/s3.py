"""S3-compatible object storage backend (AWS S3, SeaweedFS, MinIO, Ceph RGW, ...).

A repository key ``chunks/ab/<id>`` is the object ``<prefix>chunks/ab/<id>`` in one bucket. What the
``Backend`` contract asks for maps onto S3 as follows:

- **Atomic puts** come with S3 itself: a PUT makes the whole new object visible at once, or nothing.
- **Modification times.** S3 has no touch, and its ``Last-Modified`` has a resolution of one second.
  Every put stamps the object with its write time in nanoseconds (user metadata ``vmr-mtime-ns``), and
  ``touch_many`` copies each object onto itself with ``MetadataDirective=REPLACE`` and a fresh stamp: a
  server-side copy (no data goes through the client) that gives the object a new ``Last-Modified``.
  ``stat`` reports the server's ``Last-Modified``, refined by the stamp when both agree to within
  ``_STAMP_TOLERANCE`` (so a client with a wrong clock cannot move an object's age by more than that,
  while one second resolution does not hide a touch made within the same second). GC's grace period
  therefore sees the time of the last put or touch. Buckets must not keep old versions forever: with
  versioning on, each touch leaves a noncurrent version behind (expire them with a lifecycle rule).
- **Batches** (``exists_many``, ``touch_many``) run as parallel requests on a bounded thread pool, so
  the repository's dedup check of 256 ids costs about one round trip.
- **Errors.** Transient failures (5xx, throttling, connection resets, timeouts) are retried with
  exponential backoff by botocore's retry modes; reading a response body that breaks off is retried
  here. Whatever still fails surfaces as an ``S3Error`` (a ``RepositoryError``) that names the
  endpoint, bucket and key; a missing object is ``ObjectMissing``.

Credentials are explicit (``S3Credentials``) or come from boto's default chain: the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), the shared credentials file
(``~/.aws/credentials``, profile ``AWS_PROFILE``), then container or instance roles. They are never part
of a location, a ``repr`` or an error message. The identity needs ``s3:GetObject``, ``s3:PutObject``,
``s3:DeleteObject`` and ``s3:ListBucket`` (without the last, AWS answers 403 rather than 404 for a missing
object).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, TypedDict, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from app.chunkstore.backend import BytesLike, ObjectStat, validate_key
from app.chunkstore.errors import ObjectMissing, RepositoryError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "S3AuthError",
    "S3Backend",
    "S3BucketMissing",
    "S3Credentials",
    "S3Error",
    "S3Location",
    "S3Unavailable",
    "parse_s3_location",
]

_T = TypeVar("_T")

#: Connections kept per backend: the pipelines' workers plus the parallel HEADs of a dedup batch.
DEFAULT_MAX_CONNECTIONS = 64
#: Requests one ``exists_many``/``touch_many`` call runs at once.
DEFAULT_PARALLELISM = 32
#: Attempts per request, the first included. With botocore's standard mode (backoff of up to
#: ``2**n`` seconds, at most 20 s) eight attempts ride out about a minute of trouble.
DEFAULT_MAX_ATTEMPTS = 8
#: Keys per ListObjectsV2 page (S3's maximum).
LIST_PAGE_SIZE = 1000
#: Attempts to read a response body that breaks off (botocore retries requests, not body reads).
_BODY_ATTEMPTS = 3
_MTIME_META = "vmr-mtime-ns"
_STAMP_TOLERANCE = timedelta(seconds=2)
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
    }
)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class _Head(TypedDict):
    LastModified: datetime
    ContentLength: int
    Metadata: dict[str, str]


class S3Error(RepositoryError):
    """An S3 request failed for good (after retries). Names the endpoint, bucket and key."""

    def __init__(
        self,
        message: str,
        *,
        bucket: str,
        key: str | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.bucket = bucket
        self.key = key
        self.code = code
        self.status = status


class S3AuthError(S3Error):
    """The store refused the credentials (wrong key or secret, expired token, no permission)."""


class S3BucketMissing(S3Error):
    """The repository's bucket does not exist at that endpoint."""


class S3Unavailable(S3Error):
    """The store could not be reached or kept failing (5xx, throttling, timeouts) after every retry."""


@dataclass(frozen=True, slots=True)
class S3Credentials:
    """An access key and its secret (and a session token for temporary credentials).

    ``repr`` shows neither, so the object can sit in a job's parameters or a log line safely.
    """

    access_key: str
    secret_key: str
    session_token: str | None = None

    def __post_init__(self) -> None:
        if not self.access_key or not self.secret_key:
            raise ValueError("S3 credentials need both an access key and a secret key")

    def __repr__(self) -> str:
        return "S3Credentials(<hidden>)"

    __str__ = __repr__


AddressingStyle = Literal["auto", "path", "virtual"]


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where a repository lives in S3; parsed from ``s3://bucket/prefix?endpoint=...&region=...``."""

    bucket: str
    prefix: str = ""  # "" or "a/b/" (always ends with a slash)
    endpoint_url: str | None = None  # None: AWS S3
    region: str | None = None
    verify: bool | str = True  # False, or the path of a CA bundle
    addressing_style: AddressingStyle | None = None


_LOCATION_PARAMS = frozenset({"endpoint", "region", "verify", "ca_bundle", "addressing"})
_CREDENTIAL_PARAMS = frozenset(
    {"access_key", "secret_key", "access_key_id", "secret_access_key", "aws_access_key_id"}
    | {"aws_secret_access_key", "key", "secret", "password", "token", "session_token"}
)


def parse_s3_location(location: str) -> S3Location:
    """Parse ``s3://BUCKET[/PREFIX][?endpoint=URL&region=R&verify=false&ca_bundle=PATH&addressing=path]``.

    ``endpoint`` is the store's base URL (omit it for AWS S3); ``region`` defaults to boto's
    configuration (``us-east-1`` when an endpoint is given); ``verify=false`` turns TLS certificate
    checks off and ``ca_bundle`` names the CA certificates to check against instead of the system's;
    ``addressing`` is ``path`` (the default with an endpoint, what most self-hosted stores need),
    ``virtual`` or ``auto``. Credentials are refused here: a location ends up in configuration files,
    catalogs and logs. Error messages never repeat a location that carries user information.
    """
    parts = urlsplit(location)
    if parts.scheme != "s3":
        raise ValueError("an S3 location starts with s3://")
    if "@" in parts.netloc:
        raise ValueError("S3 credentials must not be part of the location; pass them separately")
    bucket = parts.netloc
    if not _BUCKET.match(bucket):
        raise ValueError(f"invalid S3 bucket name {bucket!r}")
    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            validate_key(prefix)
        except ValueError:
            raise ValueError(f"invalid key prefix {prefix!r} in S3 location") from None
        prefix += "/"
    params: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        lowered = name.lower()
        if lowered in _CREDENTIAL_PARAMS:
            raise ValueError("S3 credentials must not be part of the location; pass them separately")
        if lowered not in _LOCATION_PARAMS:
            raise ValueError(f"unknown S3 location parameter {name!r}")
        if lowered in params:
            raise ValueError(f"S3 location parameter {name!r} given twice")
        params[lowered] = value
    endpoint = params.get("endpoint") or None
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.hostname:
            raise ValueError("the S3 endpoint must be an http:// or https:// URL")
        if ep.username is not None or ep.password is not None:
            raise ValueError("S3 credentials must not be part of the location; pass them separately")
    verify: bool | str = _parse_bool("verify", params.get("verify", "true"))
    if params.get("ca_bundle"):
        if verify is False:
            raise ValueError("S3 location: ca_bundle and verify=false contradict each other")
        verify = params["ca_bundle"]
    addressing = params.get("addressing") or None
    if addressing not in (None, "auto", "path", "virtual"):
        raise ValueError(f"S3 location: addressing must be path, virtual or auto, not {addressing!r}")
    return S3Location(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        region=params.get("region") or None,
        verify=verify,
        addressing_style=addressing,  # type: ignore[arg-type]  # checked just above
    )


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"S3 location: {name} must be true or false, not {value!r}")


class S3Backend:
    """Backend on one bucket (and key prefix) of an S3-compatible store. Thread-safe."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        credentials: S3Credentials | None = None,
        verify: bool | str = True,
        addressing_style: AddressingStyle | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        parallelism: int = DEFAULT_PARALLELISM,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_mode: Literal["standard", "adaptive"] = "standard",
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            validate_key(prefix.rstrip("/"))
        if parallelism < 1 or max_connections < 1 or max_attempts < 1:
            raise ValueError("parallelism, max_connections and max_attempts must be positive")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self._where = endpoint_url or "AWS S3"
        if endpoint_url is not None:
            region = region or "us-east-1"
            addressing_style = addressing_style or "path"
        self.region = region
        self._parallelism = parallelism
        self._max_attempts = max_attempts
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._bucket_seen = False
        self._client = _make_client(
            bucket,
            self._where,
            endpoint_url=endpoint_url,
            region=region,
            credentials=credentials,
            verify=verify,
            config=Config(
                retries={"mode": retry_mode, "total_max_attempts": max_attempts},
                max_pool_connections=max_connections,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                tcp_keepalive=True,
                s3={"addressing_style": addressing_style or "auto"},
                signature_version="s3v4",
            ),
        )

    @classmethod
    def from_location(
        cls, location: S3Location | str, *, credentials: S3Credentials | None = None
    ) -> S3Backend:
        loc = parse_s3_location(location) if isinstance(location, str) else location
        return cls(
            loc.bucket,
            prefix=loc.prefix,
            endpoint_url=loc.endpoint_url,
            region=loc.region,
            credentials=credentials,
            verify=loc.verify,
            addressing_style=loc.addressing_style,
        )

    def __repr__(self) -> str:
        return f"S3Backend(endpoint={self._where!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    def close(self) -> None:
        """Release the thread pool and the connections (the backend must not be used afterwards)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._client.close()

    # --- the Backend protocol -------------------------------------------------------------------

    def put(self, key: str, data: BytesLike) -> None:
        name = self._name(key)
        body = data if isinstance(data, bytes) else bytes(data)
        self._call(
            "PUT",
            key,
            lambda: self._client.put_object(
                Bucket=self.bucket, Key=name, Body=body, Metadata={_MTIME_META: str(time.time_ns())}
            ),
        )

    def get(self, key: str) -> bytes:
        name = self._name(key)
        for attempt in range(1, _BODY_ATTEMPTS + 1):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _status(exc) == 404 and _code(exc) != "NoSuchBucket":
                    raise ObjectMissing(key) from None
                raise self._error("GET", key, exc) from exc
            except BotoCoreError as exc:
                raise self._error("GET", key, exc) from exc
            body = response["Body"]
            try:
                return body.read()
            except (HTTPClientError, IncompleteReadError, FlexibleChecksumError) as exc:
                # The request succeeded but its body broke off or arrived damaged: ask again.
                if attempt == _BODY_ATTEMPTS:
                    raise self._error("GET", key, exc) from exc
                time.sleep(random.uniform(0, 0.2 * 2**attempt))  # noqa: S311 (jitter, not crypto)
            finally:
                body.close()
        raise AssertionError("unreachable")

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except ObjectMissing:
            return False
        return True

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        return self._each(keys, self.exists)

    def touch_many(self, keys: Iterable[str]) -> set[str]:
        return self._each(keys, self._touch)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._call("DELETE", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=name))

    def list(self, prefix: str) -> Iterator[str]:
        directory, _, _ = prefix.rpartition("/")
        if directory:
            validate_key(directory)
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(
            paginator.paginate(
                Bucket=self.bucket,
                Prefix=self.prefix + prefix,
                PaginationConfig={"PageSize": LIST_PAGE_SIZE},
            )
        )
        strip = len(self.prefix)
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except (ClientError, BotoCoreError) as exc:
                raise self._error("LIST", prefix, exc) from exc
            for item in page.get("Contents", ()):
                key = item.get("Key", "")[strip:]
                if _is_key(key):  # foreign objects (folder markers, dot-files) are not ours
                    yield key

    def recover_interrupted_sweeps(self) -> int:
        return 0  # delete_if_older moves nothing aside here

    def delete_if_older(self, key: str, cutoff: datetime) -> ObjectStat | None:
        # S3 has no delete conditional on the modification time (and a touch keeps the ETag, the
        # content's): a touch between this HEAD and the DELETE is lost. GcLoop starts a
        # collection only while no job writes into the repository (or after waiting a day), so
        # only a writer that starts during a sweep meets this window, once per old unreferenced
        # chunk it finds stored.
        try:
            stat = self.stat(key)
        except ObjectMissing:
            return None
        if stat.modified <= cutoff:
            self.delete(key)
        return stat

    def stat(self, key: str) -> ObjectStat:
        head = self._head(key)
        modified = _refine(head["LastModified"], head.get("Metadata", {}).get(_MTIME_META))
        return ObjectStat(key=key, size=head["ContentLength"], modified=modified)

    # --- helpers --------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _head(self, key: str) -> _Head:
        name = self._name(key)
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _status(exc) == 404:
                # A HEAD answer has no body, so "no such key" and "no such bucket" look alike.
                self._check_bucket(key)
                raise ObjectMissing(key) from None
            raise self._error("HEAD", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("HEAD", key, exc) from exc
        return {
            "LastModified": response["LastModified"],
            "ContentLength": response["ContentLength"],
            "Metadata": response.get("Metadata", {}),
        }

    def _check_bucket(self, key: str) -> None:
        """Raise ``S3BucketMissing`` if the bucket is not there; asked once per backend."""
        if self._bucket_seen:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            raise self._error("HEAD", key, exc, bucket_check=True) from exc
        except BotoCoreError as exc:
            raise self._error("HEAD", key, exc) from exc
        self._bucket_seen = True

    def _touch(self, key: str) -> bool:
        """Copy the object onto itself with a new stamp: a new ``Last-Modified``, same content."""
        name = self._name(key)
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=name,
                CopySource={"Bucket": self.bucket, "Key": name},
                MetadataDirective="REPLACE",
                Metadata={_MTIME_META: str(time.time_ns())},
            )
        except ClientError as exc:
            if _code(exc) == "NoSuchBucket":
                raise self._error("COPY", key, exc) from exc
            if _status(exc) == 404:
                return False
            raise self._error("COPY", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("COPY", key, exc) from exc
        return True

    def _each(self, keys: Iterable[str], check: Callable[[str], bool]) -> set[str]:
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            validate_key(key)  # before any request, so a bad key fails the batch up front
        if len(wanted) <= 1:
            return {key for key in wanted if check(key)}
        results = self._executor().map(check, wanted)
        return {key for key, present in zip(wanted, results, strict=True) if present}

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._parallelism, thread_name_prefix="s3-batch")
                # Idle workers go away with the backend even if nobody calls close().
                weakref.finalize(self, self._pool.shutdown, wait=False)
            return self._pool

    def _call(self, operation: str, key: str, request: Callable[[], _T]) -> _T:
        try:
            return request()
        except (ClientError, BotoCoreError) as exc:
            raise self._error(operation, key, exc) from exc

    def _error(
        self, operation: str, key: str, exc: ClientError | BotoCoreError, *, bucket_check: bool = False
    ) -> S3Error:
        """The ``S3Error`` for a failed request; ``bucket_check``: the request was a HEAD of the bucket."""
        url = f"s3://{self.bucket}/{self.prefix}{key}"
        where = f"{url} at {self._where}"
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            detail = exc.response.get("Error", {}).get("Message") or "no details"
            what = f"{operation} {where} failed: {code} (HTTP {status}): {detail}"
            if code == "NoSuchBucket" or (bucket_check and status == 404):
                return S3BucketMissing(
                    f"bucket {self.bucket!r} does not exist at {self._where} ({operation} {url})",
                    bucket=self.bucket,
                    key=key,
                    code=code,
                    status=status,
                )
            if code in _AUTH_CODES or status in (401, 403):
                return S3AuthError(
                    f"{what}; check the access key, the secret key and the identity's permissions",
                    bucket=self.bucket,
                    key=key,
                    code=code,
                    status=status,
                )
            kind = S3Unavailable if status >= 500 or code in ("SlowDown", "Throttling") else S3Error
            return kind(what, bucket=self.bucket, key=key, code=code, status=status)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return S3AuthError(f"{operation} {where} failed: {exc}", bucket=self.bucket, key=key)
        if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
            return S3Unavailable(
                f"{operation} {where} failed (attempts: {self._max_attempts}): {exc}",
                bucket=self.bucket,
                key=key,
            )
        return S3Error(f"{operation} {where} failed: {exc}", bucket=self.bucket, key=key)


class _HideCredentials(logging.Filter):
    """Hide the access key and session token in botocore's debug log of signed requests.

    At DEBUG, botocore logs every request's headers (``Authorization: ... Credential=<access key>/...``,
    ``X-Amz-Security-Token``) and the canonical request it signs. Nothing else of ours logs them; this
    keeps an operator's debug log free of credentials too. (The secret key itself is never sent.)
    """

    _PATTERNS = (
        re.compile(r"(Credential=)[^/\s,'\"]+"),
        re.compile(r"(?i)(x-amz-security-token'?\s*[:=]\s*b?'?)[^'\s,}]+"),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        hidden = text
        for pattern in self._PATTERNS:
            hidden = pattern.sub(r"\1<hidden>", hidden)
        if hidden != text:
            record.msg, record.args = hidden, ()
        return True


for _name in ("botocore.endpoint", "botocore.auth"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _HideCredentials) for f in _logger.filters):
        _logger.addFilter(_HideCredentials())


# botocore's data loader parses the service models (S3's is large) once and keeps them; sharing it makes
# a backend cheap to create (~10 ms instead of ~100 ms). Sessions are not thread-safe: clients are made
# under a lock (the clients themselves are thread-safe).
_client_lock = threading.Lock()
_loader: botocore.loaders.Loader | None = None


def _make_client(
    bucket: str,
    where: str,
    *,
    endpoint_url: str | None,
    region: str | None,
    credentials: S3Credentials | None,
    verify: bool | str,
    config: Config,
) -> S3Client:
    global _loader
    with _client_lock:
        try:
            if _loader is None:
                _loader = botocore.loaders.create_loader()
            session = botocore.session.Session()
            session.register_component("data_loader", _loader)
            if credentials is None and session.get_credentials() is None:
                raise S3AuthError(
                    f"no S3 credentials for bucket {bucket!r} at {where}: pass them explicitly or set "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
                    bucket=bucket,
                )
            client = session.create_client(
                "s3",
                region_name=region,
                endpoint_url=endpoint_url,
                verify=verify,
                aws_access_key_id=credentials.access_key if credentials else None,
                aws_secret_access_key=credentials.secret_key if credentials else None,
                aws_session_token=credentials.session_token if credentials else None,
                config=config,
            )
        except BotoCoreError as exc:  # a profile that does not exist, a malformed config file, ...
            raise S3Error(
                f"cannot set up S3 access to bucket {bucket!r} at {where}: {exc}", bucket=bucket
            ) from exc
    return cast("S3Client", client)


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code") or str(_status(exc))


def _status(exc: ClientError) -> int:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


def _is_key(key: str) -> bool:
    try:
        validate_key(key)
    except ValueError:
        return False
    return True


def _refine(server_time: datetime, stamp: str | None) -> datetime:
    """The server's ``Last-Modified`` (whole seconds), refined by our stamp when the two agree."""
    modified = server_time.astimezone(UTC)
    if stamp is None or not stamp.isdigit():
        return modified
    precise = datetime.fromtimestamp(int(stamp) / 1e9, UTC)
    return precise if abs(precise - modified) < _STAMP_TOLERANCE else modified
