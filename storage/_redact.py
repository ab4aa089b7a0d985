"""Hide credentials in storage URLs and in any text that may quote them.

Two helpers with one rule: they never raise, because they run on error paths.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

__all__ = ["redact", "scrub"]

_MASK = "***"

# scheme://user:PASSWORD@rest - greedy up to the LAST "@", so an unencoded "@" inside a password
# ("u:p@ss@host") is hidden whole. A "@" further right (e.g. in a query) only over-redacts.
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][\w+.-]*://[^:/@?#\s]*):(?P<password>.*)@", re.S)
# The same for URLs quoted inside a longer text: the password ends at the last "@" before a blank.
_USERINFO_IN_TEXT = re.compile(r"(?P<head>\b[A-Za-z][\w+.-]*://[^:/@?#\s]*):(?P<password>\S*)@")
# password=... in a query string (postgresql://h/db?password=x) or a libpq DSN ("password=x host=h").
_KEYWORD = re.compile(
    r"(?i)(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)\s*=\s*)"
    r"(?P<value>'[^']*'|\"[^\"]*\"|[^&;\s]+)"
)


def redact(url: str) -> str:
    """Return ``url`` with every password replaced by ``***``; never raises.

    Database URLs are re-rendered by SQLAlchemy (``hide_password=True``); anything else (or a
    URL SQLAlchemy reads ambiguously, e.g. an unencoded ``@`` in the password) goes through a
    regex that masks from the first ``:`` of the user info to the last ``@``. Password-like
    query/DSN parameters (``?password=...``) are masked as well.

    >>> redact("postgresql://bob:s3cret@db.example:5432/hpo")
    'postgresql://bob:***@db.example:5432/hpo'
    """
    try:
        text = str(url)
        if _USERINFO.match(text):  # the text is a URL with a password
            hidden = _render_hidden(text) if text.count("@") == 1 else None
            masked = hidden if hidden and _MASK in hidden else _USERINFO.sub(rf"\g<head>:{_MASK}@", text)
        else:  # a message that may quote URLs
            masked = _USERINFO_IN_TEXT.sub(rf"\g<head>:{_MASK}@", text)
        return _KEYWORD.sub(rf"\g<key>{_MASK}", masked)
    except Exception:  # a redactor that raises on an error path would hide the real error
        return "<storage URL hidden>"


def scrub(text: str, url: str) -> str:
    """Remove the password of ``url`` (raw, decoded and encoded forms) from ``text``; never raises.

    For driver messages and the like, which might echo connection parameters. A secret is masked
    only where it stands as a whole token, never inside a word: with the password ``p``, "port 5432"
    stays readable.
    """
    try:
        out = str(text)
        for secret in sorted(_secrets(str(url)), key=len, reverse=True):
            out = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", _MASK, out)
        return redact(out) if "://" in out or "=" in out else out
    except Exception:
        return "<message hidden: it may contain credentials>"


def _render_hidden(text: str) -> str | None:
    """SQLAlchemy's own rendering with the password hidden, or None if it cannot parse ``text``."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(text)
    except Exception:
        return None
    return parsed.render_as_string(hide_password=True)


def _secrets(url: str) -> set[str]:
    found: set[str] = set()
    found.update(m["password"] for m in (_USERINFO.match(url), *_USERINFO_IN_TEXT.finditer(url)) if m)
    found.update(m["value"].strip("'\"") for m in _KEYWORD.finditer(url))
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password if url.count("@") == 1 else None  # else parsed ambiguously
        if password:
            found.add(str(password))
    except Exception:
        pass
    variants = set()
    for secret in found:
        variants.update({secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")})
    return {s for s in variants if s}
