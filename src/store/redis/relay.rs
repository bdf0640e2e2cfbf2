//! What instances tell each other, over Redis pub/sub: cancel requests
//! (every instance hears them; the one that runs the job acts) and relayed
//! calls with their answers (a call goes to every instance; the one that
//! runs the job answers on the asking instance's own channel). One
//! subscription per instance carries them all. When it is cut, the relay
//! subscribes again; a message sent meanwhile is lost, and its sender finds
//! out by waiting: a cancel's asker waits for the job's end at most the
//! grace period, a call's asker for an answer at most [`CALL_WAIT`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSub};
use redis::{AsyncCommands, Client, Msg, Script};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::{cancel_request_of, key, lock, PREFIX, RETRY_PAUSE};
use crate::jobs::JobId;
use crate::store::{CancelRequestFor, RelayedCall};

/// How long a relayed call waits for the answer of the instance that runs
/// its job.
const CALL_WAIT: Duration = Duration::from_secs(2);

/// This instance's end of the channels.
pub struct Relay {
    commands: ConnectionManager,
    instance: Arc<str>,
    /// The calls this instance asked, by number, until answered.
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    next_call: AtomicU64,
}

/// What the relay hands to this instance's engine.
pub struct Requests {
    pub cancels: mpsc::UnboundedReceiver<CancelRequestFor>,
    pub calls: mpsc::UnboundedReceiver<RelayedCall>,
}

/// Where the listener hands what it hears.
struct Listener {
    client: Client,
    commands: ConnectionManager,
    channels: [String; 3],
    cancels: mpsc::UnboundedSender<CancelRequestFor>,
    calls: mpsc::UnboundedSender<RelayedCall>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
}

/// The channel an instance hears the answers to its calls on.
fn answers_channel(instance: &str) -> String {
    key(&format!("answers:{instance}"))
}

impl Relay {
    /// Subscribes `instance` to the channels (before anyone can ask it
    /// anything: nothing sent after this returns is missed) and starts
    /// listening.
    pub async fn start(
        client: Client,
        commands: ConnectionManager,
        instance: Arc<str>,
    ) -> redis::RedisResult<(Relay, Requests)> {
        let channels = [key("cancel"), key("calls"), answers_channel(&instance)];
        let subscribed = subscribe(&client, &channels).await?;
        let (cancels, cancel_requests) = mpsc::unbounded_channel();
        let (calls, relayed_calls) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(HashMap::new()));
        let listener = Listener {
            client,
            commands: commands.clone(),
            channels,
            cancels,
            calls,
            waiting: waiting.clone(),
        };
        tokio::spawn(listener.listen(subscribed));
        let relay = Relay {
            commands,
            instance,
            waiting,
            next_call: AtomicU64::new(0),
        };
        let requests = Requests {
            cancels: cancel_requests,
            calls: relayed_calls,
        };
        Ok((relay, requests))
    }

    /// Tells every instance that a client asked to cancel job `id`, and
    /// keeps the request in the job's hash for an instance that is taking
    /// the job from the queue right now (`cancel.lua`).
    pub fn ask_to_cancel(&self, id: JobId, by: Option<Arc<str>>) {
        let request = json!({"id": id.to_string(), "by": by.as_deref()}).to_string();
        let mut commands = self.commands.clone();
        tokio::spawn(async move {
            let published: redis::RedisResult<i64> = Script::new(include_str!("cancel.lua"))
                .arg(PREFIX)
                .arg(id.to_string())
                .arg(request)
                .invoke_async(&mut commands)
                .await;
            if let Err(error) = published {
                tracing::warn!(job_id = %id, %error, "could not relay a cancel request");
            }
        });
    }

    /// Sends `call` for job `id` to every instance and waits for the answer
    /// of the one that runs the job, at most [`CALL_WAIT`].
    pub async fn call(&self, id: JobId, call: Value) -> Option<Value> {
        let number = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        lock(&self.waiting).insert(number, answer);
        let message = json!({
            "number": number,
            "from": &*self.instance,
            "id": id.to_string(),
            "call": call,
        })
        .to_string();
        let published: redis::RedisResult<i64> = self.commands.clone().publish(key("calls"), message).await;
        let answer = match published {
            Ok(_) => tokio::time::timeout(CALL_WAIT, answered)
                .await
                .ok()
                .and_then(Result::ok),
            Err(error) => {
                tracing::warn!(job_id = %id, %error, "could not relay a call");
                None
            }
        };
        lock(&self.waiting).remove(&number);
        answer
    }
}

async fn subscribe(client: &Client, channels: &[String]) -> redis::RedisResult<PubSub> {
    let mut subscribed = client.get_async_pubsub().await?;
    subscribed.subscribe(channels).await?;
    Ok(subscribed)
}

impl Listener {
    /// Hands on every message heard, subscribing again when cut off, until
    /// the engine stops taking them.
    async fn listen(self, mut subscribed: PubSub) {
        loop {
            let mut messages = subscribed.into_on_message();
            while let Some(message) = messages.next().await {
                if !self.hand_on(&message) {
                    return;
                }
            }
            tracing::warn!("the channel between instances was cut; subscribing again");
            subscribed = loop {
                tokio::time::sleep(RETRY_PAUSE).await;
                if let Ok(again) = subscribe(&self.client, &self.channels).await {
                    break again;
                }
            };
        }
    }

    /// Hands on one message (a malformed one is dropped); false once the
    /// engine has stopped taking them.
    fn hand_on(&self, message: &Msg) -> bool {
        let Some(body) = message
            .get_payload::<Vec<u8>>()
            .ok()
            .and_then(|payload| serde_json::from_slice::<Value>(&payload).ok())
        else {
            return true;
        };
        let id = || body["id"].as_str()?.parse::<JobId>().ok();
        let channel = message.get_channel_name();
        if channel == self.channels[0] {
            let Some(request) = cancel_request_of(&body) else {
                return true;
            };
            self.cancels.send(request).is_ok()
        } else if channel == self.channels[1] {
            let (Some(id), Some(number), Some(from)) = (id(), body["number"].as_u64(), body["from"].as_str()) else {
                return true;
            };
            let (answer, answered) = oneshot::channel();
            let call = RelayedCall {
                id,
                call: body["call"].clone(),
                answer,
            };
            if self.calls.send(call).is_err() {
                return false;
            }
            let mut commands = self.commands.clone();
            let channel = answers_channel(from);
            tokio::spawn(async move {
                // Only the instance that runs the job answers.
                let Ok(Some(answer)) = answered.await else { return };
                let message = json!({"number": number, "answer": answer}).to_string();
                let published: redis::RedisResult<i64> = commands.publish(channel, message).await;
                if let Err(error) = published {
                    tracing::warn!(job_id = %id, %error, "could not answer a relayed call");
                }
            });
            true
        } else {
            if let Some(number) = body["number"].as_u64() {
                if let Some(waiting) = lock(&self.waiting).remove(&number) {
                    let _ = waiting.send(body["answer"].clone());
                }
            }
            true
        }
    }
}
