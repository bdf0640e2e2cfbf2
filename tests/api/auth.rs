//! Credentials: API keys and JWTs let principals in, anything else is a
//! 401 with `WWW-Authenticate: Bearer` (never a 500); the public endpoints
//! stay public; roles decide `owner`, `/metrics` and `cancelled_by`.

use jobcast::auth::Role;
use jobcast::Config;
use reqwest::header::WWW_AUTHENTICATE;
use serde_json::{json, Value};

use crate::auth_common::*;
use crate::cluster::deployment_is_balanced;
use crate::helpers::*;

async fn assert_unauthenticated(response: reqwest::Response, what: &str) {
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|value| value.to_str().unwrap().to_owned());
    assert_problem(response, 401, what).await;
    assert!(
        challenge.as_deref().is_some_and(|value| value.starts_with("Bearer")),
        "{what}: {challenge:?}"
    );
}

#[tokio::test]
async fn every_v1_path_needs_a_credential_and_the_probes_and_dashboard_do_not() {
    let server = AuthApp::spawn().await;
    let anonymous = server.anonymous();
    for path in [
        "/v1/jobs",
        "/v1/events",
        "/v1/kinds",
        "/metrics",
        &format!("/v1/jobs/{UNKNOWN_ID}"),
        &format!("/v1/jobs/{UNKNOWN_ID}/events"),
    ] {
        assert_unauthenticated(anonymous.get(path).await, path).await;
    }
    for path in [
        "/v1/jobs",
        &format!("/v1/jobs/{UNKNOWN_ID}/cancel"),
        &format!("/v1/jobs/{UNKNOWN_ID}/retry"),
        "/v1/session",
    ] {
        assert_unauthenticated(anonymous.post(path).await, path).await;
    }
    for path in ["/healthz", "/readyz", "/openapi.yaml", "/", "/ui/style.css"] {
        assert_eq!(anonymous.get(path).await.status(), 200, "{path}");
    }
    // External workers keep their job's token: no principal needed to be told it is wrong.
    let heartbeat = anonymous.post(&format!("/v1/jobs/{UNKNOWN_ID}/heartbeat")).await;
    assert_eq!(heartbeat.status(), 404);
}

#[tokio::test]
async fn api_keys_and_jwts_name_their_principal_and_its_jobs_owner() {
    let server = AuthApp::spawn().await;
    let by_key = server.caller(ALICE_KEY).create_demo(json!({"step_ms": 0})).await;
    assert_job_shape(&by_key);
    assert_eq!(by_key["owner"], "alice");
    let jwt = mint("carol", Role::User);
    let by_jwt = server.caller(&jwt).create_demo(json!({"step_ms": 0})).await;
    assert_eq!(by_jwt["owner"], "carol");
    // The role claim defaults to user.
    let plain = mint_with(&json!({"sub": "dave", "exp": now_plus(60)}), JWT_SECRET);
    let dave = server.caller(&plain);
    assert_eq!(dave.create_demo(json!({})).await["owner"], "dave");
    assert_eq!(dave.get("/metrics").await.status(), 403);
    // A token that expired within the 60 s of allowed clock skew still counts.
    let skewed = mint_with(&json!({"sub": "erin", "exp": now_plus(-30)}), JWT_SECRET);
    assert_eq!(server.caller(&skewed).get("/v1/jobs").await.status(), 200);
}

