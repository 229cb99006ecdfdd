"""Credentials references for mail servers, resolved to secrets only at run time.

A mailbox row stores a reference, never a secret: ``env:NAME`` names an environment variable
and ``file:/path`` names a JSON file. Either one contains a JSON object such as
``{"username": "svc-crm@example.org", "password": "..."}`` for EWS basic or NTLM logins or
``{"client_secret": "..."}`` for app-only OAuth. An environment variable that does not hold a
JSON object is taken as a single secret (a password or a client secret, whichever the source
needs).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from bot.errors import ConfigError, InputError

log = logging.getLogger(__name__)

SECRET_KEYS = ("password", "client_secret", "secret", "access_token", "refresh_token")
KNOWN_KEYS = ("username", "client_id", "tenant_id", "certificate_thumbprint", *SECRET_KEYS)


@dataclass(frozen=True)
class Secrets:
    """Login data read from a credentials reference; ``repr`` and ``str`` mask every value."""

    reference: str
    values: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        value = self.values.get(key)
        return value if value else None

    def require(self, key: str, purpose: str) -> str:
        """Return one value, or raise ConfigError naming the reference and the missing key."""
        value = self.get(key)
        if value is None:
            raise ConfigError(
                f"credentials {self.reference} have no {key!r}, which {purpose} needs; "
                f"add \"{key}\" to the JSON object behind the reference"
            )
        return value

    @property
    def username(self) -> str | None:
        return self.get("username")

    @property
    def password(self) -> str | None:
        return self.get("password") or self.get("secret")

    @property
    def client_secret(self) -> str | None:
        return self.get("client_secret") or self.get("secret")

    def __repr__(self) -> str:
        masked = ", ".join(f"{key}=***" for key in sorted(self.values))
        return f"Secrets({self.reference}: {masked})"

    __str__ = __repr__


def validate_reference(reference: str) -> str:
    """Check the syntax of a reference without reading it; raise InputError when it is invalid."""
    text = reference.strip()
    if text.startswith("env:"):
        name = text[len("env:") :]
        if not name or not all(ch.isalnum() or ch == "_" for ch in name):
            # The value is not echoed: a user may have pasted the secret itself.
            raise InputError(
                "invalid credentials reference: after 'env:' give an environment "
                "variable name made of letters, digits and '_'"
            )
        return text
    if text.startswith("file:"):
        path = text[len("file:") :]
        if not path:
            raise InputError(f"invalid credentials reference {reference!r}: give a path after 'file:'")
        return text
    raise InputError(
        "invalid credentials reference: use env:NAME or file:/path/to/secret.json "
        "(the value given is not shown, as it may be a secret)"
    )


def resolve(reference: str, environ: Mapping[str, str] | None = None) -> Secrets:
    """Read the secrets behind a reference; raise ConfigError when they are missing or invalid."""
    reference = validate_reference(reference)
    environ = os.environ if environ is None else environ
    if reference.startswith("env:"):
        name = reference[len("env:") :]
        raw = environ.get(name)
        if raw is None or not raw.strip():
            raise ConfigError(
                f"credentials {reference}: environment variable {name} is not set; "
                "set it to a JSON object or a single secret"
            )
        values = _parse_env_value(raw)
    else:
        path = Path(reference[len("file:") :]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"credentials {reference}: cannot read the file ({exc.strerror}); "
                "check the path and that the bot's user may read it"
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"credentials {reference}: the file is not valid JSON (line {exc.lineno}); "
                'write an object such as {"username": "...", "password": "..."}'
            ) from None
        values = _check_object(data, reference)
    unknown = sorted(set(values) - set(KNOWN_KEYS))
    if unknown:
        log.warning("credentials %s contain keys the bot does not use: %s", reference, ", ".join(unknown))
    return Secrets(reference=reference, values=values)


def _parse_env_value(raw: str) -> dict[str, str]:
    text = raw.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            # A secret may itself start with "{"; without a valid object it is one secret.
            return {"secret": raw}
        return _check_object(data, "environment value")
    return {"secret": raw}


def _check_object(data: object, where: str) -> dict[str, str]:
    if not isinstance(data, dict):
        raise ConfigError(
            f"credentials {where}: expected a JSON object with keys such as username, password "
            f"or client_secret, found {type(data).__name__}"
        )
    values: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise ConfigError(f"credentials {where}: the value of {key!r} must be a string")
        values[str(key)] = value
    return values


DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"


def _bundle_session(bundle: str):  # type: ignore[no-untyped-def]
    """Return a requests session that verifies every request against ``bundle``."""
    import requests

    class BundleSession(requests.Session):
        """A requests session that always verifies against its own CA bundle.

        requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE replace a session's ``verify``
        path; passing it with every request keeps the configured bundle in force.
        """

        def request(self, method, url, **kwargs):  # type: ignore[no-untyped-def, override]
            if kwargs.get("verify") in (None, True):
                kwargs["verify"] = self.verify
            return super().request(method, url, **kwargs)

    session = BundleSession()
    session.verify = bundle
    return session


class AppTokenProvider:
    """App-only access tokens from MSAL's client-credentials flow, for one app in one tenant.

    MSAL caches the token and requests a new one from the identity provider only when it has
    expired, so callers request a token before every batch. ``authority_host`` and ``verify`` exist so
    that a national cloud, or a test identity provider on loopback, can be named.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        scopes: list[str],
        authority_host: str = DEFAULT_AUTHORITY_HOST,
        verify: bool | str = True,
        timeout: float = 30.0,
    ):
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.scopes = scopes
        self.authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._client_secret = client_secret
        self._verify = verify
        self._timeout = timeout
        self._app = None  # created on first use: MSAL reads the tenant's metadata then

    def __repr__(self) -> str:
        return f"AppTokenProvider(authority={self.authority!r}, client_id={self.client_id!r}, secret=***)"

    def _application(self):  # type: ignore[no-untyped-def]
        if self._app is None:
            import msal
            import requests

            well_known = self.authority.startswith(DEFAULT_AUTHORITY_HOST + "/")
            http_client = _bundle_session(self._verify) if isinstance(self._verify, str) else None
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=self._client_secret,
                    authority=self.authority,
                    verify=self._verify,
                    http_client=http_client,
                    timeout=self._timeout,
                    # Instance discovery queries login.microsoftonline.com about other hosts, so
                    # a configured host is trusted as given instead.
                    instance_discovery=None if well_known else False,
                )
            except (ValueError, requests.RequestException) as exc:
                from bot.errors import SourceError

                raise SourceError(
                    f"cannot read the identity provider's metadata at {self.authority}: {exc}; "
                    "check the tenant id and the authority host"
                ) from None
        return self._app

    def token(self) -> str:
        """Return a valid access token; raise SourceError when the identity provider refuses."""
        import requests

        from bot.errors import SourceError

        try:
            result = self._application().acquire_token_for_client(scopes=self.scopes)
        except requests.RequestException as exc:
            raise SourceError(
                f"token request to {self.authority} failed: {type(exc).__name__}; "
                "check the network path to the identity provider"
            ) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            error = result.get("error", "unknown_error") if isinstance(result, dict) else "unknown_error"
            description = (result.get("error_description") or "").splitlines()[0] if isinstance(result, dict) else ""
            raise SourceError(
                f"token request for app {self.client_id} in tenant {self.tenant_id} was rejected: "
                f"{error} {description}".strip()
                + "; check the client id, the secret and the admin consent"
            )
        return token
