"""SMART App Launch 2.2 backend services: a port of the checks of Inferno's
SMART App Launch test kit ("SMART Backend Services" / STU 2.2 discovery groups),
plus the assertion attacks of the asymmetric client authentication profile and
the bearer-token enforcement of the FHIR endpoints.

Black box like the rest of the suite: it only talks HTTP to the server and
signs its own client assertions (PyJWT + cryptography). It needs a server
started with SMART auth enabled and a client registered there, named by:

| variable | meaning |
| --- | --- |
| `SMART_CLIENT_ID` | the registered backend-services client (iss = sub of the assertions) |
| `SMART_PRIVATE_KEY` | PEM private key of that client: P-384 EC (signs ES384) or RSA (signs RS384) |
| `SMART_KID` | the `kid` under which the server knows the matching public key |
| `SMART_SCOPE` | optional, default `system/Patient.rs`: the scope requested; it must be granted to the client and cover `GET /Patient` |
| `SMART_UNGRANTED_SCOPE` | optional, default `system/AuditEvent.cruds`: a scope the client may NOT be granted |
| `SMART_OTHER_PRIVATE_KEY` | optional: a key of the same type that is NOT registered (default: one generated here) |

Relative key paths are read from the current directory, else from the repository
root (the parent of conformance/). Without the first three variables the whole
module is skipped. `conformance/smart.sh` starts a vbc-server with the test
clients of tests/data/auth/ and runs this module against it.

Ported kit checks (Inferno test id -> test here):

* `well_known_endpoint` (smart_discovery_stu2): 200, JSON, Content-Type
  application/json -> test_well_known_endpoint
* `well_known_capabilities_stu2`: required fields and types, capabilities are
  strings; `authorization_endpoint` and `code_challenge_methods_supported` are
  only required of servers that offer an app launch (this server is backend
  services only, so they are required only if a launch capability is listed);
  the kit's warning on `issuer` without `sso-openid-connect` is a Python warning
  here -> test_well_known_required_fields
* backend-services discovery (SMART 2.2 "Backend Services" + "Asymmetric client
  authentication": client_credentials, private_key_jwt, RS384/ES384,
  client-confidential-asymmetric, permission-v1/v2) -> test_well_known_backend_services
* `smart_cors_well_known_endpoint` (smart_discovery_stu2_2): CORS header on
  the well-known document -> test_well_known_cors
* STU1 discovery "CapabilityStatement provides OAuth 2.0 endpoints" (the
  oauth-uris extension, SMART-on-FHIR security service) -> test_capability_statement_security
* `smart_backend_services_token_tls_version`: NOT ported (the suite runs over
  plain HTTP on loopback; TLS belongs to the deployment's proxy)
* `smart_backend_services_invalid_grant_type`: 400 (+ OAuth error
  `unsupported_grant_type`) -> test_invalid_grant_type
* `smart_backend_services_invalid_client_assertion`: 400 (+ `invalid_request`)
  -> test_invalid_client_assertion_type; also a missing one -> test_missing_client_assertion_type
* `smart_backend_services_invalid_jwt` (400 or 401; the STU2.2 kit sends a bad
  client_assertion_type, the bulk-data variant a bad `iss`) -> test_invalid_jwt_kit
  and test_assertion_iss_not_sub (plus the other way round,
  test_assertion_sub_not_iss); a JWT that is not one -> test_assertion_garbage
* `smart_backend_services_auth_request_success`: 200/201 -> test_token_request_succeeds
* `smart_backend_services_auth_response_body`: access_token, token_type bearer
  (case-insensitive), expires_in, scope -> test_token_response_body
  (plus RFC 6749 5.1 Cache-Control: no-store, an integer expires_in of at
  most 300 s, the value SMART recommends, and granted scopes among the requested)

Beyond the kit (SMART 2.2 client-confidential-asymmetric "authenticating to
the token endpoint" rules; each answer is 401 `invalid_client`): alg none,
wrong aud, iss != sub, expired, exp more than five minutes ahead, unknown kid,
a key that is not registered under the kid, missing jti, a replayed jti, a
tampered signature. Scopes: 400 `invalid_scope` when nothing requested can be
granted, a partial grant otherwise.

Bearer enforcement (SMART 2.2 backend services "access FHIR API", RFC 6750):
/metadata, /.well-known/smart-configuration and /health are open; a FHIR read
without a token, with a garbage token or with a tampered token is 401 with an
OperationOutcome and a `WWW-Authenticate: Bearer ...` header; the issued token
reads /Patient (a searchset Bundle).
"""
from __future__ import annotations

