"""Fetching one cloud credential from its source: what the refresher publishes, and until when.

AWS sources give an AWSKeys entry (JSON: gateway/providers/aws_bedrock.py reads it); GCP and Azure
sources give a bearer token. The libraries made for each do the work: botocore for the AWS shared
credentials file's profile, STS and the environment's credential chain; google-auth for service-
account keys and workload identity federation; OAuth form POSTs of our own (oauth.py) for OIDC
client credentials and the Microsoft identity platform. botocore and google-auth block, so they run
in threads; the event loop (the admin port, the config watcher) never waits on a token endpoint.

Endpoints: the OAuth requests (OIDC providers, Entra ID) honour --resolve as the backends do; AWS STS
is botocore's (regional), and honours AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL;
Azure's authority is AZURE_AUTHORITY_HOST (as azure-identity reads it), else login.microsoftonline.com;
a service-account key's token endpoint is its own `token_uri`; Google's STS and IAM credentials
endpoints are MODELYARD_GCP_STS_URL and MODELYARD_GCP_IAM_CREDENTIALS_URL when set (private or test
endpoints; the Envoy AI Gateway has no field for them), else Google's. Proxies come from the
environment (HTTPS_PROXY, NO_PROXY) for all of them; CAs from the system's (SSL_CERT_FILE), and
for google-auth from REQUESTS_CA_BUNDLE too, as requests reads it.
"""

from __future__ import annotations

import asyncio
import calendar
import configparser
import json
import os
import socket
import threading
from typing import Any

import aiohttp
import aiohttp.abc
import msgspec

from modelyard.config.cloud_credentials.oauth import AZURE_AUTHORITY, OIDCTokens, Token, TokenError, azure_token
from modelyard.config.cloud_credentials.sources import (
    AWSCredentialsFile, AWSDefaultChain, AWSWebIdentity, AzureClientSecret, AzureFederated, GCPServiceAccount,
    GCPWorkloadIdentity, Source,
)

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
GCP_STS_URL = "https://sts.googleapis.com/v1/token"
GCP_IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
CHAIN_RECHECK = 300.0  # seconds between re-reads of the environment's AWS chain (botocore refreshes it)


def aws_entry(access_key_id: str, secret_access_key: str, session_token: str | None, region: str) -> str:
    """The credentials-segment entry an AWS source publishes (AWSKeys in gateway/providers/aws_bedrock.py)."""
    return msgspec.json.encode({"access_key_id": access_key_id, "secret_access_key": secret_access_key,
                                "session_token": session_token or None, "region": region}).decode()


def keys_from_credentials_file(text: str, profile: str) -> tuple[str, str, str | None]:
    """(access key ID, secret key, session token) of a profile of an AWS shared credentials file."""
    parser = configparser.RawConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as e:
        raise TokenError(f"the AWS credentials file does not parse ({type(e).__name__})") from None
    if not parser.has_section(profile):
        raise TokenError(f"the AWS credentials file has no profile [{profile}]")
    section = parser[profile]
    key_id, secret = section.get("aws_access_key_id", "").strip(), section.get("aws_secret_access_key", "").strip()
    if not key_id or not secret:
        raise TokenError(f"profile [{profile}] of the AWS credentials file lacks aws_access_key_id or "
                         "aws_secret_access_key")
    return key_id, secret, section.get("aws_session_token", "").strip() or None


