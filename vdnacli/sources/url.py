"""Images (and tar shards) behind URLs: http(s) through the standard library, other schemes
(s3://, gs://, memory://, ...) through fsspec when its implementation is installed.

Each request has a timeout (seconds without progress: connecting, or waiting for the next
bytes) and a bounded number of retries with a short backoff, for failures that may pass
(connection errors, timeouts, HTTP 408/425/429/5xx); a 404 or 403 is final at once. A URL
that still fails is one skipped-and-reported image. How many URLs are fetched at once is
the pipeline's business (SourceOptions.url_concurrency). user:password@ in a URL is sent as
HTTP basic authentication and never shown: names keep scheme, host and path only.
"""
from __future__ import annotations

import base64
import errno
import http.client
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlsplit, urlunsplit

from vdnacli.errors import SourceError
from vdnacli.sources.base import MAX_FILE_BYTES, Ref, SourceOptions, public_url

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_HTTP = ("http", "https")


@dataclass(frozen=True)
class UrlRef(Ref):
    name: str
    url: str
    options: SourceOptions = SourceOptions()
    remote = True

    def read_bytes(self) -> bytes:
        return fetch(self.url, self.options)


def url_ref(url: str, options: SourceOptions, name: str | None = None) -> UrlRef:
    check_scheme(url)
    return UrlRef(name or public_url(url), url, options)


def check_scheme(url: str) -> None:
    """SourceError when listing, not one failure per image, for a scheme nothing here reads."""
    _check_scheme(urlsplit(url).scheme.lower())


@lru_cache(maxsize=64)
def _check_scheme(scheme: str) -> None:
    if scheme in _HTTP:
        return
    try:
        import fsspec
    except ImportError:
        raise SourceError(f"{scheme}:// URLs are read through fsspec: pip install fsspec") from None
    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as e:
        raise SourceError(f"cannot read {scheme}:// URLs: {str(e).splitlines()[0][:200]}") from None


def _split_auth(url: str) -> tuple[str, dict]:
    """The URL without user:password@, and the Authorization header they stand for."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, {}
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    token = base64.b64encode(f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()).decode()
    return clean, {"Authorization": f"Basic {token}"}


def _request(url: str):
    from vdnacli import __version__

    clean, auth = _split_auth(url)
    req = urllib.request.Request(clean, headers={"User-Agent": f"vdna/{__version__}"})
    for k, v in auth.items():
        req.add_unredirected_header(k, v)  # not forwarded to another host on a redirect
    return req


def _open_http(url: str, options: SourceOptions):
    """The response of a GET, after retries; OSError with a one-line reason when it fails."""
    attempts = options.url_retries + 1
    for k in range(attempts):
        last = k + 1 == attempts
        try:
            return urllib.request.urlopen(_request(url), timeout=options.url_timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in _RETRY_STATUS and not last:
                time.sleep(_backoff(k))
                continue
            raise OSError(errno.EIO, f"HTTP {e.code} {e.reason}"[:200]) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            if not last:
                time.sleep(_backoff(k))
                continue
            reason = getattr(e, "reason", None) or e
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise OSError(errno.ETIMEDOUT, f"no answer within {options.url_timeout:g} s "
                                               f"({attempts} attempt(s))") from None
            raise OSError(errno.EIO, f"cannot fetch ({attempts} attempt(s)): {str(reason)[:200]}") from None
    raise AssertionError("unreachable")


def _backoff(k: int) -> float:
    return min(0.25 * 2**k, 4.0)


def fetch(url: str, options: SourceOptions = SourceOptions()) -> bytes:
    """The bytes behind a URL, at most MAX_FILE_BYTES; OSError says why not."""
    if urlsplit(url).scheme.lower() not in _HTTP:
        return _fsspec_read(url, options)
    attempts = options.url_retries + 1
    for k in range(attempts):
        resp = _open_http(url, options)
        try:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > MAX_FILE_BYTES:
                raise OSError(errno.EFBIG, f"too large ({int(length) >> 20} MiB)")
            data = resp.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                raise OSError(errno.EFBIG, "too large")
            if length and length.isdigit() and len(data) < int(length):
                raise http.client.IncompleteRead(data, int(length) - len(data))
            return data
        except (http.client.HTTPException, socket.timeout, TimeoutError, ConnectionError) as e:
            if k + 1 == attempts:
                raise OSError(errno.EIO, f"download broke off ({attempts} attempt(s)): {type(e).__name__}") from None
            time.sleep(_backoff(k))
        finally:
            resp.close()
    raise AssertionError("unreachable")


def open_stream(url: str, options: SourceOptions = SourceOptions()):
    """A readable binary stream of a URL (a tar shard read front to back); the caller closes it."""
    if urlsplit(url).scheme.lower() not in _HTTP:
        check_scheme(url)
        import fsspec

        try:
            return fsspec.open(url, "rb", timeout=options.url_timeout).open()
        except TypeError:  # implementations without a timeout argument
            return fsspec.open(url, "rb").open()
    return _open_http(url, options)


def _fsspec_read(url: str, options: SourceOptions) -> bytes:
    check_scheme(url)
    import fsspec

    attempts = options.url_retries + 1
    for k in range(attempts):
        try:
            with fsspec.open(url, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                raise OSError(errno.EFBIG, "too large")
            return data
        except FileNotFoundError:
            raise OSError(errno.ENOENT, "no such object") from None
        except OSError as e:
            if e.errno == errno.EFBIG or k + 1 == attempts:
                raise OSError(e.errno or errno.EIO, f"cannot fetch: {e.strerror or e}"[:200]) from None
            time.sleep(_backoff(k))
    raise AssertionError("unreachable")
