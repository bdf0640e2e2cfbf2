//! Several instances on one Redis (CONTRACT.md, "Several instances"): real
//! `redis-server` and `jobcast` processes, started by the tests.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use serde_json::json;
use tokio::process::Child;

use crate::cluster::{free_port, skipped_when_balanced, Persistence, Redis};
use crate::helpers::{assert_problem, id_of, send, signal, start_jobcast, TestApp};

/// A jobcast process on the shared Redis.
struct Instance {
    api: TestApp,
    child: Child,
}

impl Instance {
    async fn start(redis: &Redis, args: &[&str]) -> Instance {
        let (child, api) = start_jobcast(free_port(), &redis.url(), args).await;
        Instance { api, child }
    }

    /// Sends `signal` (as `kill` names it: KILL, STOP, CONT).
    async fn signal(&self, name: &str) {
        signal(&self.child, name).await;
    }
}

#[tokio::test]
async fn a_job_on_one_instance_is_read_and_streamed_whole_on_another() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let (a, b) = (Instance::start(&redis, &[]).await, Instance::start(&redis, &[]).await);
    let job = a
        .api
        .create_demo(json!({"stages": [{"name": "one", "steps": 20}, {"name": "two", "steps": 20}], "step_ms": 5, "delay_ms": 300}))
        .await;
    let id = id_of(&job);
    assert_eq!(
        b.api.get_job(&id).await["id"],
        job["id"],
        "the 202 means every instance knows the job"
    );
    let mut on_a = a.api.subscribe(&id).await;
    let mut on_b = b.api.subscribe(&id).await;
    let (seen_a, seen_b) = (on_a.all().await, on_b.all().await);
    for seen in [&seen_a, &seen_b] {
        assert_eq!(seen[0].event, "snapshot");
        let seqs: Vec<u64> = seen.iter().map(|event| event.seq()).collect();
        assert!(
            seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "every seq once, in order: {seqs:?}"
        );
        assert_eq!(seen.iter().filter(|event| event.is_terminal()).count(), 1);
        assert_eq!(seen.last().unwrap().event, "completed");
    }
    assert_eq!(seen_a.last().unwrap().data, seen_b.last().unwrap().data);
    let ended = b.api.get_job(&id).await;
    assert_eq!(ended, seen_b.last().unwrap().data);
    let listed = b.api.get_json("/v1/jobs").await;
    assert_eq!(listed["jobs"][0], ended);
}