#[tokio::test]
async fn bad_jwts_are_401s_never_500s() {
    let server = AuthApp::spawn_with(Config {
        jwt_issuer: Some("https://issuer.example".to_owned()),
        jwt_audience: Some("jobcast".to_owned()),
        ..test_config()
    })
    .await;
    let good = json!({"sub": "carol", "exp": now_plus(60), "iss": "https://issuer.example", "aud": "jobcast"});
    assert_eq!(
        server
            .caller(&mint_with(&good, JWT_SECRET))
            .get("/v1/jobs")
            .await
            .status(),
        200
    );
    let with = |changes: Value| {
        let mut claims = good.clone();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        mint_with(&claims, JWT_SECRET)
    };
    let unsigned = {
        use base64::Engine;
        let encode = |value: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
        format!("{}.{}.", encode(&json!({"alg": "none", "typ": "JWT"})), encode(&good))
    };
    let bad = [
        ("malformed", "not.a.jwt".to_owned()),
        ("garbage segments", "eyJ.eyJ.sig".to_owned()),
        ("expired", with(json!({"exp": now_plus(-120)}))),
        ("not yet valid", with(json!({"nbf": now_plus(120)}))),
        ("no exp", with(json!({"exp": null}))),
        ("no sub", with(json!({"sub": null}))),
        ("wrong issuer", with(json!({"iss": "https://evil.example"}))),
        ("wrong audience", with(json!({"aud": "another-service"}))),
        ("alg none", unsigned),
        (
            "wrong key",
            mint_with(&good, "another-secret-that-is-long-enough-0123456"),
        ),
        ("exp of the wrong type", with(json!({"exp": "tomorrow"}))),
        ("nbf of the wrong type", with(json!({"nbf": "now"}))),
        ("sub of the wrong type", with(json!({"sub": 42}))),
        ("role of the wrong type", with(json!({"role": 1}))),
        ("unknown role", with(json!({"role": "superuser"}))),
        ("empty sub", with(json!({"sub": ""}))),
    ];
    for (what, token) in bad {
        assert_unauthenticated(server.caller(&token).get("/v1/jobs").await, what).await;
    }
}

#[tokio::test]
async fn jwts_signed_with_an_es256_key_are_checked_with_its_public_half() {
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let public = TempFile::new("jwt.pub.pem", &key_pair.public_key_pem());
    let keys = keys_file();
    let config = Config {
        jwt_public_key: Some(public.0.clone()),
        ..with_auth(test_config(), &keys)
    };
    let server = AuthApp {
        app: TestApp::spawn_with(config).await,
        _keys: keys,
    };
    let claims = json!({"sub": "frank", "role": "service", "exp": now_plus(60)});
    let private = jsonwebtoken::EncodingKey::from_ec_pem(key_pair.serialize_pem().as_bytes()).unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &private,
    )
    .unwrap();
    assert_eq!(server.caller(&token).get("/v1/jobs").await.status(), 200);
    // The public key used as an HMAC secret is no key at all.
    let confused = mint_with(&claims, &key_pair.public_key_pem());
    assert_unauthenticated(
        server.caller(&confused).get("/v1/jobs").await,
        "HS256 with the public key",
    )
    .await;
    let other = rcgen::KeyPair::generate().unwrap();
    let other = jsonwebtoken::EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &other,
    )
    .unwrap();
    assert_unauthenticated(server.caller(&forged).get("/v1/jobs").await, "another key").await;
}

#[tokio::test]
async fn wrong_keys_of_any_length_and_huge_headers_are_refused_cleanly() {
    let server = AuthApp::spawn().await;
    let near_misses = [
        String::new(),
        "x".to_owned(),
        ALICE_KEY[..ALICE_KEY.len() - 1].to_owned(),
        format!("{ALICE_KEY}x"),
        ALICE_KEY.to_uppercase(),
        sha256_hex(ALICE_KEY),
        "k".repeat(600),
        "k".repeat(7_000),
    ];
    for key in &near_misses {
        assert_unauthenticated(
            server.caller(key).get("/v1/jobs").await,
            &format!("{:.12} ({} bytes)", key, key.len()),
        )
        .await;
    }
    let anonymous = server.anonymous();
    for header in ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Token abc", ALICE_KEY] {
        let response = send(
            anonymous
                .client
                .get(anonymous.url("/v1/jobs"))
                .header("authorization", header),
        )
        .await;
        assert_unauthenticated(response, header).await;
    }
    // nginx itself refuses a request with two Authorization headers (400)
    // before any instance sees it.
    if !deployment_is_balanced() {
        let twice = send(
            anonymous
                .client
                .get(anonymous.url("/v1/jobs"))
                .header("authorization", format!("Bearer {ALICE_KEY}"))
                .header("authorization", format!("Bearer {BOB_KEY}")),
        )
        .await;
        assert_unauthenticated(twice, "two Authorization headers").await;
    }
    let huge = send(
        anonymous
            .client
            .get(anonymous.url("/v1/jobs"))
            .bearer_auth("h".repeat(9000)),
    )
    .await;
    assert_eq!(huge.status(), 431, "a head over the limit");
    assert_eq!(
        server.caller(ALICE_KEY).get("/v1/jobs").await.status(),
        200,
        "the server is fine"
    );
}

