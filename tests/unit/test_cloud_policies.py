"""Cloud BackendSecurityPolicies (AWSCredentials, GCPCredentials, AzureCredentials) compiled into the
table's CloudAuth and the refresher's sources, with the Envoy AI Gateway's field names, defaults and
CRD validation messages."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from modelyard.config.cloud_credentials.sources import (
    AWSCredentialsFile, AWSDefaultChain, AWSWebIdentity, AzureClientSecret, AzureFederated, GCPServiceAccount,
    GCPWorkloadIdentity,
)
from modelyard.config.compiler import Compiled, compile_table
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import load_paths
from modelyard.core.table import CloudAuth

SA_INFO = {"type": "service_account", "client_email": "gw@proj.iam.gserviceaccount.com",
           "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n",
           "private_key_id": "k1", "token_uri": "http://127.0.0.1:9/token", "project_id": "proj"}


def _backend(schema: str, name: str = "be") -> str:
    return textwrap.dedent(f"""\
        apiVersion: aigateway.envoyproxy.io/v1beta1
        kind: AIServiceBackend
        metadata: {{name: {name}, namespace: default}}
        spec:
          schema: {{name: {schema}}}
          backendRef: {{name: ep, kind: Backend, group: gateway.envoyproxy.io}}
        ---
        """)


ENDPOINT = textwrap.dedent("""\
    apiVersion: gateway.envoyproxy.io/v1alpha1
    kind: Backend
    metadata: {name: ep, namespace: default}
    spec:
      endpoints: [{fqdn: {hostname: cloud.example.com, port: 443}}]
    ---
    apiVersion: aigateway.envoyproxy.io/v1beta1
    kind: AIGatewayRoute
    metadata: {name: r, namespace: default}
    spec:
      rules: [{backendRefs: [{name: be}]}]
    """)


def _policy(ptype: str, body: str, target: str = "be") -> str:
    return textwrap.dedent(f"""\
        apiVersion: aigateway.envoyproxy.io/v1beta1
        kind: BackendSecurityPolicy
        metadata: {{name: pol, namespace: default}}
        spec:
          type: {ptype}
          targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {target}}}]
        """) + textwrap.indent(textwrap.dedent(body), "  ") + "---\n"


def _secret(name: str, key: str, value: str) -> str:
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\nstringData:\n" \
           f"  {json.dumps(key)}: {json.dumps(value)}\n---\n"


def _compile(tmp_path: Path, *docs: str) -> tuple[Compiled, Diagnostics]:
    path = tmp_path / "config.yaml"
    path.write_text("".join(docs) + ENDPOINT)
    diags = Diagnostics()
    loaded = load_paths([str(path)], diags)
    return compile_table(loaded.resources, diags), diags


def _only_backend(compiled: Compiled):
    (backend,) = [b for b in compiled.table.backends if b.name == "default/be"]
    return backend


OIDC = ('oidc: {provider: {issuer: "http://127.0.0.1:9/issuer/"}, clientID: gateway, '
        'clientSecret: {name: oidc-secret}, scopes: [api]}')


def test_an_aws_credentials_file_policy_gives_the_backend_its_region_and_the_refresher_the_file(tmp_path: Path) -> None:
    creds = "[default]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = s3cr3t\n"
    compiled, diags = _compile(tmp_path, _backend("AWSBedrock"), _policy("AWSCredentials", """\
        awsCredentials:
          region: eu-west-1
          credentialsFile: {secretRef: {name: aws-file}}
        """), _secret("aws-file", "credentials", creds))
    assert not diags.errors, diags.errors
    backend = _only_backend(compiled)
    assert backend.cloud == CloudAuth("AWSCredentials", "default/pol", region="eu-west-1")
    assert backend.error is None and backend.auth_headers == ()
    source = compiled.cloud_sources["default/pol"]
    assert source == AWSCredentialsFile(creds.strip(), "default", "eu-west-1")  # profile defaults to default
    assert "s3cr3t" not in repr(source) and "AKIDEXAMPLE" not in str(source)
    assert "s3cr3t" not in repr(compiled.table)  # the table carries no secret of a cloud policy


def test_aws_oidc_exchange_and_the_default_chain(tmp_path: Path) -> None:
    compiled, diags = _compile(tmp_path, _backend("AWSBedrock"), _policy("AWSCredentials", """\
        awsCredentials:
          region: us-east-1
          oidcExchangeToken:
            awsRoleArn: arn:aws:iam::123456789012:role/bedrock
            %s
        """ % OIDC), _secret("oidc-secret", "client-secret", "oidc-pw"))
    assert not diags.errors, diags.errors
    source = compiled.cloud_sources["default/pol"]
    assert isinstance(source, AWSWebIdentity)
    assert source.role_arn == "arn:aws:iam::123456789012:role/bedrock" and source.region == "us-east-1"
    assert source.oidc.issuer == "http://127.0.0.1:9/issuer" and source.oidc.client_secret == "oidc-pw"
    assert source.oidc.scopes == ("api",) and source.session_name == "modelyard-default-pol"
    assert "oidc-pw" not in repr(source)

    compiled, diags = _compile(tmp_path, _backend("AWSAnthropic"), _policy("AWSCredentials", """\
        awsCredentials: {region: us-west-2}
        """))
    assert not diags.errors
    assert compiled.cloud_sources["default/pol"] == AWSDefaultChain("us-west-2")


def test_gcp_service_account_and_workload_identity(tmp_path: Path) -> None:
    compiled, diags = _compile(tmp_path, _backend("GCPVertexAI"), _policy("GCPCredentials", """\
        gcpCredentials:
          projectName: proj
          region: us-central1
          credentialsFile: {secretRef: {name: sa}}
        """), _secret("sa", "service_account.json", json.dumps(SA_INFO)))
    assert not diags.errors, diags.errors
    backend = _only_backend(compiled)
    assert backend.cloud == CloudAuth("GCPCredentials", "default/pol", region="us-central1", project="proj")
    source = compiled.cloud_sources["default/pol"]
    assert isinstance(source, GCPServiceAccount) and source.client_email == SA_INFO["client_email"]
    assert "not-a-real-key" not in repr(source)

    compiled, diags = _compile(tmp_path, _backend("GCPAnthropic"), _policy("GCPCredentials", """\
        gcpCredentials:
          projectName: proj
          region: global
          workloadIdentityFederationConfig:
            projectID: "1234"
            workloadIdentityPoolName: pool
            workloadIdentityProviderName: prov
            serviceAccountImpersonation: {serviceAccountName: vertex-caller}
            oidcExchangeToken:
              %s
        """ % OIDC), _secret("oidc-secret", "client-secret", "pw"))
    assert not diags.errors, diags.errors
    source = compiled.cloud_sources["default/pol"]
    assert isinstance(source, GCPWorkloadIdentity)
    assert source.audience == ("//iam.googleapis.com/projects/1234/locations/global/workloadIdentityPools/pool"
                               "/providers/prov")
    assert source.service_account == "vertex-caller@proj.iam.gserviceaccount.com"


def test_azure_client_secret_and_federated(tmp_path: Path) -> None:
    compiled, diags = _compile(tmp_path, _backend("AzureOpenAI"), _policy("AzureCredentials", """\
        azureCredentials:
          clientID: app
          tenantID: tenant
          clientSecretRef: {name: az}
        """), _secret("az", "client-secret", "azure-pw"))
    assert not diags.errors, diags.errors
    assert _only_backend(compiled).cloud == CloudAuth("AzureCredentials", "default/pol")
    assert compiled.cloud_sources["default/pol"] == AzureClientSecret("tenant", "app", "azure-pw")

    compiled, diags = _compile(tmp_path, _backend("AzureOpenAI"), _policy("AzureCredentials", """\
        azureCredentials:
          clientID: app
          tenantID: tenant
          oidcExchangeToken:
            %s
        """ % OIDC), _secret("oidc-secret", "client-secret", "pw"))
    assert not diags.errors, diags.errors
    assert isinstance(compiled.cloud_sources["default/pol"], AzureFederated)


@pytest.mark.parametrize("ptype, body, message", [
    # The Envoy AI Gateway's CRD validation fixtures and their messages.
    ("AzureCredentials", "azureCredentials: {clientID: a, tenantID: t}\n",
     "Exactly one of clientSecretRef or oidcExchangeToken must be specified"),
    ("AzureCredentials", "azureCredentials: {clientID: a, tenantID: t, clientSecretRef: {name: x}, "
     "oidcExchangeToken: {oidc: {provider: {issuer: i}, clientID: c, clientSecret: {name: s}}}}\n",
     "Exactly one of clientSecretRef or oidcExchangeToken must be specified"),
    ("AzureCredentials", "azureCredentials: {clientID: '', tenantID: t, clientSecretRef: {name: x}}\n",
     "spec.azureCredentials.clientID in body should be at least 1 chars long"),
    ("AzureCredentials", "azureCredentials: {clientID: a, tenantID: '', clientSecretRef: {name: x}}\n",
     "spec.azureCredentials.tenantID in body should be at least 1 chars long"),
    ("AWSCredentials", "awsCredentials: {region: us-east-1}\nazureCredentials: {clientID: a, tenantID: t}\n",
     "When type is AWSCredentials, only awsCredentials field should be set"),
    ("AzureCredentials", "azureCredentials: {clientID: a, tenantID: t, clientSecretRef: {name: x}}\n"
     "gcpCredentials: {projectName: p, region: r}\n",
     "When type is AzureCredentials, only azureCredentials field should be set"),
    ("GCPCredentials", "gcpCredentials: {projectName: p, region: r}\napiKey: {secretRef: {name: k}}\n",
     "When type is GCPCredentials, only gcpCredentials field should be set"),
    ("APIKey", "apiKey: {secretRef: {name: k}}\nawsCredentials: {region: us-east-1}\n",
     "When type is APIKey, only apiKey field should be set"),
    ("GCPCredentials", "gcpCredentials: {projectName: p, region: r, credentialsFile: {secretRef: {name: s}}, "
     "workloadIdentityFederationConfig: {projectID: x, workloadIdentityPoolName: y, "
     "workloadIdentityProviderName: z, oidcExchangeToken: {oidc: {provider: {issuer: i}, clientID: c, "
     "clientSecret: {name: s}}}}}\n",
     "At most one of credentialsFile or workloadIdentityFederationConfig may be specified"),
])
def test_what_the_envoy_ai_gateway_rejects_is_rejected(tmp_path: Path, ptype: str, body: str, message: str) -> None:
    schema = {"AWSCredentials": "AWSBedrock", "GCPCredentials": "GCPVertexAI", "APIKey": "OpenAI"}.get(ptype,
                                                                                                       "AzureOpenAI")
    _, diags = _compile(tmp_path, _backend(schema), _policy(ptype, body))
    assert any(message in str(e) for e in diags.errors), [str(e) for e in diags.errors]


def test_unknown_fields_in_a_cloud_policy_are_rejected(tmp_path: Path) -> None:
    _, diags = _compile(tmp_path, _backend("AWSBedrock"), _policy("AWSCredentials", """\
        awsCredentials: {region: us-east-1, credentialFile: {secretRef: {name: x}}}
        """))
    assert any("credentialFile" in str(e) for e in diags.errors), [str(e) for e in diags.errors]


def test_a_missing_secret_is_a_warning_and_a_503_until_it_exists(tmp_path: Path) -> None:
    compiled, diags = _compile(tmp_path, _backend("AWSBedrock"), _policy("AWSCredentials", """\
        awsCredentials:
          region: us-east-1
          credentialsFile: {secretRef: {name: not-there}}
        """))
    assert not diags.errors
    assert any("not-there" in str(w) and "does not exist (yet)" in str(w) for w in diags.warnings)
    backend = _only_backend(compiled)
    assert backend.error is not None and (backend.error.status, backend.error.code) == (503, "credentials_not_found")
    assert compiled.cloud_sources == {}


def test_a_policy_type_that_cannot_authenticate_the_schema_is_a_501(tmp_path: Path) -> None:
    compiled, diags = _compile(tmp_path, _backend("OpenAI"), _policy("GCPCredentials", """\
        gcpCredentials: {projectName: p, region: r, credentialsFile: {secretRef: {name: sa}}}
        """), _secret("sa", "service_account.json", json.dumps(SA_INFO)))
    backend = _only_backend(compiled)
    assert backend.error is not None and (backend.error.status, backend.error.code) == (501, "credentials_not_supported")
    assert any("cannot authenticate a backend of schema OpenAI" in str(w) for w in diags.warnings)


def test_a_service_account_key_without_its_fields_is_a_warning_naming_them_and_a_503(tmp_path: Path) -> None:
    # The Envoy AI Gateway's own example ships "{}" as the key: it loads there, and here, and the
    # backend answers 503 until the Secret holds a key; the rest of the configuration serves.
    compiled, diags = _compile(tmp_path, _backend("GCPVertexAI"), _policy("GCPCredentials", """\
        gcpCredentials: {projectName: p, region: r, credentialsFile: {secretRef: {name: sa}}}
        """), _secret("sa", "service_account.json", "{}"))
    assert not diags.errors
    assert [str(w).count("lacks client_email, private_key, token_uri") for w in diags.warnings].count(1) == 1
    error = _only_backend(compiled).error
    assert error is not None and (error.status, error.code) == (503, "credentials_invalid")


def test_backends_sharing_a_policy_share_one_source(tmp_path: Path) -> None:
    two = _policy("AWSCredentials", "awsCredentials: {region: us-east-1}\n").replace(
        "targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: be}]",
        "targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: be}, "
        "{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: be2}]")
    route = ENDPOINT.replace("backendRefs: [{name: be}]", "backendRefs: [{name: be}, {name: be2, priority: 1}]")
    path = tmp_path / "c.yaml"
    path.write_text(_backend("AWSBedrock") + _backend("AWSAnthropic", "be2") + two + route)
    diags = Diagnostics()
    compiled = compile_table(load_paths([str(path)], diags).resources, diags)
    assert not diags.errors, diags.errors
    keys = {b.name: b.cloud.key for b in compiled.table.backends if b.cloud is not None}
    assert keys == {"default/be": "default/pol", "default/be2": "default/pol"}
    assert list(compiled.cloud_sources) == ["default/pol"]
