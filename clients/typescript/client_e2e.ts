// End-to-end test of jobcast through a TypeScript client: types that
// openapi-typescript generated from openapi.yaml (typescript/generated/,
// by clients/run.sh) and calls with openapi-fetch, compiled with
// `tsc --strict` (typescript/tsconfig.json) and run with node against a
// real server:
//
//   JOBCAST_URL=http://127.0.0.1:PORT node --test out/typescript/client_e2e.js
//
// Compiling is half the test: the bodies below are plain object literals
// checked against the generated request types, the answers are read
// through the generated response types without a cast, and `Same<…>`
// assertions fail the build if a field of the job degrades to `unknown`.

import assert from "node:assert/strict";
import { test } from "node:test";

import createClient from "openapi-fetch";

import type { components, paths } from "./generated/jobcast.js";

type Schemas = components["schemas"];
type Job = Schemas["Job"];

const SERVER = process.env.JOBCAST_URL ?? "http://127.0.0.1:8080";
const TERMINAL: ReadonlySet<Schemas["JobStatus"]> = new Set(["completed", "failed", "cancelled"]);

const api = createClient<paths>({ baseUrl: SERVER });

// ------------------------------------------------------------ compile-time checks

/** `true` only if A and B are the same type (so `unknown` or `any` does not pass for a field). */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;

const jobFieldsAreTyped: [
  Same<Job["status"], "queued" | "running" | "cancelling" | "completed" | "failed" | "cancelled">,
  Same<Job["stage"], Schemas["Stage"] | null>,
  Same<Job["stages"], Schemas["StageInfo"][]>,
  Same<Job["stages"][number]["status"], "pending" | "running" | "done" | "failed" | "cancelled">,
  Same<Job["error"], Schemas["JobError"] | null>,
  Same<Schemas["JobError"]["code"], string>,
  Same<Job["progress"], number>,
  Same<Job["params"], { [key: string]: unknown }>,
  Same<Schemas["ConflictProblem"]["job"], Job>,
] = [true, true, true, true, true, true, true, true, true];

// A demo job's params are `DemoParams`: a misspelt or mistyped param does not compile.
const typedDemoParams: Schemas["DemoJobRequest"][] = [
  // @ts-expect-error `step_ms` is a number
  { kind: "demo", params: { step_ms: "fast" } },
  // @ts-expect-error there is no param `steps_ms`
  { kind: "demo", params: { steps_ms: 10 } },
];

// ------------------------------------------------------------ helpers

/** Creates a demo job with typed params; its first state. */
async function createDemo(params: Schemas["DemoParams"]): Promise<Job> {
  const { data, error, response } = await api.POST("/v1/jobs", { body: { kind: "demo", params } });
  assert.equal(response.status, 202, JSON.stringify(error));
  assert.ok(data);
  assert.equal(response.headers.get("location"), `/v1/jobs/${data.id}`);
  return data;
}

/** Follows a job by long poll until `done` holds. */
async function waitFor(job: Job, done: (job: Job) => boolean, seconds = 10): Promise<Job> {
  const deadline = Date.now() + seconds * 1000;
  while (!done(job)) {
    assert.ok(Date.now() < deadline, `job ${job.id} still ${job.status} after ${seconds} s`);
    const { data, error } = await api.GET("/v1/jobs/{id}", {
      params: { path: { id: job.id }, query: { wait_seconds: 2, after_seq: job.seq } },
    });
    assert.ok(data, JSON.stringify(error));
    job = data;
  }
  return job;
}

// ------------------------------------------------------------ tests

test("the types of the job are useful (checked by tsc)", () => {
  assert.ok(jobFieldsAreTyped.every((same) => same));
  assert.equal(typedDemoParams.length, 2);
});

