"""The compiled routing table: the whole contract between the control and data planes.

The config watcher builds a Table from Kubernetes resources and publishes it as
msgpack behind a format mark (TABLE_FORMAT) into shared memory; workers decode it and never see YAML. Everything a
request needs is precomputed here: match entries ordered by precedence, an
exact-model index, resolved backends with credentials and TLS material.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from enum import IntEnum

import msgspec

# The table's wire format. Raise it whenever a change to these Structs means that a worker running
# older code would misread a newer table (or the reverse): such a worker refuses the table and keeps
# the one it serves, instead of serving a misread one. encode_table writes it ahead of the msgpack.
TABLE_FORMAT = 2
_FORMAT_MAGIC = b"MYTF"
_FORMAT_HEAD = struct.Struct("<4sI")  # magic, TABLE_FORMAT


class TableFormatError(ValueError):
    """A published table in a format this code does not read (the planes run different versions)."""

    def __init__(self, found: int | None):
        self.found = found
        what = "no format mark" if found is None else f"format {found}"
        super().__init__(f"the routing table has {what}; this worker reads format {TABLE_FORMAT} "
                         f"(the control process and the workers run different versions of modelyard)")


class CondKind(IntEnum):
    """How a header condition tests its value."""

    EXACT = 0
    REGEX = 1  # RE2, full match


# The header a request's model is exposed as to matching (the body's value wins).
MODEL_HEADER = "x-ai-eg-model"


class HeaderCond(msgspec.Struct, array_like=True, frozen=True):
    name: str  # lower-case header name
    kind: CondKind
    value: str


class MatchEntry(msgspec.Struct, array_like=True, frozen=True):
    """One `matches[]` item of one rule. Its index in Table.entries is its precedence rank."""

    rule: int
    conds: tuple[HeaderCond, ...]  # besides the exact model condition it is indexed under


class BackendRef(msgspec.Struct, array_like=True, frozen=True):
    backend: int  # index into Table.backends
    weight: int
    priority: int
    model_override: str | None
    timeout: float  # seconds for the whole request; 0 = none
    header_set: tuple[tuple[str, str], ...] = ()  # backend-level merged under route-level
    header_remove: tuple[str, ...] = ()
    body_set: tuple[tuple[str, bytes], ...] = ()  # top-level field -> raw JSON value
    body_remove: tuple[str, ...] = ()


class ErrorReply(msgspec.Struct, array_like=True, frozen=True):
    """The answer a client gets where a rule or backend cannot serve."""

    status: int
    code: str  # the error code in the body, e.g. "backend_not_found"
    message: str


class Rule(msgspec.Struct, array_like=True, frozen=True):
    route: str  # namespace/name of the AIGatewayRoute
    name: str  # the rule's name, or its index
    refs: tuple[BackendRef, ...]
    error: ErrorReply | None = None  # when the rule cannot serve (no backendRefs)
    route_index: int = 0  # into Table.routes
    stream_idle: float = 0.0  # seconds a stream may send nothing (streamIdleTimeout); 0 = no limit


class RetryPolicy(msgspec.Struct, array_like=True, frozen=True):
    """When a failed attempt is tried again on the next eligible backend, and how often."""

    retries: int = 2  # attempts after the first
    per_priority: int = 0  # attempts at one priority before moving on; 0 = until none is left there
    per_try: float = 0.0  # seconds an attempt may take to its first response byte; 0 = rule timeout only
    backoff: float = 0.0  # seconds before the first retry, doubling up to backoff_max
    backoff_max: float = 0.0
    transport: bool = True  # connection refused or reset, timeout before the first byte
    any_5xx: bool = True
    gateway_errors: bool = True  # 502, 503, 504
    statuses: tuple[int, ...] = (429,)


class OutlierPolicy(msgspec.Struct, array_like=True, frozen=True):
    """Passive health: ejection after consecutive failures, for base x recent ejections."""

    consecutive: int = 5
    base: float = 30.0
    max: float = 300.0


class BackendHeader(IntEnum):
    """Which backends a client may pick with the backend header."""

    OFF = 0
    RULES = 1  # the backends the route's rules reference
    NAMESPACE = 2  # every AIServiceBackend in the route's namespace


class Endpoint(msgspec.Struct, array_like=True, frozen=True):
    host: str  # hostname or IP as written in the Backend; also the Host header and TLS name
    port: int
    health: int = -1  # slot on the shared health board, assigned by the watcher; -1: not tracked


class TLS(msgspec.Struct, array_like=True, frozen=True):
    ca_pem: str | None  # CA bundle from ConfigMaps/Secrets; None = system CAs
    server_name: str | None  # SNI and verification name; None = the endpoint host
    verify: bool = True


class CredentialOverride(msgspec.Struct, array_like=True, frozen=True):
    """BackendSecurityPolicy credentialOverride.fromRequestHeaders: clients bring their own key."""

    client_header: str  # lower case: the request header carrying the client's key
    upstream_header: str  # the header the key goes upstream in
    template: str  # its value, with "{}" where the key goes
    fallback: bool  # without a client key, send the configured one (when there is one)


class CloudAuth(msgspec.Struct, array_like=True, frozen=True):
    """A BackendSecurityPolicy whose credential the control process fetches and refreshes
    (AWSCredentials, GCPCredentials, AzureCredentials): what the data plane needs to find and use it.
    The credential itself is never here: it is in the credentials segment (core/credentials.py)
    under `key`, the policy's namespace/name, so backends sharing a policy share one refresh."""

    type: str  # AWSCredentials | GCPCredentials | AzureCredentials
    key: str  # the credentials-segment entry: "namespace/name" of the BackendSecurityPolicy
    region: str = ""  # AWS: the SigV4 region; GCP: the Vertex AI location
    project: str = ""  # GCP: projectName