import base64
import json
import os
import time
import urllib.parse
import uuid
import warnings
from pathlib import Path

import pytest

CLIENT_ID = os.environ.get("SMART_CLIENT_ID", "")
KEY_PATH = os.environ.get("SMART_PRIVATE_KEY", "")
KID = os.environ.get("SMART_KID", "")

if not (CLIENT_ID and KEY_PATH and KID):
    pytest.skip("SMART backend-services checks need SMART_CLIENT_ID, SMART_PRIVATE_KEY and SMART_KID "
                "(a client registered on a server with auth enabled; conformance/smart.sh sets them up)",
                allow_module_level=True)

import httpx  # noqa: E402
import jwt  # noqa: E402  (PyJWT)
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

from fhirtest import BASE_URL, describe, expect_outcome, fhir_json  # noqa: E402

pytestmark = pytest.mark.area("smart")

SCOPE = os.environ.get("SMART_SCOPE", "system/Patient.rs")
UNGRANTED_SCOPE = os.environ.get("SMART_UNGRANTED_SCOPE", "system/AuditEvent.cruds")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SECURITY_SERVICE = ("http://terminology.hl7.org/CodeSystem/restful-security-service", "SMART-on-FHIR")
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------
# Keys and assertions
# ---------------------------------------------------------------------------

def _read_key(path: str):
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = REPO_ROOT / path
    if not p.exists():
        pytest.fail(f"private key {path!r} not found (looked in {Path.cwd()} and {REPO_ROOT})", pytrace=False)
    return serialization.load_pem_private_key(p.read_bytes(), password=None)


def _alg_of(key) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert key.curve.name == "secp384r1", f"an EC key for ES384 must be P-384, not {key.curve.name}"
        return "ES384"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS384"
    pytest.fail(f"unsupported key type {type(key).__name__}: SMART backend services sign with ES384 or RS384",
                pytrace=False)


@pytest.fixture(scope="module")
def key():
    return _read_key(KEY_PATH)


@pytest.fixture(scope="module")
def alg(key) -> str:
    return _alg_of(key)


@pytest.fixture(scope="module")
def other_key(key):
    """A key of the client's type that the server does not know."""
    path = os.environ.get("SMART_OTHER_PRIVATE_KEY")
    if path:
        return _read_key(path)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims(token_url: str, **overrides) -> dict:
    """The claims of a valid client assertion (as the kit's ClientAssertionBuilder
    makes them), with overrides; an override of None drops the claim."""
    c = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": token_url,
        "exp": int(time.time()) + 240,  # SMART: no more than five minutes in the future
        "jti": uuid.uuid4().hex,  # fresh for every assertion
    }
    c.update(overrides)
    return {k: v for k, v in c.items() if v is not None}


def sign(payload: dict, key, alg: str, kid: str = KID, typ: str = "JWT") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid, "typ": typ})


