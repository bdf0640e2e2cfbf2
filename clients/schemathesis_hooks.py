"""Schemathesis hooks and checks for jobcast (loaded through SCHEMATHESIS_HOOKS).

Two jobs:

1. Keep the run bounded. Generated `demo` params can ask for jobs that run
   for days (`step_ms` and `delay_ms` up to 86 400 000, `steps` up to
   1 000 000, `repeat` up to 1 000) and long polls can wait 60 s. `before_call` scales such values down
   before the request is sent, always to values that are just as valid for
   their own field (so a negative case stays negative; schemathesis
   re-validates a case that a `before_call` hook changed). For a positive
   body it also satisfies the rules JSON Schema cannot say: `kind` is one the
   server runs (`GET /v1/kinds`), stage names are unique, and `fail_at` names
   a declared stage.

   A generated `Idempotency-Key` is one value for every case, so two cases
   with different bodies would share it, which the server rightly refuses
   (422). `before_call` makes a valid key unique to its request (method,
   path and body), so that a repeated request still shares its key.

   The worker operations (heartbeat, complete, fail) need a job of an
   external kind and its worker token, which only createJob's `202` carries
   and which no link of the spec can turn into an `Authorization` header. So
   an auth provider (`WorkerToken`) gives most of their cases a fresh
   `ingest` job (clients/kinds.toml) and its token: their `200`, `409` and
   `422` answers get checked too, not only the `401`/`404` that a random id
   without a token gets. For a positive heartbeat body `before_call` keeps
   to the job's declared stages.

2. Validate event streams as event streams. `sse_stream_conformance` parses
   every `text/event-stream` 200 response (schemathesis reads such a stream
   until it ends, `max-stream-events` events arrived, or the request timeout
   passed; a cut-short stream is checked as far as it got) and checks the
   rules of the job stream and the all-jobs stream of the spec.

Plus two small checks: the `Location` of a created job names it, and a
problem document repeats its response's status (with `Retry-After` on 429
and 503, `Allow` on 405).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import urllib.request
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema_rs
import schemathesis

# -- bounds -----------------------------------------------------------------

MAX_STAGES = 4
MAX_STEPS = 20
MAX_STEP_MS = 20
MAX_DELAY_MS = 50
MAX_REPEAT = 3
MAX_WAIT_SECONDS = 1

# The kinds the server under test runs (`GET /v1/kinds`).
SERVED_KINDS = {"demo"}

# The server's own limits (what is valid for each field).
LIMIT_STEPS = 1_000_000
LIMIT_STEP_MS = 86_400_000
LIMIT_DELAY_MS = 86_400_000
LIMIT_REPEAT = 1_000


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cap(container: dict, key: str, low: int, high: int, cap: int) -> None:
    """Lower a valid integer above `cap` to `cap`; leave anything else alone."""
    value = container.get(key)
    if _is_int(value) and low <= value <= high and value > cap:
        container[key] = cap


def _bound_demo_params(body: Any) -> None:
    if not isinstance(body, dict) or body.get("kind") != "demo":
        return
    params = body.get("params")
    if not isinstance(params, dict):
        return
    _cap(params, "step_ms", 0, LIMIT_STEP_MS, MAX_STEP_MS)
    _cap(params, "delay_ms", 0, LIMIT_DELAY_MS, MAX_DELAY_MS)
    _cap(params, "repeat", 1, LIMIT_REPEAT, MAX_REPEAT)
    stages = params.get("stages")
    if isinstance(stages, list):
        # Stages default to 10 steps of the (capped) step_ms each.
        del stages[MAX_STAGES:]
        for stage in stages:
            if isinstance(stage, dict):
                _cap(stage, "steps", 0, LIMIT_STEPS, MAX_STEPS)
    elif "stages" not in params and "step_ms" not in params:
        # Default stages (50 steps) at the default 100 ms: a 5 s job. Keep it short.
        params["step_ms"] = MAX_STEP_MS


def _served_kind(case: Any) -> None:
    """For a positive body: a kind the server runs (which kinds exist is `GET /v1/kinds`' business)."""
    body = case.body
    if isinstance(body, dict) and body.get("kind") not in SERVED_KINDS:
        body["kind"] = "demo"
        if not _is_valid_body(case):
            body["params"] = None


def _satisfy_demo_rules(body: Any) -> None:
    """For a positive body: unique stage names, `fail_at` null or a declared stage."""
    if not isinstance(body, dict) or body.get("kind") != "demo":
        return
    params = body.get("params")
    if not isinstance(params, dict):
        return
    stages = params.get("stages")
    names: list[str] = ["parsing", "analyzing"]
    if isinstance(stages, list):
        names = []
        for index, stage in enumerate(stages):
            if isinstance(stage, dict) and isinstance(stage.get("name"), str):
                if stage["name"] in names:
                    stage["name"] = f"{stage['name']}~{index}"
                names.append(stage["name"])
    fail_at = params.get("fail_at")
    if isinstance(fail_at, str) and fail_at not in names:
        params["fail_at"] = names[0] if names else None


# -- worker operations ------------------------------------------------------

WORKER_OPERATIONS = ["workerHeartbeat", "workerComplete", "workerFail"]
# The external kind of clients/kinds.toml and its declared stages.
EXTERNAL_KIND = "ingest"
EXTERNAL_PARAMS = {"url": "https://example.com/schemathesis.csv"}
EXTERNAL_STAGES = ("download", "index")
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# Every fourth worker case keeps its generated id and no token (an unknown job: 401 or 404).
_worker_cases = itertools.count()
# The jobs `WorkerToken` created, by id.
_external_jobs: set[str] = set()


def _create_external_job(case: Any) -> tuple[str, str]:
    """Creates an `ingest` job on the server under test: its id and worker token."""
    request = urllib.request.Request(
        f"{case.operation.schema.get_base_url()}/v1/jobs",
        data=json.dumps({"kind": EXTERNAL_KIND, "params": EXTERNAL_PARAMS}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the server under test
        job = json.load(response)
    return job["id"], job["worker_token"]


@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(operation_id=WORKER_OPERATIONS)
class WorkerToken:
    """The `workerToken` scheme: a fresh `ingest` job for each case, and its token.

    A worker token belongs to one job, so the case's `id` becomes that job's
    too. Schemathesis applies no auth to cases that test a missing or
    invalid `Authorization`, and this provider leaves alone a case whose
    generated id is not a valid job id (it stays negative, as generated).
    With explicit auth, the `ignored_auth` check also probes each worker
    operation without a token (401) and with a wrong one (403).
    """

    def get(self, case: Any, context: Any) -> tuple[str, str] | None:
        job_id = case.path_parameters.get("id") if isinstance(case.path_parameters, dict) else None
        if not (isinstance(job_id, str) and _JOB_ID.fullmatch(job_id)) or next(_worker_cases) % 4 == 3:
            return None
        return _create_external_job(case)

    def set(self, case: Any, data: tuple[str, str], context: Any) -> None:
        job_id, token = data
        _external_jobs.add(job_id)
        case.path_parameters["id"] = job_id
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


def _satisfy_external_rules(case: Any) -> None:
    """For a positive heartbeat body on an `ingest` job: the rules its kind adds.

    JSON Schema cannot say them, as they depend on the job's kind: a kind
    that declares stages (ingest does) refuses a `stages` declaration, and
    `stage` must name one of its stages.
    """
    job_id = case.path_parameters.get("id") if isinstance(case.path_parameters, dict) else None
    if job_id not in _external_jobs or not isinstance(case.body, dict) or not _is_valid_body(case):
        return
    case.body.pop("stages", None)
    if "stage" in case.body and case.body["stage"] not in EXTERNAL_STAGES:
        case.body["stage"] = EXTERNAL_STAGES[0]


_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?")


def _key_per_request(case: Any) -> None:
    """Makes a valid `Idempotency-Key` unique to the request it is sent with."""
    headers = case.headers or {}
    name = next((name for name in headers if name.lower() == "idempotency-key"), None)
    key = headers.get(name) if name else None
    if not (isinstance(key, str) and _IDEMPOTENCY_KEY.fullmatch(key)):
        return
    request = json.dumps([case.method, case.formatted_path, case.body], sort_keys=True, default=str)
    digest = hashlib.sha256(request.encode()).hexdigest()[:16]
    headers[name] = f"{key[:200]}~{digest}"


def _operation_id(case: Any) -> str | None:
    definition = getattr(case.operation, "definition", None)
    raw = getattr(definition, "raw", definition)
    if isinstance(raw, dict):
        return raw.get("operationId")
    return None


def _is_valid_body(case: Any) -> bool:
    media = case.operation.get_body_for_media_type(case.media_type)
    if media is None:
        return False
    try:
        return jsonschema_rs.validator_for(media.validation_schema).is_valid(case.body)
    except Exception:  # noqa: BLE001 - an unbuildable schema just means "don't touch"
        return False


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    operation_id = _operation_id(case)
    if operation_id == "createJob":
        positive = _is_valid_body(case)
        if positive:
            _served_kind(case)
        _bound_demo_params(case.body)
        if positive:
            _satisfy_demo_rules(case.body)
        _key_per_request(case)
    elif operation_id == "retryJob":
        _key_per_request(case)
    elif operation_id == "getJob" and isinstance(case.query, dict):
        # A long poll waits up to 60 s; a second shows it just as well.
        value = case.query.get("wait_seconds")
        if _is_int(value) and value > MAX_WAIT_SECONDS:
            case.query["wait_seconds"] = MAX_WAIT_SECONDS
        elif isinstance(value, str) and value.isdigit() and value.isascii() and int(value) > MAX_WAIT_SECONDS:
            case.query["wait_seconds"] = str(MAX_WAIT_SECONDS)
    elif operation_id == "workerHeartbeat":
        _satisfy_external_rules(case)


# -- event streams ----------------------------------------------------------

TERMINAL = {"completed", "failed", "cancelled"}
EVENT_TYPES = {"snapshot", "progress"} | TERMINAL
_U64 = re.compile(r"\+?[0-9]+")

_job_validators: dict[int, Any] = {}


def _job_validator(case: Any) -> Any:
    raw = case.operation.schema.raw_schema
    key = id(raw)
    if key not in _job_validators:
        root = {"$ref": "#/components/schemas/Job", "components": raw["components"]}
        _job_validators[key] = jsonschema_rs.Draft202012Validator(root, validate_formats=True)
    return _job_validators[key]


def _header(response: Any, name: str) -> str | None:
    values = response.headers.get(name.lower())
    if values is None:
        for key, value in response.headers.items():
            if key.lower() == name.lower():
                values = value
                break
    if isinstance(values, list):
        return values[0] if values else None
    return values


def _request_header(response: Any, name: str) -> str | None:
    for key, value in response.request.headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _parse_u64(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not _U64.fullmatch(text):
        return None
    value = int(text)
    return value if value < 2**64 else None


def _last_event_id(response: Any) -> int | None:
    """The resume position the server should use: the header wins, even when malformed."""
    header = _request_header(response, "Last-Event-ID")
    if header is not None:
        return _parse_u64(header)
    query = parse_qsl(urlsplit(response.request.url).query, keep_blank_values=True)
    values = [value for key, value in query if key == "last_event_id"]
    return _parse_u64(values[-1]) if values else None


def parse_stream(body: str) -> tuple[int | None, list[dict[str, Any]], list[str]]:
    """Split an event stream into its opening retry hint and its events (WHATWG rules).

    Returns (retry, events, problems); each event has `event`, `id`, `data`,
    `fields` (the field names in order).
    """
    problems: list[str] = []
    blocks = re.split(r"\r\n\r\n|\n\n|\r\r", body)
    if blocks and blocks[-1] == "":
        blocks.pop()
    retry = None
    events: list[dict[str, Any]] = []
    for number, block in enumerate(blocks):
        lines = [line for line in re.split(r"\r\n|\n|\r", block) if not line.startswith(":")]
        if not lines:
            continue  # a comment-only block (keep-alive)
        fields: dict[str, list[str]] = {}
        order: list[str] = []
        for line in lines:
            name, sep, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            fields.setdefault(name, []).append(value if sep else "")
            order.append(name)
        if "retry" in fields:
            if number != 0 or set(fields) != {"retry"}:
                problems.append(f"block {number}: `retry:` must stand alone in the first block, got {block!r}")
            elif len(fields["retry"]) != 1 or not fields["retry"][0].isdigit():
                problems.append(f"block {number}: malformed retry hint {block!r}")
            else:
                retry = int(fields["retry"][0])
            continue
        unknown = set(fields) - {"event", "id", "data"}
        if unknown:
            problems.append(f"block {number}: unexpected fields {sorted(unknown)} in {block!r}")
        for name in ("event", "id", "data"):
            if len(fields.get(name, [])) != 1:
                problems.append(f"block {number}: expected exactly one `{name}:` line in {block!r}")
        if any(len(fields.get(name, [])) != 1 for name in ("event", "id", "data")):
            continue
        events.append(
            {"event": fields["event"][0], "id": fields["id"][0], "data": fields["data"][0], "fields": order}
        )
    return retry, events, problems


def _check_event(case: Any, event: dict[str, Any], number: int) -> tuple[dict | None, list[str]]:
    problems = []
    if event["event"] not in EVENT_TYPES:
        problems.append(f"event {number}: unknown event type {event['event']!r}")
    if not event["id"].isdigit():
        problems.append(f"event {number}: id {event['id']!r} is not a decimal integer")
    try:
        job = json.loads(event["data"])
    except ValueError as exc:
        return None, [*problems, f"event {number}: data is not JSON ({exc})"]
    errors = [f"{error.instance_path}: {error.message}" for error in _job_validator(case).iter_errors(job)]
    if errors:
        problems.append(f"event {number}: data is not a valid Job: {errors[:3]}")
        return None, problems
    status = job["status"]
    if event["event"] in TERMINAL and status != event["event"]:
        problems.append(f"event {number}: `{event['event']}` event carries a job with status {status!r}")
    if event["event"] in ("snapshot", "progress") and status in TERMINAL:
        problems.append(f"event {number}: `{event['event']}` event carries a terminal job ({status})")
    return job, problems


def _check_job_stream(case: Any, response: Any, events: list, jobs: list, cut_short: bool) -> list[str]:
    problems = []
    job_id = urlsplit(response.request.url).path.rstrip("/").split("/")[-2]
    resume = _last_event_id(response)
    seqs = []
    for number, (event, job) in enumerate(zip(events, jobs)):
        if job["id"] != job_id:
            problems.append(f"event {number}: job {job['id']} on the stream of {job_id}")
        if event["id"] != str(job["seq"]):
            problems.append(f"event {number}: id {event['id']!r} is not the job's seq {job['seq']}")
        seqs.append(job["seq"])
    if any(later <= earlier for earlier, later in zip(seqs, seqs[1:])):
        problems.append(f"seqs do not strictly increase: {seqs}")
    names = [event["event"] for event in events]
    terminal = [index for index, name in enumerate(names) if name in TERMINAL]
    if len(terminal) > 1:
        problems.append(f"{len(terminal)} terminal events: {names}")
    if terminal and terminal[-1] != len(names) - 1:
        problems.append(f"events after the terminal event: {names}")
    if not cut_short and len(terminal) != 1:
        problems.append(f"the stream ended without exactly one terminal event: {names}")
    if names and names[0] == "progress":
        # Only a resumed stream may start with a change (the state at `n` itself is not resent).
        if resume is None or seqs[0] <= resume:
            problems.append(f"stream starts with `progress` (Last-Event-ID {resume}), expected `snapshot`")
    if resume is not None and seqs and seqs[0] <= resume:
        # Allowed only if `n` was a future seq, treated as absent: then the first state is the current one.
        if not (resume > seqs[0] and names[0] != "progress"):
            problems.append(f"resumed after {resume} but got seq {seqs[0]}")
    if "snapshot" in names[1:]:
        problems.append(f"a `snapshot` after the first event: {names}")
    if not names and not cut_short:
        problems.append("a complete 200 stream without any event (expected at least the terminal event)")
    return problems


def _check_all_stream(case: Any, response: Any, events: list, jobs: list) -> list[str]:
    problems = []
    query = parse_qsl(urlsplit(response.request.url).query, keep_blank_values=True)
    kinds = {value for key, value in query if key == "kind"}
    ids = {value for key, value in query if key == "id"}
    statuses = {value for key, value in query if key == "status"}
    resume = _last_event_id(response)
    previous = None
    last_seq: dict[str, int] = {}
    ended: set[str] = set()
    live = False
    for number, (event, job) in enumerate(zip(events, jobs)):
        event_id = int(event["id"])
        if previous is not None and event_id <= previous:
            problems.append(f"event {number}: id {event_id} after {previous}")
        previous = event_id
        if kinds and job["kind"] not in kinds:
            problems.append(f"event {number}: job of kind {job['kind']!r} on a stream of kinds {sorted(kinds)}")
        if ids and job["id"] not in ids:
            problems.append(f"event {number}: job {job['id']} on a stream of ids {sorted(ids)}")
        if job["id"] in ended:
            problems.append(f"event {number}: job {job['id']} after its terminal event")
        if job["id"] in last_seq and job["seq"] <= last_seq[job["id"]]:
            problems.append(f"event {number}: job {job['id']} seq {job['seq']} after {last_seq[job['id']]}")
        if statuses and resume is None and job["id"] not in last_seq and job["status"] not in statuses:
            problems.append(f"event {number}: job first shown with status {job['status']!r} not in {sorted(statuses)}")
        if event["event"] == "snapshot":
            if live:
                problems.append(f"event {number}: `snapshot` after live events")
            if job["id"] in last_seq:
                problems.append(f"event {number}: a second snapshot of job {job['id']}")
        else:
            live = True
        last_seq[job["id"]] = job["seq"]
        if event["event"] in TERMINAL:
            ended.add(job["id"])
    return problems


@schemathesis.check
def sse_stream_conformance(ctx: Any, response: Any, case: Any) -> bool | None:
    """A `text/event-stream` 200 answer is a well-formed jobcast event stream."""
    content_type = _header(response, "content-type") or ""
    if response.status_code != 200 or not content_type.lower().startswith("text/event-stream"):
        return None
    problems = []
    for name, expected in (("cache-control", "no-cache"), ("x-accel-buffering", "no")):
        if _header(response, name) != expected:
            problems.append(f"header {name}: {_header(response, name)!r}, expected {expected!r}")
    if _header(response, "content-encoding") is not None:
        problems.append(f"a stream must not be encoded (Content-Encoding: {_header(response, 'content-encoding')})")
    body = response.content.decode("utf-8")
    if not body.startswith("retry:"):
        problems.append(f"the stream does not start with `retry:`: {body[:40]!r}")
    retry, events, parse_problems = parse_stream(body)
    problems += parse_problems
    if retry is None and not parse_problems:
        problems.append("no retry hint")
    jobs = []
    for number, event in enumerate(events):
        job, event_problems = _check_event(case, event, number)
        problems += event_problems
        jobs.append(job)
    if not problems:
        cut_short = bool(getattr(response, "stream_cut_short", False))
        if urlsplit(response.request.url).path.endswith("/events") and "/v1/jobs/" in response.request.url:
            problems += _check_job_stream(case, response, events, jobs, cut_short)
        else:
            problems += _check_all_stream(case, response, events, jobs)
    if problems:
        raise AssertionError("Event stream violates the spec:\n  " + "\n  ".join(problems[:10]))
    return True


@schemathesis.check
def location_names_created_job(ctx: Any, response: Any, case: Any) -> bool | None:
    """`202` from createJob: `Location: /v1/jobs/{id}` of the job in the body."""
    if response.status_code != 202:
        return None
    job = response.json()
    location = _header(response, "location")
    if location != f"/v1/jobs/{job['id']}":
        raise AssertionError(f"Location {location!r} does not name job {job['id']}")
    return True


@schemathesis.check
def problem_status_matches(ctx: Any, response: Any, case: Any) -> bool | None:
    """An `application/problem+json` answer repeats the response's status."""
    content_type = _header(response, "content-type") or ""
    if not content_type.startswith("application/problem+json"):
        return None
    problem = response.json()
    if problem.get("status") != response.status_code:
        raise AssertionError(f"problem status {problem.get('status')} in a {response.status_code} response")
    if response.status_code in (429, 503) and _header(response, "retry-after") is None:
        raise AssertionError(f"{response.status_code} without Retry-After")
    if response.status_code == 405 and _header(response, "allow") is None:
        raise AssertionError("405 without Allow")
    return True
