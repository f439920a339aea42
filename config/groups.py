"""The API groups this gateway knows: their versions and every kind they define.

A kind the gateway does not read but that exists in one of these groups (an
HTTPRoute, an EnvoyProxy, an InferencePool) is skipped with a note; a kind or
a version the group does not have is a typo or a wrong apiVersion and is an
error, as the Kubernetes API server would reject it.
"""

from __future__ import annotations

from modelyard.config.diagnostics import did_you_mean
from modelyard.config.kinds import AI_GROUP, EG_GROUP, GW_GROUP

GW_KINDS = ("Gateway", "GatewayClass", "HTTPRoute", "GRPCRoute", "ReferenceGrant", "BackendTLSPolicy", "TCPRoute",
            "TLSRoute", "UDPRoute", "BackendLBPolicy", "ListenerSet")
INFERENCE_KINDS = ("InferencePool", "InferenceModel", "InferenceObjective", "InferencePoolImport")

# group -> (versions, kinds)
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    AI_GROUP: (("v1alpha1", "v1beta1"),
               ("AIGatewayRoute", "AIServiceBackend", "BackendSecurityPolicy", "MCPRoute", "GatewayConfig")),
    EG_GROUP: (("v1alpha1",),
               ("Backend", "BackendTrafficPolicy", "ClientTrafficPolicy", "SecurityPolicy", "EnvoyProxy",
                "EnvoyPatchPolicy", "EnvoyExtensionPolicy", "HTTPRouteFilter", "EnvoyGateway")),
    GW_GROUP: (("v1", "v1beta1", "v1alpha2", "v1alpha3"), GW_KINDS),
    "gateway.networking.x-k8s.io": (("v1alpha1",), ("XBackendTrafficPolicy", "XListenerSet", "XMesh")),
    "inference.networking.k8s.io": (("v1",), ("InferencePool",)),
    "inference.networking.x-k8s.io": (("v1alpha1", "v1alpha2"), INFERENCE_KINDS),
}

# Kinds without a namespace: shown as Kind/name.
CLUSTER_SCOPED = frozenset({
    "GatewayClass", "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "IngressClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "APIService", "Node",
})


def api_problem(kind: str, api_version: str) -> str | None:
    """Why this kind/apiVersion cannot exist in a known group; None when it can, or the group is not one we know."""
    group, _, version = api_version.rpartition("/")
    known = GROUPS.get(group)
    if known is None:
        return None
    versions, kinds = known
    if kind not in kinds:
        elsewhere = [g for g, (_, ks) in GROUPS.items() if kind in ks]
        hint = f" (it is in {elsewhere[0]})" if elsewhere else did_you_mean(kind, kinds)
        return f"unknown kind {kind} in API group {group}{hint}"
    if version not in versions:
        hint = did_you_mean(version, versions)
        return f"unknown version {version} of API group {group}{hint}; known versions: {', '.join(versions)}"
    return None
