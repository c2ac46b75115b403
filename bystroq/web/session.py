"""The dashboard's login session: a cookie that names a token and proves it was presented.

The cookie holds `name.expiry.mac`, where mac is HMAC-SHA256 keyed by the token's secret
over the name and expiry: it never holds the token, it ends at its expiry, and it stops
working when its token is removed from the config. It is HttpOnly and SameSite=Strict,
and the API accepts it in place of a bearer token (so the dashboard's own script can read
`/v1`, including the live events, which a browser's EventSource cannot send a header to).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from bystroq.web.settings import Token

COOKIE = "bystroq_session"
SESSION_S = 12 * 3600


def _mac(token: Token, name: str, expiry: int) -> str:
    message = f"{name}\n{expiry}".encode()
    return hmac.new(token.secret.encode(), message, hashlib.sha256).hexdigest()


def make_session(token: Token, now: float | None = None) -> str:
    """The cookie value for a login with `token`."""
    expiry = int((time.time() if now is None else now) + SESSION_S)
    name = base64.urlsafe_b64encode(token.name.encode()).decode().rstrip("=")
    return f"{name}.{expiry}.{_mac(token, token.name, expiry)}"


def session_token(value: str, tokens: tuple[Token, ...], now: float | None = None,
                  ) -> Token | None:
    """The token a session cookie stands for, or None (forged, expired, token gone)."""
    try:
        encoded, expiry_text, mac = value.split(".")
        name = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        expiry = int(expiry_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if expiry < (time.time() if now is None else now):
        return None
    found = None
    for token in tokens:
        if token.name == name and hmac.compare_digest(mac, _mac(token, name, expiry)):
            found = token
    return found


def match_bearer(header: str, tokens: tuple[Token, ...]) -> Token | None:
    """The token an `Authorization: Bearer ...` header presents, or None."""
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    return match_secret(presented.strip(), tokens)


def match_secret(presented: str, tokens: tuple[Token, ...]) -> Token | None:
    """The token whose secret is `presented` (compared with each in constant time)."""
    candidate = presented.encode()
    found = None
    for token in tokens:
        if hmac.compare_digest(candidate, token.secret.encode()):
            found = token
    return found
