//! A job's stream under load: a thousand subscribers each get the whole
//! stream, and a slow subscriber is resynchronised (rule 2) without holding
//! back the fast ones beside it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobcast::{Config, JobContext, Kind};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_each_see_increasing_seqs_and_one_terminal_event() {
    const SUBSCRIBERS: usize = 1000;
    let gate = Arc::new(Notify::new());
    let app = TestApp::spawn_with_kinds(test_config(), vec![gated(gate.clone())]).await;
    let id = id_of(
        &app.create("gated", json!({ "big": 0, "big_bytes": 0, "steps": 50, "step_ms": 5 }))
            .await,
    );
    let url = app.url(&format!("/v1/jobs/{id}/events"));

    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let (client, url) = (app.client.clone(), url.clone());
        subscribers.push(tokio::spawn(async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            // Raw reading: a thousand JSON parsers would measure the test, not the server.
            let mut stream = Sse::new(response);
            let mut events = Vec::new();
            while let Some(block) = stream.next_block().await {
                if block.text.starts_with("event:") {
                    events.push((block.event().to_owned(), block.id(), 0));
                }
            }
            events
        }));
    }
    app.eventually("every subscriber is connected", || async {
        app.metric("jobcast_streams_open").await >= SUBSCRIBERS as f64
    })
    .await;
    gate.notify_one();

    let mut ended = 0;
    let mut last_seqs = HashSet::new();
    for subscriber in subscribers {
        let events = subscriber.await.unwrap();
        assert_well_formed_raw(&events);
        assert_eq!(events.last().unwrap().0, "completed");
        last_seqs.insert(events.last().unwrap().1);
        ended += 1;
    }
    assert_eq!(ended, SUBSCRIBERS, "no subscriber was lost");
    let job = app.get_job(&id).await;
    assert_eq!(
        last_seqs,
        HashSet::from([job["seq"].as_u64().unwrap()]),
        "all end on the job's last state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_neither_delays_fast_ones_nor_sees_a_seq_twice() {
    const FAST: usize = 3;
    const BIG: usize = 2;
    let gate = Arc::new(Notify::new());
    let app = TestApp::spawn_with_kinds(
        Config {
            // Every 2 ms step is a state: the small steps overrun the job's
            // channel of 32 within a tenth of a second.
            publish_interval: Duration::from_millis(1),
            ..test_config()
        },
        vec![gated(gate.clone())],
    )
    .await;
    // Loopback sockets buffer megabytes, enough for every small state the
    // job will ever publish. Two 6 MB states fill them first, so that the
    // slow subscriber's stream stalls before the small steps begin.
    let id = id_of(
        &app.create(
            "gated",
            json!({ "big": BIG, "big_bytes": 6_000_000, "steps": 150, "step_ms": 2 }),
        )
        .await,
    );
    let path = format!("/v1/jobs/{id}/events");
    let resyncs_before = app.metric("jobcast_lag_resyncs_total").await;
    let mut slow = app.stream(&path, HeaderMap::new()).await;
    assert!(slow.next_block().await.unwrap().text.starts_with("retry: "));
    let snapshot = slow.next_block().await.unwrap();
    let mut slow_events = vec![(
        snapshot.event().to_owned(),
        snapshot.id(),
        digest(snapshot.field("data").unwrap()),
    )];
    let (got_big, mut all_got_big) = tokio::sync::mpsc::channel(FAST);
    let mut fast = Vec::new();
    for _ in 0..FAST {
        let mut stream = app.stream(&path, HeaderMap::new()).await;
        let got_big = got_big.clone();
        fast.push(tokio::spawn(async move {
            let mut events = Vec::new();
            let mut big = 0;
            while let Some(block) = stream.next_block().await {
                if block.text.starts_with("event:") {
                    events.push((
                        block.event().to_owned(),
                        block.id(),
                        digest(block.field("data").unwrap()),
                    ));
                }
                if block.text.len() > 6_000_000 {
                    big += 1;
                    if big == BIG {
                        got_big.send(()).await.unwrap();
                    }
                }
            }
            events
        }));
    }

    gate.notify_one();
    for _ in 0..FAST {
        tokio::time::timeout(WAIT, all_got_big.recv()).await.unwrap();
    }
    let small_steps_began = Instant::now();
    gate.notify_one();
    // The fast subscribers finish while the slow one, its stream stalled
    // behind the big states, has read nothing since its snapshot.
    let mut fast_events = Vec::new();
    for stream in fast {
        let events = tokio::time::timeout(WAIT, stream).await.unwrap().unwrap();
        assert_well_formed_raw(&events);
        fast_events.push(events);
    }
    let fast_took = small_steps_began.elapsed();
    assert!(
        fast_took < Duration::from_secs(4),
        "the fast subscribers took {fast_took:?}, as long as the slow one takes to read 5 events"
    );
    // One event a second.
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(block) = slow.next_block().await else {
            break;
        };
        slow_events.push((
            block.event().to_owned(),
            block.id(),
            digest(block.field("data").unwrap()),
        ));
        assert!(
            slow_events.len() < 20,
            "the slow subscriber never lagged: the sockets held every state (raise big_bytes)"
        );
    }

    assert_well_formed_raw(&slow_events);
    let states: HashMap<u64, u64> = fast_events[0].iter().map(|(_, seq, hash)| (*seq, *hash)).collect();
    for (event, seq, hash) in &slow_events {
        if let Some(fast_hash) = states.get(seq) {
            assert_eq!(
                hash, fast_hash,
                "seq {seq} ({event}) has the same data for every subscriber"
            );
        }
    }
    assert_eq!(slow_events.last().unwrap().0, "completed");
    assert_eq!(slow_events.last().unwrap().1, fast_events[0].last().unwrap().1);
    assert!(
        slow_events.len() < fast_events[0].len(),
        "the slow subscriber skipped states ({} of {})",
        slow_events.len(),
        fast_events[0].len()
    );
    let resyncs = app.metric("jobcast_lag_resyncs_total").await;
    assert!(resyncs > resyncs_before, "the slow subscriber was resynchronised");
}