#[tokio::test]
async fn a_key_is_checked_in_the_same_time_whether_it_exists_or_not() {
    // Constant time is the lookup's design (hash, then compare every stored
    // hash in constant time); this checks the answer's time gives nothing
    // away at the scale a client can measure: the medians of many tries of a
    // right key and of a wrong one are within a millisecond. Both ask for
    // /metrics, which answers each with a short problem (403 and 401).
    let server = AuthApp::spawn().await;
    let right = server.caller(ALICE_KEY);
    let wrong = server.caller("jck_alice_4f1d2c3b5a69788796a5b4c3d2e1f1");
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..200 {
        for (index, caller) in [&right, &wrong].into_iter().enumerate() {
            let started = std::time::Instant::now();
            caller.get("/metrics").await;
            times[index].push(started.elapsed());
        }
    }
    let median = |times: &mut Vec<std::time::Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (right, wrong) = (median(&mut times[0]), median(&mut times[1]));
    assert!(
        right.abs_diff(wrong) < std::time::Duration::from_millis(1),
        "{right:?} against {wrong:?}"
    );
}

#[tokio::test]
async fn users_cannot_name_an_owner_and_services_can() {
    let server = AuthApp::spawn().await;
    let body = json!({"kind": "demo", "params": {"step_ms": 0}, "owner": "bob"});
    let refused = server.caller(ALICE_KEY).post_json("/v1/jobs", &body).await;
    assert_problem(refused, 403, "a user naming an owner").await;
    let for_bob = server.caller(SERVICE_KEY).create_job(&body).await;
    assert_eq!(for_bob["owner"], "bob");
    assert_eq!(
        server
            .caller(BOB_KEY)
            .get_ok(&format!("/v1/jobs/{}", id_of(&for_bob)))
            .await["id"],
        for_bob["id"]
    );
    let own = server.caller(SERVICE_KEY).create_demo(json!({"step_ms": 0})).await;
    assert_eq!(own["owner"], "exporter");
    let by_admin = server
        .caller(ADMIN_KEY)
        .create_job(&json!({"kind": "demo", "owner": "alice"}))
        .await;
    assert_eq!(by_admin["owner"], "alice");
    let empty = server
        .caller(SERVICE_KEY)
        .post_json("/v1/jobs", &json!({"kind": "demo", "owner": ""}))
        .await;
    assert_problem(empty, 422, "an empty owner").await;
}

#[tokio::test]
async fn only_admins_read_the_metrics() {
    let server = AuthApp::spawn().await;
    for key in [ALICE_KEY, SERVICE_KEY] {
        assert_problem(server.caller(key).get("/metrics").await, 403, "a non-admin on /metrics").await;
    }
    assert_eq!(server.caller(ADMIN_KEY).get("/metrics").await.status(), 200);
    assert_eq!(
        server.caller(&mint("ops", Role::Admin)).get("/metrics").await.status(),
        200
    );
}

