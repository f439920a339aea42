"""Fetching each kind of cloud credential against in-process token endpoints that check what they
receive as the real ones do: OIDC discovery and client credentials, the Microsoft identity platform,
AWS STS (through botocore, at AWS_ENDPOINT_URL_STS), the AWS environment chain (variables and a
web-identity token file, as on EKS), and Google's token endpoint (the service-account JWT verified
with its public key), STS and IAM credentials."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from modelyard.config.cloud_credentials.fetch import Fetcher, keys_from_credentials_file
from modelyard.config.cloud_credentials.oauth import TokenError
from modelyard.config.cloud_credentials.sources import (
    AWSCredentialsFile, AWSDefaultChain, AWSWebIdentity, AzureClientSecret, AzureFederated, GCPServiceAccount,
    GCPWorkloadIdentity, OIDCClient,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(routes: list[tuple[str, str, Handler]]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _run(routes: list[tuple[str, str, Handler]], body: Callable[[str], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        runner, base = await _serve(routes)
        try:
            return await body(base)
        finally:
            await runner.cleanup()
    return asyncio.run(main())


def _oidc_routes(calls: list[dict[str, str]]) -> list[tuple[str, str, Handler]]:
    async def discovery(request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        return web.json_response({"issuer": f"{base}/issuer", "token_endpoint": f"{base}/oidc/token",
                                  "scopes_supported": ["openid", "api"]})

    async def token(request: web.Request) -> web.Response:
        form = dict(await request.post())
        expected = "Basic " + base64.b64encode(b"gateway:oidc%20pw").decode()
        if request.headers.get("authorization") != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        calls.append(form)
        return web.json_response({"access_token": f"oidc-{len(calls)}", "token_type": "Bearer", "expires_in": 300})
    return [("GET", "/issuer/.well-known/openid-configuration", discovery), ("POST", "/oidc/token", token)]


def _oidc_client(base: str, secret: str = "oidc pw") -> OIDCClient:
    return OIDCClient(f"{base}/issuer", None, "gateway", secret, ("api",))


def test_an_aws_credentials_file_profile() -> None:
    text = ("[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = def\n\n[prod]\n"
            "aws_access_key_id=ASIAPROD\naws_secret_access_key=prod-secret\naws_session_token=sess\n")
    assert keys_from_credentials_file(text, "default") == ("AKIDDEFAULT", "def", None)
    assert keys_from_credentials_file(text, "prod") == ("ASIAPROD", "prod-secret", "sess")
    with pytest.raises(TokenError, match=r"no profile \[staging\]") as info:
        keys_from_credentials_file(text, "staging")
    assert "prod-secret" not in str(info.value)
    entry = json.loads(asyncio.run(Fetcher().fetch(AWSCredentialsFile(text, "prod", "eu-west-1"))).value)
    assert entry == {"access_key_id": "ASIAPROD", "secret_access_key": "prod-secret", "session_token": "sess",
                     "region": "eu-west-1"}


def test_oidc_client_credentials_discover_the_endpoint_and_add_the_providers_scopes() -> None:
    calls: list[dict[str, str]] = []

    async def body(base: str) -> Any:
        fetcher = Fetcher()
        try:
            from modelyard.config.cloud_credentials.oauth import OIDCTokens
            tokens = OIDCTokens(fetcher._http())
            good = await tokens.token(_oidc_client(base))
            with pytest.raises(TokenError, match="HTTP 401, error invalid_client") as refused:
                await tokens.token(_oidc_client(base, "wrong"))
            return good, refused.value
        finally:
            await fetcher.close()

    token, refused = _run(_oidc_routes(calls), body)
    assert token.value == "oidc-1" and token.expires_at == pytest.approx(time.time() + 300, abs=30)
    assert calls == [{"grant_type": "client_credentials", "scope": "api openid"}]
    assert "wrong" not in str(refused)


def test_azure_tokens_with_a_secret_and_with_a_federated_oidc_assertion(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, str]] = []

    async def azure(request: web.Request) -> web.Response:
        form = dict(await request.post())
        seen.append(form)
        if request.match_info["tenant"] != "tenant-1" or form.get("scope") != \
                "https://cognitiveservices.azure.com/.default":
            return web.json_response({"error": "invalid_request"}, status=400)
        ok = form.get("client_secret") == "az-secret" or (
            form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            and form.get("client_assertion") == "oidc-1")
        if not ok:
            return web.json_response({"error": "invalid_client", "error_codes": [7000215]}, status=401)
        return web.json_response({"token_type": "Bearer", "expires_in": 3599, "access_token": "entra-token"})

    async def body(base: str) -> Any:
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", base)
        fetcher = Fetcher()
        try:
            a = await fetcher.fetch(AzureClientSecret("tenant-1", "app", "az-secret"))
            b = await fetcher.fetch(AzureFederated("tenant-1", "app", _oidc_client(base)))
            with pytest.raises(TokenError, match="invalid_client"):
                await fetcher.fetch(AzureClientSecret("tenant-1", "app", "bad"))
            return a, b
        finally:
            await fetcher.close()

    a, b = _run([("POST", "/{tenant}/oauth2/v2.0/token", azure), *_oidc_routes([])], body)
    assert a.value == b.value == "entra-token"
    assert seen[0]["grant_type"] == "client_credentials" and seen[0]["client_id"] == "app"


STS_ANSWER = """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>ASIATEMP</AccessKeyId>
      <SecretAccessKey>temp-secret</SecretAccessKey>
      <SessionToken>temp-session</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <SubjectFromWebIdentityToken>gateway</SubjectFromWebIdentityToken>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"""
STS_ERROR = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>
<Code>InvalidIdentityToken</Code><Message>Couldn't verify the token</Message></Error><RequestId>2</RequestId>
</ErrorResponse>"""


