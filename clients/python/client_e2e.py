"""End-to-end test of jobcast through a client generated from openapi.yaml.

    python client_e2e.py BASE_URL

Uses the `jobcast_client` package that `openapi-python-client` generated
(typed models and operation functions) for everything but the event stream,
which it follows with `httpx-sse` over the generated client's httpx client,
parsing each event's data with the generated `Job` model. The worker calls
of the external `ingest` kind (clients/kinds.toml) go through the generated
`AuthenticatedClient`, which sends the job's `worker_token` as the bearer
token of the spec's `workerToken` scheme. Prints one
`PASS name` / `FAIL name` line per test and `N passed, N failed` last; exits
non-zero if any failed.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from http import HTTPStatus

import httpx
from httpx_sse import connect_sse
from jobcast_client import AuthenticatedClient, Client
from jobcast_client.api.jobs import cancel_job, create_job, get_job, list_jobs, retry_job
from jobcast_client.api.kinds import list_kinds
from jobcast_client.api.workers import worker_complete, worker_fail, worker_heartbeat
from jobcast_client.models import (
    Completion,
    ConfiguredJobRequest,
    ConfiguredJobRequestParamsType0,
    ConflictProblem,
    DemoJobRequest,
    DemoParams,
    DemoStage,
    Failure,
    HeartbeatAnswer,
    Job,
    JobList,
    JobStatus,
    KindList,
    Labels,
    Problem,
    ProgressReport,
    StageStatus,
)
from jobcast_client.types import UNSET, Response

TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
TIMEOUT = httpx.Timeout(30.0)
BASE_URL = "http://127.0.0.1:8080"  # set by main()
TESTS: list[Callable[[Client], None]] = []


def test(func: Callable[[Client], None]) -> Callable[[Client], None]:
    TESTS.append(func)
    return func


def demo_request(**params: object) -> DemoJobRequest:
    """A typed create request: the params as the generated `DemoParams` model."""
    stages = params.pop("stages", None)
    demo = DemoParams(
        stages=[DemoStage(name=name, weight=weight, steps=steps) for name, weight, steps in stages]
        if stages is not None
        else UNSET,
        **params,  # type: ignore[arg-type]
    )
    return DemoJobRequest(kind="demo", params=demo)


def create(client: Client, **params: object) -> Job:
    response = create_job.sync_detailed(client=client, body=demo_request(**params))
    assert response.status_code == HTTPStatus.ACCEPTED, (response.status_code, response.content)
    job = response.parsed
    assert isinstance(job, Job), job
    assert response.headers["location"] == f"/v1/jobs/{job.id}", response.headers.get("location")
    return job


def fetch(client: Client, job: Job, **kwargs: object) -> Job:
    got = get_job.sync(job.id, client=client, **kwargs)  # type: ignore[arg-type]
    assert isinstance(got, Job), got
    return got


def wait_for(client: Client, job: Job, done: Callable[[Job], bool], seconds: float = 10) -> Job:
    """Follow a job by long poll until `done` holds."""
    deadline = time.monotonic() + seconds
    while not done(job):
        assert time.monotonic() < deadline, f"job {job.id} still {job.status} after {seconds} s"
        job = fetch(client, job, wait_seconds=2, after_seq=job.seq)
    return job


@test
def kinds_include_demo(client: Client) -> None:
    kinds = list_kinds.sync(client=client)
    assert isinstance(kinds, KindList), kinds
    demo = next(kind for kind in kinds.kinds if kind.name == "demo")
    # The server's example params are valid demo params for the typed model.
    DemoParams.from_dict(demo.example.to_dict())


@test
def create_list_get(client: Client) -> None:
    job = create(client, stages=[("parsing", 0.2, 2), ("analyzing", 0.8, 3)], step_ms=10)
    assert job.kind == "demo" and job.seq == 1, job
    assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING), job.status
    assert job.params.to_dict()["step_ms"] == 10, job.params

    listed = list_jobs.sync(client=client, kind=["demo"], limit=1000)
    assert isinstance(listed, JobList), listed
    assert job.id in [item.id for item in listed.jobs], "new job not listed"
    created = [item.created_at for item in listed.jobs]
    assert created == sorted(created, reverse=True), "list is not newest first"

    # Paging: one job per page, following next_cursor, reaches the new job.
    first = list_jobs.sync(client=client, limit=1)
    assert isinstance(first, JobList) and len(first.jobs) == 1, first
    if first.jobs[0].id != job.id:
        assert isinstance(first.next_cursor, str), first.next_cursor
    seen = [first.jobs[0].id]
    page = first
    while page.next_cursor and job.id not in seen and len(seen) < 20:
        page = list_jobs.sync(client=client, limit=1, cursor=page.next_cursor)
        assert isinstance(page, JobList), page
        seen += [item.id for item in page.jobs]
    assert job.id in seen, "paging never reached the new job"

    got = fetch(client, job)
    assert got.id == job.id and got.seq >= job.seq, got
    done = wait_for(client, got, lambda j: j.status in TERMINAL)
    assert done.status == JobStatus.COMPLETED and done.progress == 1.0, done
    assert done.finished_at is not None and done.error is None, done

    finished = list_jobs.sync(client=client, status=[JobStatus.COMPLETED], kind=["demo"], limit=1000)
    assert isinstance(finished, JobList), finished
    assert all(item.status == JobStatus.COMPLETED for item in finished.jobs), "status filter ignored"
    assert job.id in [item.id for item in finished.jobs], "completed job not in status=completed"


@test
def cancel_running_job(client: Client) -> None:
    job = create(client, stages=[("slow", 1.0, 1000)], step_ms=20)
    running = wait_for(client, job, lambda j: j.status == JobStatus.RUNNING)
    response = cancel_job.sync_detailed(running.id, client=client)
    assert response.status_code == HTTPStatus.OK, (response.status_code, response.content)
    cancelled = response.parsed
    assert isinstance(cancelled, Job), cancelled
    assert cancelled.status == JobStatus.CANCELLED, cancelled.status
    assert cancelled.error is not None and cancelled.error.code == "cancelled", cancelled.error
    assert cancelled.error.retryable is False and cancelled.error.stage == "slow", cancelled.error
    assert cancelled.finished_at is not None and cancelled.progress < 1.0, cancelled
    # Idempotent.
    again = cancel_job.sync_detailed(running.id, client=client)
    assert again.status_code == HTTPStatus.OK and isinstance(again.parsed, Job), again.status_code
    assert again.parsed.seq == cancelled.seq, (again.parsed.seq, cancelled.seq)


@test
def cancel_during_delay(client: Client) -> None:
    # `delay_ms` is a wait while already running; the job reacts to cancel within it.
    job = create(client, delay_ms=60_000)
    running = wait_for(client, job, lambda j: j.status == JobStatus.RUNNING)
    start = time.monotonic()
    cancelled = cancel_job.sync(job.id, client=client)
    assert time.monotonic() - start < 1, "cancel during the delay took the grace period"
    assert isinstance(cancelled, Job) and cancelled.status == JobStatus.CANCELLED, cancelled
    assert cancelled.error is not None and cancelled.error.code == "cancelled", cancelled.error
    assert cancelled.started_at == running.started_at is not None, cancelled.started_at


@test
def cancel_completed_job_is_conflict(client: Client) -> None:
    job = create(client, stages=[("only", 1.0, 1)], step_ms=0)
    done = wait_for(client, job, lambda j: j.status in TERMINAL)
    assert done.status == JobStatus.COMPLETED, done.status
    response = cancel_job.sync_detailed(job.id, client=client)
    assert response.status_code == HTTPStatus.CONFLICT, (response.status_code, response.content)
    problem = response.parsed
    assert isinstance(problem, ConflictProblem), type(problem)
    assert problem.status == 409 and problem.type_ == "urn:jobcast:problem:conflict", problem
    assert problem.job.id == job.id and problem.job.status == JobStatus.COMPLETED, problem.job
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers


@test
def labels_idempotency_key_and_retry(client: Client) -> None:
    run = uuid.uuid4().hex
    body = demo_request(stages=[("only", 1.0, 2)], step_ms=0, fail_at="only")
    body.labels = Labels.from_dict({"run": run, "project": "42"})
    key = str(uuid.uuid4())
    first = create_job.sync_detailed(client=client, body=body, idempotency_key=key)
    assert first.status_code == HTTPStatus.ACCEPTED, (first.status_code, first.content)
    job = first.parsed
    assert isinstance(job, Job) and job.labels.to_dict() == {"run": run, "project": "42"}, job
    assert job.retry_of is None, job.retry_of
    again = create_job.sync_detailed(client=client, body=body, idempotency_key=key)
    assert again.status_code == HTTPStatus.ACCEPTED and again.headers["idempotent-replayed"] == "true", again
    assert isinstance(again.parsed, Job) and again.parsed.id == job.id, "the same key and body: the same job"

    failed = wait_for(client, job, lambda j: j.status in TERMINAL)
    assert failed.status == JobStatus.FAILED and failed.error is not None and failed.error.retryable, failed
    retried = retry_job.sync_detailed(job.id, client=client)
    assert retried.status_code == HTTPStatus.ACCEPTED, (retried.status_code, retried.content)
    retry = retried.parsed
    assert isinstance(retry, Job) and retry.retry_of == job.id, retry
    assert retry.labels.to_dict() == job.labels.to_dict() and retry.params.to_dict() == job.params.to_dict(), retry

    listed = list_jobs.sync(client=client, label=[f"run={run}", "project=42"], limit=10)
    assert isinstance(listed, JobList), listed
    assert [item.id for item in listed.jobs] == [retry.id, job.id], "the label filter, newest first"
    running = create(client, delay_ms=60_000)
    conflict = retry_job.sync_detailed(running.id, client=client)
    assert conflict.status_code == HTTPStatus.CONFLICT and isinstance(conflict.parsed, ConflictProblem), conflict
    assert conflict.parsed.job.id == running.id, conflict.parsed.job
    cancel_job.sync(running.id, client=client)


@test
def bad_request_is_typed_problem(client: Client) -> None:
    # `DemoParams` has no room for an unknown param; the request of the other kinds takes any object.
    body = ConfiguredJobRequest(kind="demo", params=ConfiguredJobRequestParamsType0.from_dict({"no_such_param": 1}))
    response = create_job.sync_detailed(client=client, body=body)
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, (response.status_code, response.content)
    problem = response.parsed
    assert isinstance(problem, Problem), type(problem)
    assert problem.type_ == "urn:jobcast:problem:unprocessable-entity", problem.type_
    assert problem.status == 422 and problem.title and "no_such_param" in problem.detail, problem

    unknown_kind = create_job.sync_detailed(client=client, body=ConfiguredJobRequest(kind="no-such-kind"))
    assert unknown_kind.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, unknown_kind.status_code
    assert isinstance(unknown_kind.parsed, Problem), unknown_kind.parsed

    bad_limit = list_jobs.sync_detailed(client=client, limit=0)
    assert bad_limit.status_code == HTTPStatus.BAD_REQUEST, bad_limit.status_code
    assert isinstance(bad_limit.parsed, Problem) and bad_limit.parsed.type_.endswith(":bad-request"), bad_limit

    missing = get_job.sync_detailed("01a00000-0000-7000-8000-000000000000", client=client)  # type: ignore[arg-type]
    assert missing.status_code == HTTPStatus.NOT_FOUND, missing.status_code
    assert isinstance(missing.parsed, Problem) and missing.parsed.type_.endswith(":not-found"), missing.parsed


@test
def stream_to_terminal_with_httpx_sse(client: Client) -> None:
    job = create(client, stages=[("a", 1.0, 5), ("b", 3.0, 5)], step_ms=30, delay_ms=100)
    http = client.get_httpx_client()
    events: list[tuple[str, str, Job]] = []
    retry = None
    with connect_sse(http, "GET", f"/v1/jobs/{job.id}/events", timeout=httpx.Timeout(10.0)) as source:
        assert source.response.status_code == 200, source.response.status_code
        assert source.response.headers["content-type"].startswith("text/event-stream")
        assert source.response.headers["cache-control"] == "no-cache"
        for sse in source.iter_sse():
            retry = sse.retry if sse.retry is not None else retry
            if sse.data == "":
                # httpx-sse also yields the opening `retry:` block, which carries no data;
                # a WHATWG EventSource dispatches no event for it.
                continue
            events.append((sse.event, sse.id, Job.from_dict(json.loads(sse.data))))
    names = [name for name, _, _ in events]
    seqs = [state.seq for _, _, state in events]
    assert retry is not None, "no retry hint"
    assert names[0] == "snapshot", names
    assert all(event_id == str(state.seq) for _, event_id, state in events), "id != seq"
    assert all(b > a for a, b in zip(seqs, seqs[1:])), f"seqs not strictly increasing: {seqs}"
    terminal = [name for name in names if name in ("completed", "failed", "cancelled")]
    assert terminal == ["completed"] and names[-1] == "completed", names
    assert all(name == "progress" for name in names[1:-1]), names
    final = events[-1][2]
    assert final.status == JobStatus.COMPLETED and final.progress == 1.0, final
    progress = [state.progress for _, _, state in events]
    assert progress == sorted(progress), f"progress went back: {progress}"
    assert all(state.id == job.id for _, _, state in events), "foreign job on the stream"

    # Resuming after the terminal event: 204, nothing more.
    end = http.get(f"/v1/jobs/{job.id}/events", headers={"Last-Event-ID": str(seqs[-1])})
    assert end.status_code == 204, end.status_code


@test
def follow_by_long_poll(client: Client) -> None:
    job = create(client, stages=[("one", 1.0, 3), ("two", 1.0, 3)], step_ms=150, delay_ms=100)
    states = [job]
    while states[-1].status not in TERMINAL:
        assert len(states) < 200, "too many polls"
        start = time.monotonic()
        response = get_job.sync_detailed(job.id, client=client, wait_seconds=10, after_seq=states[-1].seq)
        elapsed = time.monotonic() - start
        assert response.status_code == HTTPStatus.OK, response.status_code
        state = response.parsed
        assert isinstance(state, Job), state
        # Each change of the job answers the poll at once, well before the 10 s wait.
        assert state.seq > states[-1].seq, (state.seq, states[-1].seq, elapsed)
        assert elapsed < 2, f"a long poll took {elapsed:.2f} s for a job that changes every 150 ms"
        states.append(state)
    statuses = [state.status for state in states]
    assert statuses[-1] == JobStatus.COMPLETED, statuses
    order = [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED]
    ranks = [order.index(status) for status in statuses]
    assert ranks == sorted(ranks), f"status went back: {statuses}"
    assert JobStatus.RUNNING in statuses, statuses
    assert len({state.stage.name for state in states if state.stage}) == 2, "missed a stage"
    # A terminal job never changes again: a poll for a later seq gets the same final state.
    final = fetch(client, job, wait_seconds=1, after_seq=states[-1].seq)
    assert final.seq == states[-1].seq and final.status == JobStatus.COMPLETED, final.seq


# -- external workers (the `ingest` kind of clients/kinds.toml) --------------

TOKEN = re.compile(r"jcw_[0-9a-f]{64}")


def create_ingest(client: Client, url: str = "https://example.com/data.csv") -> tuple[Job, str]:
    """Creates an ingest job: its first state and the worker token only this answer carries."""
    body = ConfiguredJobRequest(kind="ingest", params=ConfiguredJobRequestParamsType0.from_dict({"url": url}))
    response = create_job.sync_detailed(client=client, body=body)
    assert response.status_code == HTTPStatus.ACCEPTED, (response.status_code, response.content)
    job = response.parsed
    assert isinstance(job, Job), job
    assert job.kind == "ingest" and job.status == JobStatus.QUEUED and job.seq == 1, job
    assert isinstance(job.worker_token, str) and TOKEN.fullmatch(job.worker_token), job.worker_token
    return job, job.worker_token


def worker(token: str, **kwargs: object) -> AuthenticatedClient:
    """The generated client for the `workerToken` scheme: `Authorization: Bearer <token>`."""
    return AuthenticatedClient(
        base_url=BASE_URL,
        token=token,
        timeout=TIMEOUT,
        raise_on_unexpected_status=True,
        **kwargs,  # type: ignore[arg-type]
    )


def heartbeat(token: str, job: Job, **report: object) -> bool:
    """A heartbeat with `report` as its body; answers `cancel_requested`.

    Always sends a body (at least `{}`): the generated function sets
    `Content-Type: application/json` even when it sends no body.
    """
    body = ProgressReport(**report)  # type: ignore[arg-type]
    with worker(token) as client:
        response = worker_heartbeat.sync_detailed(job.id, client=client, body=body)
    assert response.status_code == HTTPStatus.OK, (response.status_code, response.content)
    answer = response.parsed
    assert isinstance(answer, HeartbeatAnswer), answer
    return answer.cancel_requested


def assert_problem(response: Response, status: HTTPStatus, kind: str) -> Problem:
    assert response.status_code == status, (response.status_code, response.content)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    problem = response.parsed
    assert isinstance(problem, Problem), type(problem)
    assert problem.status == status and problem.type_ == f"urn:jobcast:problem:{kind}", problem
    return problem


def assert_job_ended(response: Response, job: Job, status: JobStatus) -> Job:
    """A 409 for a worker call on an ended job: the problem's `job` is the final job."""
    assert response.status_code == HTTPStatus.CONFLICT, (response.status_code, response.content)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    problem = response.parsed
    assert isinstance(problem, ConflictProblem), type(problem)
    assert problem.status == 409 and problem.type_ == "urn:jobcast:problem:conflict", problem
    assert problem.job.id == job.id and problem.job.status == status, problem.job
    assert problem.job.worker_token is UNSET, "a 409 shows the worker token"
    return problem.job