class Backend(msgspec.Struct, array_like=True, frozen=True):
    name: str  # namespace/name of the AIServiceBackend
    schema: str
    version: str | None
    prefix: str  # path prefix of the OpenAI-style API, e.g. "/v1"
    endpoints: tuple[Endpoint, ...]
    tls: TLS | None
    auth_headers: tuple[tuple[str, str], ...] = ()  # secret material: never logged or shown
    error: ErrorReply | None = None  # when it cannot serve
    credential_override: CredentialOverride | None = None
    cloud: CloudAuth | None = None  # a refreshed cloud credential, when its policy has one


class ModelInfo(msgspec.Struct, array_like=True, frozen=True):
    id: str
    owned_by: str
    created: int


class RequestCost(msgspec.Struct, array_like=True, frozen=True):
    """One `spec.llmRequestCosts` entry."""

    metadata_key: str
    type: str  # InputToken, OutputToken, TotalToken, CachedInputToken, ... or CEL
    cel: str | None = None


class RouteInfo(msgspec.Struct, array_like=True, frozen=True):
    """Route-level facts kept for accounting, status pages and later features."""

    name: str  # namespace/name
    rules: int
    costs: tuple[RequestCost, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    outlier: OutlierPolicy = OutlierPolicy()
    backend_header: BackendHeader = BackendHeader.OFF
    # backendRefs a client may pick with the backend header: the rules' own, then the
    # namespace's other AIServiceBackends (route defaults, backend-level mutations).
    header_refs: tuple[BackendRef, ...] = ()


class ListenerLimits(msgspec.Struct, frozen=True):
    """ClientTrafficPolicy settings that Granian takes only at start (the supervisor applies them then)."""

    connection_limit: int | None = None  # connection.connectionLimit.value
    request_received_timeout: float | None = None  # timeout.http.requestReceivedTimeout, seconds
    idle_timeout: float | None = None  # timeout.http.idleTimeout, seconds


class Table(msgspec.Struct, frozen=True):
    generation: int
    entries: tuple[MatchEntry, ...]
    # model -> ascending entry indices whose exact x-ai-eg-model condition names it,
    # cut after the first entry that needs nothing else (nothing after it can win).
    exact: dict[str, tuple[int, ...]]
    generic: tuple[int, ...]  # entries without an exact model condition, cut the same way
    rules: tuple[Rule, ...]
    backends: tuple[Backend, ...]
    models: tuple[ModelInfo, ...]
    routes: tuple[RouteInfo, ...]
    resolve: dict[str, str]  # "host:port" -> "addr:port", like curl --resolve
    body_limit: int = 50 * 1024 * 1024
    listen_port: int | None = None
    listener: ListenerLimits = msgspec.field(default_factory=ListenerLimits)


def credential_headers(table: Table) -> frozenset[str]:
    """The client headers that carry a key to a credentialOverride backend, lower case."""
    return frozenset(b.credential_override.client_header.lower() for b in table.backends
                     if b.credential_override is not None)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Table)
_FORMAT_MARK = _FORMAT_HEAD.pack(_FORMAT_MAGIC, TABLE_FORMAT)


def encode_table(table: Table) -> bytes:
    """The table as published: its format mark, then msgpack."""
    return _FORMAT_MARK + _encoder.encode(table)


def table_body(data: bytes | memoryview) -> memoryview:
    """The msgpack after the format mark; TableFormatError for a table in another format."""
    view = memoryview(data)
    if len(view) < _FORMAT_HEAD.size:
        raise TableFormatError(None)
    magic, found = _FORMAT_HEAD.unpack_from(view)
    if magic != _FORMAT_MAGIC:
        raise TableFormatError(None)
    if found != TABLE_FORMAT:
        raise TableFormatError(found)
    return view[_FORMAT_HEAD.size:]


def decode_table(data: bytes | memoryview) -> Table:
    return _decoder.decode(table_body(data))


# The fields that grow with the number of rules and models. A worker decodes them one at a
# time (each a few milliseconds for 10,000 rules) so that requests run in between.
_BIG_FIELDS = ("entries", "exact", "rules", "models")
_Parts = msgspec.defstruct("_Parts", [
    (f.name, msgspec.Raw if f.name in _BIG_FIELDS else f.type) if f.required else
    (f.name, f.type, f.default if f.default is not msgspec.NODEFAULT else msgspec.field(default_factory=f.default_factory))
    for f in msgspec.structs.fields(Table)
])
_parts_decoder = msgspec.msgpack.Decoder(_Parts)
_field_decoders = {f.name: msgspec.msgpack.Decoder(f.type) for f in msgspec.structs.fields(Table) if f.name in _BIG_FIELDS}


def decode_table_in_steps(data: bytes | memoryview) -> Generator[None, None, Table]:
    """decode_table (format check first), yielding between its big fields; `table = yield from decode_table_in_steps(data)`."""
    parts = _parts_decoder.decode(table_body(data))
    fields = msgspec.structs.asdict(parts)
    for name, decoder in _field_decoders.items():
        yield
        fields[name] = decoder.decode(fields[name])
    return Table(**fields)