def _sts_route(forms: list[dict[str, str]], good_token: str) -> tuple[str, str, Handler]:
    async def sts(request: web.Request) -> web.Response:
        form = dict(await request.post())
        forms.append(form)
        if "authorization" in request.headers:  # AssumeRoleWithWebIdentity is never signed
            return web.Response(status=400, text="signed")
        if form.get("Action") != "AssumeRoleWithWebIdentity" or form.get("WebIdentityToken") != good_token:
            return web.Response(status=400, text=STS_ERROR, content_type="text/xml")
        expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 900))
        return web.Response(text=STS_ANSWER.format(expiration=expiration), content_type="text/xml")
    return "POST", "/", sts


def test_aws_oidc_exchange_assumes_the_role_at_sts(monkeypatch: pytest.MonkeyPatch) -> None:
    forms: list[dict[str, str]] = []

    async def body(base: str) -> Any:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", base)
        fetcher = Fetcher()
        try:
            source = AWSWebIdentity(_oidc_client(base), "arn:aws:iam::1:role/r", "modelyard-ns-pol", "us-east-1")
            ok = await fetcher.fetch(source)
            monkeypatch.setenv("AWS_ENDPOINT_URL_STS", base)
            with pytest.raises(TokenError, match="InvalidIdentityToken"):
                await fetcher.fetch(AWSWebIdentity(_oidc_client(base), "arn:aws:iam::1:role/other", "ss", "us-east-1"))
            return ok
        finally:
            await fetcher.close()

    fetched = _run([_sts_route(forms, "oidc-1"), *_oidc_routes([])], body)
    assert json.loads(fetched.value) == {"access_key_id": "ASIATEMP", "secret_access_key": "temp-secret",
                                         "session_token": "temp-session", "region": "us-east-1"}
    assert fetched.expires_at == pytest.approx(time.time() + 900, abs=60)
    assert forms[0]["RoleArn"] == "arn:aws:iam::1:role/r" and forms[0]["RoleSessionName"] == "modelyard-ns-pol"


def test_the_aws_environment_chain_with_variables_and_with_a_web_identity_token_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    entry = json.loads(asyncio.run(Fetcher().fetch(AWSDefaultChain("ap-south-1"))).value)
    assert entry == {"access_key_id": "AKIDENV", "secret_access_key": "env-secret", "session_token": None,
                     "region": "ap-south-1"}

    # EKS with IRSA: a projected token file and a role, exchanged by botocore's own chain at STS.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "token").write_text("irsa-token")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::1:role/irsa")
    forms: list[dict[str, str]] = []

    async def body(base: str) -> Any:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", base)
        return await Fetcher().fetch(AWSDefaultChain("us-east-1"))

    fetched = _run([_sts_route(forms, "irsa-token")], body)
    assert json.loads(fetched.value)["access_key_id"] == "ASIATEMP" and forms[0]["RoleArn"] == "arn:aws:iam::1:role/irsa"


