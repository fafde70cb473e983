"""The base URL the key may be sent to, how a URL may be shown, and the key kept out of
sight (no repr, vars() or traceback local shows it)."""

from __future__ import annotations

import ipaddress
import urllib.parse

from importer.errors import ConfigError


def check_base_url(url: str) -> None:
    """Refuse a base URL the key must not be sent to: anything but https, except plain
    http to a loopback host (127.0.0.0/8, ::1, localhost). Raises `ConfigError`."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        host, parts = "", None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ConfigError("the base URL must look like https://api.givebutter.com/v1")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"the base URL {shown_url(url)} is plain http: the API key would travel unencrypted;"
            " use https (plain http is allowed only to localhost)"
        )


def _is_loopback(host: str) -> bool:
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def shown_url(url: str) -> str:
    """A URL as it may be shown: without any user:password part."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class ApiKey:
    """Holds the key so that no repr, vars() or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "<API key>"

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "<API key>") if self._value else text