/// Checks the raw (event, id, digest) triples of one job stream: ids
/// strictly increase, one terminal event, last.
fn assert_well_formed_raw(events: &[(String, u64, u64)]) {
    let seqs: Vec<(&str, u64)> = events.iter().map(|(event, id, _)| (event.as_str(), *id)).collect();
    assert_rising_to_one_end(&seqs);
}

fn digest(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[derive(Deserialize)]
struct GatedParams {
    /// States with a message of `big_bytes` bytes, published first.
    big: u64,
    big_bytes: usize,
    /// Then this many small steps, `step_ms` apart.
    steps: u64,
    step_ms: u64,
}

/// A kind for the scale tests: one stage; it waits for `gate`, publishes
/// `big` very large states, waits for `gate` again if it did, then takes
/// `steps` small steps.
fn gated(gate: Arc<Notify>) -> Kind {
    Kind::new("gated", move |ctx: JobContext, params: GatedParams| {
        let gate = gate.clone();
        async move {
            ctx.declare_stages([("work", 1.0)])?;
            ctx.start_stage("work", Some(params.big + params.steps), Some("steps"))?;
            gate.notified().await;
            for step in 1..=params.big {
                let letter = char::from(b'a' + (step % 26) as u8);
                ctx.report(step, &letter.to_string().repeat(params.big_bytes));
                ctx.flush();
            }
            if params.big > 0 {
                gate.notified().await;
            }
            for step in 1..=params.steps {
                tokio::time::sleep(Duration::from_millis(params.step_ms)).await;
                ctx.report(params.big + step, &format!("step {step}"));
            }
            ctx.flush();
            Ok(json!({ "steps": params.big + params.steps }))
        }
    })
}
