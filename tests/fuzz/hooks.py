"""Schemathesis hooks for better-sync's served openapi.json.

The document says everything the server checks that JSON Schema can say;
what it cannot say depends on the server's state or on another field:
a clock must be near the server's time, op ids unique, a payload's id equal
to its pk, a cursor signed by the server, a shape's params typed as that
shape declares them. These hooks give generated requests those values, so
that valid requests get past validation and exercise what is behind it.
Values that do not match the schema are left as they are: invalid requests
stay invalid. Schemathesis revalidates a request a hook changed, so a
request made valid here is judged as a valid one.
"""

import datetime
import json
import os
import re
import urllib.request
import uuid

import schemathesis

BASE = os.environ["FUZZ_BASE"].rstrip("/")
TOKEN = os.environ["FUZZ_TOKEN"]

CLOCK = re.compile(
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"([0-5][0-9]|60)(\.[0-9]+)?(Z(-[0-9A-Fa-f]{1,4})?|z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
VERSIONS = re.compile(r"^\s*[A-Za-z0-9_-]{1,64}\s*=\s*[1-9][0-9]{0,8}\s*(,\s*[A-Za-z0-9_-]{1,64}\s*=\s*[1-9][0-9]{0,8}\s*)*$")


def _get(route):
    request = urllib.request.Request(f"{BASE}/{route}", headers={"authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


META = _get("sync.json")
SHAPES = META.get("shapes") or {}
# The server's versions: what a client built for the current ones announces.
CURRENT_VERSIONS = ",".join(f"{m}={v['current']}" for m, v in (META.get("versions") or {}).items())
# A cursor the server signed for this token's tenant.
CURSOR = _get("pull")["cursor"]


def _now():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _params_for(shape):
    """A params object with a value of each declared type."""
    sample = {"string": "p1", "number": 1, "bool": True}
    return {name: sample.get(ty, "p1") for name, ty in (SHAPES.get(shape, {}).get("params") or {}).items()}


def _fix_change(change):
    if not isinstance(change, dict):
        return
    if isinstance(change.get("updated_at"), str) and CLOCK.match(change["updated_at"]):
        change["updated_at"] = _now()
    if isinstance(change.get("op_id"), str) and change["op_id"]:
        # Unique in the batch and never seen before with other content.
        change["op_id"] = str(uuid.uuid4())
    payload = change.get("payload")
    if isinstance(payload, dict) and "id" in payload and isinstance(change.get("pk"), str):
        payload["id"] = change["pk"]


def _fix_query(query, path):
    if not isinstance(query, dict):
        return
    wait = query.get("wait")
    if isinstance(wait, (int, float)) and not isinstance(wait, bool) and 0 <= wait <= 86400:
        # A long-poll holds the request up to the wait: keep the run short.
        query["wait"] = min(wait, 0.05)
    if isinstance(query.get("cursor"), str) and query["cursor"]:
        query["cursor"] = CURSOR
    if isinstance(query.get("versions"), str) and VERSIONS.match(query["versions"]):
        query["versions"] = CURRENT_VERSIONS or query["versions"]
    shape = query.get("shape")
    if isinstance(shape, str) and shape in SHAPES:
        if SHAPES[shape].get("params"):
            query["params"] = json.dumps(_params_for(shape))
        else:
            query.pop("params", None)
        if path.endswith("/snapshot") and "model" in query:
            query["model"] = SHAPES[shape]["model"]
    elif "params" in query and "shape" not in query:
        # params without a shape are ignored by the server; keep the request plain.
        del query["params"]
    if path.endswith("/snapshot") and "shape" not in query and "model" not in query and META.get("models"):
        query["model"] = META["models"][0]


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    if path.endswith("/push") and isinstance(case.body, dict):
        for change in case.body.get("changes") or []:
            _fix_change(change)
    _fix_query(case.query, path)
    headers = case.headers
    if headers is not None and hasattr(headers, "items"):
        for name in list(headers):
            if name.lower() == "x-sync-versions" and isinstance(headers[name], str) and VERSIONS.match(headers[name]):
                headers[name] = CURRENT_VERSIONS or headers[name]
