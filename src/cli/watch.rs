//! The `watch`, `submit` and `retry` commands: follow a job with
//! [`Api::follow`] (or every job with some labels, with
//! [`Api::follow_labelled`]), show it with [`Display`], and turn its outcome
//! into an [`Exit`]. Owns the Ctrl-C conversation: with a terminal on stdin
//! it asks whether to cancel the job and waits for the server's answer;
//! without one, or when following several jobs, it detaches at once.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use super::client::{Api, CancelOutcome, ClientError, Job};
use super::display::{final_line, print_line, state_line, Display};
use super::{CreatedArgs, Exit, RetryArgs, ServerUrl, SubmitArgs};

/// `jobcast submit`: starts the job, prints its id (or the job as JSON),
/// and with `--watch` follows it.
pub async fn submit(args: &SubmitArgs) -> Exit {
    let created = &args.created;
    let api = match Api::new(&created.server) {
        Ok(api) => api,
        Err(error) => return client_error(&error),
    };
    let key = created.idempotency_key.as_deref();
    let answer = api.submit(&args.kind, args.params.as_ref(), &args.labels, key).await;
    show_created(&api, answer, created).await
}

/// `jobcast retry`: runs a failed or cancelled job again as a new job,
/// prints the new job's id (or the job as JSON), and with `--watch`
/// follows it.
pub async fn retry(args: &RetryArgs) -> Exit {
    let created = &args.created;
    let api = match Api::new(&created.server) {
        Ok(api) => api,
        Err(error) => return client_error(&error),
    };
    let answer = api.retry(&args.id, created.idempotency_key.as_deref()).await;
    show_created(&api, answer, created).await
}

/// Prints a job just created, and follows it if asked.
async fn show_created(api: &Api, answer: Result<(Job, Value), ClientError>, args: &CreatedArgs) -> Exit {
    let (job, raw) = match answer {
        Ok(created) => created,
        Err(error) => return client_error(&error),
    };
    if args.json {
        print_line(&raw.to_string());
    } else {
        print_line(&job.id);
        // An external kind's token is shown once: keep it off stdout, which
        // scripts read for the id, but do not lose it.
        if let Some(token) = raw.get("worker_token").and_then(Value::as_str) {
            eprintln!("worker token (shown once, pass it to the job's worker): {token}");
        }
    }
    if args.watch {
        follow(api, &job.id).await
    } else {
        Exit::Success
    }
}

/// `jobcast watch`: follows the job until it ends.
pub async fn watch(server: &ServerUrl, id: &str) -> Exit {
    match Api::new(server) {
        Ok(api) => follow(&api, id).await,
        Err(error) => client_error(&error),
    }
}

/// `jobcast watch --label`: follows every job with all of `labels` until
/// each has ended, one line per state, prefixed with the job's id, and each
/// job's final line as it ends; exits by the worst outcome.
pub async fn watch_labelled(server: &ServerUrl, labels: &[(String, String)]) -> Exit {
    let api = match Api::new(server) {
        Ok(api) => api,
        Err(error) => return client_error(&error),
    };
    let mut interrupts = Interrupts::listen();
    let show = |job: &Job| {
        if job.status.is_terminal() {
            print_line(&final_line(job));
        } else {
            print_line(&format!("{} {}", job.id, state_line(job)));
        }
    };
    tokio::select! {
        followed = api.follow_labelled(labels, show) => match followed {
            Ok(jobs) => Exit::for_statuses(jobs.iter().map(|job| job.status)),
            Err(error) => client_error(&error),
        },
        () = interrupts.next() => {
            eprintln!("jobcast: detached from the jobs; they keep running");
            Exit::Interrupted
        }
    }
}

async fn follow(api: &Api, id: &str) -> Exit {
    // Listen for Ctrl-C before the first request, so that it never falls to
    // the default handler once anything has been shown.
    let mut interrupts = Interrupts::listen();
    let mut display = Display::for_stdout();
    let followed = tokio::select! {
        followed = api.follow(id, |job| display.show(job)) => Some(followed),
        () = interrupts.next() => None,
    };
    match followed {
        Some(Ok(job)) => {
            display.finish();
            print_line(&final_line(&job));
            Exit::for_status(job.status)
        }
        Some(Err(error)) => {
            display.finish();
            client_error(&error)
        }
        None => {
            display.interrupt();
            interrupted(api, id, &mut interrupts).await
        }
    }
}

/// Ctrl-C while watching: offer to cancel when someone can answer.
async fn interrupted(api: &Api, id: &str, interrupts: &mut Interrupts) -> Exit {
    if !std::io::stdin().is_terminal() {
        return detached(id);
    }
    let question = format!("Cancel job {id}? [y/N] ");
    let answer = tokio::select! {
        answer = ask(&question) => answer,
        // A second Ctrl-C is a firm "no".
        () = interrupts.next() => None,
    };
    let yes = answer.is_some_and(|answer| matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"));
    if !yes {
        return detached(id);
    }
    eprintln!("Cancelling job {id}…");
    let outcome = tokio::select! {
        outcome = api.cancel(id) => outcome,
        () = interrupts.next() => {
            eprintln!("jobcast: stopped waiting; the cancel request for job {id} was sent");
            return Exit::Interrupted;
        }
    };
    match outcome {
        Ok(CancelOutcome::Cancelled(job)) => {
            print_line(&final_line(&job));
            Exit::for_status(job.status)
        }
        Ok(CancelOutcome::AlreadyEnded(job)) => {
            eprintln!("jobcast: the job {} first", job.status.as_str());
            print_line(&final_line(&job));
            Exit::for_status(job.status)
        }
        Err(error) => client_error(&error),
    }
}

fn detached(id: &str) -> Exit {
    eprintln!("jobcast: detached from job {id}; it keeps running");
    Exit::Interrupted
}

fn client_error(error: &ClientError) -> Exit {
    eprintln!("jobcast: {error}");
    Exit::ClientError
}

/// Asks `question` on stderr and reads one line of stdin; None at its end.
///
/// The line is read on a plain thread rather than Tokio's blocking pool:
/// a read of a terminal cannot be interrupted, and the runtime waits for its
/// blocking pool when it shuts down, so an unanswered prompt would keep the
/// process alive after a second Ctrl-C.
async fn ask(question: &str) -> Option<String> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let (answer, answered) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::stdin().read_line(&mut line);
        let _ = answer.send(matches!(read, Ok(n) if n > 0).then_some(line));
    });
    answered.await.ok().flatten()
}

/// SIGINT (Ctrl-C), registered when created, so none is missed between
/// creating it and waiting on it.
struct Interrupts {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
            if let Err(error) = &signal {
                eprintln!("jobcast: cannot catch Ctrl-C ({error}); it will end the watch without asking");
            }
            Interrupts { signal: signal.ok() }
        }
        #[cfg(not(unix))]
        {
            Interrupts {}
        }
    }

    /// The next Ctrl-C.
    async fn next(&mut self) {
        #[cfg(unix)]
        match &mut self.signal {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
