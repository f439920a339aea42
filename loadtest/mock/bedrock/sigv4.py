"""SigV4 verification of the requests the Bedrock mock receives, by botocore's own signer.

``verify`` parses the ``Authorization`` header (``AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/
SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex``), looks the access key up (``secret_for``:
static keys and the mock STS's temporary ones, ``keys``), checks the date and the credential scope,
and recomputes the signature with ``botocore.auth.SigV4Auth`` over the received method, path, query,
exactly the headers the client listed in SignedHeaders, and the SHA-256 of the exact body bytes
(as every AWS service but S3 does, whatever ``x-amz-content-sha256`` says). The two signatures are
compared in constant time.

The RSGI server hands the app a percent-decoded path, while the client signed the path it sent,
encoded. ``path_candidates`` rebuilds what the client can have sent: the model ID (which may hold
':' and, for an ARN, '/') with every reserved character escaped, as botocore and the gateway send
it, else each segment escaped the same way, else the path as it came; the signature holds if it
matches one of them.

Refusals are ``AuthError`` with AWS's codes and messages, answered 403 (``x-amzn-ErrorType:
<code>:http://internal.amazon.com/coral/com.amazon.coral.service/``, body ``{"message": ...}``):

- no Authorization header: AccessDeniedException "Authorization header is missing" (what
  bedrock-runtime answers since it also takes API keys as bearer tokens)
- a header without Credential, SignedHeaders or Signature, or no X-Amz-Date/Date:
  IncompleteSignatureException listing what is missing
- an access key nobody issued, or a session token that is not the key's: UnrecognizedClientException
  "The security token included in the request is invalid."
- a session past its expiration: ExpiredTokenException
- a date more than 5 minutes from the mock's clock: InvalidSignatureException "Signature expired:
  ..." (or "Signature not yet current: ...")
- a scope for another date, region or service: InvalidSignatureException naming the mismatch
- a wrong signature: InvalidSignatureException "The request signature we calculated does not
  match ...", followed, as AWS does, by the canonical request and string to sign the mock
  computed (with x-amz-security-token's value left out: no secret goes into an answer).
"""

from __future__ import annotations

import calendar
import hmac
import re
import time
from collections.abc import Callable, Iterable
from email.utils import parsedate_to_datetime
from hashlib import sha256
from urllib.parse import quote

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 300  # seconds, either way
CORAL = "http://internal.amazon.com/coral/com.amazon.coral.service/"
SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your "
                      "AWS Secret Access Key and signing method. Consult the service documentation for details.")
INVALID_TOKEN = "The security token included in the request is invalid."
EXPIRED_TOKEN = "The security token included in the request is expired"
_SAFE = "-._~"  # what SigV4 (and botocore's percent_encode) leaves unescaped in a path segment
_MODEL_PATH = re.compile(r"^/model/(.+)/([a-z-]+)$", re.DOTALL)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class AuthError(Exception):
    """A refused signature: the AWS error code (``x-amzn-ErrorType``), its message and status."""

    def __init__(self, code: str, message: str, status: int = 403):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _incomplete(message: str) -> AuthError:
    return AuthError("IncompleteSignatureException", message)


def _invalid(message: str) -> AuthError:
    return AuthError("InvalidSignatureException", message)


class Authorization:
    """The parts of an ``AWS4-HMAC-SHA256`` Authorization header."""

    __slots__ = ("access_key", "date", "region", "service", "terminator", "signed_headers", "signature")

    def __init__(self, value: str):
        algorithm, _, rest = value.strip().partition(" ")
        params: dict[str, str] = {}
        for part in rest.split(","):
            name, sep, val = part.strip().partition("=")
            if sep:
                params[name.strip()] = val.strip()
        missing = [f"Authorization header requires '{name}' parameter." for name in
                   ("Credential", "Signature", "SignedHeaders") if not params.get(name)]
        if algorithm != ALGORITHM and not missing:
            raise _incomplete(f"Unsupported AWS 'algorithm': only '{ALGORITHM}' is supported")  # no echo: a secret?
        if missing:
            raise _incomplete(" ".join(missing))
        scope = params["Credential"].split("/")
        if len(scope) != 5:
            raise _incomplete(f"Credential should have exactly 5 slash-separated parts, not {len(scope)}.")
        self.access_key, self.date, self.region, self.service, self.terminator = scope
        self.signed_headers = params["SignedHeaders"].split(";")
        self.signature = params["Signature"]

    def __repr__(self) -> str:  # no signature, no full key id
        return f"Authorization(access_key={self.access_key[:4]}..., scope={self.date}/{self.region}/{self.service})"


def path_candidates(path: str) -> list[str]:
    """The raw (encoded) paths a client can have signed for this decoded path, likeliest first."""
    out: list[str] = []
    match = _MODEL_PATH.match(path)
    if match:
        out.append(f"/model/{quote(match.group(1), safe=_SAFE)}/{match.group(2)}")
    out.append("/".join(quote(segment, safe=_SAFE) for segment in path.split("/")))
    out.append(path)
    return list(dict.fromkeys(out))


