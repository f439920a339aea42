"""What a configured value must look like before the data plane may write it into a request.

Each check returns None for a good value, else a sentence saying what is wrong. The
watcher reports these against the file, object and field; a worker applies the same
checks to a table it decodes, so that nothing invalid reaches an upstream even if a
table were built some other way.
"""

from __future__ import annotations

import ipaddress
import re

# Gateway API's HTTPHeaderName (an RFC 7230 token), as Envoy Gateway validates header filters.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
MAX_HEADER_NAME = 256  # Gateway API HTTPHeaderName maxLength
MAX_HEADER_VALUE = 4096  # Gateway API HTTPHeader value maxLength

# Headers that describe the connection or the message framing (RFC 9110 7.6.1, hop-by-hop) or
# that the gateway writes itself. Envoy owns them too: its codec writes framing and Host, and
# ext_proc header mutations of host are ignored; a mutation here would desynchronise the request.
GATEWAY_OWNED = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
})
# How the data plane turns a configured header value into octets: UTF-8, as Envoy writes the
# (UTF-8) strings of its configuration, so "Müller" reaches an upstream as the same bytes through
# either gateway. Clients' values are ASCII by the time they arrive: Granian drops header values
# with other octets, so they pass through unchanged.
HEADER_ENCODING = "utf-8"
# Control characters (C0 and DEL, tab included) and UTF-16 surrogates, which cannot be encoded.
_CONTROL_OR_SURROGATE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
# RFC 3986 path characters: unreserved, percent-encoded, sub-delims, ":" "@" and "/".
_PATH = re.compile(r"(/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*)*")
# RFC 1123 host names, as Envoy Gateway's FQDN endpoints accept them (upper case allowed here,
# since DNS is case-insensitive).
_HOSTNAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*")
MAX_HOSTNAME = 253
# Kubernetes object names (DNS-1123 subdomains) and namespaces (DNS-1123 labels), as the API server
# requires them; backend names are sent to clients in the x-ai-gateway-backend header.
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_OBJECT_NAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_NAMESPACE = re.compile(_DNS_LABEL)


def header_name_problem(name: str) -> str | None:
    if not _TOKEN.fullmatch(name):
        return (f"header name {name!r} is not a valid HTTP header name (letters, digits and "
                "!#$%&'*+-.^_`|~ only; no colon, space or line break)")
    if len(name) > MAX_HEADER_NAME:
        return f"header name is {len(name)} characters long, over the limit of {MAX_HEADER_NAME}"
    return None


def owned_header_problem(name: str) -> str | None:
    """Why a header mutation may not set or remove `name`: it frames the message or the connection."""
    lname = name.lower()
    if lname in GATEWAY_OWNED or lname.startswith("proxy-"):
        return (f"header {lname} is hop-by-hop or written by the gateway itself and cannot be set or removed "
                "(Envoy does not let header mutations change it either)")
    return None


def header_value_problem(value: str, limit: int | None = MAX_HEADER_VALUE) -> str | None:
    if any(c in value for c in "\r\n\0"):
        return "the value contains a line break (CR or LF) or NUL, which would split the request's headers"
    if _CONTROL_OR_SURROGATE.search(value.replace("\t", "")):
        return "the value contains a control character or an unpaired surrogate"
    if limit is not None and len(value) > limit:
        return f"the value is {len(value)} characters long, over the limit of {limit}"
    return None


def text_problem(text: str) -> str | None:
    """A value written into a JSON body or a path segment: printable text only."""
    if not text:
        return "must not be empty"
    if _CONTROL_OR_SURROGATE.search(text):
        return "contains a control character (such as a line break) or an unpaired surrogate"
    return None


def token_problem(text: str) -> str | None:
    """A short identifier sent as a header value or query parameter (an API version)."""
    if not text or not all("!" <= c <= "~" for c in text):
        return f"{text!r} must be printable ASCII without spaces"
    return None


def path_problem(path: str) -> str | None:
    if path and not path.startswith("/"):
        return f"path {path!r} must start with /"
    if not _PATH.fullmatch(path):
        return (f"path {path!r} has characters a URL path cannot carry (spaces, line breaks, '?', '#', "
                "non-ASCII text: percent-encode them)")
    return None


def host_problem(host: str) -> str | None:
    if is_ip(host):
        return None
    if len(host) > MAX_HOSTNAME or not _HOSTNAME.fullmatch(host):
        return f"{host!r} is not a valid host name (RFC 1123: letters, digits, '-' and '.') or IP address"
    return None


def object_name_problem(name: str, namespace: bool = False) -> str | None:
    """A metadata name or namespace that the Kubernetes API server would refuse."""
    pattern, limit, what = (_NAMESPACE, 63, "a DNS-1123 label (lower-case letters, digits and '-')") if namespace \
        else (_OBJECT_NAME, 253, "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.')")
    if len(name) > limit or not pattern.fullmatch(name):
        return f"{name!r} is not {what}, as Kubernetes requires"
    return None


def port_problem(port: int) -> str | None:
    return None if 1 <= port <= 65535 else f"port {port} is not between 1 and 65535"


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