@test
def kinds_include_external_ingest(client: Client) -> None:
    kinds = list_kinds.sync(client=client)
    assert isinstance(kinds, KindList), kinds
    ingest = next(kind for kind in kinds.kinds if kind.name == "ingest")
    assert ingest.external is True, ingest.external
    assert ingest.params_schema.to_dict()["required"] == ["url"], ingest.params_schema
    assert re.search(ingest.params_schema.to_dict()["properties"]["url"]["pattern"], ingest.example.to_dict()["url"])
    demo = next(kind for kind in kinds.kinds if kind.name == "demo")
    assert demo.external in (False, UNSET), demo.external
    # No command kind here: every kind but demo is external (schemathesis creates jobs of every kind).
    assert all(kind.external is True for kind in kinds.kinds if kind.name != "demo"), kinds


@test
def worker_reports_and_completes(client: Client) -> None:
    job, token = create_ingest(client)
    # The token is shown once: reads and lists never carry it.
    assert fetch(client, job).worker_token is UNSET, "a read shows the worker token"
    listed = list_jobs.sync(client=client, kind=["ingest"], limit=1000)
    assert isinstance(listed, JobList) and job.id in [item.id for item in listed.jobs], listed
    assert all(item.worker_token is UNSET for item in listed.jobs), "a list shows a worker token"

    # The first heartbeat starts the job; its report is applied.
    cancel = heartbeat(token, job, stage="download", current=5, total=20, unit="bytes", message="data.csv")
    assert cancel is False, cancel
    running = wait_for(client, job, lambda j: j.stage is not None and j.stage.current == 5)
    assert running.status == JobStatus.RUNNING and running.started_at is not None, running
    assert running.stage is not None, running
    assert (running.stage.name, running.stage.index, running.stage.count) == ("download", 0, 2), running.stage
    assert (running.stage.total, running.stage.unit, running.message) == (20, "bytes", "data.csv"), running
    assert [(s.name, s.status) for s in running.stages] == [
        ("download", StageStatus.RUNNING),
        ("index", StageStatus.PENDING),
    ], running.stages
    # download weighs 1 of 4: 5/20 of it is 1/16 of the job.
    assert abs(running.progress - 1 / 16) < 1e-9, running.progress
    assert running.worker_token is UNSET, "a read shows the worker token"

    assert heartbeat(token, job, stage="index", current=1, total=4) is False
    indexing = wait_for(client, running, lambda j: j.stage is not None and j.stage.name == "index")
    assert indexing.status == JobStatus.RUNNING and indexing.stages[0].status == StageStatus.DONE, indexing
    assert heartbeat(token, job) is False, "an empty report"
    with worker(token) as auth:
        # The spec lets a heartbeat leave the body out, with no Content-Type (the generated
        # function cannot: it always sets one), so this one goes through its httpx client.
        bare = auth.get_httpx_client().post(f"/v1/jobs/{job.id}/heartbeat")
    assert bare.status_code == HTTPStatus.OK and bare.json() == {"cancel_requested": False}, bare.content

    result = {"rows": 1200, "bytes": 20}
    with worker(token) as auth:
        response = worker_complete.sync_detailed(job.id, client=auth, body=Completion(result=result))
    assert response.status_code == HTTPStatus.OK, (response.status_code, response.content)
    done = response.parsed
    assert isinstance(done, Job), done
    assert done.status == JobStatus.COMPLETED and done.result == result and done.progress == 1.0, done
    assert done.finished_at is not None and done.error is None, done
    assert all(stage.status == StageStatus.DONE for stage in done.stages), done.stages
    final = fetch(client, job)
    assert final.status == JobStatus.COMPLETED and final.seq == done.seq and final.result == result, final

    # The job ended: every worker call is a 409 with the final job, and changes nothing.
    with worker(token) as auth:
        assert_job_ended(
            worker_heartbeat.sync_detailed(job.id, client=auth, body=ProgressReport(current=9)),
            job,
            JobStatus.COMPLETED,
        )
        assert_job_ended(
            worker_complete.sync_detailed(job.id, client=auth, body=Completion(result=None)), job, JobStatus.COMPLETED
        )
        ended = assert_job_ended(
            worker_fail.sync_detailed(job.id, client=auth, body=Failure()), job, JobStatus.COMPLETED
        )
    assert ended.seq == done.seq and ended.result == result, ended
    assert fetch(client, job).seq == done.seq, "a refused call changed the job"