def _utc_timestamp(dt: Any) -> float | None:
    """A datetime (naive UTC, as google-auth gives; or aware, as botocore gives) as a timestamp."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        return dt.timestamp()
    return float(calendar.timegm(dt.utctimetuple()))


class Fetched:
    __slots__ = ("value", "expires_at", "recheck")

    def __init__(self, value: str, expires_at: float | None, recheck: float | None = None):
        self.value = value  # secret: never logged
        self.expires_at = expires_at  # wall-clock seconds; None: does not expire
        self.recheck = recheck  # seconds after which to fetch again although it does not expire

    def __repr__(self) -> str:
        return f"Fetched(expires_at={self.expires_at!r})"


class ResolveMap(aiohttp.abc.AbstractResolver):
    """--resolve for the token requests aiohttp makes (OIDC, Entra ID): "host:port" -> "addr:port",
    as for the backends; TLS still verifies the host's own name. Other names resolve as usual."""

    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping
        self.default = aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[Any]:
        mapped = self.mapping.get(f"{host}:{port}")
        if mapped is None:
            return await self.default.resolve(host, port, family)
        addr, _, to_port = mapped.rpartition(":")
        addr = addr.strip("[]")
        return [{"hostname": host, "host": addr, "port": int(to_port), "proto": 0, "flags": socket.AI_NUMERICHOST,
                 "family": socket.AF_INET6 if ":" in addr else socket.AF_INET}]

    async def close(self) -> None:
        await self.default.close()


class Fetcher:
    """Fetches credentials for sources; one per control process (it keeps HTTP sessions and clients)."""

    def __init__(self, session: aiohttp.ClientSession | None = None, resolve: dict[str, str] | None = None):
        self._resolve = resolve or {}
        self._session = session
        self._oidc: OIDCTokens | None = None
        self._lock = threading.Lock()  # botocore client creation is not thread-safe
        self._sts: dict[str, Any] = {}
        self._chains: dict[str, Any] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=ResolveMap(self._resolve)) if self._resolve else None
            # trust_env: HTTPS_PROXY / NO_PROXY apply to token requests, as to botocore's and google-auth's.
            self._session = aiohttp.ClientSession(trust_env=True, connector=connector)
        return self._session

    def _oidc_tokens(self) -> OIDCTokens:
        if self._oidc is None:
            self._oidc = OIDCTokens(self._http())
        return self._oidc

    async def fetch(self, source: Source) -> Fetched:
        """The credential now; TokenError (a message safe to log) when it cannot be had."""
        if isinstance(source, AWSCredentialsFile):
            key_id, secret, token = keys_from_credentials_file(source.text, source.profile)
            return Fetched(aws_entry(key_id, secret, token, source.region), None)
        if isinstance(source, AWSWebIdentity):
            oidc = await self._oidc_tokens().token(source.oidc)
            return await asyncio.to_thread(self._assume_role, source, oidc.value)
        if isinstance(source, AWSDefaultChain):
            return await asyncio.to_thread(self._chain, source.region)
        if isinstance(source, GCPServiceAccount):
            return await asyncio.to_thread(_gcp_service_account, source.info)
        if isinstance(source, GCPWorkloadIdentity):
            oidc = await self._oidc_tokens().token(source.oidc)
            return await asyncio.to_thread(_gcp_workload_identity, source, oidc.value)
        if isinstance(source, (AzureClientSecret, AzureFederated)):
            authority = os.environ.get("AZURE_AUTHORITY_HOST") or AZURE_AUTHORITY
            if isinstance(source, AzureClientSecret):
                token = await azure_token(self._http(), source.tenant_id, source.client_id,
                                          secret=source.client_secret, authority=authority)
            else:
                assertion = await self._oidc_tokens().token(source.oidc)
                token = await azure_token(self._http(), source.tenant_id, source.client_id,
                                          assertion=assertion.value, authority=authority)
            return Fetched(token.value, token.expires_at)
        raise TokenError(f"no way to fetch a {type(source).__name__}")

    # ------------------------------------------------------------------ AWS (threads)

    def _assume_role(self, source: AWSWebIdentity, web_token: str) -> Fetched:
        import botocore.exceptions

        client = self._sts_client(source.region)
        try:
            answer = client.assume_role_with_web_identity(RoleArn=source.role_arn, RoleSessionName=source.session_name,
                                                          WebIdentityToken=web_token)
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "unknown")
            raise TokenError(f"AWS STS refused AssumeRoleWithWebIdentity for {source.role_arn}: {code}") from None
        except botocore.exceptions.BotoCoreError as e:
            raise TokenError(f"AWS STS could not be asked ({type(e).__name__})") from None
        c = answer["Credentials"]
        return Fetched(aws_entry(c["AccessKeyId"], c["SecretAccessKey"], c.get("SessionToken"), source.region),
                       _utc_timestamp(c.get("Expiration")))

    def _sts_client(self, region: str) -> Any:
        with self._lock:
            client = self._sts.get(region)
            if client is None:
                import botocore
                import botocore.config
                import botocore.session

                # AssumeRoleWithWebIdentity is unsigned: the web identity token is the proof.
                config = botocore.config.Config(signature_version=botocore.UNSIGNED, retries={"max_attempts": 2})
                client = self._sts[region] = botocore.session.get_session().create_client(
                    "sts", region_name=region, config=config)
            return client

    def _chain(self, region: str) -> Fetched:
        with self._lock:
            credentials = self._chains.get(region)
            if credentials is None:
                import botocore.session

                session = botocore.session.get_session()
                session.set_config_variable("region", region)
                credentials = session.get_credentials()
                if credentials is None:
                    raise TokenError("no AWS credentials in the environment (variables, web identity token file, "
                                     "shared files, container or instance metadata)")
                self._chains[region] = credentials
        try:  # a RefreshableCredentials renews itself here when it is close to expiry
            frozen = credentials.get_frozen_credentials()
        except Exception as e:  # botocore raises many kinds; none carries a secret in its type name
            raise TokenError(f"the environment's AWS credentials could not be refreshed ({type(e).__name__})") from None
        return Fetched(aws_entry(frozen.access_key, frozen.secret_key, frozen.token, region), None, CHAIN_RECHECK)


