"""Access control against the running app (TestClient runs the lifespan): the attack suite.

Every case goes through the served ASGI stack (`serving_app`): request context ->
authentication -> rate limit -> fast routes -> FastAPI, on embedded stores.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi import FastAPI, routing
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from churnops.client import sign_request
from churnops.core import signing
from churnops.errors import ConfigError
from churnops.io.key_store import SqlKeyStore
from churnops.jobs.keys import NewKey, revoke_key
from churnops.serving.app import serving_app
from churnops.serving.auth import AccessControl
from churnops.serving.scopes import build_table
from churnops.settings import Settings
from tests.access_helpers import (
    AUDIENCE,
    HS_SECRET,
    ISSUER,
    SigningKey,
    ec_key,
    ed_key,
    make_key,
    rsa_key,
    token,
    write_jwks,
)
from tests.conftest import PipelineRun

pytestmark = pytest.mark.integration


@dataclass
class World:
    client: TestClient
    settings: Settings
    access: AccessControl
    jwks: Path
    rs: SigningKey
    es: SigningKey
    ed: SigningKey
    keys: dict[str, NewKey]
    customer: str


@pytest.fixture(scope="module")
def world(pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    rs, es, ed = rsa_key("rs-1"), ec_key("es-1"), ed_key("ed-1")
    write_jwks(jwks, [rs, es, ed])
    settings = Settings(
        churnops_home=pipeline_run.settings.home,
        jwt_secret_key=HS_SECRET,
        CHURNOPS_JWT_JWKS=jwks,
        CHURNOPS_JWT_ISSUER=ISSUER,
        CHURNOPS_JWT_AUDIENCE=AUDIENCE,
        CHURNOPS_RATE_LIMIT="100000/minute",
    )
    keys = {
        "predict": make_key(settings, "predict"),
        "admin": make_key(settings, "admin"),
        "all": make_key(settings, "predict,admin,audit"),
        "signed": make_key(settings, "predict", signed=True),
        "slow": make_key(settings, "predict", rate_limit="5/minute"),
    }
    customer = str(pd.read_csv(pipeline_run.data)["customer_id"].iloc[0])
    stack = serving_app(settings)
    with TestClient(stack) as client:
        access = stack.app.access  # type: ignore[attr-defined]  # RequestContext -> Authentication
        yield World(client, settings, access, jwks, rs, es, ed, keys, customer)


def key_headers(made: NewKey) -> dict[str, str]:
    return {"X-API-Key": made.key}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def predict(world: World, headers: dict[str, str]) -> Any:
    return world.client.post("/v1/predict", json={"customer_id": world.customer}, headers=headers)


def refused(response: Any, status: int = 401) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if status == 401:
        assert "Bearer" in response.headers["www-authenticate"]
    return str(error["message"])


# -- deny by default ------------------------------------------------------------------------------


def test_every_route_declares_its_scope(world: World) -> None:
    """Walk the app's route table: no route is left undeclared, and only probes, metrics and docs are open."""
    access = world.access
    assert access.undeclared == []
    fastapi_app = access_app(world)
    api_routes = [
        r for r in routing.iter_route_contexts(fastapi_app.routes) if isinstance(r.original_route, APIRoute)
    ]
    assert api_routes
    open_templates = {
        t for m, t, rule in access.table.rules() if rule.open and not t.startswith("/dashboard")
    }
    dashboard = {
        t for m, t, rule in build_table(fastapi_app, production=True)[0].rules() if t.startswith("/dash")
    }
    assert dashboard  # open in development (DESIGN), predict in production:
    for template in dashboard:
        assert build_table(fastapi_app, production=True)[0].lookup(template)["GET"].scopes == {"predict"}
    assert open_templates == {
        "/health/live",
        "/health/ready",
        "/metrics",
        "/docs",
        "/openapi.json",
        "/docs/oauth2-redirect",
    }
    for route in api_routes:
        rules = access.table.lookup(route.path.replace("{", "x").replace("}", "x"))
        assert rules is not None, route.path
        for method in route.methods:
            assert not rules[method].scopes & {"<route declares no scope>"}, (method, route.path)