@test
def worker_acknowledges_cancel(client: Client) -> None:
    job, token = create_ingest(client)
    assert heartbeat(token, job, stage="download", current=1, total=10) is False
    running = wait_for(client, job, lambda j: j.status == JobStatus.RUNNING)

    # The cancel waits for the worker, so it runs in a thread of its own (own connection).
    answers: list[object] = []

    def cancel() -> None:
        try:
            with Client(base_url=BASE_URL, timeout=TIMEOUT, raise_on_unexpected_status=True) as other:
                answers.append(cancel_job.sync_detailed(job.id, client=other))
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            answers.append(exc)

    thread = threading.Thread(target=cancel, name="cancel", daemon=True)
    thread.start()
    cancelling = wait_for(client, running, lambda j: j.status != JobStatus.RUNNING, seconds=5)
    assert cancelling.status == JobStatus.CANCELLING, cancelling.status
    assert thread.is_alive(), f"the cancel answered before the worker acknowledged: {answers}"

    # The next heartbeat is the acknowledgement.
    assert heartbeat(token, job, current=2) is True, "the heartbeat after a cancel did not ask to stop"
    thread.join(timeout=10)
    assert not thread.is_alive(), "the cancel did not answer after the acknowledgement"
    (response,) = answers
    assert isinstance(response, Response), response
    assert response.status_code == HTTPStatus.OK, (response.status_code, response.content)
    cancelled = response.parsed
    assert isinstance(cancelled, Job) and cancelled.status == JobStatus.CANCELLED, cancelled
    assert cancelled.error is not None and cancelled.error.code == "cancelled", cancelled.error
    assert cancelled.error.stage == "download" and cancelled.error.retryable is False, cancelled.error
    assert cancelled.finished_at is not None and cancelled.worker_token is UNSET, cancelled

    # The worker stops: a later call is a 409 with the cancelled job.
    with worker(token) as auth:
        ended = assert_job_ended(
            worker_heartbeat.sync_detailed(job.id, client=auth, body=ProgressReport()), job, JobStatus.CANCELLED
        )
    assert ended.seq == cancelled.seq, (ended.seq, cancelled.seq)


