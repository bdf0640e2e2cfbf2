//! What the authentication tests share: a server with API keys for two
//! users, a service and an admin, and a JWT secret; a client per principal;
//! JWTs minted as an issuer would.

#![allow(dead_code)]

use std::path::PathBuf;

use jobcast::auth::Role;
use jobcast::config::Secret;
use jobcast::Config;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

use crate::helpers::*;

pub const ALICE_KEY: &str = "jck_alice_4f1d2c3b5a69788796a5b4c3d2e1f0";
pub const BOB_KEY: &str = "jck_bob_0f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const SERVICE_KEY: &str = "jck_service_a5b4c3d2e1f00f1e2d3c4b5a697887";
pub const ADMIN_KEY: &str = "jck_admin_9788796a5b4c3d2e1f00f1e2d3c4b5a6";
pub const JWT_SECRET: &str = "the-jwt-secret-of-this-test-server-0123456789";
pub const TICKET_SECRET: &str = "the-ticket-secret-of-this-test-server-0123";

/// The hex SHA-256 of `key`, as a keys file lists it.
pub fn sha256_hex(key: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A file removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("jobcast-{}-{name}", uuid::Uuid::new_v4()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The keys file of the test principals.
pub fn keys_file() -> TempFile {
    let entries = [
        ("alice", "user", ALICE_KEY),
        ("bob", "user", BOB_KEY),
        ("exporter", "service", SERVICE_KEY),
        ("root", "admin", ADMIN_KEY),
    ];
    let text: String = entries
        .iter()
        .map(|(subject, role, key)| {
            format!(
                "[[key]]\nsubject = \"{subject}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n\n",
                sha256_hex(key)
            )
        })
        .collect();
    TempFile::new("keys.toml", &text)
}

/// `config` with the test keys, the JWT secret and the ticket secret.
pub fn with_auth(config: Config, keys: &TempFile) -> Config {
    Config {
        auth_keys: Some(keys.0.clone()),
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        ticket_secret: Some(Secret::new(TICKET_SECRET)),
        ..config
    }
}

/// Seconds since the epoch, `offset` from now.
pub fn now_plus(offset: i64) -> i64 {
    chrono::Utc::now().timestamp() + offset
}

/// An HS256 JWT of `claims`, signed with `secret`.
pub fn mint_with(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A JWT the test server accepts, for `subject` with `role`, valid for a minute.
pub fn mint(subject: &str, role: Role) -> String {
    mint_with(
        &json!({"sub": subject, "role": role.as_str(), "exp": now_plus(60)}),
        JWT_SECRET,
    )
}

/// A server with authentication on, and its keys file.
pub struct AuthApp {
    pub app: TestApp,
    pub _keys: TempFile,
}

impl AuthApp {
    pub async fn spawn() -> AuthApp {
        Self::spawn_with(test_config()).await
    }

    pub async fn spawn_with(config: Config) -> AuthApp {
        let keys = keys_file();
        AuthApp {
            app: TestApp::spawn_with(with_auth(config, &keys)).await,
            _keys: keys,
        }
    }

    /// A client sending `credential` as a bearer token.
    pub fn caller(&self, credential: &str) -> Caller {
        let headers = HeaderMap::from_iter([(
            AUTHORIZATION,
            HeaderValue::try_from(format!("Bearer {credential}")).unwrap(),
        )]);
        Caller {
            base: self.app.base.clone(),
            client: self.app.client_with(headers),
        }
    }

    /// A client with no credential.
    pub fn anonymous(&self) -> Caller {
        Caller {
            base: self.app.base.clone(),
            client: self.app.client_with(HeaderMap::new()),
        }
    }
}

/// One principal's client.
pub struct Caller {
    pub base: String,
    pub client: reqwest::Client,
}

impl Caller {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        send(self.client.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        send(self.client.post(self.url(path))).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        send(self.client.post(self.url(path)).json(body)).await
    }

    /// Creates a job from `body`, asserting 202.
    pub async fn create_job(&self, body: &Value) -> Value {
        let response = self.post_json("/v1/jobs", body).await;
        assert_eq!(response.status(), 202, "creating {body}");
        response.json().await.unwrap()
    }

    /// Creates a demo job with `params`.
    pub async fn create_demo(&self, params: Value) -> Value {
        self.create_job(&json!({"kind": "demo", "params": params})).await
    }

    /// GET `path` as JSON, asserting 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Opens the stream at `path`, asserting a 200 stream.
    pub async fn stream(&self, path: &str) -> Sse {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        Sse::new(response)
    }
}