def access_app(world: World) -> Any:
    app = world.client.app
    while not isinstance(app, FastAPI):
        app = app.app  # type: ignore[attr-defined]
    return app


def test_missing_credentials_say_how_to_make_a_key(world: World) -> None:
    message = refused(world.client.post("/v1/predict", json={"customer_id": world.customer}))
    assert "churnops keys create" in message
    refused(world.client.get("/v1/models"))
    refused(world.client.get("/v1/nope"))  # unknown routes need credentials too


def test_open_routes_need_nothing(world: World) -> None:
    assert world.client.get("/health/live").status_code == 200
    assert world.client.get("/metrics").status_code == 200
    assert world.client.get("/openapi.json").status_code == 200


def test_valid_key_predicts_and_carries_ratelimit_fields(world: World) -> None:
    response = predict(world, key_headers(world.keys["predict"]))
    assert response.status_code == 200, response.text
    assert response.headers["ratelimit-policy"] == '"key";q=100000;w=60'
    assert response.headers["ratelimit"].startswith('"key";r=')


def test_bad_checksum_is_refused_before_any_store_lookup(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(SqlKeyStore, "get", lambda self, key_id: calls.append(key_id))
    good = world.keys["predict"].key
    flipped = good[:-1] + ("A" if good[-1] != "A" else "B")
    for bad in (flipped, good[:-3], "cho_notakey", good.replace("cho_", "chx_")):
        message = refused(predict(world, {"X-API-Key": bad}))
        assert "checksum" in message or "not an API key" in message
    assert calls == []


def test_predict_key_on_admin_route_is_403(world: World) -> None:
    response = world.client.post(
        "/v1/keys", json={"name": "x", "scopes": ["predict"]}, headers=key_headers(world.keys["predict"])
    )
    refused(response, 403)
    refused(world.client.get("/v1/keys", headers=key_headers(world.keys["predict"])), 403)


def test_scope_escalation_through_keys_create_is_403(world: World) -> None:
    admin = key_headers(world.keys["admin"])
    escalate = world.client.post(
        "/v1/keys", json={"name": "x", "scopes": ["predict", "audit"]}, headers=admin
    )
    assert "audit" in refused(escalate, 403) or "predict" in refused(escalate, 403)
    same = world.client.post("/v1/keys", json={"name": "ok", "scopes": ["admin"]}, headers=admin)
    assert same.status_code == 201, same.text
    made = same.json()
    assert made["key"].startswith(f"cho_{made['key_id']}_")
    listed = world.client.get("/v1/keys", headers=admin).json()
    assert made["key_id"] in {k["key_id"] for k in listed}
    assert "key" not in listed[0]
    assert all("secret_hash" not in k for k in listed)


def test_revoked_key_is_refused_within_two_seconds(world: World) -> None:
    made = make_key(world.settings, "predict")
    headers = key_headers(made)
    assert predict(world, headers).status_code == 200  # now cached in this worker
    revoke_key(world.settings, made.record.key_id)  # as `churnops keys revoke` would, from outside
    started = time.monotonic()
    while predict(world, headers).status_code == 200:
        assert time.monotonic() - started < 2.0, "revoked key still accepted after 2 s"
        time.sleep(0.05)
    assert "revoked" in refused(predict(world, headers))


def test_revocation_through_the_api_is_immediate(world: World) -> None:
    made = make_key(world.settings, "predict")
    assert predict(world, key_headers(made)).status_code == 200
    response = world.client.delete(f"/v1/keys/{made.record.key_id}", headers=key_headers(world.keys["all"]))
    assert response.status_code == 200, response.text
    assert "revoked" in refused(predict(world, key_headers(made)))


def test_expired_key_is_refused(world: World) -> None:
    made = make_key(world.settings, "predict", expires_in_days=1 / 86_400)  # one second
    assert predict(world, key_headers(made)).status_code == 200
    time.sleep(1.1)
    assert "expired" in refused(predict(world, key_headers(made)))


def test_rate_limit_429_with_fields(world: World) -> None:
    headers = key_headers(world.keys["slow"])
    statuses = [predict(world, headers) for _ in range(7)]
    assert [r.status_code for r in statuses[:5]] == [200] * 5
    limited = statuses[5]
    refused(limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-policy"] == '"key";q=5;w=60'
    assert limited.headers["ratelimit"].startswith('"key";r=0;t=')
    # other keys are independent
    assert predict(world, key_headers(world.keys["predict"])).status_code == 200


def test_405_carries_allow(world: World) -> None:
    response = world.client.get("/v1/predict", headers=key_headers(world.keys["predict"]))
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


# -- JWT attacks ------------------------------------------------------------------------------------


def test_valid_tokens_of_every_configured_kind(world: World) -> None:
    for key in (None, world.rs, world.es, world.ed):
        response = predict(world, bearer(token(key)))
        assert response.status_code == 200, (key, response.text)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_refused(world: World) -> None:
    from tests.access_helpers import claims

    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "none", "kid": "rs-1"}, {"alg": "NONE"}):
        forged = f"{_b64(header)}.{_b64(claims())}."
        refused(predict(world, bearer(forged)))


