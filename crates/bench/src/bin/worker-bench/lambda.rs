//! The worker binary run the way Lambda runs it: exec'd with the address of a Runtime API (a
//! stand-in served here) that hands it one event per `GET …/invocation/next` and takes its
//! answer. The process's CPU time and peak RSS are read from `/proc`.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<String, String>>>>>;

#[derive(Clone)]
struct RuntimeApi {
    next: Arc<tokio::sync::Mutex<mpsc::Receiver<(String, String)>>>,
    pending: Pending,
}

async fn next(State(api): State<RuntimeApi>) -> impl IntoResponse {
    let Some((id, body)) = api.next.lock().await.recv().await else {
        return (StatusCode::GONE, HeaderMap::new(), String::new());
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + 900_000;
    let mut headers = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        headers.insert(k, HeaderValue::from_str(&v).expect("header value"));
    };
    set("lambda-runtime-aws-request-id", id);
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:sync-worker".into(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000".into(),
    );
    (StatusCode::OK, headers, body)
}

async fn answered(
    State(api): State<RuntimeApi>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    if let Some(tx) = api.pending.lock().unwrap().remove(&id) {
        let _ = tx.send(Ok(body));
    }
    StatusCode::ACCEPTED
}

async fn failed(State(api): State<RuntimeApi>, Path(id): Path<String>, body: String) -> StatusCode {
    if let Some(tx) = api.pending.lock().unwrap().remove(&id) {
        let _ = tx.send(Err(body));
    }
    StatusCode::ACCEPTED
}

async fn init_failed(body: String) -> StatusCode {
    eprintln!("worker-bench: the function failed to start: {body}");
    StatusCode::ACCEPTED
}

/// A running function process and the Runtime API it polls.
pub struct Function {
    child: Child,
    events: mpsc::Sender<(String, String)>,
    pending: Pending,
    clock_ticks: f64,
}

impl Function {
    pub async fn start(binary: &str, env: &[(String, String)], log: &std::path::Path) -> Self {
        let (events, rx) = mpsc::channel(1);
        let pending: Pending = Arc::default();
        let api = RuntimeApi {
            next: Arc::new(tokio::sync::Mutex::new(rx)),
            pending: pending.clone(),
        };
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(answered),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(failed))
            .route("/2018-06-01/runtime/init/error", post(init_failed))
            .with_state(api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let log = std::fs::File::create(log).expect("the worker's log file");
        let child = Command::new(binary)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let clock_ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0);
        Self {
            child,
            events,
            pending,
            clock_ticks,
        }
    }

    /// One invocation: the event in, the function's answer out.
    pub async fn invoke(&self, event: &serde_json::Value) -> Result<serde_json::Value, String> {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id.clone(), tx);
        self.events
            .send((id, event.to_string()))
            .await
            .map_err(|_| "the Runtime API stopped".to_owned())?;
        let answer = rx.await.map_err(|_| "no answer".to_owned())??;
        serde_json::from_str(&answer).map_err(|e| format!("{e}: {answer}"))
    }

    /// User + system CPU seconds of the process so far (all threads).
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at "state" (field 3).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime is field 14, stime 15: indexes 11 and 12 after the name.
        (ticks(11) + ticks(12)) / self.clock_ticks
    }

    /// Peak resident set size so far, in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
