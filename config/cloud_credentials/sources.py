"""Where a cloud credential comes from: one source per BackendSecurityPolicy of type AWSCredentials,
GCPCredentials or AzureCredentials, compiled from the resources (config/cloud_policies.py) and
fetched by the refresher (refresher.py) in the control process.

Sources are frozen and compare by value: a reload that leaves a policy and its Secrets unchanged
keeps its credential instead of fetching a new one. They carry secrets (a client secret, a
service-account key, an AWS credentials file), so their repr names only what is not secret.
"""

from __future__ import annotations

from typing import Union

import msgspec


class _Secretive(msgspec.Struct, frozen=True):
    """A struct whose repr shows only the fields named in `_shown`."""

    _shown = ()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._shown)
        return f"{type(self).__name__}({shown})"

    __str__ = __repr__


class OIDCClient(_Secretive, frozen=True):
    """oidcExchangeToken.oidc: an OAuth 2.0 client-credentials grant at an OIDC provider."""

    _shown = ("issuer", "client_id")
    issuer: str
    token_endpoint: str | None  # provider.tokenEndpoint; else discovered from the issuer
    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = ()
    audience: str | None = None  # the policy's `aud`, sent as the `audience` parameter when set


class AWSCredentialsFile(_Secretive, frozen=True):
    """awsCredentials.credentialsFile: the Secret's `credentials` key, one profile of it."""

    _shown = ("profile", "region")
    text: str
    profile: str
    region: str


class AWSWebIdentity(_Secretive, frozen=True):
    """awsCredentials.oidcExchangeToken: an OIDC token exchanged at STS (AssumeRoleWithWebIdentity)."""

    _shown = ("role_arn", "region")
    oidc: OIDCClient
    role_arn: str
    session_name: str
    region: str


class AWSDefaultChain(_Secretive, frozen=True):
    """awsCredentials with neither: the environment's chain (variables, web-identity token file
    as on EKS with IRSA, shared files, container and instance metadata), as botocore resolves it."""

    _shown = ("region",)
    region: str


class GCPServiceAccount(_Secretive, frozen=True):
    """gcpCredentials.credentialsFile: a service-account key (the Secret's `service_account.json`)."""

    _shown = ("client_email",)
    info: str  # the key file's JSON text
    client_email: str


class GCPWorkloadIdentity(_Secretive, frozen=True):
    """gcpCredentials.workloadIdentityFederationConfig: an OIDC token exchanged at Google's STS, then
    (with serviceAccountImpersonation) for a service account's token."""

    _shown = ("audience", "service_account")
    oidc: OIDCClient
    audience: str  # //iam.googleapis.com/projects/{projectID}/locations/global/workloadIdentityPools/...
    service_account: str | None  # email to impersonate


class AzureClientSecret(_Secretive, frozen=True):
    """azureCredentials.clientSecretRef: the client-credentials grant with a client secret."""

    _shown = ("tenant_id", "client_id")
    tenant_id: str
    client_id: str
    client_secret: str


class AzureFederated(_Secretive, frozen=True):
    """azureCredentials.oidcExchangeToken: the client-credentials grant with an OIDC token as the
    client assertion (workload identity federation)."""

    _shown = ("tenant_id", "client_id")
    tenant_id: str
    client_id: str
    oidc: OIDCClient


Source = Union[AWSCredentialsFile, AWSWebIdentity, AWSDefaultChain, GCPServiceAccount, GCPWorkloadIdentity,
               AzureClientSecret, AzureFederated]
