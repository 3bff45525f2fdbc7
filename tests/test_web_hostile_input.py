"""Hostile input to EVERY route, enumerated from the app's OpenAPI schema (a new route is swept
without touching this file): ids of 2**63, 2**31, -1 and 0, lone surrogates and NUL in every
text field, 5,000-digit numbers. Each is a 4xx, never a 500; the same keep-alive connection still
answers the next request; nothing stored changes. Over real HTTP on 127.0.0.1, on SQLite and
PostgreSQL (whose ids are 32-bit and whose text cannot hold NUL)."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from fakes import FakeOpenAI
from minetune.server.app import create_app
from minetune.server.guards import CSRF_COOKIE, CSRF_FIELD
from minetune.server.validation import MAX_ID, text_problem
from webchat import done, ndjson, web_settings
from webusers import Served, served

HUGE_DIGITS = "9" * 5000
HUGE_LITERAL = "\x01huge\x01"  # replaced by a 5,000-digit JSON number literal
# Percent-encoded, for paths, query strings and forms. (Invalid UTF-8 there, such as a lone
# surrogate's bytes %ED%A0%80, is decoded by Starlette as U+FFFD: it never yields a surrogate.)
HOSTILE_ENCODED = ["%00"]
HOSTILE_JSON_TEXT = ["\ud800", "\udfff", "a\x00b"]
# Refusals that show the input was validated: not a guard (401/403/415) answering instead.
VALIDATION_STATUSES = {400, 404, 409, 413, 422}
# Baselines that reach the validation of the other fields (an unknown response id is a 404 first).
BASELINE_STRINGS = {"program": "default", "model": "minetune", "response_id": "mt-1", "content": "hi"}


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # with query string
    body: bytes | None
    content_type: str | None
    what: str
    field: str = ""  # a 422 must name it


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _variants(spec: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of ``schema``."""
    schema = _resolve(spec, schema)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        return [v for a in alternatives for v in _variants(spec, a)]
    return [] if schema.get("type") == "null" else [schema]


def _minimal(spec: dict[str, Any], schema: dict[str, Any], name: str = "") -> Any:
    """The smallest valid-looking value of ``schema`` (required properties only)."""
    variants = _variants(spec, schema)
    if not variants:
        return None
    s = variants[0]
    if "enum" in s:
        return "user" if "user" in s["enum"] else s["enum"][0]
    kind = s.get("type")
    if kind == "object":
        props = s.get("properties", {})
        return {k: _minimal(spec, props[k], k) for k in s.get("required", [])}
    if kind == "array":
        return [_minimal(spec, s.get("items", {}))] * min(1, s.get("minItems", 0))
    if kind == "string":
        return BASELINE_STRINGS.get(name, "x")
    if kind in ("integer", "number"):
        return max(1, s.get("minimum", 1))
    if kind == "boolean":
        return False
    return "x"