#[tokio::test]
async fn the_all_jobs_stream_of_any_instance_shows_every_job_with_growing_ids() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let (a, b) = (Instance::start(&redis, &[]).await, Instance::start(&redis, &[]).await);
    let mut firehose = b.api.stream("/v1/events", HeaderMap::new()).await;
    let quick = json!({"stages": [{"name": "s", "steps": 2}], "step_ms": 1});
    let on_a = id_of(&a.api.create_demo(quick.clone()).await);
    let on_b = id_of(&b.api.create_demo(quick).await);
    let mut ended = std::collections::BTreeSet::new();
    let mut last_id = 0u64;
    while ended.len() < 2 {
        let event = firehose.next().await.expect("the stream stays open");
        let event_id: u64 = event.id.parse().unwrap();
        assert!(event_id > last_id, "ids strictly increase: {event_id} after {last_id}");
        last_id = event_id;
        if event.is_terminal() {
            ended.insert(event.data["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(ended, [on_a, on_b].into_iter().collect());
}

#[tokio::test]
async fn a_cancel_on_any_instance_stops_the_job_where_it_runs() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let args = ["--cancel-grace", "1s"];
    let (a, b) = (
        Instance::start(&redis, &args).await,
        Instance::start(&redis, &args).await,
    );
    for ignore_cancel in [false, true] {
        let job = a
            .api
            .create_demo(
                json!({"stages": [{"name": "long", "steps": 10_000}], "step_ms": 10, "ignore_cancel": ignore_cancel}),
            )
            .await;
        let id = id_of(&job);
        a.api.wait_for_status(&id, "running").await;
        let mut watching_a = a.api.subscribe(&id).await;
        let asked = tokio::time::Instant::now();
        let (status, cancelled) = b.api.cancel(&id).await;
        assert_eq!(status, 200, "{cancelled}");
        assert_eq!(cancelled["status"], "cancelled");
        let code = if ignore_cancel { "cancel_forced" } else { "cancelled" };
        assert_eq!(cancelled["error"]["code"], code);
        assert!(
            asked.elapsed() < Duration::from_millis(1800),
            "within the grace period: {:?}",
            asked.elapsed()
        );
        let seen = watching_a.all().await;
        assert_eq!(
            seen.last().unwrap().data,
            cancelled,
            "the instance that ran it streams the same end"
        );
        assert_eq!(a.api.get_job(&id).await, cancelled);
    }
}

/// An instance A running a job until something ends it (it takes the job
/// as the only instance), then a second instance B streaming it; answers
/// A, B, the job's id and B's stream, which has seen it running.
async fn job_running_on_a(redis: &Redis, args: &[&str]) -> (Instance, Instance, String, crate::helpers::Sse) {
    let a = Instance::start(redis, args).await;
    let job = a
        .api
        .create_demo(json!({"stages": [{"name": "long", "steps": 100_000}], "step_ms": 10}))
        .await;
    let id = id_of(&job);
    a.api.wait_for_status(&id, "running").await;
    let b = Instance::start(redis, args).await;
    let mut stream = b.api.subscribe(&id).await;
    while stream.next().await.expect("the job runs").data["status"] != "running" {}
    (a, b, id, stream)
}

/// Reads `stream` to its end: the terminal event, checked to be the only
/// one and last.
async fn terminal_of(stream: &mut crate::helpers::Sse) -> crate::helpers::SseEvent {
    let events = stream.all().await;
    assert_eq!(
        events.iter().filter(|event| event.is_terminal()).count(),
        1,
        "{events:?}"
    );
    events.last().unwrap().clone()
}

#[tokio::test]
async fn the_jobs_of_a_killed_instance_end_instance_lost_within_the_lease() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let (a, b, id, mut on_b) = job_running_on_a(&redis, &["--lease", "1s"]).await;
    let killed = tokio::time::Instant::now();
    a.signal("KILL").await;
    let ended = terminal_of(&mut on_b).await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_millis(1500),
        "instance_lost within 1.5 leases: {took:?}"
    );
    assert_eq!(ended.event, "failed");
    assert_eq!(ended.data["error"]["code"], "instance_lost");
    assert_eq!(ended.data["error"]["retryable"], true);
    assert_eq!(ended.data["error"]["stage"], "long");
    assert_eq!(ended.data["stages"][0]["status"], "failed");
    assert_eq!(b.api.get_job(&id).await, ended.data);
}

#[tokio::test]
async fn the_lost_jobs_of_a_killed_instance_are_forgotten_after_their_retention() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let (a, b, id, mut on_b) = job_running_on_a(&redis, &["--lease", "1s", "--retention", "1s"]).await;
    a.signal("KILL").await;
    assert_eq!(terminal_of(&mut on_b).await.data["error"]["code"], "instance_lost");
    forgotten_on(&b, &id).await;
}

#[tokio::test]
async fn the_ended_jobs_of_a_killed_instance_are_forgotten_after_their_retention() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let args = ["--lease", "1s", "--retention", "2s"];
    let a = Instance::start(&redis, &args).await;
    let id = id_of(
        &a.api
            .create_demo(json!({"stages": [{"name": "s", "steps": 2}], "step_ms": 1}))
            .await,
    );
    assert_eq!(a.api.get_job_when_terminal(&id).await["status"], "completed");
    a.signal("KILL").await;
    let b = Instance::start(&redis, &args).await;
    assert_eq!(b.api.get_job(&id).await["status"], "completed", "kept at first");
    forgotten_on(&b, &id).await;
}

/// Waits until `instance` answers 404 for job `id`: it was forgotten.
async fn forgotten_on(instance: &Instance, id: &str) {
    let api = &instance.api;
    api.eventually("the job to be forgotten", || async {
        crate::helpers::send(api.client.get(api.url(&format!("/v1/jobs/{id}"))))
            .await
            .status()
            == 404
    })
    .await;
}

