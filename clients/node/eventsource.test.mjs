// A real EventSource (the WHATWG-compliant `eventsource` package) against a
// running jobcast, through a small counting proxy so the test sees every
// request the server got and can drop a connection mid-stream.
//
//   JOBCAST_URL=http://127.0.0.1:PORT node --test node/
//
// The server should run with a short retry hint (`--retry 200ms`): the client
// waits for it before every reconnect.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { EventSource } from "eventsource";

const SERVER = process.env.JOBCAST_URL ?? "http://127.0.0.1:8080";
// Longer than the server's retry hint (200 ms + up to 25 % jitter) with room to spare.
const RETRY_WAIT_MS = Number(process.env.JOBCAST_RETRY_WAIT_MS ?? 1500);
const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/** A proxy that logs each request and can cut a response after N events. */
class CountingProxy {
  constructor(target) {
    this.target = new URL(target);
    this.requests = []; // { path, lastEventId, status }
    this.dropAfterEvents = new Map(); // path -> events to forward before dropping the first connection
    this.server = http.createServer((req, res) => this.#forward(req, res));
  }

  async listen() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
  }

  close() {
    this.server.closeAllConnections?.();
    return new Promise((resolve) => this.server.close(resolve));
  }

  requestsTo(path) {
    return this.requests.filter((entry) => entry.path === path);
  }

  #forward(req, res) {
    const entry = { path: req.url, lastEventId: req.headers["last-event-id"] ?? null, status: null };
    this.requests.push(entry);
    const dropAfter = this.dropAfterEvents.get(req.url);
    if (dropAfter !== undefined) this.dropAfterEvents.delete(req.url); // only the first connection
    const upstream = http.request(
      {
        host: this.target.hostname,
        port: this.target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: this.target.host },
      },
      (up) => {
        entry.status = up.statusCode;
        res.writeHead(up.statusCode, up.headers);
        let forwarded = "";
        up.on("data", (chunk) => {
          res.write(chunk);
          if (dropAfter === undefined) return;
          forwarded += chunk.toString("utf8");
          const events = forwarded.split(/\n\n/).filter((block) => /^data:/m.test(block)).length;
          if (events >= dropAfter) {
            // Kill the connection, not the job: the client sees the stream break.
            entry.dropped = true;
            up.destroy();
            res.socket?.destroy();
          }
        });
        up.on("end", () => res.end());
        up.on("error", () => res.destroy());
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  }
}

