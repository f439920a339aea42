"""The resource kinds the gateway reads, with the fields each one accepts.

Field names and meanings follow the Envoy AI Gateway (aigateway.envoyproxy.io
v1alpha1 and v1beta1), Envoy Gateway (gateway.envoyproxy.io) and the Gateway API.
Subtrees the gateway does not act on (for example an OIDC provider's browser-login settings, or
ClientTrafficPolicy settings other than the buffer limit, connection limit and HTTP timeouts) are
accepted as they are and not validated further.
"""

from __future__ import annotations

from modelyard.config.schema import ANY, BOOL, INT, INT_OR_STR, STR, Enum, List, Map, Obj, obj
from modelyard.core.schemas import CREDENTIAL_TYPES, SCHEMA_NAMES

AI_GROUP = "aigateway.envoyproxy.io"
EG_GROUP = "gateway.envoyproxy.io"
GW_GROUP = "gateway.networking.k8s.io"

COST_TYPES = ("OutputToken", "InputToken", "CachedInputToken", "CacheCreationInputToken", "TotalToken", "ReasoningToken", "CEL")

_metadata = obj(
    ("name",),
    name=STR, namespace=STR, labels=Map(STR), annotations=Map(STR), creationTimestamp=STR, uid=STR,
    resourceVersion=STR, generation=INT, generateName=STR, managedFields=ANY, ownerReferences=ANY,
    finalizers=List(STR), deletionTimestamp=STR, deletionGracePeriodSeconds=INT, selfLink=STR,
)

_header_match = obj(("name", "value"), name=STR, value=STR, type=Enum(("Exact", "RegularExpression")))
_header_mutation = obj(
    set=List(obj(("name", "value"), name=STR, value=STR)),
    remove=List(STR),
)
_body_mutation = obj(set=List(obj(("path", "value"), path=STR, value=STR)), remove=List(STR))
_parent_ref = obj(("name",), group=STR, kind=STR, name=STR, namespace=STR, port=INT, sectionName=STR)
_policy_target_ref = obj(("name",), group=STR, kind=STR, name=STR, sectionName=STR)
_timeouts = obj(request=STR, backendRequest=STR)
_object_ref = obj(("name",), group=STR, kind=STR, name=STR, namespace=STR)

_route_backend_ref = obj(
    ("name",),
    name=STR, namespace=STR, group=STR, kind=STR, modelNameOverride=STR,
    headerMutation=_header_mutation, bodyMutation=_body_mutation, weight=INT, priority=INT,
)
_route_rule = obj(
    name=STR,
    backendRefs=List(_route_backend_ref),
    matches=List(obj(headers=List(_header_match))),
    timeouts=_timeouts,
    streamIdleTimeout=STR,
    modelsOwnedBy=STR,
    modelsCreatedAt=STR,
)
AIGATEWAYROUTE = obj(
    ("rules",),
    parentRefs=List(_parent_ref),
    hostnames=List(STR),
    rules=List(_route_rule),
    llmRequestCosts=List(obj(("metadataKey", "type"), metadataKey=STR, type=Enum(COST_TYPES), cel=STR)),
    # Fields of older v1alpha1 releases, still honoured.
    schema=obj(("name",), name=Enum(SCHEMA_NAMES), version=STR),
    targetRefs=List(_policy_target_ref),
    filterConfig=ANY,
    deprecated={
        "schema": "deprecated: the input schema is taken from the endpoint; only OpenAI is meaningful here",
        "targetRefs": "deprecated: use parentRefs (honoured as parentRefs)",
        "filterConfig": "deprecated: external-processor settings have no meaning here and are ignored",
    },
)

AISERVICEBACKEND = obj(
    ("schema", "backendRef"),
    schema=obj(("name",), name=Enum(SCHEMA_NAMES), version=STR, prefix=STR),
    backendRef=obj(("name",), group=STR, kind=STR, name=STR, namespace=STR, port=INT),
    headerMutation=_header_mutation,
    bodyMutation=_body_mutation,
    # Fields of older v1alpha1 releases, still honoured.
    timeouts=_timeouts,
    backendSecurityPolicyRef=obj(("name",), group=STR, kind=STR, name=STR),
    deprecated={
        "timeouts": "deprecated: set timeouts on the AIGatewayRoute rule (honoured when the rule sets none)",
        "backendSecurityPolicyRef": "deprecated: use the BackendSecurityPolicy's targetRefs (honoured)",
    },
)