# ---------------------------------------------------------------------- GCP (threads)


def _gcp_refresh(credentials: Any, what: str) -> Fetched:
    import google.auth.exceptions
    import google.auth.transport.requests
    import requests

    with requests.Session() as http:  # honours HTTPS_PROXY and REQUESTS_CA_BUNDLE, as requests does
        try:
            credentials.refresh(google.auth.transport.requests.Request(http))
        except google.auth.exceptions.GoogleAuthError as e:
            reason = e.args[0] if e.args and isinstance(e.args[0], str) else ""
            reason = reason.split(",")[0][:200] if reason.isprintable() else ""
            raise TokenError(f"{what} gave no token ({type(e).__name__}{': ' + reason if reason else ''})") from None
        except requests.RequestException as e:
            raise TokenError(f"{what} could not be reached ({type(e).__name__})") from None
    return Fetched(credentials.token, _utc_timestamp(credentials.expiry))


def _gcp_service_account(info: str) -> Fetched:
    from google.oauth2 import service_account

    try:
        credentials = service_account.Credentials.from_service_account_info(json.loads(info), scopes=[CLOUD_PLATFORM])
    except (ValueError, KeyError) as e:
        raise TokenError(f"the service-account key cannot be used ({type(e).__name__})") from None
    return _gcp_refresh(credentials, f"the token endpoint of {credentials.service_account_email}")


def _gcp_workload_identity(source: GCPWorkloadIdentity, oidc_token: str) -> Fetched:
    from google.auth import identity_pool

    class _Given(identity_pool.SubjectTokenSupplier):  # type: ignore[misc]
        def get_subject_token(self, context: Any, request: Any) -> str:
            return oidc_token

    impersonation = None
    if source.service_account:
        base = os.environ.get("MODELYARD_GCP_IAM_CREDENTIALS_URL") or GCP_IAM_CREDENTIALS_URL
        impersonation = f"{base.rstrip('/')}/v1/projects/-/serviceAccounts/{source.service_account}:generateAccessToken"
    credentials = identity_pool.Credentials(
        audience=source.audience, subject_token_type=JWT_TOKEN_TYPE,
        token_url=os.environ.get("MODELYARD_GCP_STS_URL") or GCP_STS_URL, subject_token_supplier=_Given(),
        service_account_impersonation_url=impersonation, scopes=[CLOUD_PLATFORM])
    return _gcp_refresh(credentials, "Google's STS" + (" and IAM credentials" if impersonation else ""))


__all__ = ["Fetched", "Fetcher", "Token", "TokenError", "aws_entry", "keys_from_credentials_file"]
