"""Credentials in URLs: never shown, never kept, never sent beyond the URL's own origin.

A mirror, a cache or a source URL may carry a user name and password
(`http://user:secret@host/`) or a secret in its query (`?X-Amz-Signature=…`,
`?token=…`; ccache's `|bearer-token=…`). Whatever shows or keeps a URL (errors, logs,
progress lines, stats, stamps, manifests, the SBOM, exported scripts) passes it, or the
text holding it, through `redact`: the one function that hides them. The password is
sent only as a Basic authorization header, and only to the URL's own scheme, host and
port: a redirect elsewhere is followed without it, and says so.
"""

import re
import urllib.parse
from functools import cache

REDACTED = "***"


@cache
def _patterns() -> tuple[re.Pattern, re.Pattern]:
    """Compiled on first use: a run that shows no URL (a no-op) does not pay for them."""
    # scheme://user:password@ or scheme://token@ (user information ends at the first @ before the path).
    userinfo = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#@:]*)(:[^\s/?#@]*)?@")
    # A query parameter (or a ccache attribute after |) whose name says it is a secret.
    parameter = re.compile(
        r"(?i)([?&;|](?:[\w.-]*(?:token|secret|passw(?:or)?d|signature|credential|api[-_]?key|auth)[\w.-]*|sig|key|pwd|pass)=)"
        r"[^\s&;|#'\"]*")
    return userinfo, parameter


def redact(text: str) -> str:
    """text (a URL, or a message holding URLs) with every password, lone user name (often a token)
    and secret query parameter replaced by ***; the user name before a password stays, to tell accounts apart."""
    if "@" not in text and "=" not in text:
        return text  # the common case, a plain path or URL: nothing to look for
    userinfo, parameter = _patterns()
    text = userinfo.sub(lambda m: f"{m.group(1)}{m.group(2)}:{REDACTED}@" if m.group(3) else f"{m.group(1)}{REDACTED}@", text)
    return parameter.sub(lambda m: m.group(1) + REDACTED, text)


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without user:password@, the user name, the password), both unquoted; None where absent."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return (urllib.parse.urlunsplit(parts._replace(netloc=host)), urllib.parse.unquote(user),
            urllib.parse.unquote(password) if colon else None)


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in: where credentials belong."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def opener(say=None):
    """urllib's opener whose redirects never take credentials to another origin; say(line) tells when one was not taken."""
    import urllib.request  # here: the redaction above is imported on every run, urllib.request only by one that downloads

    return urllib.request.build_opener(redirect_handler(say))


def redirect_handler(say=None):
    """urllib's redirect handler that takes credentials to the first request's origin alone (for any opener)."""
    return _stay_home_handler()(say)


@cache
def _stay_home_handler():
    import urllib.request

    class CredentialsStayHome(urllib.request.HTTPRedirectHandler):
        """Follows redirects; the authorization header goes along only to the first request's origin.

        It is an "unredirected" header, which urllib itself never copies to a redirect: it is added
        back here when, and only when, scheme, host and port are unchanged."""

        def __init__(self, say=None):
            self.say = say
            self.said: set = set()

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            authorization = req.unredirected_hdrs.get("Authorization")
            if new is None or authorization is None:
                return new
            before, after = origin(req.full_url), origin(new.full_url)
            if after == before:
                new.add_unredirected_header("Authorization", authorization)
            elif self.say and (before, after) not in self.said:  # once per pair: a cache redirects every GET
                self.said.add((before, after))
                self.say(f"{redact(req.full_url)} redirects to {redact(new.full_url)}, another origin (scheme, host "
                         "or port): followed without the credentials")
            return new

    return CredentialsStayHome


def request(url: str, headers: dict | None = None, data=None, method: str | None = None):
    """A urllib request for url, its user:password@ taken out of the URL and sent as Basic authorization to its origin alone."""
    import base64
    import urllib.request

    plain, user, password = split_userinfo(url)
    made = urllib.request.Request(plain, data=data, method=method, headers=headers or {})
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        made.add_unredirected_header("Authorization", f"Basic {token}")
    return made
