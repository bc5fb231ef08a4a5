"""The hub's error classes, and one mapping from huggingface_hub's exceptions to one-line
errors that name the next step. Nothing printed here carries a credential: URLs lose their
user:password part, and tokens never enter a message."""
from __future__ import annotations

import re
import sys
from contextlib import contextmanager

from registry import RegistryError
from registry.errors import InvalidNameError
from vdnacli.errors import ConfigError, IntegrityError, NetworkError, NotFoundError, VdnaError

LOGIN = "set HF_TOKEN or run 'hf auth login'"


class HubError(VdnaError):
    """A pull or push that cannot be done; the message names the next step."""


class HubNotFoundError(HubError, NotFoundError):
    """Repo, revision or DNA files missing."""


class HubAuthError(HubError, NetworkError):
    """Private or gated repo without a (sufficient) token, or a push without a write token."""


class HubOfflineError(HubError, NetworkError):
    """Offline mode without a cached copy, or a push while offline."""


class HubNetworkError(HubError, NetworkError):
    """The Hub cannot be reached."""


class HubIntegrityError(HubError, IntegrityError):
    """A downloaded file does not match the Hub's checksum, or the Hub answered a name that is unsafe."""


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{6,}\b")


def redact(text: str) -> str:
    """`text` without URL credentials (scheme://user:pass@host -> scheme://host) or HF tokens."""
    return _TOKEN.sub("hf_***", _USERINFO.sub(r"\1", str(text)))


def from_hub(check, value, what: str):
    """`check(value, ...)` from registry.names on a string the Hub answered: HubIntegrityError if unsafe."""
    try:
        return check(value, what) if what else check(value)
    except InvalidNameError as e:
        raise HubIntegrityError(f"the Hub answered an unsafe name: {e}; nothing was written (check HF_ENDPOINT)") \
            from None


def first_line(e) -> str:
    """The first non-blank line of an exception's message, redacted and shortened."""
    for line in str(e).strip().splitlines():
        if line.strip():
            return redact(line.strip())[:200]
    return type(e).__name__


def has_token() -> bool:
    try:
        from huggingface_hub import get_token

        return get_token() is not None
    except Exception:  # noqa: BLE001  a broken token file is reported by the request that needs it
        return False


class _Never(Exception):
    """Stands for an exception class this huggingface_hub version does not have."""


class _HfErrors:
    """huggingface_hub's exception classes, looked up by name so that other releases still work."""

    def __getattr__(self, name: str):
        import huggingface_hub.errors as errors
        import huggingface_hub.utils as utils

        return getattr(errors, name, None) or getattr(utils, name, None) or _Never


hf = _HfErrors()