_secret_ref_holder = obj(("secretRef",), secretRef=_object_ref)
# Envoy Gateway's OIDC type; the gateway uses the provider's issuer and tokenEndpoint, the client's
# ID and secret, and scopes (a client-credentials grant). The rest configure browser logins.
_oidc = obj(
    ("clientSecret", "provider"),
    provider=obj(("issuer",), issuer=STR, tokenEndpoint=STR, authorizationEndpoint=STR, endSessionEndpoint=STR,
                 backendRef=ANY, backendRefs=ANY, backendSettings=ANY),
    clientID=STR, clientIDRef=_object_ref, clientSecret=_object_ref, scopes=List(STR), resources=List(STR),
    cookieConfig=ANY, cookieDomain=STR, cookieNames=ANY, csrfTokenTTL=STR, defaultRefreshTokenTTL=STR,
    defaultTokenTTL=STR, denyRedirect=ANY, disableTokenEncryption=BOOL, forwardAccessToken=BOOL, forwardIDToken=BOOL,
    logoutPath=STR, passThroughAuthHeader=BOOL, redirectURL=STR, refreshToken=BOOL,
)
_oidc_exchange = obj(("oidc",), oidc=_oidc, grantType=STR, aud=STR)
BACKENDSECURITYPOLICY = obj(
    ("type",),
    type=Enum(CREDENTIAL_TYPES),
    targetRefs=List(_policy_target_ref),
    apiKey=_secret_ref_holder,
    azureAPIKey=_secret_ref_holder,
    anthropicAPIKey=_secret_ref_holder,
    awsCredentials=obj(
        ("region",), region=STR,
        credentialsFile=obj(("secretRef",), secretRef=_object_ref, profile=STR),
        oidcExchangeToken=obj(("oidc", "awsRoleArn"), oidc=_oidc, grantType=STR, aud=STR, awsRoleArn=STR),
    ),
    azureCredentials=obj(
        ("clientID", "tenantID"), clientID=STR, tenantID=STR, clientSecretRef=_object_ref,
        oidcExchangeToken=_oidc_exchange,
    ),
    gcpCredentials=obj(
        ("projectName", "region"), projectName=STR, region=STR, credentialsFile=_secret_ref_holder,
        workloadIdentityFederationConfig=obj(
            ("projectID", "workloadIdentityProviderName", "workloadIdentityPoolName", "oidcExchangeToken"),
            projectID=STR, workloadIdentityProviderName=STR, workloadIdentityPoolName=STR,
            oidcExchangeToken=_oidc_exchange, serviceAccountImpersonation=obj(("serviceAccountName",),
                                                                              serviceAccountName=STR),
        ),
    ),
    credentialOverride=obj(
        fromRequestHeaders=obj(header=STR, fallbackToConfigured=BOOL),
        fromDynamicMetadata=ANY,
    ),
)

_local_ref = obj(("name",), group=STR, kind=STR, name=STR)
BACKEND = obj(
    type=Enum(("Endpoints", "DynamicResolver")),
    endpoints=List(obj(
        hostname=STR,
        fqdn=obj(("hostname", "port"), hostname=STR, port=INT),
        ip=obj(("address", "port"), address=STR, port=INT),
        unix=obj(("path",), path=STR),
        zone=STR,
    )),
    appProtocols=List(STR),
    fallback=BOOL,
    tls=obj(
        caCertificateRefs=List(_local_ref), wellKnownCACertificates=STR, insecureSkipVerify=BOOL,
        sni=STR, clientCertificateRef=ANY, minVersion=STR, maxVersion=STR, ciphers=ANY, ecdhCurves=ANY,
        signatureAlgorithms=ANY, alpnProtocols=ANY,
    ),
)

BACKENDTLSPOLICY = obj(
    ("targetRefs", "validation"),
    targetRefs=List(_policy_target_ref),
    validation=obj(
        ("hostname",),
        caCertificateRefs=List(_local_ref),
        wellKnownCACertificates=STR,
        hostname=STR,
        subjectAltNames=ANY,
    ),
    options=Map(STR),
)

