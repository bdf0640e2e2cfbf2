#!/usr/bin/env python3
"""A jobcast worker for the external kind `wordcount`, in standard-library Python.

It counts the words of every text file under a directory, reporting its
progress to jobcast with heartbeats, and stops cleanly when the job is
cancelled. Run the server with the example kinds file first:

    cargo run --release -- --config examples/jobcast.toml

Then either drive a job someone else created (your service hands the worker
the job id and the worker token that creating the job answered):

    python3 examples/worker.py --job <id> --token <worker_token>

or create one and drive it, to try it out:

    python3 examples/worker.py --submit src

Exit status: 0 when the job completed, 1 when it failed, 2 when it was
cancelled, 3 on a usage error or when the server could not be reached or
refused the worker.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

WORD = re.compile(r"[A-Za-z][A-Za-z'_-]*")
# Send a heartbeat at least this often (the kind's heartbeat_timeout is longer).
HEARTBEAT_EVERY = 0.25


class JobEnded(Exception):
    """The server answered 409: the job already ended (it holds the job)."""

    def __init__(self, job: dict) -> None:
        super().__init__(job.get("status"))
        self.job = job


class Cancelled(Exception):
    """A heartbeat answered cancel_requested: the job is cancelled."""


class Worker:
    """One job's worker calls: heartbeat, complete, fail."""

    def __init__(self, server: str, job_id: str, token: str) -> None:
        self.server = server.rstrip("/")
        self.job_id = job_id
        self.token = token
        self.last_beat = 0.0

    def call(self, action: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.server}/v1/jobs/{self.job_id}/{action}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            problem = json.load(error)
            if error.code == 409:
                raise JobEnded(problem["job"]) from None
            raise SystemExit(f"worker: {action} refused ({error.code}): {problem.get('detail')}") from None

    def heartbeat(self, force: bool = False, **progress: object) -> None:
        """Reports progress, at most every HEARTBEAT_EVERY unless forced."""
        now = time.monotonic()
        if not force and now - self.last_beat < HEARTBEAT_EVERY:
            return
        self.last_beat = now
        if self.call("heartbeat", progress)["cancel_requested"]:
            raise Cancelled()


def text_files(root: str) -> list[str]:
    paths = []
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                paths.append(path)
    return sorted(paths)


def count_words(worker: Worker, params: dict, delay: float) -> dict:
    """The job's work: stage `scanning` counts bytes, stage `ranking` words."""
    root = params["path"]
    if not os.path.isdir(root):
        raise FileNotFoundError(root)
    files = text_files(root)
    total_bytes = sum(os.path.getsize(path) for path in files)
    worker.heartbeat(force=True, stage="scanning", total=total_bytes, unit="bytes", current=0,
                     message=f"{len(files)} files")
    counts: collections.Counter[str] = collections.Counter()
    done = 0
    for path in files:
        with open(path, "rb") as file:
            data = file.read()
        counts.update(word.lower() for word in WORD.findall(data.decode("utf-8", "replace")))
        done += len(data)
        worker.heartbeat(current=done, message=os.path.relpath(path, root))
        if delay:
            time.sleep(delay)
    worker.heartbeat(force=True, stage="ranking", total=1, unit="lists", current=0)
    top = [{"word": word, "count": count} for word, count in counts.most_common(params.get("top", 10))]
    worker.heartbeat(force=True, current=1)
    return {"files": len(files), "bytes": total_bytes, "words": sum(counts.values()), "top": top}


def get_json(url: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url)
    if body is not None:
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise SystemExit(f"worker: {url} answered {error.code}: {json.load(error).get('detail')}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=os.environ.get("JOBCAST_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--job", help="the id of a wordcount job to drive")
    parser.add_argument("--token", default=os.environ.get("JOBCAST_WORKER_TOKEN"), help="its worker token")
    parser.add_argument("--submit", metavar="PATH", help="create a wordcount job for PATH, then drive it")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait after each file (to try cancel)")
    args = parser.parse_args()

    if not (args.submit or (args.job and args.token)):
        print("worker: give --job and --token (or JOBCAST_WORKER_TOKEN), or --submit PATH", file=sys.stderr)
        return 3
    try:
        if args.submit:
            created = get_json(f"{args.server}/v1/jobs", {"kind": "wordcount", "params": {"path": args.submit}})
            args.job, args.token = created["id"], created["worker_token"]
        params = get_json(f"{args.server}/v1/jobs/{args.job}")["params"]
    except urllib.error.URLError as error:
        print(f"worker: cannot reach {args.server}: {error.reason}", file=sys.stderr)
        return 3

    worker = Worker(args.server, args.job, args.token)
    print(f"worker: driving job {args.job}", flush=True)
    try:
        try:
            result = count_words(worker, params, args.delay)
        except Cancelled:
            print("worker: cancelled; stopped", flush=True)
            return 2
        except OSError as error:
            job = worker.call("fail", {"code": "unreadable", "message": str(error)})
            print(f"worker: failed: {job['error']['message']}", flush=True)
            return 1
        job = worker.call("complete", {"result": result})
    except JobEnded as ended:
        print(f"worker: the job already ended {ended.job['status']}", flush=True)
        return {"completed": 0, "failed": 1}.get(ended.job["status"], 2)
    except SystemExit as refused:
        print(refused, file=sys.stderr)
        return 3
    print(json.dumps(job["result"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