#[tokio::test]
async fn an_instance_paused_past_its_lease_is_fenced_off() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let (a, b, id, mut on_b) = job_running_on_a(&redis, &["--lease", "1s"]).await;
    a.signal("STOP").await;
    let ended = terminal_of(&mut on_b).await;
    assert_eq!(ended.data["error"]["code"], "instance_lost");
    a.signal("CONT").await;
    // Its connections to Redis timed out while it was stopped: it is ready
    // again once its lease is renewed, as a balancer would see.
    ready_is(&a, 200).await;
    // A works again (its lease renewed), and has had time to try writing
    // the old job's next states: none of them is taken.
    let later = a
        .api
        .create_demo(json!({"stages": [{"name": "s", "steps": 20}], "step_ms": 10}))
        .await;
    b.api.get_job_when_terminal(&id_of(&later)).await;
    assert_eq!(b.api.get_job(&id).await, ended.data);
    assert_eq!(a.api.get_job(&id).await, ended.data);
    // Told so by its refused writes, A stops the task of the job it lost.
    a.api
        .eventually("the paused instance to stop the job it lost", || async {
            a.api.metric("jobcast_jobs_running").await == 0.0
        })
        .await;
}

#[tokio::test]
async fn queued_jobs_form_one_queue_that_any_instance_with_a_free_slot_takes_in_order() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let args = ["--max-running", "1"];
    let (a, b) = (
        Instance::start(&redis, &args).await,
        Instance::start(&redis, &args).await,
    );
    let long = json!({"stages": [{"name": "long", "steps": 100_000}], "step_ms": 10});
    // A's one slot is taken; the next job created on A runs on B.
    let first = id_of(&a.api.create_demo(long.clone()).await);
    a.api.wait_for_status(&first, "running").await;
    let second = id_of(&a.api.create_demo(long).await);
    b.api.wait_for_status(&second, "running").await;
    // Every slot is busy: these wait, whichever instance admitted them.
    let quick = json!({"stages": [{"name": "s", "steps": 3}], "step_ms": 5});
    let mut queued = Vec::new();
    for instance in [&b, &a, &b, &a] {
        let job = instance.api.create_demo(quick.clone()).await;
        assert_eq!(job["status"], "queued");
        queued.push(id_of(&job));
    }
    // One of them, cancelled from the other instance, never runs.
    let (status, cancelled) = a.api.cancel(&queued[2]).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    assert!(cancelled["started_at"].is_null());
    let _ = b.api.cancel(&first).await;
    let _ = a.api.cancel(&second).await;
    let time = |job: &serde_json::Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(job[field].as_str().unwrap()).unwrap()
    };
    let mut ended = Vec::new();
    for id in [&queued[0], &queued[1], &queued[3]] {
        let job = b.api.get_job_when_terminal(id).await;
        assert_eq!(job["status"], "completed", "{job}");
        ended.push(job);
    }
    // The two freed slots, one on each instance, took the two oldest jobs
    // (in either order: two instances start them at about the same time);
    // the newest waited for one of them to finish.
    let first_finish = time(&ended[0], "finished_at").min(time(&ended[1], "finished_at"));
    assert!(
        time(&ended[2], "started_at") >= first_finish,
        "taken oldest first: {ended:?}"
    );
    assert_eq!(b.api.get_job(&queued[2]).await, cancelled);
}

/// Waits until `/readyz` on `instance` answers `status`.
async fn ready_is(instance: &Instance, status: u16) {
    let api = &instance.api;
    api.eventually(&format!("/readyz to answer {status}"), || async {
        let ready = api.client.get(api.url("/readyz")).send().await;
        ready.is_ok_and(|response| response.status() == status)
    })
    .await;
}