def test_hs256_signed_with_a_public_key_is_refused(world: World) -> None:
    """Algorithm confusion: the RS/ES public key used as an HMAC secret, with and without its kid."""
    import hmac

    from tests.access_helpers import claims

    for key in (world.rs, world.es):
        public = json.dumps(key.public_jwk).encode()
        for header in ({"alg": "HS256", "kid": key.kid}, {"alg": "HS256"}):
            signing_input = f"{_b64(header)}.{_b64(claims())}"
            mac = hmac.digest(public, signing_input.encode(), "sha256")
            forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
            refused(predict(world, bearer(forged)))


def test_unknown_kid_and_path_kid_are_refused(world: World) -> None:
    stranger = rsa_key("rs-9")
    refused(predict(world, bearer(token(stranger))))
    for kid in ("../../etc/passwd", "../jwks.json", "rs-1/../rs-1"):
        refused(predict(world, bearer(token(world.rs, headers={"kid": kid}))))


def test_jku_and_x5u_are_never_fetched(world: World) -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(json.dumps({"keys": [attacker.public_jwk]}).encode())

        def log_message(self, *args: Any) -> None:
            pass

    attacker = rsa_key("attacker")
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    try:
        for header in ({"jku": url}, {"x5u": url}):
            refused(predict(world, bearer(token(attacker, headers=header))))
        # a genuine token that happens to carry a jku still verifies against our keys only
        assert predict(world, bearer(token(world.rs, headers={"jku": url}))).status_code == 200
    finally:
        server.shutdown()
    assert hits == []


def test_wrong_audience_and_issuer_are_refused(world: World) -> None:
    refused(predict(world, bearer(token(world.rs, aud="someone-else"))))
    refused(predict(world, bearer(token(world.rs, aud=None))))
    refused(predict(world, bearer(token(world.rs, iss="https://evil.test"))))
    refused(predict(world, bearer(token(world.rs, iss=ISSUER[:-3]))))  # a prefix of the real one
    refused(predict(world, bearer(token(world.rs, iss=ISSUER + ".evil"))))
    refused(predict(world, bearer(token(world.rs, iss=None))))
    refused(predict(world, bearer(token(world.rs, sub=None))))


def test_expiry_and_not_before_with_the_30_s_leeway(world: World) -> None:
    now = int(time.time())
    refused(predict(world, bearer(token(world.rs, exp=now - 45))))  # beyond the leeway
    refused(predict(world, bearer(token(world.rs, exp=None))))  # exp required
    assert predict(world, bearer(token(world.rs, exp=now - 10))).status_code == 200  # within it
    refused(predict(world, bearer(token(world.rs, nbf=now + 45))))
    assert predict(world, bearer(token(world.rs, nbf=now + 10))).status_code == 200


