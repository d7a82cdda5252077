"""Credentials out of everything a divergence stores: headers, targets, bodies, difference values, text.

Each secret becomes "[redacted:<12 hex of HMAC-SHA256>]" under the database's key: equal secrets still match.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from typing import Any, Iterable
from urllib.parse import quote_plus, unquote_plus

SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                               "x-auth-token", "x-csrf-token"})
SENSITIVE_HEADER = re.compile(r"token|secret|session|passw(or)?d|api[-_]?key|auth|credential|signature", re.I)
# Echo services put request headers into JSON bodies, so header names are field names too;
# the header pattern is not, as its `auth` would catch `author`.
SENSITIVE_FIELDS = SENSITIVE_HEADERS | {
    "token", "access_token", "refresh_token", "id_token", "code", "sig", "signature", "password", "passwd", "pwd",
    "passphrase", "secret", "client_secret", "api_key", "apikey", "key", "session", "sessionid", "auth"}
SENSITIVE_FIELD = re.compile(r"token|secret|passw(or)?d|api[-_]?key|session|credential|private[-_]?key", re.I)

REDACTED = re.compile(r"\[redacted:[0-9a-f]{12}\]")
PATH_KEY = re.compile(r"\.([^.\[\]\s'\"]+)|\['([^']+)'\]")
SCHEME = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)(\s+)(\S.*)", re.S)
CREDENTIAL = re.compile(r"\b(bearer|basic)(\s+)([A-Za-z0-9._~+/-]+=*)", re.I)
# Each pattern may start only where its run of characters starts, so bodies scan in linear time.
# A JWT's signature is optional: excerpts are cut at a length, and a cut JWT still carries claims.
JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*)?")
JSON_PAIR = re.compile(r'"(?P<key>[^"\\]{1,100})"(?P<sep>\s*:\s*)'
                       r'(?P<value>"(?:[^"\\]|\\.)*(?:"|\\?$)|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false)')
# key=value and key: value (a header line, YAML, a log line), the separator's spaces included; the key
# may be quoted, as YAML and Python's repr of a dict (or of aiohttp's headers) quote it
ASSIGNED = re.compile(r"(?<![\w.\[\]-])(?P<quote>[\"']?)(?P<key>[\w.\[\]-]+)(?P=quote)[ \t]*[=:][ \t]*")
# ["Name", "value"] and ('Name', 'value'): echo services list request headers as pairs, in JSON or Python's repr
HEADER_PAIR = re.compile(r'[\[(]\s*(?P<quote>["\'])(?P<name>[!#$%&\'*+.^_`|~0-9A-Za-z-]{1,100})(?P=quote)\s*,\s*'
                         r'(?P<value>"(?:[^"\\]|\\.)*(?:"|\\?$)|\'(?:[^\'\\]|\\.)*(?:\'|\\?$))')
VALUE = re.compile(r"\"[^\"]*(?:\"|$)|'[^']*(?:'|$)|[^\s&;,\"'<>]+")
# What every pattern of `text` needs somewhere in the text to match at all: a separator (assignments and
# JSON pairs), a pair's opening (header pairs), a JWT's start or a scheme. Most strings in a body have none,
# and one scan in C then spares them the five passes.
ANY_PATTERN = re.compile(r"""[:=]|eyJ|[\[(]\s*["']|(?i:bearer|basic)\s""")


class Redactor:
    """Replaces credentials with a keyed hash before anything is stored."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def token(self, secret: str) -> str:
        """The stand-in for `secret`: equal for equal secrets under one key, unrelated across keys."""
        digest = hmac.new(self._key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return f"[redacted:{digest[:12]}]"

    def headers(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Each header with its credentials redacted; order and duplicates kept."""
        return [(name, self._header(name, value) if _sensitive_header(name) else self.text(value))
                for name, value in pairs]

    def target(self, target: str) -> str:
        """A request target with sensitive query values redacted and every other byte as it was."""
        path, mark, query = target.partition("?")
        return self.text(path) + mark + self._params(query)

    def body(self, body: bytes, content_type: str | None) -> bytes:
        """A JSON, form or text body with credentials redacted; binary bodies as they are."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return body  # binary: nothing readable to store, so nothing to redact
        media = (content_type or "").split(";")[0].strip().lower()
        if media == "application/x-www-form-urlencoded":
            return self._params(text).encode()
        # JSON served as text is still JSON, and nested secrets need the parsed tree.
        if media == "application/json" or media.endswith("+json") or text.lstrip()[:1] in ("{", "["):
            try:
                tree = self.json_value(json.loads(text))
                # backslashreplace: a lone surrogate from "\ud800" goes back to being that JSON escape
                return json.dumps(tree, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")
            except (ValueError, RecursionError):
                pass  # not JSON after all: redacted as text
        return self.text(text).encode()

    def json_value(self, value: Any) -> Any:
        """A parsed JSON value with every sensitive field redacted, however deep."""
        if isinstance(value, dict):
            return {k: self._redact(v) if _sensitive_field(str(k)) else self.json_value(v) for k, v in value.items()}
        if isinstance(value, list):
            if len(value) == 2 and isinstance(value[0], str) and _sensitive_header(value[0]):
                return [value[0], self._header(value[0], value[1]) if isinstance(value[1], str)
                        else self._redact(value[1])]
            return [self.json_value(item) for item in value]
        return self.text(value) if isinstance(value, str) else value

    def at_path(self, path: str, value: Any) -> Any:
        """A difference's value, redacted whole when its path names a sensitive header or field."""
        if path.lower().startswith("header:"):
            name = path[len("header:"):]
            if not _sensitive_header(name):
                return self.json_value(value)
            return self._header(name, value) if isinstance(value, str) else self._redact(value)
        # Any key, not only the last: json_value redacts a sensitive field's whole subtree,
        # so $.credentials.user must not show what the body would hide.
        if any(_sensitive_field(key or quoted) for key, quoted in PATH_KEY.findall(path)):
            return self._redact(value)
        return self.json_value(value)

    def text(self, text: str) -> str:
        """Free text with Bearer/Basic credentials, JWTs, sensitive key=value, key: value and "key": value
        pairs, and ["Header-Name", "value"] pairs redacted."""
        if ANY_PATTERN.search(text) is None:
            return text
        text = CREDENTIAL.sub(lambda m: m[1] + m[2] + self._redact(m[3]), text)
        text = JWT.sub(lambda m: self._redact(m[0]), text)
        text = JSON_PAIR.sub(self._json_pair, text)
        text = HEADER_PAIR.sub(self._header_pair, text)
        return self._assignments(text)

    def _redact(self, value: Any) -> Any:
        # null hides nothing; an already redacted value is kept so redacting twice changes nothing.
        if value is None or (isinstance(value, str) and REDACTED.fullmatch(value)):
            return value
        if isinstance(value, str):
            return self.token(value)
        return self.token(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str))

    def _header(self, name: str, value: str) -> str:
        lowered = name.lower()
        if lowered in ("cookie", "set-cookie"):
            return self._cookies(value, every=lowered == "cookie")
        scheme = SCHEME.fullmatch(value) if lowered in ("authorization", "proxy-authorization") else None
        if scheme:
            return scheme[1] + scheme[2] + self._redact(scheme[3].strip())
        return self._redact(value)

    def _cookies(self, value: str, every: bool) -> str:
        # Names stay readable so divergences compare by cookie; in Set-Cookie only the first
        # pair is a cookie, the rest are attributes (Path, Expires, HttpOnly...).
        pieces = value.split(";")
        for i, piece in enumerate(pieces if every else pieces[:1]):
            name, eq, crumb = piece.partition("=")
            if eq:
                pieces[i] = f"{name}={self._redact(crumb.strip())}"
            elif piece.strip():
                pieces[i] = piece[:len(piece) - len(piece.lstrip())] + self._redact(piece.strip())
        return ";".join(pieces)

    def _params(self, query: str) -> str:
        return "&".join(self._param(piece) for piece in query.split("&"))

    def _param(self, piece: str) -> str:
        name, eq, value = piece.partition("=")
        if not eq:
            return self._encoded_text(piece)
        if _sensitive_field(unquote_plus(name)):
            return f"{name}={self._redact(unquote_plus(value))}"
        return f"{name}={self._encoded_text(value)}"

    def _encoded_text(self, raw: str) -> str:
        # Secrets hide behind percent-encoding too (next=%2Fcb%3Ftoken%3D...); only a value
        # that held one is re-encoded, every other stays byte for byte.
        plain = unquote_plus(raw)
        scrubbed = self.text(plain)
        return raw if scrubbed == plain else quote_plus(scrubbed, safe="[]:/?=")

    def _json_pair(self, m: re.Match[str]) -> str:
        if not _sensitive_field(m["key"]):
            return m[0]
        opening, secret, _ = _quoted(m["value"])
        return f'"{m["key"]}"{m["sep"]}"{self._redact(_json_string(secret) if opening else secret)}"'

    def _header_pair(self, m: re.Match[str]) -> str:
        if not _sensitive_header(m["name"]):
            return m[0]
        quote, secret, _ = _quoted(m["value"])
        secret = _json_string(secret) if quote == '"' else secret
        return m[0][:m.start("value") - m.start()] + quote + self._redact(secret) + quote

    def _assignments(self, text: str) -> str:
        # Not re.sub: an innocent key's value is scanned too (href="/cb?code=..."), and only a
        # sensitive key's value is consumed.
        out, at = [], 0
        for m in ASSIGNED.finditer(text):
            if m.start() < at or not _sensitive_field(m["key"]) or not (value := VALUE.match(text, m.end())):
                continue
            if m["quote"] and value[0][0] in "{[":
                continue  # a JSON object or list: its own keys are judged one by one, as json_value does
            if text[value.end():value.end() + 12].lstrip(" \t").startswith("[redacted:"):
                continue  # a scheme whose credential is redacted already (Authorization: Bearer ...)
            opening, secret, closing = _quoted(value[0])
            out += [text[at:m.end()], opening, self._redact(secret), closing]
            at = value.end()
        return "".join(out) + text[at:]


@functools.lru_cache(maxsize=4096)  # a body's objects repeat their keys: each judged once
def _sensitive_header(name: str) -> bool:
    return name.strip().lower() in SENSITIVE_HEADERS or SENSITIVE_HEADER.search(name) is not None


@functools.lru_cache(maxsize=4096)
def _sensitive_field(name: str) -> bool:
    return name.strip().lower() in SENSITIVE_FIELDS or SENSITIVE_FIELD.search(name) is not None


def _quoted(value: str) -> tuple[str, str, str]:
    # Excerpts may cut a quoted secret short: an unclosed quote still starts a secret.
    quote = value[0] if value[:1] in ('"', "'") else ""
    closing = quote if len(value) > 1 and value.endswith(quote) else ""
    return quote, value[len(quote):len(value) - len(closing)], closing


def _json_string(escaped: str) -> str:
    try:
        return json.loads(f'"{escaped}"')
    except ValueError:
        return escaped