#[tokio::test]
async fn a_redis_restart_makes_instances_unready_and_streams_catch_up_after() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let mut redis = Redis::start(Persistence::AofAlways).await;
    let a = Instance::start(&redis, &[]).await;
    let job = a
        .api
        .create_demo(json!({"stages": [{"name": "work", "steps": 150}], "step_ms": 20}))
        .await;
    let id = id_of(&job);
    let mut stream = a.api.subscribe(&id).await;
    let mut seen = vec![stream.next().await.unwrap()];
    redis.kill().await;
    ready_is(&a, 503).await;
    let refused = crate::helpers::send(a.api.client.post(a.api.url("/v1/jobs")).json(&json!({"kind": "demo"}))).await;
    assert!(refused.headers().contains_key("retry-after"));
    crate::helpers::assert_problem(refused, 503, "creating while Redis is away").await;
    redis.restart().await;
    ready_is(&a, 200).await;
    seen.extend(stream.all().await);
    let seqs: Vec<u64> = seen.iter().map(|event| event.seq()).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[1] > pair[0]),
        "never a seq twice or backwards: {seqs:?}"
    );
    assert_eq!(seen.iter().filter(|event| event.is_terminal()).count(), 1);
    assert_eq!(seen.last().unwrap().event, "completed");
    assert_eq!(a.api.get_job(&id).await, seen.last().unwrap().data);
}

/// A POST of `body` to a worker endpoint of `instance`, with `token`
/// (None: no Authorization): the status and the JSON answer.
async fn worker_call(
    instance: &Instance,
    id: &str,
    action: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut request = instance
        .api
        .client
        .post(instance.api.url(&format!("/v1/jobs/{id}/{action}")))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn an_external_worker_may_call_any_instance() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let kinds = redis.dir().join("kinds.toml");
    std::fs::write(
        &kinds,
        r#"
        [kinds.ingest]
        stages = [{ name = "download", weight = 1 }, { name = "index", weight = 3 }]
        [kinds.ingest.external]
        heartbeat_timeout = "30s"
        "#,
    )
    .unwrap();
    let args = ["--config", kinds.to_str().unwrap(), "--cancel-grace", "10s"];
    let (a, b) = (
        Instance::start(&redis, &args).await,
        Instance::start(&redis, &args).await,
    );
    let create = |instance: &Instance| {
        let api = TestApp::client_of(instance.api.base.clone());
        async move {
            let created = api.create_job(&json!({"kind": "ingest"})).await;
            (id_of(&created), created["worker_token"].as_str().unwrap().to_owned())
        }
    };

    // A job of A, driven through B to its end.
    let (id, token) = create(&a).await;
    let mut watching_a = a.api.subscribe(&id).await;
    let progress = json!({"stage": "download", "current": 3, "total": 10});
    assert_eq!(worker_call(&b, &id, "heartbeat", None, progress.clone()).await.0, 401);
    let wrong = format!("jcw_{}", "0".repeat(64));
    assert_eq!(
        worker_call(&b, &id, "heartbeat", Some(&wrong), progress.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        a.api.get_job(&id).await["status"],
        "queued",
        "a refused call changes nothing"
    );
    assert_eq!(
        worker_call(&b, &id, "heartbeat", Some(&token), progress).await,
        (200, json!({"cancel_requested": false}))
    );
    let (status, job) = worker_call(
        &b,
        &id,
        "heartbeat",
        Some(&token),
        json!({"stage": "download", "curent": 4}),
    )
    .await;
    assert_eq!(status, 422, "the body is checked where the call arrives: {job}");
    let (status, completed) = worker_call(&b, &id, "complete", Some(&token), json!({"result": {"rows": 7}})).await;
    assert_eq!(status, 200, "{completed}");
    assert_eq!(
        (completed["status"].as_str(), &completed["result"]),
        (Some("completed"), &json!({"rows": 7}))
    );
    let seen = watching_a.all().await;
    assert!(seen.iter().any(|event| event.data["stage"]["current"] == 3), "{seen:?}");
    assert_eq!(seen.last().unwrap().data, completed, "A streams the end B answered");
    let (status, again) = worker_call(&b, &id, "complete", Some(&token), json!({})).await;
    assert_eq!((status, &again["job"]), (409, &completed), "{again}");

    // A cancel asked on A, acknowledged by the worker's heartbeat on B.
    let (id, token) = create(&a).await;
    assert_eq!(worker_call(&b, &id, "heartbeat", Some(&token), json!({})).await.0, 200);
    a.api.wait_for_status(&id, "running").await;
    let cancel = tokio::spawn({
        let api = TestApp::client_of(a.api.base.clone());
        let id = id.clone();
        async move { api.cancel(&id).await }
    });
    a.api.wait_for_status(&id, "cancelling").await;
    assert_eq!(
        worker_call(&b, &id, "heartbeat", Some(&token), json!({})).await,
        (200, json!({"cancel_requested": true}))
    );
    let (status, cancelled) = cancel.await.unwrap();
    assert_eq!(
        (status, &cancelled["status"]),
        (200, &json!("cancelled")),
        "{cancelled}"
    );
    let (status, _) = worker_call(&b, &id, "fail", Some(&token), json!({"message": "too late"})).await;
    assert_eq!(status, 409);
}

/// Every event of one stream, checked: each `seq` above the one before,
/// one terminal event, and it is the last.
fn assert_one_rising_stream(events: &[crate::helpers::SseEvent]) {
    let seqs: Vec<u64> = events.iter().map(|event| event.seq()).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[1] > pair[0]),
        "never a seq twice or backwards: {seqs:?}"
    );
    assert_eq!(events.iter().filter(|event| event.is_terminal()).count(), 1, "{seqs:?}");
    assert!(events.last().unwrap().is_terminal());
}