def _service_account(token_uri: str) -> tuple[dict[str, str], bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = {"type": "service_account", "project_id": "proj", "private_key_id": "kid-1", "private_key": pem,
            "client_email": "gw@proj.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri}
    return info, public


def test_a_gcp_service_account_key_is_exchanged_for_an_access_token() -> None:
    from google.auth import jwt as google_jwt

    state: dict[str, Any] = {}

    async def token(request: web.Request) -> web.Response:
        form = dict(await request.post())
        try:  # what Google checks: signed by the key, issued by the account, for Google's token endpoint
            claims = google_jwt.decode(form["assertion"], certs=state["public"],
                                       audience="https://oauth2.googleapis.com/token")
        except ValueError:
            return web.json_response({"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
                                     status=400)
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        assert claims["iss"] == "gw@proj.iam.gserviceaccount.com"
        assert "https://www.googleapis.com/auth/cloud-platform" in claims["scope"]
        return web.json_response({"access_token": "ya29.token", "expires_in": 3599, "token_type": "Bearer"})

    async def body(base: str) -> Any:
        state["uri"] = f"{base}/token"
        info, state["public"] = _service_account(state["uri"])
        good = await Fetcher().fetch(GCPServiceAccount(json.dumps(info), info["client_email"]))
        other, _ = _service_account(state["uri"])
        other["private_key"], other["client_email"] = other["private_key"], info["client_email"]
        with pytest.raises(TokenError, match="RefreshError: invalid_grant") as refused:
            await Fetcher().fetch(GCPServiceAccount(json.dumps(other), info["client_email"]))
        return good, str(refused.value)

    good, refused = _run([("POST", "/token", token)], body)
    assert good.value == "ya29.token" and good.expires_at == pytest.approx(time.time() + 3599, abs=60)
    assert "PRIVATE KEY" not in refused


def test_gcp_workload_identity_federation_exchanges_and_impersonates(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def sts(request: web.Request) -> web.Response:
        form = dict(await request.post())
        seen["sts"] = form
        if not form.get("subject_token", "").startswith("oidc-"):
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response({"access_token": "federated", "issued_token_type":
                                  "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer",
                                  "expires_in": 3600})

    async def impersonate(request: web.Request) -> web.Response:
        seen["iam"] = (request.match_info["email"], request.headers.get("authorization"), await request.json())
        expire = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1800))
        return web.json_response({"accessToken": "impersonated", "expireTime": expire})

    async def body(base: str) -> Any:
        monkeypatch.setenv("MODELYARD_GCP_STS_URL", f"{base}/v1/token")
        monkeypatch.setenv("MODELYARD_GCP_IAM_CREDENTIALS_URL", base)
        fetcher = Fetcher()
        try:
            audience = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q"
            direct = await fetcher.fetch(GCPWorkloadIdentity(_oidc_client(base), audience, None))
            impersonated = await fetcher.fetch(GCPWorkloadIdentity(_oidc_client(base), audience,
                                                                   "caller@proj.iam.gserviceaccount.com"))
            return direct, impersonated
        finally:
            await fetcher.close()

    direct, impersonated = _run([("POST", "/v1/token", sts),
                                 ("POST", "/v1/projects/-/serviceAccounts/{email}:generateAccessToken", impersonate),
                                 *_oidc_routes([])], body)
    assert direct.value == "federated" and impersonated.value == "impersonated"
    assert seen["sts"]["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert seen["sts"]["audience"].endswith("/providers/q")
    email, auth, payload = seen["iam"]
    assert email == "caller@proj.iam.gserviceaccount.com" and auth == "Bearer federated"
    assert payload["scope"] == ["https://www.googleapis.com/auth/cloud-platform"]
    assert impersonated.expires_at == pytest.approx(time.time() + 1800, abs=60)


def test_token_requests_follow_resolve_like_the_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    async def azure(request: web.Request) -> web.Response:
        assert request.host.startswith("login.example.test:")  # the name is kept, only the address is mapped
        return web.json_response({"token_type": "Bearer", "expires_in": 60, "access_token": "mapped"})

    async def body(base: str) -> Any:
        port = base.rpartition(":")[2]
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", f"http://login.example.test:{port}")
        fetcher = Fetcher(resolve={f"login.example.test:{port}": f"127.0.0.1:{port}"})
        try:
            return await fetcher.fetch(AzureClientSecret("t", "app", "s"))
        finally:
            await fetcher.close()

    assert _run([("POST", "/{tenant}/oauth2/v2.0/token", azure)], body).value == "mapped"


def test_a_token_endpoint_answering_100_mb_is_refused_after_one_mebibyte(monkeypatch: pytest.MonkeyPatch) -> None:
    chunk = b"x" * (1 << 20)

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        await response.prepare(request)
        try:
            for _ in range(100):  # 100 MB, streamed: the gateway stops reading after its bound
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def body(base: str) -> Any:
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", base)
        fetcher = Fetcher()
        try:
            with pytest.raises(TokenError, match="over 1048576 bytes"):
                await fetcher.fetch(AzureClientSecret("t", "app", "s"))
        finally:
            await fetcher.close()

    _run([("POST", "/{tenant}/oauth2/v2.0/token", huge)], body)


def test_a_token_answer_that_arrives_in_pieces_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = json.dumps({"token_type": "Bearer", "expires_in": 60, "access_token": "t" * 200_000}).encode()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        await response.prepare(request)
        for i in range(0, len(answer), 4096):
            await response.write(answer[i:i + 4096])
            await asyncio.sleep(0)
        return response

    async def body(base: str) -> Any:
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", base)
        fetcher = Fetcher()
        try:
            return await fetcher.fetch(AzureClientSecret("t", "app", "s"))
        finally:
            await fetcher.close()

    assert _run([("POST", "/{tenant}/oauth2/v2.0/token", slow)], body).value == "t" * 200_000
