"""BackendSecurityPolicies whose credential the control process fetches and refreshes: AWSCredentials,
GCPCredentials and AzureCredentials, compiled into the table's CloudAuth (what the data plane needs:
no secret) and a credential source (config/cloud_credentials/sources.py: what the refresher needs).

Field names, defaults and validation follow the Envoy AI Gateway's v1alpha1/v1beta1
BackendSecurityPolicy: the Secret keys are `credentials` (AWS), `service_account.json` (GCP) and
`client-secret` (Azure's clientSecretRef and every oidc.clientSecret); credentialsFile.profile
defaults to `default`; a service account to impersonate is `<serviceAccountName>@<projectName>
.iam.gserviceaccount.com`, as it builds it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from modelyard.config.cloud_credentials.sources import (
    AWSCredentialsFile, AWSDefaultChain, AWSWebIdentity, AzureClientSecret, AzureFederated, GCPServiceAccount,
    GCPWorkloadIdentity, OIDCClient, Source,
)
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import Resource
from modelyard.core.table import CloudAuth, ErrorReply

CLOUD_TYPES = ("AWSCredentials", "GCPCredentials", "AzureCredentials")
# Which backend schemas each type can authenticate (AWS signs Bedrock, GCP's token is Vertex AI's,
# Azure's is Azure OpenAI's).
SCHEMAS_OF = {"AWSCredentials": ("AWSBedrock", "AWSAnthropic"), "GCPCredentials": ("GCPVertexAI", "GCPAnthropic"),
              "AzureCredentials": ("AzureOpenAI",)}
# The spec field each policy type keeps its settings in.
TYPE_FIELDS = {"APIKey": "apiKey", "AWSCredentials": "awsCredentials", "AzureAPIKey": "azureAPIKey",
               "AzureCredentials": "azureCredentials", "GCPCredentials": "gcpCredentials",
               "AnthropicAPIKey": "anthropicAPIKey"}
OIDC_SECRET_KEY = "client-secret"
_SESSION_NAME_BAD = re.compile(r"[^\w+=,.@-]")

# (namespace, name, key) -> the Secret's value, None when missing; raises the resolver's SecretError.
SecretReader = Callable[[str, str, str], "str | None"]


class PolicyProblem(ValueError):
    """A policy that cannot give a credential: the message (no secret in it), and the field at fault."""

    def __init__(self, message: str, field: str, missing: bool = False, content: bool = False):
        super().__init__(message)
        self.field = field
        self.missing = missing  # a Secret or key that does not exist (yet): a warning, not an error
        # A Secret whose value cannot be used: a warning too (the Envoy AI Gateway admits it and fails
        # to fetch), so the rest of the configuration loads; its backends answer 503.
        self.content = content


def check_type_fields(policies: list[Resource], diags: Diagnostics) -> None:
    """The CRD's rule: a policy sets its own type's field and no other type's."""
    for pol in policies:
        ptype = pol.spec["type"]
        others = [f for t, f in TYPE_FIELDS.items() if t != ptype and f in pol.spec]
        if others:
            diags.error(f"When type is {ptype}, only {TYPE_FIELDS[ptype]} field should be set", file=pol.file,
                        obj=pol.ref, field=f"spec.{others[0]}")


def schema_mismatch(pol: Resource, schema: str, diags: Diagnostics) -> ErrorReply | None:
    """The 501 of a backend whose schema the cloud policy's type cannot authenticate."""
    ptype = pol.spec["type"]
    if schema in SCHEMAS_OF[ptype]:
        return None
    msg = f"BackendSecurityPolicy {pol.namespace}/{pol.name} of type {ptype} cannot authenticate a backend " \
          f"of schema {schema} (it serves {', '.join(SCHEMAS_OF[ptype])})"
    diags.warning(msg, file=pol.file, obj=pol.ref, field="spec.type")
    return ErrorReply(501, "credentials_not_supported", msg)


