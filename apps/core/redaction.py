"""Secrets never reach a stored or shown error message: one function, ``redact_secrets``, used everywhere.

An error message often quotes a URL or a request (a listing that is not JSON, a connection that failed),
and a booru's URL carries the account in its query (Danbooru ``login`` + ``api_key``, Gelbooru
``user_id`` + ``api_key``); a database or Redis URL carries a password. ``redact_secrets`` replaces

- the value of every credential-like parameter, in a query string (``api_key=...``), a Python or JSON
  mapping (``'api_key': '...'``) or a header (``Authorization: Token ...``);
- the user and password of a URL (``postgres://user:pw@host`` → ``postgres://[redacted]@host``);
- every value this installation knows to be secret wherever it appears: the crawl credentials, the
  secret key, the S3 secret, the passwords in ``DATABASE_URL`` and ``REDIS_URL``.

``RedactedTextField`` applies it to every value written to a column (``save()`` and ``update()`` alike),
so an error field cannot store a secret whichever code path writes it; ``RedactingFormatter`` applies it
to every line of the log.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from django.db import models

REDACTED = "[redacted]"

# Parameter names whose value is a credential (or, for login/user_id, names the account it belongs to).
_SECRET_NAMES = (
    r"api[_-]?key|apikey|access[_-]?key(?:[_-]?id)?|secret(?:[_-]?access)?[_-]?key|client[_-]?secret|secret"
    r"|password|passwd|pass|pwd|(?:access|auth|refresh|id|session|csrf)?[_-]?token|login|user[_-]?id"
    r"|x-amz-(?:signature|credential|security-token)|awsaccesskeyid|signature|sig"
)
# name=value in a query string or a form body (the value stops at &, whitespace, quotes and brackets).
_QUERY = re.compile(rf"(?i)(?<![\w-])((?:{_SECRET_NAMES}|key))=(?!\[redacted\])([^&\s'\"<>)\]}},;#]+)")
# 'name': 'value' / "name": "value" / name: value inside a quoted mapping (a repr or JSON of params).
_MAPPING = re.compile(rf"(?i)(['\"](?:{_SECRET_NAMES})['\"]\s*:\s*)(?:'[^']*'|\"[^\"]*\"|[^\s,}}]+)")
# Credential fields whose values are not replaced wherever they appear: an account's name is redacted
# where it stands as a parameter, but it is also an ordinary word elsewhere.
_ACCOUNT_NAME = re.compile(r"(?i)login|user[_-]?(?:id|name)?|username")
# An Authorization header (or its value in a repr of headers).
_AUTHORIZATION = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?:(basic|bearer|token)\s+)?[^\s'\",}]+")
# user:password@ (or user@) in a URL with a scheme.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"]+@")


def _quote_of(value: str) -> str:
    return value[0] if value[:1] in ("'", '"') else ""


def _url_password(url: str) -> str:
    try:
        return unquote(urlsplit(url).password or "")
    except ValueError:
        return ""


@lru_cache(maxsize=8)
def _known_secrets(fingerprint: tuple) -> tuple[str, ...]:
    """The secret values this installation holds, longest first (so a value containing another wins)."""
    credentials, *others = fingerprint
    values = [value for name, value in credentials if not _ACCOUNT_NAME.fullmatch(name.rsplit(".", 1)[-1])]
    values += [value for value in others if value]
    return tuple(sorted({v for v in values if len(v) >= 6}, key=len, reverse=True))


def _fingerprint() -> tuple:
    from django.conf import settings

    credentials = tuple(sorted(
        (f"{source}.{name}", str(value))
        for source, fields in (getattr(settings, "KYARA_CRAWL_CREDENTIALS", None) or {}).items()
        if isinstance(fields, dict)
        for name, value in fields.items() if value not in (None, "")
    ))
    storage = (getattr(settings, "STORAGES", {}).get("default", {}).get("OPTIONS", {}) or {})
    return (
        credentials,
        str(getattr(settings, "SECRET_KEY", "") or ""),
        str(storage.get("secret_key") or ""),
        _url_password(str(getattr(settings, "DATABASE_URL", "") or "")),
        _url_password(str(getattr(settings, "REDIS_URL", "") or "")),
    )


def redact_secrets(text: str) -> str:
    """``text`` with every credential it quotes replaced by ``[redacted]``; safe to store and show."""
    if not text:
        return text
    text = str(text)
    try:
        secrets = _known_secrets(_fingerprint())
    except Exception:  # noqa: BLE001 - settings not configured (a plain script): the patterns still apply
        secrets = ()
    for value in secrets:
        text = text.replace(value, REDACTED)
    text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _AUTHORIZATION.sub(lambda m: f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}{REDACTED}", text)
    text = _MAPPING.sub(lambda m: f"{m.group(1)}{_quote_of(m.group(0)[len(m.group(1)):])}{REDACTED}"
                                  f"{_quote_of(m.group(0)[len(m.group(1)):])}", text)
    text = _QUERY.sub(rf"\1={REDACTED}", text)
    return text


class RedactedTextField(models.TextField):
    """A TextField that stores its value through ``redact_secrets`` (on save and on update). It is a
    plain TextField to migrations: the column is the same, only what is written changes."""

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return redact_secrets(value) if isinstance(value, str) else value

    def pre_save(self, model_instance, add):
        value = super().pre_save(model_instance, add)
        if isinstance(value, str):
            value = redact_secrets(value)
            setattr(model_instance, self.attname, value)  # the instance shows what was stored
        return value

    def deconstruct(self):
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.TextField", args, kwargs


class RedactingFormatter(logging.Formatter):
    """The log's formatter: a logged URL, request or traceback goes to the log file redacted too."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_secrets(super().format(record))