CLIENTTRAFFICPOLICY = obj(
    targetRef=_policy_target_ref, targetRefs=List(_policy_target_ref), targetSelectors=ANY,
    connection=obj(
        bufferLimit=INT_OR_STR, connectionLimit=obj(value=INT, closeDelay=STR), socketBufferLimit=ANY,
        maxAcceptPerSocketEvent=ANY,
    ),
    tcpKeepalive=ANY, enableProxyProtocol=ANY, proxyProtocol=ANY, clientIPDetection=ANY, tls=ANY, path=ANY,
    headers=ANY, timeout=obj(tcp=ANY, http=obj(requestReceivedTimeout=STR, idleTimeout=STR)), http1=ANY, http2=ANY, http3=ANY, healthCheck=ANY, scheme=ANY,
)

RETRY_TRIGGERS = (
    "5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream",
    "retriable-status-codes", "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
)
BACKENDTRAFFICPOLICY = obj(
    targetRef=_policy_target_ref, targetRefs=List(_policy_target_ref), targetSelectors=ANY,
    retry=obj(
        numRetries=INT,
        numAttemptsPerPriority=INT,
        retryOn=obj(triggers=List(Enum(RETRY_TRIGGERS)), httpStatusCodes=List(INT)),
        perRetry=obj(timeout=STR, backOff=obj(baseInterval=STR, maxInterval=STR)),
    ),
    healthCheck=obj(
        passive=obj(
            consecutive5XxErrors=INT, consecutiveGatewayErrors=INT, consecutiveLocalOriginFailures=INT,
            baseEjectionTime=STR, interval=STR, maxEjectionPercent=INT, splitExternalLocalOriginErrors=BOOL,
            failurePercentageThreshold=INT,
        ),
        active=ANY, panicThreshold=INT,
    ),
    # Envoy Gateway settings the gateway accepts and does not act on.
    loadBalancer=ANY, circuitBreaker=ANY, timeout=ANY, tcpKeepalive=ANY, connection=ANY, dns=ANY,
    http2=ANY, faultInjection=ANY, proxyProtocol=ANY, rateLimit=ANY, useClientProtocol=ANY,
    compression=ANY, responseOverride=ANY, mergeType=ANY, httpUpgrade=ANY, requestBuffer=ANY,
    telemetry=ANY, routingType=ANY,
)

GATEWAY = obj(
    ("gatewayClassName",),
    gatewayClassName=STR,
    listeners=List(obj(
        ("name", "port", "protocol"),
        name=STR, port=INT, protocol=STR, hostname=STR, tls=ANY, allowedRoutes=ANY,
    )),
    addresses=ANY, infrastructure=ANY, backendTLS=ANY, allowedListeners=ANY, defaultScope=ANY,
)
GATEWAYCLASS = obj(("controllerName",), controllerName=STR, parametersRef=ANY, description=STR)


class Kind:
    """How one kind is read: its groups, whether its payload is `spec` and its schema."""

    def __init__(self, name: str, groups: tuple[str, ...], spec: Obj | None, extra: dict[str, object] | None = None):
        self.name = name
        self.groups = groups
        self.spec = spec
        fields: dict[str, object] = {"apiVersion": STR, "kind": STR, "metadata": _metadata, "status": ANY}
        if spec is not None:
            fields["spec"] = spec
        fields.update(extra or {})
        self.document = Obj(fields, frozenset({"apiVersion", "kind", "metadata"} | ({"spec"} if spec else set())))


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("AIGatewayRoute", (AI_GROUP,), AIGATEWAYROUTE),
    Kind("AIServiceBackend", (AI_GROUP,), AISERVICEBACKEND),
    Kind("BackendSecurityPolicy", (AI_GROUP,), BACKENDSECURITYPOLICY),
    Kind("Backend", (EG_GROUP,), BACKEND),
    Kind("ClientTrafficPolicy", (EG_GROUP,), CLIENTTRAFFICPOLICY),
    Kind("BackendTrafficPolicy", (EG_GROUP,), BACKENDTRAFFICPOLICY),
    Kind("BackendTLSPolicy", (GW_GROUP,), BACKENDTLSPOLICY),
    Kind("Gateway", (GW_GROUP,), GATEWAY),
    Kind("GatewayClass", (GW_GROUP,), GATEWAYCLASS),
    Kind("Secret", ("",), None, {"type": STR, "data": Map(STR), "stringData": Map(STR), "immutable": BOOL}),
    Kind("ConfigMap", ("",), None, {"data": Map(STR), "binaryData": Map(STR), "immutable": BOOL}),
)}
