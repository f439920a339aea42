"""AWS STS's AssumeRoleWithWebIdentity as the Bedrock mock serves it, on the same port (``POST /``).

The request is the Query protocol's form body (``Action=AssumeRoleWithWebIdentity&Version=
2011-06-15&RoleArn=...&RoleSessionName=...&WebIdentityToken=...&DurationSeconds=...``), unsigned as
on AWS, so ``AWS_ENDPOINT_URL_STS=http://127.0.0.1:PORT`` points botocore (and the SDKs) at the mock.
The web identity token must be an RS256 JWT signed by a key of the trusted issuer's JWK set
(``--oidc-jwks``), current (``jwt.check_claims``: ``exp`` required, a minute's clock skew allowed),
with the ``--oidc-issuer`` and one of the ``--oidc-audience`` values if given; the role
one of ``--sts-role`` (any well-formed role ARN when none is given). The answer is the documented
``AssumeRoleWithWebIdentityResponse`` XML with temporary credentials (``keys.KeyStore.issue``) that
the Bedrock endpoints then accept, living ``--sts-duration`` seconds when given, else the
requested DurationSeconds (default 3600).

Errors are the Query protocol's ``<ErrorResponse><Error><Type>Sender</Type><Code>...`` XML:
InvalidIdentityToken (400) for a token that is not a JWT, is badly signed or is for another issuer
or audience, ExpiredTokenException (400) for an expired one, AccessDenied (403) for a role not
allowed, ValidationError (400) for a missing or malformed parameter, InvalidAction (400) for any
other Action.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from modelyard.loadtest.mock import jwt
from modelyard.loadtest.mock.bedrock.keys import KeyStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

VERSION = "2011-06-15"
NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
DEFAULT_DURATION = 3600
MAX_SESSION_DURATION = 3600  # a role's default MaxSessionDuration
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/((?:[\w+=,.@-]+/)*)([\w+=,.@-]{1,64})$")
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")


class STSError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _validation(message: str) -> STSError:
    return STSError(400, "ValidationError", message)


class WebIdentityTrust:
    """Who STS trusts: the issuer's keys (by kid, ``jwt.load_jwks``), the iss a token must carry and
    the audiences one of which it must name, when set (none: any)."""

    def __init__(self, keys: dict[str | None, rsa.RSAPublicKey], issuer: str | None = None,
                 audiences: tuple[str, ...] = (), roles: tuple[str, ...] = ()):
        self.keys, self.issuer, self.roles = keys, issuer, frozenset(roles)
        self.audiences = frozenset(audiences) or None

    def __repr__(self) -> str:
        return (f"WebIdentityTrust({len(self.keys)} keys, issuer={self.issuer!r}, "
                f"audiences={sorted(self.audiences or ())!r})")


def request_id() -> str:
    return str(uuid.uuid4())


def error_xml(code: str, message: str, rid: str) -> bytes:
    return (f'<ErrorResponse xmlns="{NAMESPACE}">\n  <Error>\n    <Type>Sender</Type>\n'
            f'    <Code>{escape(code)}</Code>\n    <Message>{escape(message)}</Message>\n  </Error>\n'
            f'  <RequestId>{rid}</RequestId>\n</ErrorResponse>\n').encode()


def _param(params: dict[str, list[str]], name: str, field: str) -> str:
    values = params.get(name)
    if not values or values[0] == "":
        raise _validation(f"1 validation error detected: Value null at '{field}' failed to satisfy constraint: "
                          "Member must not be null")
    return values[0]


def _duration(params: dict[str, list[str]]) -> int:
    raw = params.get("DurationSeconds", [""])[0]
    if not raw:
        return DEFAULT_DURATION
    try:
        value = int(raw)
    except ValueError:
        raise _validation(f"Value '{raw[:20]}' at 'durationSeconds' failed to satisfy constraint: Member must be an "
                          "integer") from None
    if value < 900:
        raise _validation(f"1 validation error detected: Value '{value}' at 'durationSeconds' failed to satisfy "
                          "constraint: Member must have value greater than or equal to 900")
    if value > 43200:
        raise _validation(f"1 validation error detected: Value '{value}' at 'durationSeconds' failed to satisfy "
                          "constraint: Member must have value less than or equal to 43200")
    if value > MAX_SESSION_DURATION:
        raise _validation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
    return value


def _identity(token: str, trust: WebIdentityTrust | None, now: float) -> dict[str, Any]:
    if len(token) < 4 or len(token) > 20_000:
        raise _validation("1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: "
                          "Member must have length between 4 and 20000")
    if trust is None or not trust.keys:
        raise STSError(400, "InvalidIdentityToken", "No OpenIDConnect provider found in your account for the "
                                                    "token's issuer")
    claims: dict[str, Any] = {}
    try:
        claims = jwt.verify_rs256(token, trust.keys)
        jwt.check_claims(claims, now, audiences=trust.audiences, issuer=trust.issuer)
    except jwt.JWTError as e:
        raise _refusal(e.reason, jwt.numeric(claims, "exp"), now) from None
    return claims


def _refusal(reason: str, exp: float | None, now: float) -> STSError:
    """STS's error for a web identity token that ``jwt`` refused for ``reason``."""
    if reason == jwt.EXPIRED and exp is not None:
        return STSError(400, "ExpiredTokenException", f"Token expired: current date/time {int(now)} must be before "
                                                      f"the expiration date/time {int(exp)}")
    if reason == jwt.WRONG_ISSUER:
        return STSError(400, "InvalidIdentityToken", "No OpenIDConnect provider found in your account for the "
                                                     "token's issuer")
    if reason == jwt.WRONG_AUDIENCE:
        return STSError(400, "InvalidIdentityToken", "Incorrect token audience")
    return STSError(400, "InvalidIdentityToken", f"The web identity token is not valid: {_WHY.get(reason, reason)}")