def compile_cloud_policy(pol: Resource, read_secret: SecretReader,
                         diags: Diagnostics) -> tuple[CloudAuth | None, ErrorReply | None, Source | None]:
    """(CloudAuth, an error for its backends, the source to fetch) for one cloud policy."""
    ptype = pol.spec["type"]
    key = f"{pol.namespace}/{pol.name}"
    field = TYPE_FIELDS[ptype]
    spec = pol.spec.get(field)
    try:
        if not isinstance(spec, dict):
            raise PolicyProblem(f"type {ptype} needs spec.{field}", f"spec.{field}")
        if ptype == "AWSCredentials":
            region = _required(spec, "region", field)
            return CloudAuth(ptype, key, region=region), None, _aws(pol, spec, region, read_secret, field)
        if ptype == "GCPCredentials":
            project, region = _required(spec, "projectName", field), _required(spec, "region", field)
            return CloudAuth(ptype, key, region=region, project=project), None, _gcp(pol, spec, read_secret, field)
        return CloudAuth(ptype, key), None, _azure(pol, spec, read_secret, field)
    except PolicyProblem as e:
        if e.missing or e.content:
            diags.warning(str(e), file=pol.file, obj=pol.ref, field=e.field)
            return None, ErrorReply(503, "credentials_not_found" if e.missing else "credentials_invalid", str(e)), None
        diags.error(str(e), file=pol.file, obj=pol.ref, field=e.field)
        return None, ErrorReply(503, "credentials_invalid", str(e)), None


def _required(spec: dict[str, Any], name: str, field: str) -> str:
    value = spec.get(name)
    if not isinstance(value, str) or not value:
        raise PolicyProblem(f"spec.{field}.{name} in body should be at least 1 chars long", f"spec.{field}.{name}")
    return value


def _secret(pol: Resource, ref: Any, key: str, read_secret: SecretReader, field: str) -> str:
    if not isinstance(ref, dict) or not ref.get("name"):
        raise PolicyProblem(f"{field} needs a Secret name", field)
    ns = ref.get("namespace") or pol.namespace
    value = read_secret(ns, ref["name"], key)
    if not value:
        raise PolicyProblem(f"Secret {ns}/{ref['name']} with key {key} (used by BackendSecurityPolicy "
                            f"{pol.namespace}/{pol.name}) does not exist (yet)", field, missing=True)
    return value


def _oidc(pol: Resource, holder: Any, read_secret: SecretReader, field: str) -> OIDCClient:
    oidc = holder.get("oidc") if isinstance(holder, dict) else None
    if not isinstance(oidc, dict):
        raise PolicyProblem(f"{field} needs oidc", f"{field}.oidc")
    provider = oidc.get("provider") or {}
    issuer = provider.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise PolicyProblem(f"{field}.oidc.provider.issuer is required", f"{field}.oidc.provider.issuer")
    client_id = oidc.get("clientID")
    if not client_id and oidc.get("clientIDRef") is not None:  # Envoy Gateway's: the Secret key client-id
        client_id = _secret(pol, oidc["clientIDRef"], "client-id", read_secret, f"{field}.oidc.clientIDRef")
    if not isinstance(client_id, str) or not client_id:
        raise PolicyProblem(f"{field}.oidc needs clientID or clientIDRef", f"{field}.oidc.clientID")
    grant = holder.get("grantType")
    if grant not in (None, "", "client_credentials"):
        raise PolicyProblem(f"{field}.grantType {grant!r} is not supported (client_credentials is)",
                            f"{field}.grantType")
    secret = _secret(pol, oidc.get("clientSecret"), OIDC_SECRET_KEY, read_secret, f"{field}.oidc.clientSecret")
    scopes = tuple(s for s in oidc.get("scopes") or () if isinstance(s, str))
    return OIDCClient(issuer.rstrip("/"), provider.get("tokenEndpoint") or None, client_id, secret, scopes,
                      holder.get("aud") or None)