def test_unknown_crit_is_refused(world: World) -> None:
    refused(predict(world, bearer(token(world.rs, headers={"crit": ["exp-ext"], "exp-ext": 1}))))
    refused(predict(world, bearer(token(world.rs, headers={"crit": ["b64"], "b64": True}))))


def test_scope_claim_is_enforced(world: World) -> None:
    refused(world.client.get("/v1/keys", headers=bearer(token(world.rs, scope="predict"))), 403)
    assert (
        world.client.get("/v1/keys", headers=bearer(token(world.rs, scope="predict admin"))).status_code
        == 200
    )
    refused(predict(world, bearer(token(world.rs, scope=None))), 403)


def test_rotated_out_key_is_refused_after_the_grace_period(world: World) -> None:
    old, new = world.rs, rsa_key("rs-2")
    write_jwks(world.jwks, [old, new, world.es, world.ed])  # rotation: both side by side
    time.sleep(1.5)
    old_token, new_token = token(old, sub="rot"), token(new, sub="rot")
    assert predict(world, bearer(old_token)).status_code == 200
    assert predict(world, bearer(new_token)).status_code == 200
    write_jwks(world.jwks, [new, world.es, world.ed])  # grace period over: old key removed
    started = time.monotonic()
    while predict(world, bearer(old_token)).status_code == 200:  # cached, until the next reload
        assert time.monotonic() - started < 2.5
        time.sleep(0.05)
    assert predict(world, bearer(new_token)).status_code == 200
    world.rs = new


# -- request signing ----------------------------------------------------------------------------------


def signed(world: World, body: bytes, path: str = "/v1/predict", **options: Any) -> dict[str, str]:
    made = world.keys["signed"]
    assert made.signing_secret is not None
    return sign_request("POST", f"http://testserver{path}", body, made.key, made.signing_secret, **options)


def send(world: World, path: str, body: bytes, headers: dict[str, str]) -> Any:
    return world.client.post(path, content=body, headers={"content-type": "application/json", **headers})


def test_signed_request_accepted(world: World) -> None:
    body = json.dumps({"customer_id": world.customer}).encode()
    assert send(world, "/v1/predict", body, signed(world, body)).status_code == 200


def test_unsigned_request_of_a_signed_key_is_refused(world: World) -> None:
    body = json.dumps({"customer_id": world.customer}).encode()
    refused(send(world, "/v1/predict", body, {"X-API-Key": world.keys["signed"].key}))


def test_one_changed_byte_of_body_path_or_query_is_refused(world: World) -> None:
    body = json.dumps({"customer_id": world.customer}).encode()
    headers = signed(world, body)
    tampered = body.replace(b'"customer_id"', b'"customer_iD"')
    assert len(tampered) == len(body)
    refused(send(world, "/v1/predict", tampered, headers))
    refused(send(world, "/v1/predict/batch", body, signed(world, body)))  # signed for another path
    query_headers = signed(world, body, path="/v1/predict?a=1&b=2")
    assert send(world, "/v1/predict?b=2&a=1", body, query_headers).status_code == 200  # order-free
    refused(send(world, "/v1/predict?a=1&b=3", body, signed(world, body, path="/v1/predict?a=1&b=2")))


@pytest.mark.parametrize(("offset", "accepted"), [(-301, False), (301, False), (-299, True), (299, True)])
def test_timestamp_window(world: World, offset: int, accepted: bool) -> None:
    body = json.dumps({"customer_id": world.customer}).encode()
    headers = signed(world, body, now=time.time() + offset)
    response = send(world, "/v1/predict", body, headers)
    if accepted:
        assert response.status_code == 200, response.text
    else:
        assert "timestamp" in refused(response)