#[tokio::test]
async fn redis_faults_under_load_lose_no_terminal_and_repeat_no_seq() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let args = ["--cancel-grace", "2s"];
    let (a, b) = (
        Instance::start(&redis, &args).await,
        Instance::start(&redis, &args).await,
    );
    let instances = [&a, &b];
    // Short jobs that end during the faults, and long ones cancelled after.
    let mut jobs = Vec::new();
    for index in 0..24 {
        let steps = if index % 4 == 0 { 100_000 } else { 150 };
        let params = json!({"stages": [{"name": "work", "steps": steps}], "step_ms": 5 + index % 3});
        let created = instances[index % 2].api.create_demo(params).await;
        let id = id_of(&created);
        let watchers = [a.api.subscribe(&id).await, b.api.subscribe(&id).await];
        let watched = watchers.map(|mut stream| tokio::spawn(async move { stream.all().await }));
        jobs.push((id, steps, watched));
    }
    let faults: [&[&str]; 5] = [
        &["CLIENT", "KILL", "TYPE", "pubsub"],
        &["CLIENT", "PAUSE", "300", "ALL"],
        &["DEBUG", "SLEEP", "0.3"],
        &["CLIENT", "KILL", "TYPE", "pubsub"],
        &["CLIENT", "PAUSE", "200", "WRITE"],
    ];
    for fault in faults {
        redis.command(fault).await;
    }
    // Cancels asked of either instance, right after the channel between
    // them was cut once more: each reaches the job wherever it runs.
    redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    for (index, (id, steps, _)) in jobs.iter().enumerate() {
        if *steps == 100_000 {
            let (status, cancelled) = instances[index % 2].api.cancel(id).await;
            assert_eq!(
                (status, &cancelled["status"]),
                (200, &json!("cancelled")),
                "{cancelled}"
            );
        }
    }
    for (id, _, watched) in jobs {
        let mut ends = Vec::new();
        for watcher in watched {
            let events = watcher.await.unwrap();
            assert_one_rising_stream(&events);
            ends.push(events.last().unwrap().data.clone());
        }
        assert_eq!(ends[0], ends[1], "both instances stream the same end");
        assert_eq!(a.api.get_job(&id).await, ends[0]);
        assert_eq!(b.api.get_job(&id).await, ends[0]);
    }
}