def tamper(token: str) -> str:
    """Flip one bit in the middle of a JWT's signature (an opaque token: change
    one character in its middle), keeping the token well-formed."""
    parts = token.split(".")
    if len(parts) == 3 and parts[2]:
        sig = bytearray(b64url_decode(parts[2]))
        sig[len(sig) // 2] ^= 0x01
        return ".".join(parts[:2] + [b64url(bytes(sig))])
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def http():
    """A plain client: no FHIR Accept header, no credentials."""
    with httpx.Client(timeout=httpx.Timeout(60.0)) as c:
        yield c


@pytest.fixture(scope="module")
def smart_config(http) -> dict:
    r = http.get(BASE_URL + "/.well-known/smart-configuration", headers={"Accept": "application/json"})
    assert r.status_code == 200, describe(r)
    return r.json()


@pytest.fixture(scope="module")
def token_url(smart_config) -> str:
    url = smart_config.get("token_endpoint")
    assert isinstance(url, str) and url, f"no token_endpoint in {smart_config}"
    return url


def token_request(http: httpx.Client, token_url: str, assertion: str | None, scope: str | None = SCOPE,
                  grant_type: str | None = "client_credentials",
                  assertion_type: str | None = ASSERTION_TYPE) -> httpx.Response:
    """POST the form of the kit's BackendServicesAuthorizationRequestBuilder; a None leaves a field out."""
    form = {"scope": scope, "grant_type": grant_type, "client_assertion_type": assertion_type,
            "client_assertion": assertion}
    return http.post(token_url, data={k: v for k, v in form.items() if v is not None},
                     headers={"Accept": "application/json"})


def oauth_error(r: httpx.Response, statuses, error) -> dict:
    """Assert an RFC 6749 5.2 error answer: one of the statuses, a JSON object
    with the `error` code (one of `error` if a tuple) and a string `error_description`."""
    statuses = (statuses,) if isinstance(statuses, int) else tuple(statuses)
    errors = (error,) if isinstance(error, str) else tuple(error)
    assert r.status_code in statuses, f"expected {statuses}: {describe(r)}"
    ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
    assert ctype == "application/json", f"an OAuth error is application/json: {describe(r)}"
    body = r.json()
    assert isinstance(body, dict), describe(r)
    assert body.get("error") in errors, f"expected error {errors}: {describe(r)}"
    assert isinstance(body.get("error_description"), str) and body["error_description"], \
        f"error_description missing: {describe(r)}"
    return body


def invalid_client(r: httpx.Response) -> dict:
    return oauth_error(r, 401, "invalid_client")


@pytest.fixture(scope="module")
def token_response(http, token_url, key, alg) -> httpx.Response:
    return token_request(http, token_url, sign(claims(token_url), key, alg))


@pytest.fixture(scope="module")
def access_token(token_response) -> str:
    assert token_response.status_code in (200, 201), describe(token_response)
    token = token_response.json().get("access_token")
    assert isinstance(token, str) and token, describe(token_response)
    return token


def expect_unauthorized(r) -> dict:
    """401 with an OperationOutcome and an RFC 6750 `WWW-Authenticate: Bearer` challenge."""
    oo = expect_outcome(r, (401,), what="401 OperationOutcome")
    challenge = r.headers.get("www-authenticate", "")
    assert challenge.lower().startswith("bearer"), f"WWW-Authenticate must be a Bearer challenge: {describe(r)}"
    return oo


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------

def test_well_known_endpoint(http):
    r = http.get(BASE_URL + "/.well-known/smart-configuration", headers={"Accept": "application/json"})
    assert r.status_code == 200, describe(r)
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"Content-Type must be application/json: {describe(r)}"
    try:
        config = r.json()
    except ValueError:
        pytest.fail(f"not JSON: {describe(r)}", pytrace=False)
    assert isinstance(config, dict), describe(r)


def test_well_known_required_fields(smart_config):
    required = {"token_endpoint": str, "capabilities": list, "grant_types_supported": list}
    caps = smart_config.get("capabilities") or []
    if {"launch-ehr", "launch-standalone"} & set(caps):
        required.update({"authorization_endpoint": str, "code_challenge_methods_supported": list})
    for k, typ in required.items():
        assert k in smart_config, f"well-known configuration lacks `{k}`: {smart_config}"
        assert smart_config[k], f"well-known `{k}` is blank"
        assert isinstance(smart_config[k], typ), f"well-known `{k}` must be a {typ.__name__}: {smart_config[k]!r}"
    bad = [c for c in caps if not isinstance(c, str)]
    assert not bad, f"capabilities must be strings, found {bad}"
    if "code_challenge_methods_supported" in smart_config:
        methods = smart_config["code_challenge_methods_supported"]
        assert "S256" in methods and "plain" not in methods, methods
    if "sso-openid-connect" in caps:
        assert isinstance(smart_config.get("issuer"), str) and isinstance(smart_config.get("jwks_uri"), str)
    elif "issuer" in smart_config:
        warnings.warn("kit warning: well-known `issuer` should be omitted without `sso-openid-connect`")


def test_well_known_backend_services(smart_config):
    url = urllib.parse.urlsplit(smart_config["token_endpoint"])
    assert url.scheme in ("http", "https") and url.netloc, \
        f"token_endpoint must be an absolute URL: {smart_config['token_endpoint']!r}"
    assert "client_credentials" in smart_config.get("grant_types_supported", []), smart_config
    assert "private_key_jwt" in smart_config.get("token_endpoint_auth_methods_supported", []), smart_config
    algs = smart_config.get("token_endpoint_auth_signing_alg_values_supported", [])
    assert {"RS384", "ES384"} <= set(algs), f"RS384 and ES384 are both required: {algs}"
    assert isinstance(smart_config.get("scopes_supported"), list), smart_config
    caps = set(smart_config.get("capabilities", []))
    missing = {"client-confidential-asymmetric", "permission-v1", "permission-v2"} - caps
    assert not missing, f"capabilities lack {sorted(missing)}: {sorted(caps)}"


def test_well_known_cors(http):
    origin = "https://inferno.example.org"
    r = http.get(BASE_URL + "/.well-known/smart-configuration",
                 headers={"Accept": "application/json", "Origin": origin})
    assert r.status_code == 200, describe(r)
    allow = r.headers.get("access-control-allow-origin")
    assert allow in ("*", origin), f"Access-Control-Allow-Origin must be * or {origin}: {describe(r)}"


def test_capability_statement_security(http, token_url):
    r = http.get(BASE_URL + "/metadata", headers={"Accept": "application/fhir+json"})
    cap = fhir_json(r, 200, what="CapabilityStatement")
    security = (cap.get("rest") or [{}])[0].get("security")
    assert isinstance(security, dict), f"rest[0].security missing: {json.dumps(cap.get('rest', [{}])[0])[:600]}"
    codings = [(c.get("system"), c.get("code")) for s in security.get("service", []) for c in s.get("coding", [])]
    assert SECURITY_SERVICE in codings, f"rest[0].security.service lacks {SECURITY_SERVICE}: {codings}"
    ext = next((e for e in security.get("extension", []) if e.get("url") == OAUTH_URIS), None)
    assert ext is not None, f"rest[0].security lacks the {OAUTH_URIS} extension: {security}"
    token = [e.get("valueUri") for e in ext.get("extension", []) if e.get("url") == "token"]
    assert token == [token_url], f"oauth-uris `token` must be the discovered {token_url}: {ext}"


# ---------------------------------------------------------------------------
# Token endpoint: the kit's checks
# ---------------------------------------------------------------------------

def test_invalid_grant_type(http, token_url, key, alg):
    r = token_request(http, token_url, sign(claims(token_url), key, alg), grant_type="not_a_grant_type")
    oauth_error(r, 400, "unsupported_grant_type")


def test_invalid_client_assertion_type(http, token_url, key, alg):
    r = token_request(http, token_url, sign(claims(token_url), key, alg), assertion_type="not_an_assertion_type")
    oauth_error(r, 400, "invalid_request")


def test_missing_client_assertion_type(http, token_url, key, alg):
    r = token_request(http, token_url, sign(claims(token_url), key, alg), assertion_type=None)
    oauth_error(r, 400, "invalid_request")


def test_invalid_jwt_kit(http, token_url, key, alg):
    # the STU 2.2 kit's "invalid JWT" request: a bad client_assertion_type, 400 or 401
    r = token_request(http, token_url, sign(claims(token_url), key, alg), assertion_type="not_an_assertion_type")
    oauth_error(r, (400, 401), ("invalid_request", "invalid_client"))


def test_token_request_succeeds(token_response):
    assert token_response.status_code in (200, 201), describe(token_response)


def test_token_response_body(token_response):
    r = token_response
    assert r.status_code in (200, 201), describe(r)
    assert r.headers.get("content-type", "").startswith("application/json"), describe(r)
    assert "no-store" in r.headers.get("cache-control", "").lower(), f"token answers must not be cached: {describe(r)}"
    body = r.json()
    assert isinstance(body.get("access_token"), str) and body["access_token"], describe(r)
    for k in ("token_type", "expires_in", "scope"):
        assert body.get(k) not in (None, ""), f"token response lacks {k}: {describe(r)}"
    assert body["token_type"].lower() == "bearer", f"token_type must be bearer: {body['token_type']!r}"
    assert isinstance(body["expires_in"], int) and not isinstance(body["expires_in"], bool), body["expires_in"]
    assert 0 < body["expires_in"] <= 300, f"expires_in should be at most 300 s: {body['expires_in']}"
    assert isinstance(body["scope"], str), body["scope"]
    granted, requested = set(body["scope"].split()), set(SCOPE.split())
    assert granted and granted <= requested, f"granted {sorted(granted)}, requested {sorted(requested)}"


# ---------------------------------------------------------------------------
# Token endpoint: the assertion rules of client-confidential-asymmetric
# ---------------------------------------------------------------------------

def test_assertion_garbage(http, token_url):
    invalid_client(token_request(http, token_url, "this.is-not.a-jwt"))


def test_assertion_alg_none(http, token_url):
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": KID}).encode())
    payload = b64url(json.dumps(claims(token_url)).encode())
    invalid_client(token_request(http, token_url, f"{header}.{payload}."))


def test_assertion_wrong_aud(http, token_url, key, alg):
    invalid_client(token_request(http, token_url, sign(claims(token_url, aud="https://elsewhere.example.org/token"),
                                                       key, alg)))


def test_assertion_iss_not_sub(http, token_url, key, alg):
    # the bulk-data kit's "invalid JWT": iss is not the client
    invalid_client(token_request(http, token_url, sign(claims(token_url, iss="not_a_valid_iss"), key, alg)))


def test_assertion_sub_not_iss(http, token_url, key, alg):
    # iss is the client, signed with its key, but sub names someone else
    invalid_client(token_request(http, token_url, sign(claims(token_url, sub=f"not-{CLIENT_ID}"), key, alg)))


def test_assertion_expired(http, token_url, key, alg):
    invalid_client(token_request(http, token_url, sign(claims(token_url, exp=int(time.time()) - 600), key, alg)))


def test_assertion_exp_too_far_ahead(http, token_url, key, alg):
    invalid_client(token_request(http, token_url, sign(claims(token_url, exp=int(time.time()) + 900), key, alg)))


def test_assertion_unknown_kid(http, token_url, key, alg):
    invalid_client(token_request(http, token_url, sign(claims(token_url), key, alg, kid=f"no-such-{uuid.uuid4().hex}")))


def test_assertion_unregistered_key(http, token_url, other_key):
    invalid_client(token_request(http, token_url, sign(claims(token_url), other_key, _alg_of(other_key))))


def test_assertion_missing_jti(http, token_url, key, alg):
    invalid_client(token_request(http, token_url, sign(claims(token_url, jti=None), key, alg)))


def test_assertion_replayed_jti(http, token_url, key, alg):
    assertion = sign(claims(token_url), key, alg)
    first = token_request(http, token_url, assertion)
    assert first.status_code == 200, describe(first)
    invalid_client(token_request(http, token_url, assertion))


def test_assertion_tampered_signature(http, token_url, key, alg):
    invalid_client(token_request(http, token_url, tamper(sign(claims(token_url), key, alg))))


def test_scope_nothing_grantable(http, token_url, key, alg):
    r = token_request(http, token_url, sign(claims(token_url), key, alg), scope=UNGRANTED_SCOPE)
    oauth_error(r, 400, "invalid_scope")


def test_scope_partial_grant(http, token_url, key, alg):
    r = token_request(http, token_url, sign(claims(token_url), key, alg), scope=f"{SCOPE} {UNGRANTED_SCOPE}")
    assert r.status_code == 200, describe(r)
    granted = set(r.json().get("scope", "").split())
    assert granted and UNGRANTED_SCOPE not in granted, f"granted {sorted(granted)}"


# ---------------------------------------------------------------------------
# Bearer enforcement on the FHIR endpoints
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/metadata", "/.well-known/smart-configuration", "/health"])
def test_open_without_token(http, path):
    r = http.get(BASE_URL + path)
    assert r.status_code == 200, describe(r)


def test_fhir_read_without_token(http):
    expect_unauthorized(http.get(BASE_URL + "/Patient", headers={"Accept": "application/fhir+json"}))


def test_fhir_read_with_garbage_token(http):
    expect_unauthorized(http.get(BASE_URL + "/Patient", headers={"Accept": "application/fhir+json",
                                                                 "Authorization": "Bearer not-a-token"}))


def test_fhir_read_with_token(http, access_token):
    r = http.get(BASE_URL + "/Patient", headers={"Accept": "application/fhir+json",
                                                 "Authorization": f"Bearer {access_token}"})
    bundle = fhir_json(r, 200, what="searchset Bundle")
    assert bundle.get("resourceType") == "Bundle" and bundle.get("type") == "searchset", describe(r)


def test_fhir_read_with_tampered_token(http, access_token):
    expect_unauthorized(http.get(BASE_URL + "/Patient", headers={"Accept": "application/fhir+json",
                                                                 "Authorization": f"Bearer {tamper(access_token)}"}))