def network_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of whichever HTTP stack this huggingface_hub uses."""
    kinds: list[type[BaseException]] = []
    for mod in ("httpx2", "httpx"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "TransportError"):
            kinds.append(m.TransportError)
    req = sys.modules.get("requests")
    if req is not None:
        kinds += [req.exceptions.ConnectionError, req.exceptions.Timeout]
    return tuple(kinds) or (ConnectionError,)


def _write_error(e: OSError, cache_dir) -> HubError:
    import errno

    from registry.errors import os_error_text

    if e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, getattr(errno, "EDQUOT", -1)):
        return HubError(f"cannot write to the Hugging Face cache {cache_dir}: {os_error_text(e)}; free space there "
                        "or point HF_HOME at another folder (the registry was left unchanged)")
    return HubError(f"cannot use the Hugging Face cache {cache_dir}: {first_line(e)} (the registry was left "
                    "unchanged)")


@contextmanager
def _library_warnings_quiet():
    """huggingface_hub's own warnings ("Ignored error while writing tree cache file ..." on a
    read-only or full cache) are not printed beside vdna's one error line; VDNA_DEBUG=1 keeps them."""
    import logging

    try:
        import huggingface_hub.utils.logging  # noqa: F401  (its first import sets the library's level: before ours)
    except ImportError:  # the hub extra is missing: the command says so itself
        yield
        return

    from vdnacli.env import flag

    log = logging.getLogger("huggingface_hub")
    level = log.level
    if not flag("VDNA_DEBUG"):
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextmanager
def hub_errors(ctx, repo_id: str, repo_type: str, revision: str | None, pushing: bool = False):
    """Translate huggingface_hub's exceptions (and unsafe answers) into one-line errors."""
    url = ctx.repo_url(repo_id, repo_type)
    try:
        with _library_warnings_quiet():
            yield
    except (VdnaError, RegistryError, KeyboardInterrupt):
        raise
    except hf.GatedRepoError:
        if has_token():
            raise HubAuthError(f"{repo_id} is a gated repo and your account has no access yet: accept its conditions "
                               f"at {url}, then run the command again") from None
        raise HubAuthError(f"{repo_id} is a gated repo: accept its conditions at {url} and authenticate "
                           f"({LOGIN})") from None
    except hf.RepositoryNotFoundError:
        hint = "your token has no access to it" if has_token() else f"if it is private, authenticate ({LOGIN})"
        raise HubNotFoundError(f"no {repo_type} repo '{repo_id}' on {ctx.shown_endpoint}: check the name and "
                               f"--repo-type; {hint}") from None
    except hf.RevisionNotFoundError:
        raise HubNotFoundError(f"{repo_type} repo '{repo_id}' has no revision '{revision}': give a branch, tag or "
                               f"commit that exists (see {url})") from None
    except hf.RemoteEntryNotFoundError as e:
        raise HubNotFoundError(f"a file of {repo_id} disappeared from the Hub while pulling ({first_line(e)}); "
                               "run the pull again") from None
    except hf.OfflineModeIsEnabled:
        raise HubOfflineError("offline mode is on (HF_HUB_OFFLINE=1 when vdna started); unset it to reach the Hub, "
                              "or use --offline to read the cache") from None
    except hf.LocalEntryNotFoundError as e:
        if ctx.offline:
            raise HubOfflineError(no_cache_message(ctx, repo_id, repo_type, revision)) from None
        raise HubNetworkError(f"cannot reach {ctx.shown_endpoint} ({first_line(e.__cause__ or e)}): check your "
                              "network or HF_ENDPOINT, or use --offline for a copy already in the cache") from None
    except hf.HfHubHTTPError as e:
        raise http_error(e, repo_id, pushing) from None
    except hf.HFValidationError as e:
        raise ConfigError(f"invalid repo id or revision: {first_line(e)}") from None
    except network_errors() as e:
        raise HubNetworkError(f"cannot reach {ctx.shown_endpoint} ({type(e).__name__}: {first_line(e)}): check "
                              "your network or HF_ENDPOINT, or use --offline for a copy already in the cache") from None
    except OSError as e:  # the HF cache: full disk, quota, read-only, permissions
        raise _write_error(e, ctx.cache_dir) from None
    except ValueError as e:  # huggingface_hub refusing a path (e.g. "Invalid pointer path") or a malformed answer
        if not _raised_in_library(e):
            raise
        raise HubIntegrityError(f"{ctx.shown_endpoint} answered something huggingface_hub refused for {repo_id} "
                                f"({first_line(e)}); nothing was written to the registry") from None


def _raised_in_library(e: BaseException) -> bool:
    """Whether the exception was raised inside huggingface_hub (not by a bug of ours)."""
    tb, last = e.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and "huggingface_hub" in last.tb_frame.f_code.co_filename


def http_error(e, repo_id: str, pushing: bool) -> HubError:
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status == 401:
        if not has_token():
            what = "pushing needs a token with write access" if pushing else f"{repo_id} needs authentication"
            return HubAuthError(f"{what}: {LOGIN}")
        return HubAuthError("the Hub rejected your token (401): check HF_TOKEN or run 'hf auth login' again")
    if status == 403:
        need = "a token with write access to it" if pushing else "access to it"
        return HubAuthError(f"access to {repo_id} denied (403): you need {need} ({LOGIN})")
    if status == 412:
        return HubError(f"{repo_id} changed while pushing (someone else committed): run the push again")
    if status is not None and status >= 500:
        return HubNetworkError(f"the Hub failed ({status}) on {repo_id}: try again later")
    return HubError(f"the Hub refused the request on {repo_id} ({status}): {first_line(e)}")


def no_cache_message(ctx, repo_id: str, repo_type: str, revision: str | None) -> str:
    return (f"no cached copy of {repo_type} repo '{repo_id}' (revision {revision or 'main'}) in {ctx.cache_dir}: "
            f"run 'vdna pull {repo_id}' once with network access, then --offline works")