#[tokio::test]
async fn a_cancelled_job_names_who_cancelled_it() {
    let server = AuthApp::spawn().await;
    let alice = server.caller(ALICE_KEY);
    let job = alice.create_demo(json!({"delay_ms": 60_000})).await;
    let cancelled: Value = alice
        .post(&format!("/v1/jobs/{}/cancel", id_of(&job)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["error"]["cancelled_by"], "alice");
    let bobs = server
        .caller(SERVICE_KEY)
        .create_job(&json!({"kind": "demo", "params": {"delay_ms": 60_000}, "owner": "bob"}))
        .await;
    let by_service: Value = server
        .caller(SERVICE_KEY)
        .post(&format!("/v1/jobs/{}/cancel", id_of(&bobs)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_service["error"]["cancelled_by"], "exporter");
    assert_eq!(by_service["owner"], "bob");
    // A failure carries no cancelled_by.
    let failing = alice.create_demo(json!({"step_ms": 0, "fail_at": "parsing"})).await;
    let events = alice
        .stream(&format!("/v1/jobs/{}/events", id_of(&failing)))
        .await
        .all()
        .await;
    let failed = events.last().unwrap().data.clone();
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"].get("cancelled_by").is_none(), "{failed}");
}

#[tokio::test]
async fn without_authentication_jobs_have_no_owner_and_plain_stream_urls() {
    let app = TestApp::spawn().await;
    let job = app.create_demo(json!({"delay_ms": 60_000})).await;
    assert_eq!(job["owner"], Value::Null);
    assert_eq!(job["stream_url"], format!("/v1/jobs/{}/events", id_of(&job)));
    let (status, cancelled) = app.cancel(&id_of(&job)).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["error"]["cancelled_by"], Value::Null);
    assert!(cancelled["error"].as_object().unwrap().contains_key("cancelled_by"));
    let named = app.create_job(&json!({"kind": "demo", "owner": "alice"})).await;
    assert_eq!(named["owner"], Value::Null, "no owners without authentication");
}

#[tokio::test]
async fn settings_that_cannot_work_stop_the_server_with_one_line() {
    let keys = keys_file();
    let keys_path = keys.0.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--auth-keys", "/nonexistent/keys.toml"], "keys file"),
        (&["--auth-keys", keys_path], "--ticket-secret"),
        (&["--jwt-secret", "short"], "at least 32 bytes"),
        (
            &[
                "--auth-keys",
                keys_path,
                "--ticket-secret",
                TICKET_SECRET,
                "--cors-origin",
                "*",
            ],
            "--cors-origin",
        ),
        (&["--listen", "0.0.0.0:0"], "--allow-anonymous"),
    ];
    for (args, expected) in cases {
        let mut args = args.to_vec();
        if !args.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        let (code, stderr) = jobcast_exit(&args, &[]).await;
        assert_ne!(code, Some(0), "{args:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_retry_keeps_the_old_jobs_owner_whoever_asks() {
    let server = AuthApp::spawn().await;
    let alice = server.caller(ALICE_KEY);
    let job = alice.create_demo(json!({"delay_ms": 60_000})).await;
    let id = id_of(&job);
    assert_eq!(alice.post(&format!("/v1/jobs/{id}/cancel")).await.status(), 200);
    let by_service = server.caller(SERVICE_KEY).post(&format!("/v1/jobs/{id}/retry")).await;
    assert_eq!(by_service.status(), 202);
    let retried: Value = by_service.json().await.unwrap();
    assert_eq!(retried["owner"], "alice");
    assert_eq!(retried["retry_of"], id.as_str());
    assert_eq!(
        alice.get_ok(&format!("/v1/jobs/{}", id_of(&retried))).await["owner"],
        "alice"
    );
}

#[tokio::test]
async fn external_workers_keep_calling_with_their_jobs_token() {
    let keys = keys_file();
    let kinds = "[kinds.ingest]\ndescription = \"in a worker\"\n[kinds.ingest.external]\n";
    let app = TestApp::spawn_with_kinds_file(with_auth(test_config(), &keys), kinds, std::path::Path::new(".")).await;
    let server = AuthApp { app, _keys: keys };
    let job = server.caller(ALICE_KEY).create_job(&json!({"kind": "ingest"})).await;
    let (id, token) = (id_of(&job), job["worker_token"].as_str().unwrap().to_owned());
    let worker = server.caller(&token);
    assert_eq!(worker.post(&format!("/v1/jobs/{id}/heartbeat")).await.status(), 200);
    // The worker token is no principal's credential.
    assert_unauthenticated(worker.get(&format!("/v1/jobs/{id}")).await, "a worker token on GET").await;
    assert_problem(
        server.caller(ALICE_KEY).post(&format!("/v1/jobs/{id}/heartbeat")).await,
        403,
        "a key as worker token",
    )
    .await;
    let completed = worker
        .post_json(&format!("/v1/jobs/{id}/complete"), &json!({"result": 1}))
        .await;
    assert_eq!(completed.status(), 200);
    let done = server.caller(ALICE_KEY).get_ok(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (done["status"].as_str(), done["owner"].as_str()),
        (Some("completed"), Some("alice"))
    );
}