def _aws(pol: Resource, spec: dict[str, Any], region: str, read_secret: SecretReader, field: str) -> Source:
    file, exchange = spec.get("credentialsFile"), spec.get("oidcExchangeToken")
    if file is not None:
        text = _secret(pol, file.get("secretRef"), "credentials", read_secret, f"spec.{field}.credentialsFile.secretRef")
        return AWSCredentialsFile(text, file.get("profile") or "default", region)
    if exchange is not None:
        role = exchange.get("awsRoleArn")
        if not isinstance(role, str) or not role:
            raise PolicyProblem("spec.awsCredentials.oidcExchangeToken.awsRoleArn in body should be at least 1 "
                                "chars long", f"spec.{field}.oidcExchangeToken.awsRoleArn")
        oidc = _oidc(pol, exchange, read_secret, f"spec.{field}.oidcExchangeToken")
        session = _SESSION_NAME_BAD.sub("-", f"modelyard-{pol.namespace}-{pol.name}")[:64]
        return AWSWebIdentity(oidc, role, session, region)
    return AWSDefaultChain(region)


def _gcp(pol: Resource, spec: dict[str, Any], read_secret: SecretReader, field: str) -> Source:
    file, wif = spec.get("credentialsFile"), spec.get("workloadIdentityFederationConfig")
    if file is not None and wif is not None:
        raise PolicyProblem("At most one of credentialsFile or workloadIdentityFederationConfig may be specified",
                            f"spec.{field}")
    if file is not None:
        where = f"spec.{field}.credentialsFile.secretRef"
        text = _secret(pol, file.get("secretRef"), "service_account.json", read_secret, where)
        try:
            info = json.loads(text)
        except ValueError:
            raise PolicyProblem("the service_account.json key does not hold JSON", where, content=True) from None
        missing = [k for k in ("client_email", "private_key", "token_uri") if not isinstance(info, dict)
                   or not isinstance(info.get(k), str) or not info.get(k)]
        if missing:
            raise PolicyProblem(f"the service_account.json key lacks {', '.join(missing)} (a service-account "
                                "key file has them)", where, content=True)
        return GCPServiceAccount(text, info["client_email"])
    if wif is None:
        raise PolicyProblem(f"spec.{field} needs credentialsFile or workloadIdentityFederationConfig", f"spec.{field}")
    base = f"spec.{field}.workloadIdentityFederationConfig"
    project, pool, provider = (_required(wif, k, f"{field}.workloadIdentityFederationConfig")
                               for k in ("projectID", "workloadIdentityPoolName", "workloadIdentityProviderName"))
    oidc = _oidc(pol, wif.get("oidcExchangeToken"), read_secret, f"{base}.oidcExchangeToken")
    audience = (f"//iam.googleapis.com/projects/{project}/locations/global/workloadIdentityPools/{pool}"
                f"/providers/{provider}")
    impersonate = wif.get("serviceAccountImpersonation")
    account = None
    if impersonate is not None:
        name = _required(impersonate, "serviceAccountName", f"{field}.workloadIdentityFederationConfig"
                         ".serviceAccountImpersonation")
        account = f"{name}@{spec['projectName']}.iam.gserviceaccount.com"
    return GCPWorkloadIdentity(oidc, audience, account)


def _azure(pol: Resource, spec: dict[str, Any], read_secret: SecretReader, field: str) -> Source:
    client_id, tenant_id = _required(spec, "clientID", field), _required(spec, "tenantID", field)
    secret_ref, exchange = spec.get("clientSecretRef"), spec.get("oidcExchangeToken")
    if (secret_ref is None) == (exchange is None):
        raise PolicyProblem("Exactly one of clientSecretRef or oidcExchangeToken must be specified", f"spec.{field}")
    if secret_ref is not None:
        secret = _secret(pol, secret_ref, "client-secret", read_secret, f"spec.{field}.clientSecretRef")
        return AzureClientSecret(tenant_id, client_id, secret)
    return AzureFederated(tenant_id, client_id, _oidc(pol, exchange, read_secret, f"spec.{field}.oidcExchangeToken"))