def _kinds(spec: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    return {str(v.get("type")) for v in _variants(spec, schema)}


def _json_slots(spec: dict[str, Any], schema: dict[str, Any]) -> Iterator[tuple[list[Any], set[str]]]:
    """(path, leaf kinds) for every scalar field, nested objects and array items included; a
    path is a list of (key or index 0, the schema of the container it steps into)."""

    def walk(node: dict[str, Any], path: list[Any]) -> Iterator[tuple[list[Any], set[str]]]:
        for variant in _variants(spec, node):
            kind = variant.get("type")
            if kind == "object":
                for key, prop in variant.get("properties", {}).items():
                    yield from walk(prop, [*path, (key, variant)])
            elif kind == "array":
                yield from walk(variant.get("items", {}), [*path, (0, variant)])
            elif path:
                yield path, _kinds(spec, node) - {"object", "array"}

    seen: set[tuple[Any, ...]] = set()
    for path, kinds in walk(schema, []):
        key = tuple(step for step, _container in path)
        if key not in seen:
            seen.add(key)
            yield path, kinds


def _with_value(spec: dict[str, Any], root: dict[str, Any], path: list[Any], value: Any) -> Any:
    """A minimal body of ``root`` with ``value`` at ``path`` (containers built on the way)."""
    body = _minimal(spec, root)
    if not isinstance(body, dict):
        body = {}
    node: Any = body
    for i, (step, _container) in enumerate(path):
        last = i == len(path) - 1
        if last:
            if isinstance(node, list):
                node[:] = [value]
            else:
                node[step] = value
            break
        inner = path[i + 1][1]  # the schema of the container the next step goes into
        child: Any = (_minimal(spec, inner) or {}) if inner.get("type") == "object" else []
        if isinstance(node, list):
            node[:] = [child]
        else:
            node[step] = child
        node = child
    return body


def _numbers(spec: dict[str, Any], schema: dict[str, Any], name: str, in_path: bool) -> list[int | str]:
    """Hostile numbers for a numeric field: past 64 bits, past the database's ids, 5,000 digits;
    for ids (in the path, named ``*id``, or declared with the id range) also -1 and 0."""
    if not _kinds(spec, schema) & {"integer", "number"}:
        return []
    declared_id = any(v.get("maximum") == MAX_ID for v in _variants(spec, schema))
    small = [-1, 0] if in_path or name.endswith("id") or declared_id else []
    return [2**63, MAX_ID + 1, *small, HUGE_DIGITS]


def _flat_cases(
    spec: dict[str, Any], name: str, fields: dict[str, dict[str, Any]], in_path: bool
) -> Iterator[tuple[str, str]]:
    """(field, percent-encoded hostile value) for path, query or form fields."""
    for field, schema in fields.items():
        for number in _numbers(spec, schema, field, in_path):
            yield field, str(number)
        if "string" in _kinds(spec, schema):
            for text in HOSTILE_ENCODED:
                yield field, text


def _operation_cases(
    spec: dict[str, Any], template: str, method: str, op: dict[str, Any], ids: dict[str, int], csrf: str
) -> Iterator[Case]:
    method = method.upper()
    name = f"{method} {template}"
    params = [p for p in op.get("parameters", []) if p["in"] in ("path", "query")]

    def base(param: dict[str, Any]) -> str:
        if param["in"] == "path" and "integer" in _kinds(spec, param["schema"]):
            return str(ids.get(param["name"], 1))
        return quote(str(_minimal(spec, param["schema"], param["name"])))

    def url(overrides: dict[str, str]) -> str:
        path, query = template, []
        for p in params:
            value = overrides.get(p["name"])
            if p["in"] == "path":
                path = path.replace("{" + p["name"] + "}", value if value is not None else base(p))
            elif value is not None or p.get("required"):
                query.append(f"{p['name']}={value if value is not None else base(p)}")
        return path + ("?" + "&".join(query) if query else "")

    content = op.get("requestBody", {}).get("content", {})
    json_schema = content.get("application/json", {}).get("schema")
    form_schema = content.get("application/x-www-form-urlencoded", {}).get("schema")
    form = _resolve(spec, form_schema) if form_schema is not None else {}
    form_fields: dict[str, dict[str, Any]] = form.get("properties", {})

    def form_body(field: str | None = None, value: str = "") -> bytes:
        values = {k: quote(str(_minimal(spec, form_fields[k], k))) for k in form.get("required", [])}
        values[CSRF_FIELD] = csrf  # the page's token, so the guard lets the form through
        if field is not None:
            values[field] = value
        return "&".join(f"{k}={v}" for k, v in values.items()).encode()

    body, ctype = None, None
    if json_schema is not None:
        body, ctype = json.dumps(_minimal(spec, json_schema) or {}).encode(), "application/json"
    elif form_schema is not None or (method != "GET" and not template.startswith(("/api/", "/v1/"))):
        body, ctype = form_body(), "application/x-www-form-urlencoded"  # a page's form post

    for where in ("path", "query"):
        fields = {p["name"]: p["schema"] for p in params if p["in"] == where}
        for field, value in _flat_cases(spec, name, fields, where == "path"):
            yield Case(
                method, url({field: value}), body, ctype, f"{name} {where} {field}={value[:20]}", field
            )
    for field, value in _flat_cases(spec, name, form_fields, False):
        yield Case(
            method, url({}), form_body(field, value), ctype, f"{name} form {field}={value[:20]}", field
        )
    if json_schema is None:
        return
    root = _resolve(spec, json_schema)
    for path, kinds in _json_slots(spec, root):
        where = ".".join(str(step) for step, _container in path)
        leaf = str(path[-1][0])
        values: list[Any] = []
        if kinds & {"integer", "number"}:
            in_id_range = {"maximum": MAX_ID} if leaf.endswith("id") else {}
            values += [
                n
                for n in _numbers(spec, {"type": "integer", **in_id_range}, leaf, False)
                if isinstance(n, int)
            ]
            values.append(HUGE_LITERAL)
            if "string" in kinds:
                values.append(HUGE_DIGITS)
        if "string" in kinds:
            values += HOSTILE_JSON_TEXT
        for value in values:
            raw = json.dumps(_with_value(spec, root, path, value)).replace(
                json.dumps(HUGE_LITERAL), HUGE_DIGITS
            )
            field = "" if value == HUGE_LITERAL else where  # a number too long to parse is a 400
            yield Case(
                method, url({}), raw.encode(), ctype, f"{name} json {where}={str(value)[:20]!r}", field
            )
    if root.get("type") == "object":
        extra = json.dumps({**(_minimal(spec, root) or {}), "\ud800": 1})
        yield Case(method, url({}), extra.encode(), ctype, f"{name} json key")


def hostile_cases(spec: dict[str, Any], ids: dict[str, int], csrf: str) -> list[Case]:
    """Every hostile variant of every operation in ``spec``; other fields get baselines, path ids
    the ids in ``ids`` (real records, so a refusal is the input's, not a 404), forms the CSRF
    token ``csrf``."""
    return [
        case
        for template, operations in spec["paths"].items()
        for method, op in operations.items()
        for case in _operation_cases(spec, template, method, op, ids, csrf)
    ]


@pytest.fixture
def web(database_url: str, fake_llm: FakeOpenAI) -> Iterator[tuple[Served, dict[str, Any]]]:
    fake_llm.queue("An answer.")
    with served(web_settings(fake_llm)) as web:
        first = done(ndjson(web.client, "/api/chat", {"message": "A question"}))
        yield web, first


def _request(conn: http.client.HTTPConnection, case: Case, cookie: str) -> tuple[int, bytes]:
    """Send ``case`` on ``conn``; (0, why) when the server drops the connection instead."""
    headers = {"Accept": "application/json", "Cookie": f"{CSRF_COOKIE}={cookie}"}
    if case.body is not None and case.content_type:
        headers["Content-Type"] = case.content_type
    try:
        conn.request(case.method, case.path, body=case.body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return 0, repr(exc).encode()


def _port(conn: http.client.HTTPConnection) -> Any:
    return conn.sock.getsockname() if conn.sock is not None else None


def test_every_route_refuses_hostile_input_with_a_4xx(web: tuple[Served, dict[str, Any]]) -> None:
    served_app, first = web
    spec = served_app.client.get("/openapi.json").json()
    ids = {
        "conversation_id": first["conversation_id"],
        "attempt_id": first["attempt_id"],
        "turn_id": first["turn"]["id"],
    }
    page = served_app.client.get("/rules", headers={"Accept": "text/html"})
    token = re.search(f'name="{CSRF_FIELD}" value="([^"]+)"', page.text)
    cookie = served_app.client.cookies.get(CSRF_COOKIE)
    assert token is not None and cookie, "the rules page has no CSRF token"
    cases = hostile_cases(spec, ids, token.group(1))
    operations = sum(len(ops) for ops in spec["paths"].values())
    assert operations >= 40 and len(cases) > 5 * operations, (operations, len(cases))
    address = urlsplit(served_app.base_url)
    conn = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=60)
    failures: list[str] = []
    before = served_app.store.row_counts()
    try:
        for case in cases:
            if conn.sock is None:
                conn.connect()
            local = _port(conn)
            status, body = _request(conn, case, cookie)
            if status not in VALIDATION_STATUSES:
                failures.append(f"{case.what}: {status} {body[:200]!r}")
            elif status == 422 and case.field.lower() not in body.decode().lower():
                failures.append(f"{case.what}: the 422 does not name {case.field}: {body[:200]!r}")
            if (now := served_app.store.row_counts()) != before:
                changed = {k: (before.get(k), v) for k, v in now.items() if before.get(k) != v}
                failures.append(f"{case.what}: stored rows changed {changed}")
                before = now
            # The same TCP connection (same local port) must answer the next request.
            alive = _port(conn) == local
            after, _ = _request(conn, Case("GET", "/api/programs", None, None, "after"), cookie)
            if not alive or after != 200 or _port(conn) != local:
                failures.append(f"{case.what}: the keep-alive connection did not survive")
    finally:
        conn.close()
    assert not failures, f"{len(failures)} of {len(cases)} hostile requests:\n" + "\n".join(failures)


def test_every_api_route_is_in_the_openapi_schema(database_url: str) -> None:
    """The sweep enumerates the schema: a route hidden from it would escape the sweep."""
    from fastapi.routing import APIRoute

    app = create_app(web_settings(None))

    def routes(items: list[Any]) -> Iterator[APIRoute]:
        for item in items:
            if isinstance(item, APIRoute):
                yield item
            inner = getattr(item, "original_router", None)
            if inner is not None:
                yield from routes(inner.routes)

    spec = app.openapi()
    hidden = {"/openapi.json", "/api/docs", "/docs/oauth2-redirect"}
    found = [r for r in routes(list(app.routes)) if r.path not in hidden]
    assert len(found) >= 40
    for route in found:
        assert route.include_in_schema and route.path in spec["paths"], route.path
        assert {m.lower() for m in route.methods} - {"head"} <= set(spec["paths"][route.path]), route.path


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("fine ✓ 🎉", None),
        ("\ud800", "a lone surrogate (U+D800)"),
        ("ok\udfff", "a lone surrogate (U+DFFF), not valid Unicode at position 2"),
        ("a\x00b", "a NUL character at position 1"),
    ],
)
def test_text_problem(value: str, problem: str | None) -> None:
    found = text_problem(value)
    assert found == problem if problem is None else problem in (found or "")


def test_escaped_surrogate_pairs_and_form_bytes_are_text(web: tuple[Served, dict[str, Any]]) -> None:
    """What the checks must not refuse: a JSON-escaped surrogate PAIR is one character (an emoji)."""
    served_app, first = web
    client = served_app.client
    raw = json.dumps({"message": "Smile 😀 please"})  # ensure_ascii: "\ud83d\ude00"
    assert "\\ud83d\\ude00" in raw
    sent = client.post("/api/chat", content=raw, headers={"Content-Type": "application/json"})
    assert sent.status_code == 200, sent.text
    done_event = json.loads(sent.text.strip().splitlines()[-1])
    assert done_event["turn"]["user_message"] == "Smile 😀 please"
    critique = json.dumps({"stars": 4, "critique": "More 😀"})
    rated = client.post(
        f"/api/attempts/{first['attempt_id']}/rate",
        content=critique,
        headers={"Content-Type": "application/json"},
    )
    assert rated.status_code == 200, rated.text