def test_replayed_nonce_is_refused(world: World) -> None:
    body = json.dumps({"customer_id": world.customer}).encode()
    headers = signed(world, body)
    assert send(world, "/v1/predict", body, headers).status_code == 200
    assert "replay" in refused(send(world, "/v1/predict", body, headers))


def test_oversized_body_is_refused_before_hashing(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[int] = []
    original = hashlib.sha256

    def counting(data: bytes = b"", **kwargs: Any) -> Any:
        hashed.append(len(data))
        return original(data, **kwargs)

    body = json.dumps(
        {"customer_id": world.customer, "pad": "x" * (world.settings.max_body_bytes + 10)}
    ).encode()
    headers = signed(world, body)
    monkeypatch.setattr(signing.hashlib, "sha256", counting)
    response = send(world, "/v1/predict", body, headers)
    assert response.status_code == 413, response.text
    assert hashed == []


def test_auth_failures_are_counted(world: World) -> None:
    refused(predict(world, {"X-API-Key": "cho_bad"}))
    time.sleep(1.2)
    text = world.client.get("/metrics").text
    assert 'auth_failures_total{reason="malformed_key"}' in text
    assert 'rate_limit_decisions_total{outcome="allowed"}' in text


def test_the_readme_openssl_recipe_signs_correctly(world: World) -> None:
    """The curl + openssl example of the README, minus curl: its X-Signature is accepted."""
    made = world.keys["signed"]
    assert made.signing_secret is not None
    body = json.dumps({"customer_id": world.customer})
    script = r"""T=$(date +%s); N=$(openssl rand -hex 16)
HASH=$(printf '%s' "$BODY" | openssl dgst -sha256 -hex | sed 's/^.* //')
SIG=$(printf 'v1\n%s\n%s\nPOST\n/v1/predict\n\n%s' "$T" "$N" "$HASH" \
  | openssl dgst -sha256 -hmac "$SIGNING_SECRET" -hex | sed 's/^.* //')
printf 't=%s,n=%s,v1=%s' "$T" "$N" "$SIG"
"""
    env = {"BODY": body, "SIGNING_SECRET": made.signing_secret, "PATH": os.environ["PATH"]}
    header = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    response = send(world, "/v1/predict", body.encode(), {"X-API-Key": made.key, "X-Signature": header})
    assert response.status_code == 200, response.text


def test_auth_off_opens_everything_outside_production(pipeline_run: PipelineRun) -> None:
    settings = Settings(churnops_home=pipeline_run.settings.home, CHURNOPS_AUTH="off")
    with TestClient(serving_app(settings)) as client:
        assert client.get("/v1/models").status_code == 200
    with pytest.raises(ConfigError, match="CHURNOPS_AUTH=off"):
        serving_app(
            Settings(churnops_home=pipeline_run.settings.home, CHURNOPS_AUTH="off", APP_ENV="production")
        )


def test_key_creation_and_revocation_are_ledger_events(world: World) -> None:
    """Admin actions: the key exists (or is revoked) only with its event in the ledger."""
    import sqlalchemy as sa

    from churnops.io.sql_schema import ledger_records

    admin = key_headers(world.keys["all"])
    made = world.client.post(
        "/v1/keys", json={"name": "audited", "scopes": ["predict"]}, headers=admin
    ).json()
    assert world.client.delete(f"/v1/keys/{made['key_id']}", headers=admin).status_code == 200
    engine = sa.create_engine(world.settings.sql_store_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ledger_records.c.action, ledger_records.c.principal, ledger_records.c.details).where(
                ledger_records.c.action.in_(["keys.create", "keys.revoke"])
            )
        ).all()
    engine.dispose()
    mine = [r for r in rows if made["key_id"] in (r.details or "")]
    assert sorted(r.action for r in mine) == ["keys.create", "keys.revoke"]
    assert {r.principal for r in mine} == {f"key:{world.keys['all'].record.key_id}"}
    assert all(made["key"] not in (r.details or "") for r in rows)  # never the secret
