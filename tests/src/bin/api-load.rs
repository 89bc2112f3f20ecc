//! Load on the user-management API: N concurrent clients for D seconds against a running
//! embedded default (`scripts/api-load` starts one). Prints requests, errors, throughput, p50
//! and p99; exits non-zero on any error. With ADD_USERS, that many users are first added to the
//! demo org (through the API, as an admin adds them), so the same screens are measured on a
//! large org.
//!
//! Usage: api-load BASE_URL [CLIENTS=200] [SECONDS=30] [ADD_USERS]

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let clients: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(200);
    let seconds: u64 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(30);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let token: serde_json::Value = http
        .get(format!(
            "{base}/_local/token?org=demo&email=admin@contoso.com"
        ))
        .send()
        .await
        .expect("the embedded default answers")
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    if let Some(users) = args.get(4).and_then(|v| v.parse::<usize>().ok()) {
        grow_org(&http, &base, &token, users).await;
    }
    // What the front end's Connection Settings and User Management tabs load.
    let paths = [
        "/v1/integration",
        "/v1/users?limit=50",
        "/v1/me",
        "/v1/users/adele.vance@contoso.com",
        "/v1/audit?limit=20",
    ];
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = client;
            while Instant::now() < deadline {
                let path = paths[i % paths.len()];
                i += 1;
                let t = Instant::now();
                match http
                    .get(format!("{base}{path}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                    }
                    Ok(r) => {
                        errors += 1;
                        eprintln!("{path}: {}", r.status());
                    }
                    Err(e) => {
                        errors += 1;
                        eprintln!("{path}: {e}");
                    }
                }
            }
            (latencies, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, e) = r.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "api-load: clients={clients} seconds={seconds} requests={} errors={errors} throughput={:.0}/s p50={:.1}ms p99={:.1}ms max={:.1}ms",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    if errors > 0 {
        std::process::exit(1);
    }
}

/// Adds `users` users to the demo org (20 at a time, as fast as the API takes them).
async fn grow_org(http: &reqwest::Client, base: &str, token: &str, users: usize) {
    let started = Instant::now();
    let missing: Vec<usize> = (0..users).collect();
    for chunk in missing.chunks(20) {
        let mut adds = tokio::task::JoinSet::new();
        for i in chunk {
            let (http, base, token) = (http.clone(), base.to_owned(), token.to_owned());
            let body = serde_json::json!({"email": format!("load{i:05}@contoso.com"), "display_name": format!("Load {i}"), "role": "member"});
            adds.spawn(async move {
                let r = http
                    .post(format!("{base}/v1/users"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT,
                    "adding a user: {}",
                    r.status()
                );
            });
        }
        while adds.join_next().await.is_some() {}
    }
    println!(
        "api-load: org grown by {} users in {:.1} s",
        missing.len(),
        started.elapsed().as_secs_f64()
    );
}