def _timestamp(headers: dict[str, list[str]]) -> str:
    """The request's time in SigV4's basic format, from X-Amz-Date, else Date."""
    amz = headers.get("x-amz-date")
    if amz:
        value = amz[0].strip()
        try:
            time.strptime(value, SIGV4_TIMESTAMP)
        except ValueError:
            raise _incomplete(f"Date must be in ISO-8601 'basic format'. Got '{value[:40]}'. See "
                              "http://en.wikipedia.org/wiki/ISO_8601") from None
        return value
    date = headers.get("date")
    if date:
        try:
            parsed = parsedate_to_datetime(date[0])
        except (TypeError, ValueError):
            raise _incomplete("Date header is not an RFC 1123 date.") from None
        return time.strftime(SIGV4_TIMESTAMP, time.gmtime(calendar.timegm(parsed.utctimetuple())))
    raise _incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")


def _check_time(stamp: str, now: float) -> None:
    moment = calendar.timegm(time.strptime(stamp, SIGV4_TIMESTAMP))
    if moment < now - MAX_SKEW:
        edge = time.strftime(SIGV4_TIMESTAMP, time.gmtime(now - MAX_SKEW))
        raise _invalid(f"Signature expired: {stamp} is now earlier than {edge} "
                       f"({time.strftime(SIGV4_TIMESTAMP, time.gmtime(now))} - 5 min.)")
    if moment > now + MAX_SKEW:
        edge = time.strftime(SIGV4_TIMESTAMP, time.gmtime(now + MAX_SKEW))
        raise _invalid(f"Signature not yet current: {stamp} is still later than {edge} "
                       f"({time.strftime(SIGV4_TIMESTAMP, time.gmtime(now))} + 5 min.)")


def _check_scope(auth: Authorization, stamp: str, region: str, service: str) -> None:
    if auth.date != stamp[:8]:
        raise _invalid("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                       f"'{auth.date[:16]}' != '{stamp[:8]}', from '{stamp}'.")
    if auth.region != region:
        raise _invalid(f"Credential should be scoped to a valid region, not '{auth.region[:32]}'. ")
    if auth.service != service:
        raise _invalid(f"Credential should be scoped to correct service: '{service}'. ")
    if auth.terminator != "aws4_request":
        raise _invalid(f"Credential should be scoped with a valid terminator: 'aws4_request', not "
                       f"'{auth.terminator[:32]}'. ")


class _Recompute(SigV4Auth):
    """SigV4Auth over exactly the client's signed headers and the body's own hash."""

    def __init__(self, secret_key: str, service: str, region: str, signed: HTTPHeaders, body: bytes):
        super().__init__(Credentials("mock", secret_key), service, region)
        self._signed, self._body = signed, body

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self._signed

    def payload(self, request: AWSRequest) -> str:
        return sha256(self._body).hexdigest()


def _grouped(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers:
        out.setdefault(name.lower(), []).append(value)
    return out


def verify(method: str, path: str, query: str, headers: Iterable[tuple[str, str]], body: bytes,
           secret_for: Callable[[str, str | None, float], str], region: str, service: str = "bedrock",
           now: float | None = None) -> str:
    """The access key that signed this request; else an AuthError.

    ``secret_for(access_key, session_token, now)`` answers the key's secret or raises AuthError
    (unknown key, bad or expired session token)."""
    now = time.time() if now is None else now
    grouped = _grouped(headers)
    values = grouped.get("authorization")
    if not values:
        raise AuthError("AccessDeniedException", "Authorization header is missing")
    auth = Authorization(values[0])
    stamp = _timestamp(grouped)
    token = grouped.get("x-amz-security-token", [None])[0]
    secret = secret_for(auth.access_key, token, now)
    _check_time(stamp, now)
    _check_scope(auth, stamp, region, service)
    names = [n.strip().lower() for n in auth.signed_headers]
    if "host" not in names:
        raise _incomplete("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    signed = HTTPHeaders()
    for name in names:
        for value in grouped.get(name, ()):
            signed[name] = value
    provided = auth.signature.lower()
    first: tuple[str, str] | None = None
    for raw_path in path_candidates(path):
        canonical, to_sign, signature = _signature(method, raw_path, query, signed, body, secret, stamp, region,
                                                   service)
        if _HEX64.match(provided) and hmac.compare_digest(signature, provided):
            return auth.access_key
        first = first or (canonical, to_sign)
    assert first is not None
    raise _invalid(f"{SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n"
                   f"'{_redacted(first[0])}'\n\nThe String-to-Sign should have been\n'{first[1]}'\n")


def _signature(method: str, raw_path: str, query: str, signed: HTTPHeaders, body: bytes, secret: str, stamp: str,
               region: str, service: str) -> tuple[str, str, str]:
    request = AWSRequest(method=method, url="http://mock" + raw_path + ("?" + query if query else ""), data=body)
    request.context["timestamp"] = stamp
    signer = _Recompute(secret, service, region, signed, body)
    canonical = signer.canonical_request(request)
    to_sign = signer.string_to_sign(request, canonical)
    return canonical, to_sign, signer.signature(to_sign, request)


def _redacted(canonical: str) -> str:
    return "\n".join("x-amz-security-token:<not shown>" if line.startswith("x-amz-security-token:") else line
                     for line in canonical.split("\n"))