#[tokio::test]
async fn a_thousand_cancel_and_complete_races_across_instances_agree_everywhere() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::AofAlways).await;
    let args = ["--max-running", "64"];
    let (a, b) = (
        Instance::start(&redis, &args).await,
        Instance::start(&redis, &args).await,
    );
    let (a, b) = (&a, &b);
    let races = futures_util::stream::iter(0..1000u64).map(|index| {
        let (creator, canceller) = if index % 2 == 0 { (a, b) } else { (b, a) };
        async move {
            // A job of 1 to 4 steps of 0 to 3 ms, cancelled from the other
            // instance after 0 to 4 ms: either outcome may win.
            let params = json!({"stages": [{"name": "s", "steps": 1 + index % 4}], "step_ms": index % 4});
            let id = id_of(&creator.api.create_demo(params).await);
            tokio::time::sleep(Duration::from_millis(index * 7 % 5)).await;
            let (status, answer) = canceller.api.cancel(&id).await;
            let end = match status {
                200 => answer,
                409 => answer["job"].clone(),
                other => panic!("cancel answered {other}: {answer}"),
            };
            assert_eq!(
                end["status"],
                if status == 200 { "cancelled" } else { "completed" },
                "{end}"
            );
            for instance in [a, b] {
                assert_eq!(
                    instance.api.get_job(&id).await,
                    end,
                    "every instance has the end the cancel answered"
                );
            }
            status
        }
    });
    let statuses: Vec<u16> = races.buffer_unordered(32).collect().await;
    let cancelled = statuses.iter().filter(|&&status| status == 200).count();
    eprintln!(
        "1,000 races: {cancelled} cancelled, {} completed first",
        statuses.len() - cancelled
    );
}

#[tokio::test]
async fn a_job_far_ahead_of_what_redis_stored_is_held_back_until_redis_answers() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    let redis = Redis::start(Persistence::None).await;
    let a = Instance::start(&redis, &["--publish-interval", "0"]).await;
    // Counts as fast as it can, each count a state.
    let job = a
        .api
        .create_demo(json!({"stages": [{"name": "count", "steps": 1_000_000}], "step_ms": 0}))
        .await;
    let id = id_of(&job);
    let published = || a.api.metric("jobcast_events_published_total");
    let at_start = published().await;
    a.api
        .eventually("the job to publish", || async {
            published().await > at_start + 2_000.0
        })
        .await;
    for _ in 0..2 {
        // Redis answers nobody for two seconds: what the writer holds
        // meanwhile is bounded by MAX_UNSTORED_STATES (500) a job, not by
        // the time (unbounded, it published 13,000 states a second here).
        // The bound leaves room for the states published between the reads
        // of the count and the sleep's start and end.
        let before = published().await;
        redis.command(&["DEBUG", "SLEEP", "2"]).await;
        let during = published().await - before;
        assert!(during <= 4_000.0, "{during} states published while Redis slept");
        a.api
            .eventually("the job to go on once Redis answers", || async {
                published().await > before + during + 2_000.0
            })
            .await;
    }
    let (status, cancelled) = a.api.cancel(&id).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled");
}

#[tokio::test]
async fn an_instance_whose_redis_came_back_without_its_changes_says_it_must_be_restarted() {
    if skipped_when_balanced("starts its own Redis and jobcast processes") {
        return;
    }
    // No AOF: a restart of Redis keeps nothing.
    let mut redis = Redis::start(Persistence::None).await;
    let a = Instance::start(&redis, &["--lease", "1s"]).await;
    let job = a
        .api
        .create_demo(json!({"stages": [{"name": "s", "steps": 1}], "step_ms": 0}))
        .await;
    a.api.get_job_when_terminal(&id_of(&job)).await;
    let health = || async { send(a.api.client.get(a.api.url("/healthz"))).await };
    assert_eq!(health().await.status(), 200);

    redis.restart().await;
    a.api
        .eventually("/healthz to answer 503", || async { health().await.status() == 503 })
        .await;
    let problem = assert_problem(health().await, 503, "/healthz after Redis lost its changes").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("Redis has lost changes") && detail.contains("restart this instance"),
        "{detail}"
    );
    let ready = send(a.api.client.get(a.api.url("/readyz"))).await;
    assert_problem(ready, 503, "/readyz after Redis lost its changes").await;
    let refused = send(
        a.api
            .client
            .post(a.api.url("/v1/jobs"))
            .json(&json!({"kind": "demo", "params": {"stages": [{"name": "s", "steps": 1}]}})),
    )
    .await;
    assert_eq!(
        refused.status(),
        503,
        "no job is created on a mirror Redis no longer matches"
    );
}