# How STS words each refusal of jwt (never the token itself).
_WHY = {
    jwt.MALFORMED: "it is not a JWS compact serialization (three base64url parts of JSON)",
    jwt.UNSUPPORTED_ALG: "its algorithm is not RS256",
    jwt.UNKNOWN_KEY: "its kid names no key of the issuer's JWK set",
    jwt.BAD_SIGNATURE: "its signature does not verify with the issuer's keys",
    jwt.EXPIRED: "it has no exp claim",
    jwt.NOT_YET_VALID: "its iat or nbf is in the future",
}


def assume_role_with_web_identity(body: bytes, store: KeyStore, trust: WebIdentityTrust | None,
                                  lifetime: int | None = None, now: float | None = None,
                                  rid: str | None = None) -> bytes:
    """The XML answer to one STS form POST; an STSError for a refusal."""
    now = time.time() if now is None else now
    rid = rid or request_id()
    try:
        params = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise STSError(400, "MalformedQueryString", "The request body is not UTF-8 form data") from None
    action = params.get("Action", [""])[0]
    version = params.get("Version", [""])[0]
    if action != "AssumeRoleWithWebIdentity" or version != VERSION:
        raise STSError(400, "InvalidAction", f"Could not find operation {action[:64]} for version {version[:16]}")
    role_arn = _param(params, "RoleArn", "roleArn")
    session_name = _param(params, "RoleSessionName", "roleSessionName")
    token = _param(params, "WebIdentityToken", "webIdentityToken")
    duration = _duration(params)
    role = _ROLE_ARN.match(role_arn)
    if role is None:
        raise _validation(f"{role_arn[:200]} is invalid")
    if not _SESSION_NAME.match(session_name):
        raise _validation("1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint: "
                          "Member must satisfy regular expression pattern: [\\w+=,.@-]* and have length between 2 "
                          "and 64")
    claims = _identity(token, trust, now)
    assert trust is not None
    if trust.roles and role_arn not in trust.roles:
        raise STSError(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
    creds = store.issue(role_arn, session_name, lifetime or duration, now)
    account, role_name = role.group(1), role.group(3)
    expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(creds.expiration))
    audience = claims.get("aud")
    audience = audience[0] if isinstance(audience, list) and audience else audience
    issuer = str(claims.get("iss") or "")
    provider = issuer.split("://", 1)[-1]
    return (
        f'<AssumeRoleWithWebIdentityResponse xmlns="{NAMESPACE}">\n'
        '  <AssumeRoleWithWebIdentityResult>\n'
        f'    <SubjectFromWebIdentityToken>{escape(str(claims.get("sub") or ""))}</SubjectFromWebIdentityToken>\n'
        f'    <Audience>{escape(str(audience or ""))}</Audience>\n'
        '    <AssumedRoleUser>\n'
        f'      <Arn>arn:aws:sts::{account}:assumed-role/{escape(role_name)}/{escape(session_name)}</Arn>\n'
        f'      <AssumedRoleId>AROA{_role_id(role_arn)}:{escape(session_name)}</AssumedRoleId>\n'
        '    </AssumedRoleUser>\n'
        '    <Credentials>\n'
        f'      <AccessKeyId>{creds.access_key_id}</AccessKeyId>\n'
        f'      <SecretAccessKey>{escape(creds.secret_access_key)}</SecretAccessKey>\n'
        f'      <SessionToken>{escape(creds.session_token)}</SessionToken>\n'
        f'      <Expiration>{expiration}</Expiration>\n'
        '    </Credentials>\n'
        f'    <Provider>{escape(provider)}</Provider>\n'
        '  </AssumeRoleWithWebIdentityResult>\n'
        '  <ResponseMetadata>\n'
        f'    <RequestId>{rid}</RequestId>\n'
        '  </ResponseMetadata>\n'
        '</AssumeRoleWithWebIdentityResponse>\n'
    ).encode()


def _role_id(role_arn: str) -> str:
    """A stable 17-character unique id for the role, as AWS's AROA... ids have."""
    return base64.b32encode(hashlib.sha256(role_arn.encode()).digest()).decode("ascii")[:17]
