mod common;

use common::*;
use ms_sim::*;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn rate_limit_429_retry_after_and_violation() {
    let cfg = SimConfig {
        throttle: ThrottleLimits {
            requests_per_window: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    let w = consented_world(cfg, 5, 0).await;
    let tok = w.token().await;
    for _ in 0..3 {
        assert_eq!(
            w.graph(&tok, &w.delta_path("inbox"), &[]).await.status(),
            200
        );
    }
    let r = w.graph(&tok, &w.delta_path("inbox"), &[]).await;
    assert_eq!(r.status(), 429);
    let ra: f64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ra >= 1.0);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "TooManyRequests");
    assert!(w.sim.violations().is_empty());
    // Coming back at once breaks the rule.
    assert_eq!(
        w.graph(&tok, &w.delta_path("inbox"), &[]).await.status(),
        429
    );
    let viol = w.sim.violations();
    assert_eq!(viol.len(), 1);
    assert_eq!(viol[0].kind, ViolationKind::RetryAfterIgnored);
    assert_eq!(viol[0].mailbox, Some(w.user.id));
    assert_eq!(viol[0].client_id, Some(w.app.client_id));
}

#[tokio::test]
async fn injected_429_with_fractional_retry_after_respected_is_clean() {
    let w = world().await;
    let tok = w.token().await;
    w.sim
        .set_faults(
            FaultScope::Mailbox("adele.vance@contoso.com".into()),
            FaultSpec {
                throttle: Some(FaultRule::every(2).with_retry_after(0.2)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        w.graph(&tok, &w.delta_path("inbox"), &[]).await.status(),
        200
    );
    let r = w.graph(&tok, &w.delta_path("inbox"), &[]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "0.2");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        w.graph(&tok, &w.delta_path("inbox"), &[]).await.status(),
        200
    );
    assert!(w.sim.violations().is_empty(), "{:?}", w.sim.violations());
    assert_eq!(
        w.sim
            .request_count(Endpoint::GraphDelta, Some("adele.vance@contoso.com")),
        3
    );
}

#[tokio::test]
async fn concurrency_over_4_is_throttled_and_reported() {
    let w = world().await;
    let tok = w.token().await;
    w.sim
        .set_faults(
            FaultScope::Global,
            FaultSpec {
                latency_ms: Some(400),
                ..Default::default()
            },
        )
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..5u64 {
        let http = w.http.clone();
        let url = format!("{}{}", w.sim.graph_url(), w.delta_path("inbox"));
        let tok = tok.clone();
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 30)).await;
            fetch(http.get(url).bearer_auth(tok)).await
        }));
    }
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.unwrap());
    }
    let throttled: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(throttled.len(), 1, "{statuses:?}");
    assert_eq!(throttled[0].1["error"]["code"], "ApplicationThrottled");
    assert_eq!(
        throttled[0].1["error"]["message"],
        "Application is over its MailboxConcurrency limit."
    );
    assert_eq!(w.sim.max_in_flight("adele.vance@contoso.com").unwrap(), 5);
    assert!(
        w.sim
            .violations()
            .iter()
            .any(|v| v.kind == ViolationKind::ConcurrencyExceeded)
    );
}