@test
def worker_tokens_are_checked(client: Client) -> None:
    job, token = create_ingest(client)
    other, other_token = create_ingest(client, "https://example.com/other.csv")
    calls = [
        lambda auth, id: worker_heartbeat.sync_detailed(id, client=auth, body=ProgressReport(current=1)),
        lambda auth, id: worker_complete.sync_detailed(id, client=auth, body=Completion(result=1)),
        lambda auth, id: worker_fail.sync_detailed(id, client=auth, body=Failure(code="oops")),
    ]
    for call in calls:
        # Another job's token, or a well-formed token of no job: 403.
        for wrong in (other_token, "jcw_" + "0" * 64):
            with worker(wrong) as auth:
                assert_problem(call(auth, job.id), HTTPStatus.FORBIDDEN, "forbidden")
        # No token (the plain client), or not a bearer token: 401 with WWW-Authenticate.
        for unauthenticated in (
            Client(base_url=BASE_URL, timeout=TIMEOUT, raise_on_unexpected_status=True),
            worker(token, prefix="Basic"),
        ):
            with unauthenticated as auth:
                response = call(auth, job.id)
            assert_problem(response, HTTPStatus.UNAUTHORIZED, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer"), response.headers
        # A job that does not exist: 404.
        with worker(token) as auth:
            assert_problem(call(auth, "01a00000-0000-7000-8000-000000000000"), HTTPStatus.NOT_FOUND, "not-found")
    # A demo job has no worker: 403 whatever the token.
    demo = create(client, stages=[("only", 1.0, 1)], step_ms=0)
    with worker(token) as auth:
        assert_problem(calls[0](auth, demo.id), HTTPStatus.FORBIDDEN, "forbidden")

    # None of it changed either job.
    for untouched in (job, other):
        state = fetch(client, untouched)
        assert state.status == JobStatus.QUEUED and state.seq == 1 and state.started_at is None, state

    # A reserved code is refused (422) and changes nothing; the worker's own code ends the job.
    with worker(token) as auth:
        refused = worker_fail.sync_detailed(job.id, client=auth, body=Failure(code="heartbeat_timeout"))
        assert_problem(refused, HTTPStatus.UNPROCESSABLE_ENTITY, "unprocessable-entity")
        response = worker_fail.sync_detailed(
            job.id, client=auth, body=Failure(code="disk_full", message="no space left", retryable=True)
        )
    assert response.status_code == HTTPStatus.OK, (response.status_code, response.content)
    failed = response.parsed
    assert isinstance(failed, Job) and failed.status == JobStatus.FAILED, failed
    assert failed.error is not None, failed
    assert (failed.error.code, failed.error.message, failed.error.retryable) == ("disk_full", "no space left", True), (
        failed.error
    )
    # The other job's worker gives up with the defaults.
    with worker(other_token) as auth:
        response = worker_fail.sync_detailed(other.id, client=auth, body=Failure())
        assert response.status_code == HTTPStatus.OK and isinstance(response.parsed, Job), response.content
        assert response.parsed.error is not None and response.parsed.error.code == "worker_failed", response.parsed
        # A second end is a 409 with the failed job.
        assert_job_ended(worker_fail.sync_detailed(other.id, client=auth, body=Failure()), other, JobStatus.FAILED)


def main() -> int:
    global BASE_URL
    BASE_URL = sys.argv[1] if len(sys.argv) > 1 else BASE_URL
    client = Client(base_url=BASE_URL, timeout=TIMEOUT, raise_on_unexpected_status=True)
    passed = failed = 0
    with client:
        for func in TESTS:
            start = time.monotonic()
            try:
                func(client)
            except Exception:  # noqa: BLE001 - report every failure and go on
                failed += 1
                print(f"FAIL {func.__name__} ({time.monotonic() - start:.2f} s)")
                traceback.print_exc(limit=3)
            else:
                passed += 1
                print(f"PASS {func.__name__} ({time.monotonic() - start:.2f} s)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
