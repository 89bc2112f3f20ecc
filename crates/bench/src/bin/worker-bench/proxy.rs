//! A counting proxy in front of DynamoDB: every request the worker (or the fan-out) makes is
//! forwarded as it is and counted by operation (`X-Amz-Target`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;

#[derive(Clone, Default)]
pub struct Counts(Arc<Mutex<BTreeMap<String, u64>>>);

impl Counts {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }

    pub fn since(&self, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        self.snapshot()
            .into_iter()
            .map(|(k, n)| {
                let d = n - before.get(&k).copied().unwrap_or(0);
                (k, d)
            })
            .filter(|(_, d)| *d > 0)
            .collect()
    }
}

#[derive(Clone)]
struct Upstream {
    url: String,
    http: reqwest::Client,
    counts: Counts,
}

async fn forward(
    State(up): State<Upstream>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    if let Some(op) = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
    {
        *up.counts
            .0
            .lock()
            .unwrap()
            .entry(op.to_owned())
            .or_default() += 1;
    }
    let mut request = up.http.post(format!("{}{}", up.url, uri.path()));
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.body(body).send().await {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let mut out = HeaderMap::new();
            if let Some(t) = resp.headers().get("content-type") {
                out.insert("content-type", t.clone());
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            (status, out, bytes)
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            HeaderMap::new(),
            Bytes::from(e.to_string()),
        ),
    }
}

/// Serves the proxy; returns its endpoint and the counts.
pub async fn start(upstream: &str) -> (String, Counts) {
    let counts = Counts::default();
    let state = Upstream {
        url: upstream.trim_end_matches('/').to_owned(),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        counts: counts.clone(),
    };
    let router = Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), counts)
}