async function createJob(params) {
  const response = await fetch(`${SERVER}/v1/jobs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ kind: "demo", params }),
  });
  assert.equal(response.status, 202);
  return response.json();
}

/** Follow a job with an EventSource until `settled` resolves, recording every event. */
function follow(url) {
  const es = new EventSource(url);
  const received = []; // { type, lastEventId, job }
  const errors = [];
  let unnamed = 0;
  let resolveTerminal;
  const terminal = new Promise((resolve) => {
    resolveTerminal = resolve;
  });
  const onEvent = (event) => {
    const job = JSON.parse(event.data);
    received.push({ type: event.type, lastEventId: event.lastEventId, job });
    if (TERMINAL.has(event.type)) resolveTerminal();
  };
  for (const type of ["snapshot", "progress", ...TERMINAL]) es.addEventListener(type, onEvent);
  es.onmessage = () => {
    unnamed += 1;
  };
  es.onerror = (event) => errors.push(event);
  return { es, received, errors, terminal, unnamedCount: () => unnamed };
}

function withTimeout(promise, ms, what) {
  return Promise.race([
    promise,
    sleep(ms, undefined, { ref: false }).then(() => {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }),
  ]);
}

function assertSeqsStrictlyIncrease(received) {
  const seqs = received.map((entry) => entry.job.seq);
  for (let index = 1; index < seqs.length; index += 1) {
    assert.ok(seqs[index] > seqs[index - 1], `seqs must strictly increase: ${seqs.join(",")}`);
  }
  for (const entry of received) {
    assert.equal(entry.lastEventId, String(entry.job.seq), "lastEventId is the job's seq");
  }
}

let proxy;
before(async () => {
  const ready = await fetch(`${SERVER}/readyz`);
  assert.equal(ready.status, 200, `server at ${SERVER} is not ready`);
  proxy = new CountingProxy(SERVER);
  await proxy.listen();
});
after(() => proxy.close());

test("events arrive typed; after the terminal event the reconnect gets 204 and stops (2 requests)", async () => {
  const job = await createJob({
    stages: [
      { name: "parsing", weight: 0.25, steps: 4 },
      { name: "analyzing", weight: 0.75, steps: 6 },
    ],
    step_ms: 40,
    delay_ms: 300,
  });
  const path = `/v1/jobs/${job.id}/events`;
  const client = follow(`${proxy.url}${path}`);
  try {
    await withTimeout(client.terminal, 10_000, "the terminal event");
    const types = client.received.map((entry) => entry.type);
    assert.equal(types[0], "snapshot", `first event: ${types}`);
    assert.ok(types.includes("progress"), `no progress event: ${types}`);
    assert.equal(types.at(-1), "completed", `last event: ${types}`);
    assert.equal(types.filter((type) => TERMINAL.has(type)).length, 1, `terminal events: ${types}`);
    assert.equal(client.unnamedCount(), 0, "no unnamed (message) events");
    for (const entry of client.received) {
      assert.equal(entry.job.id, job.id);
      assert.equal(typeof entry.job.progress, "number");
    }
    assert.deepEqual(
      [...new Set(client.received.map((entry) => entry.job.status))].filter((s) => s !== "queued"),
      ["running", "completed"],
    );
    assert.equal(client.received.at(-1).job.progress, 1);
    assertSeqsStrictlyIncrease(client.received);

    // The server ends the stream; EventSource reconnects by itself after the retry hint.
    await sleep(RETRY_WAIT_MS);
    const requests = proxy.requestsTo(path);
    const finalSeq = String(client.received.at(-1).job.seq);
    assert.equal(requests.length, 2, `requests to the stream: ${JSON.stringify(requests)}`);
    assert.equal(requests[0].lastEventId, null);
    assert.equal(requests[0].status, 200);
    assert.equal(requests[1].lastEventId, finalSeq, "the reconnect resumes after the terminal seq");
    assert.equal(requests[1].status, 204);
    assert.equal(client.es.readyState, EventSource.CLOSED, "204 makes EventSource stop for good");
    assert.ok(client.errors.length >= 1, "the 204 fires an error event");
    await sleep(RETRY_WAIT_MS);
    assert.equal(proxy.requestsTo(path).length, 2, "no request after the 204");
  } finally {
    client.es.close();
  }
});

test("a connection dropped mid-job: EventSource resumes with Last-Event-ID, no seq twice", async () => {
  const job = await createJob({
    stages: [
      { name: "first", weight: 1, steps: 15 },
      { name: "second", weight: 1, steps: 15 },
    ],
    step_ms: 40,
    delay_ms: 300,
  });
  const path = `/v1/jobs/${job.id}/events`;
  proxy.dropAfterEvents.set(path, 4);
  const client = follow(`${proxy.url}${path}`);
  try {
    await withTimeout(client.terminal, 15_000, "the terminal event");
    await sleep(RETRY_WAIT_MS);
    const requests = proxy.requestsTo(path);
    assert.ok(requests[0].dropped, "the proxy dropped the first connection");
    assert.equal(requests.length, 3, `requests: ${JSON.stringify(requests)}`);
    const [first, resumed, final] = requests;
    assert.equal(first.lastEventId, null);
    assert.equal(resumed.status, 200);
    assert.ok(resumed.lastEventId !== null, "the reconnect sends Last-Event-ID");
    assert.equal(final.status, 204);

    // What arrived before the drop ends at the id the client resumed from.
    const cut = client.received.findIndex((entry) => Number(entry.lastEventId) > Number(resumed.lastEventId));
    assert.ok(cut > 0, "events arrived on both connections");
    assert.equal(client.received[cut - 1].lastEventId, resumed.lastEventId);
    const next = client.received[cut];
    assert.ok(
      next.type === "snapshot" || TERMINAL.has(next.type) || next.job.seq === Number(resumed.lastEventId) + 1,
      `a resumed stream starts with the newer current state or the next change, not ${next.type} ${next.job.seq}`,
    );
    assertSeqsStrictlyIncrease(client.received);
    const types = client.received.map((entry) => entry.type);
    assert.equal(types.at(-1), "completed");
    assert.equal(types.filter((type) => TERMINAL.has(type)).length, 1, `terminal events: ${types}`);
    assert.equal(final.lastEventId, String(client.received.at(-1).job.seq));
    assert.equal(client.es.readyState, EventSource.CLOSED);
  } finally {
    client.es.close();
  }
});

test("a stream of an unknown job answers 404 and EventSource gives up after one request", async () => {
  const path = "/v1/jobs/01a00000-0000-7000-8000-000000000000/events";
  const client = follow(`${proxy.url}${path}`);
  try {
    await sleep(RETRY_WAIT_MS);
    assert.equal(client.es.readyState, EventSource.CLOSED);
    assert.equal(proxy.requestsTo(path).length, 1);
    assert.equal(proxy.requestsTo(path)[0].status, 404);
    assert.equal(client.received.length, 0);
  } finally {
    client.es.close();
  }
});