#[tokio::test]
async fn faults_503_504_truncated_and_reset() {
    let w = world().await;
    let tok = w.token().await;
    let upn = "adele.vance@contoso.com";
    w.sim
        .set_faults(
            FaultScope::Mailbox(upn.into()),
            FaultSpec {
                unavailable: Some(FaultRule::every(1).with_retry_after(2.0)),
                ..Default::default()
            },
        )
        .unwrap();
    let r = w.graph(&tok, &w.delta_path("inbox"), &[]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "2");
    w.sim
        .set_faults(
            FaultScope::Mailbox(upn.into()),
            FaultSpec {
                gateway_timeout: Some(FaultRule::every(1)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        w.graph(&tok, &w.delta_path("inbox"), &[]).await.status(),
        504
    );
    w.sim
        .set_faults(
            FaultScope::Mailbox(upn.into()),
            FaultSpec {
                truncated_json: Some(FaultRule::every(1)),
                ..Default::default()
            },
        )
        .unwrap();
    let r = w.graph(&tok, &w.delta_path("inbox"), &[]).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err());
    w.sim
        .set_faults(
            FaultScope::Mailbox(upn.into()),
            FaultSpec {
                reset_mid_body: Some(FaultRule::every(1)),
                ..Default::default()
            },
        )
        .unwrap();
    let r = w.graph(&tok, &w.delta_path("inbox"), &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "body should fail mid-way");
    w.sim.clear_faults();
    assert_eq!(
        w.graph(&tok, &w.delta_path("inbox"), &[]).await.status(),
        200
    );
}

#[tokio::test]
async fn probability_faults_are_deterministic_per_seed() {
    async fn pattern() -> Vec<u16> {
        let w = world().await;
        let tok = w.token().await;
        w.sim
            .set_faults(
                FaultScope::Global,
                FaultSpec {
                    gateway_timeout: Some(FaultRule::probability(0.5)),
                    ..Default::default()
                },
            )
            .unwrap();
        let mut out = Vec::new();
        for _ in 0..12 {
            out.push(
                w.graph(&tok, &w.delta_path("inbox"), &[])
                    .await
                    .status()
                    .as_u16(),
            );
        }
        out
    }
    let a = pattern().await;
    assert_eq!(a, pattern().await);
    assert!(a.contains(&504) && a.contains(&200), "{a:?}");
}

#[tokio::test]
async fn control_api_over_http() {
    let w = world().await;
    let base = format!("{}/_sim", w.sim.base_url());
    let t: Value = post_json(
        &w,
        &format!("{base}/tenants"),
        &serde_json::json!({"domain": "northwind.com"}),
    )
    .await;
    let tid = t["id"].as_str().unwrap().to_string();
    let u: Value = post_json(
        &w,
        &format!("{base}/tenants/{tid}/users"),
        &serde_json::json!({"user_name": "nina", "global_admin": true, "mailbox": {"inbox": 3, "sentitems": 2}}),
    )
    .await;
    assert_eq!(u["user_principal_name"], "nina@northwind.com");
    let ids: Vec<String> = post_json(
        &w,
        &format!("{base}/users/nina@northwind.com/messages"),
        &serde_json::json!({"folder": "inbox", "count": 2}),
    )
    .await;
    assert_eq!(ids.len(), 2);
    let s = post_status(
        &w,
        &format!("{base}/messages/{}/move", ids[0]),
        &serde_json::json!({"folder": "archive"}),
    )
    .await;
    assert_eq!(s, 200);
    let truth: Vec<Value> = fetch_json(
        w.http
            .get(format!("{base}/users/nina@northwind.com/truth/inbox")),
    )
    .await;
    assert_eq!(truth.len(), 4);
    let s = put_status(
        &w,
        &format!("{base}/faults"),
        &serde_json::json!({"scope": {"scope": "mailbox", "mailbox": "nina@northwind.com"}, "spec": {"throttle": {"rate": {"every_nth": 3}, "retry_after": 0.5}}}),
    )
    .await;
    assert_eq!(s, 200);
    let v: Vec<Value> = fetch_json(w.http.get(format!("{base}/violations"))).await;
    assert!(v.is_empty());
    let c: Vec<Value> = fetch_json(w.http.get(format!("{base}/counters"))).await;
    assert!(c.is_empty() || c[0]["endpoint"].is_string());
    let s = post_status(&w, &format!("{base}/delta/expire"), &serde_json::json!({})).await;
    assert_eq!(s, 200);
    let s = get_status(&w, &format!("{base}/users/nobody@x.com")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn injected_429_without_retry_after() {
    let w = world().await;
    let tok = w.token().await;
    w.sim
        .set_faults(
            FaultScope::Global,
            FaultSpec {
                throttle: Some(FaultRule::every(1).without_retry_after()),
                ..Default::default()
            },
        )
        .unwrap();
    let r = w.graph(&tok, &w.delta_path("inbox"), &[]).await;
    assert_eq!(r.status(), 429);
    assert!(!r.headers().contains_key("retry-after"));
}
