//! Stream tickets: every job carries `stream_url`, whose ticket alone reads
//! that job (GET and its stream, resume included) and nothing else; forged,
//! altered or cut tickets are 401s, a real one used elsewhere a 403; a
//! ticket works on any server with the same secret, so across restarts and
//! instances.

use jobcast::config::Secret;
use jobcast::Config;
use serde_json::{json, Value};

use crate::auth_common::*;
use crate::helpers::*;

fn ticket_of(job: &Value) -> String {
    let url = job["stream_url"].as_str().unwrap();
    url.split_once("?ticket=")
        .expect("a ticket in the stream_url")
        .1
        .to_owned()
}

#[tokio::test]
async fn the_stream_url_alone_follows_its_job_to_the_end_and_resumes() {
    let server = AuthApp::spawn().await;
    let job = server
        .caller(ALICE_KEY)
        .create_demo(json!({"step_ms": 5, "stages": [{"name": "a", "weight": 1, "steps": 20}]}))
        .await;
    let url = job["stream_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("/v1/jobs/{}/events?ticket=", id_of(&job))),
        "{url}"
    );
    let anonymous = server.anonymous();
    let events = anonymous.stream(url).await.all().await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "completed");
    for event in &events {
        assert_eq!(event.data["stream_url"], url, "every event carries the same stream_url");
        assert_eq!(event.data["owner"], "alice");
    }
    let resumed = send(
        anonymous
            .client
            .get(anonymous.url(url))
            .header("last-event-id", &last.id),
    )
    .await;
    assert_eq!(resumed.status(), 204, "resume after the terminal event");
    let middle = &events[events.len() / 2];
    let mut rest = anonymous.stream(&format!("{url}&last_event_id={}", middle.id)).await;
    assert!(rest.next().await.unwrap().seq() > middle.seq());
    let now = anonymous
        .get_ok(&format!("/v1/jobs/{}?ticket={}", id_of(&job), ticket_of(&job)))
        .await;
    assert_eq!(now["status"], "completed");
    let spelled = format!("/v1/jobs/{}?ticket={}", id_of(&job).to_uppercase(), ticket_of(&job));
    assert_eq!(
        anonymous.get_ok(&spelled).await["id"],
        job["id"],
        "the id however spelled"
    );
    let polled = anonymous
        .get_ok(&format!(
            "/v1/jobs/{}?ticket={}&wait_seconds=1&after_seq=1",
            id_of(&job),
            ticket_of(&job)
        ))
        .await;
    assert_eq!(polled["id"], job["id"]);
}

#[tokio::test]
async fn a_ticket_reads_its_job_only() {
    let server = AuthApp::spawn().await;
    let alice = server.caller(ALICE_KEY);
    let job = alice.create_demo(json!({"delay_ms": 60_000})).await;
    let other = alice.create_demo(json!({"delay_ms": 60_000})).await;
    let (id, ticket) = (id_of(&job), ticket_of(&job));
    let anonymous = server.anonymous();
    for path in [
        format!("/v1/jobs/{}?ticket={ticket}", id_of(&other)),
        format!("/v1/jobs/{}/events?ticket={ticket}", id_of(&other)),
        format!("/v1/jobs/{UNKNOWN_ID}/events?ticket={ticket}"),
        format!("/v1/jobs?ticket={ticket}"),
        format!("/v1/events?ticket={ticket}"),
        format!("/v1/kinds?ticket={ticket}"),
        format!("/metrics?ticket={ticket}"),
    ] {
        assert_problem(anonymous.get(&path).await, 403, &path).await;
    }
    for action in ["cancel", "retry"] {
        let path = format!("/v1/jobs/{id}/{action}?ticket={ticket}");
        assert_problem(anonymous.post(&path).await, 403, &path).await;
    }
    let create = send(
        anonymous
            .client
            .post(anonymous.url(&format!("/v1/jobs?ticket={ticket}")))
            .json(&json!({"kind": "demo"})),
    )
    .await;
    assert_problem(create, 403, "create with a ticket").await;
    assert_eq!(alice.get_ok(&format!("/v1/jobs/{id}")).await["status"], "running");
}

#[tokio::test]
async fn forged_altered_and_cut_tickets_are_401s() {
    let server = AuthApp::spawn().await;
    let job = server.caller(ALICE_KEY).create_demo(json!({"delay_ms": 60_000})).await;
    let (id, ticket) = (id_of(&job), ticket_of(&job));
    let mut altered = ticket.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let mut other_id = ticket.clone().into_bytes();
    other_id[3] = if other_id[3] == b'A' { b'B' } else { b'A' };
    let other_id = String::from_utf8(other_id).unwrap();
    let forged = "A".repeat(ticket.len());
    let anonymous = server.anonymous();
    for (what, bad) in [
        ("altered signature", altered),
        ("altered id", other_id),
        ("truncated", ticket[..ticket.len() - 2].to_owned()),
        ("extended", format!("{ticket}AA")),
        ("garbage", forged),
        ("empty", String::new()),
        ("not base64", "%%%".to_owned()),
    ] {
        for path in [
            format!("/v1/jobs/{id}?ticket={bad}"),
            format!("/v1/jobs/{id}/events?ticket={bad}"),
        ] {
            let response = anonymous.get(&path).await;
            assert!(response.headers().contains_key("www-authenticate"), "{what}");
            assert_problem(response, 401, what).await;
        }
    }
}

#[tokio::test]
async fn a_ticket_is_valid_on_every_server_sharing_the_secret() {
    let first = AuthApp::spawn().await;
    let job = first.caller(ALICE_KEY).create_demo(json!({"delay_ms": 60_000})).await;
    let path = job["stream_url"].as_str().unwrap().to_owned();
    // Another instance (or this one after a restart) with the same secret
    // accepts the ticket: it answers for the job, which it does not hold,
    // rather than refusing the ticket.
    let second = AuthApp::spawn().await;
    assert_problem(second.anonymous().get(&path).await, 404, "the same secret").await;
    let keys = keys_file();
    let other = TestApp::spawn_with(Config {
        ticket_secret: Some(Secret::new("another-ticket-secret-0123456789abcdef")),
        ..with_auth(test_config(), &keys)
    })
    .await;
    let response = send(other.client.get(other.url(&path))).await;
    assert_problem(response, 401, "another secret").await;
    // Without --ticket-secret, the key derives from the JWT secret: the same
    // on every instance that shares it.
    let derived = |keys: &TempFile| Config {
        ticket_secret: None,
        ..with_auth(test_config(), keys)
    };
    let (one, two) = (
        TestApp::spawn_with(derived(&keys)).await,
        TestApp::spawn_with(derived(&keys)).await,
    );
    let client = one.client_with(reqwest::header::HeaderMap::from_iter([(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ALICE_KEY}").parse().unwrap(),
    )]));
    let created: Value = send(
        client
            .post(one.url("/v1/jobs"))
            .json(&json!({"kind": "demo", "params": {"delay_ms": 60_000}})),
    )
    .await
    .json()
    .await
    .unwrap();
    let url = created["stream_url"].as_str().unwrap();
    assert_eq!(send(one.client.get(one.url(url))).await.status(), 200);
    assert_problem(send(two.client.get(two.url(url))).await, 404, "derived on both").await;
}