test("a demo job with params, followed by long poll to completed", async () => {
  const { data: job, error, response } = await api.POST("/v1/jobs", {
    body: {
      kind: "demo",
      params: {
        stages: [
          { name: "parsing", weight: 0.2, steps: 2 },
          { name: "analyzing", weight: 0.8, steps: 3 },
        ],
        step_ms: 10,
      },
    },
  });
  assert.equal(response.status, 202, JSON.stringify(error));
  assert.ok(job);
  assert.equal(job.kind, "demo");
  assert.equal(job.seq, 1);
  assert.ok(job.status === "queued" || job.status === "running", job.status);
  assert.equal(job.params["step_ms"], 10);

  const seen = new Set<string>();
  const done = await waitFor(job, (state) => {
    if (state.stage !== null) seen.add(state.stage.name);
    return TERMINAL.has(state.status);
  });
  assert.equal(done.status, "completed");
  assert.equal(done.progress, 1);
  assert.equal(done.error, null);
  assert.ok(done.finished_at !== null);
  assert.deepEqual(
    done.stages.map((stage) => [stage.name, stage.weight, stage.status]),
    [
      ["parsing", 0.2, "done"],
      ["analyzing", 0.8, "done"],
    ],
  );
  assert.ok(done.stage !== null && done.stage.name === "analyzing" && done.stage.count === 2, JSON.stringify(done));
  assert.ok(seen.has("analyzing"), `stages seen: ${[...seen].join(", ")}`);
});

test("cancelling a running job answers 200 with the cancelled job", async () => {
  const job = await createDemo({ stages: [{ name: "slow", steps: 1000 }], step_ms: 20 });
  const running = await waitFor(job, (state) => state.status === "running");
  const { data, error, response } = await api.POST("/v1/jobs/{id}/cancel", { params: { path: { id: running.id } } });
  assert.equal(response.status, 200, JSON.stringify(error));
  assert.ok(data);
  assert.equal(data.status, "cancelled");
  assert.ok(data.error !== null, "a cancelled job has an error");
  assert.equal(data.error.code, "cancelled");
  assert.equal(data.error.stage, "slow");
  assert.equal(data.error.retryable, false);
  assert.ok(data.finished_at !== null && data.progress < 1, JSON.stringify(data));
});

test("cancelling a completed job answers 409, a typed problem with the job", async () => {
  const job = await createDemo({ stages: [{ name: "only", weight: 1, steps: 1 }], step_ms: 0 });
  const done = await waitFor(job, (state) => TERMINAL.has(state.status));
  assert.equal(done.status, "completed");

  const { data, error, response } = await api.POST("/v1/jobs/{id}/cancel", { params: { path: { id: job.id } } });
  assert.equal(data, undefined);
  assert.equal(response.status, 409);
  assert.ok(response.headers.get("content-type")?.startsWith("application/problem+json"));
  assert.ok(error !== undefined && "job" in error, JSON.stringify(error));
  // `error` is now a `ConflictProblem`: its `job` is a typed `Job`.
  assert.equal(error.type, "urn:jobcast:problem:conflict");
  assert.equal(error.status, 409);
  assert.equal(error.job.id, job.id);
  assert.equal(error.job.status, "completed");
  assert.equal(error.job.seq, done.seq);
});

test("a kind from the kinds file takes any JSON object as params", async () => {
  const { data, error, response } = await api.POST("/v1/jobs", {
    body: { kind: "ingest", params: { url: "https://example.com/data.csv" } },
  });
  assert.equal(response.status, 202, JSON.stringify(error));
  assert.ok(data);
  assert.equal(data.kind, "ingest");
  assert.equal(data.status, "queued");
  assert.deepEqual(data.params, { url: "https://example.com/data.csv" });
  assert.match(data.worker_token ?? "", /^jcw_[0-9a-f]{64}$/);
});

test("invalid params answer 422, a typed problem", async () => {
  const bodies: Schemas["CreateJobRequest"][] = [
    { kind: "ingest", params: { url: "not a url" } },
    { kind: "ingest", params: { url: "https://example.com/data.csv", no_such_param: 1 } },
    { kind: "no-such-kind" },
  ];
  for (const body of bodies) {
    const { data, error, response } = await api.POST("/v1/jobs", { body });
    assert.equal(data, undefined);
    assert.equal(response.status, 422, JSON.stringify(body));
    assert.ok(error);
    assert.equal(error.type, "urn:jobcast:problem:unprocessable-entity");
    assert.equal(error.status, 422);
    assert.ok(error.detail.length > 0);
  }
});
