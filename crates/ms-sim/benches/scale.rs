//! Scale bench: N mailboxes x M messages, every message paged over HTTP, reporting
//! messages/s and the process's peak RSS (VmHWM). Server and client share this process,
//! so the RSS covers both.
//!
//! cargo bench -p ms-sim --bench scale -- [--mailboxes 1000] [--inbox 500] [--sent 500]
//!     [--page 100] [--workers 4] [--no-body]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ms_sim::http_client::request;
use ms_sim::*;
use serde_json::Value;

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let mut mailboxes = 1000u32;
    let mut inbox = 500u32;
    let mut sent = 500u32;
    let mut page = 100u32;
    let mut workers = 4usize;
    let mut body = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        match a.as_str() {
            "--mailboxes" => mailboxes = v() as u32,
            "--inbox" => inbox = v() as u32,
            "--sent" => sent = v() as u32,
            "--page" => page = v() as u32,
            "--workers" => workers = v() as usize,
            "--no-body" => body = false,
            _ => {} // cargo bench passes --bench
        }
    }
    let cfg = SimConfig {
        max_page_size: page.max(1000),
        ..Default::default()
    };
    let sim = Simulator::start(cfg).await.expect("start");
    let t0 = Instant::now();
    let tenant = sim
        .create_tenant(TenantSpec {
            domain: "scale.example.com".into(),
            ..Default::default()
        })
        .unwrap();
    let app = sim
        .create_app(AppSpec {
            display_name: "bench".into(),
            permissions: vec!["Mail.Read".into(), "User.Read.All".into()],
            ..Default::default()
        })
        .unwrap();
    let secret = sim
        .add_secret(
            app.client_id,
            time::OffsetDateTime::now_utc() + time::Duration::days(1),
        )
        .unwrap();
    sim.grant_consent(tenant.id, app.client_id).unwrap();
    let mut users = Vec::new();
    for i in 0..mailboxes {
        let u = sim
            .create_user(
                tenant.id,
                UserSpec {
                    user_name: format!("user{i:05}"),
                    mailbox: Some(MailboxSpec {
                        inbox,
                        sentitems: sent,
                    }),
                    ..Default::default()
                },
            )
            .unwrap();
        users.push(u.id);
    }
    println!(
        "setup: {mailboxes} mailboxes x ({inbox} inbox + {sent} sentitems) in {:?}, RSS peak so far {:.1} MB",
        t0.elapsed(),
        peak_rss_mb()
    );

    let form = format!(
        "client_id={}&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&grant_type=client_credentials&client_secret={}",
        app.client_id,
        secret.value.replace('~', "%7E")
    );
    let r = request(
        "POST",
        &sim.token_url(&tenant.id.to_string()),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes()),
    )
    .await
    .unwrap();
    let tok: Value = serde_json::from_slice(&r.body).unwrap();
    let auth = format!("Bearer {}", tok["access_token"].as_str().unwrap());
    let select = if body {
        "id,internetMessageId,conversationId,subject,from,sender,toRecipients,ccRecipients,bccRecipients,replyTo,receivedDateTime,sentDateTime,lastModifiedDateTime,bodyPreview,body,hasAttachments,isDraft,isRead,parentFolderId,changeKey,categories,importance,webLink"
    } else {
        "id,internetMessageId,conversationId,subject,from,toRecipients,receivedDateTime,lastModifiedDateTime,changeKey,isRead,parentFolderId"
    };
    let prefer = format!("odata.maxpagesize={page}, IdType=\"ImmutableId\"");
    let users = Arc::new(users);
    let msgs = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let reqs = Arc::new(AtomicU64::new(0));
    let t1 = Instant::now();
    let mut tasks = Vec::new();
    for wkr in 0..workers {
        let (users, msgs, bytes, reqs) = (users.clone(), msgs.clone(), bytes.clone(), reqs.clone());
        let (graph, auth, prefer) = (sim.graph_url(), auth.clone(), prefer.clone());
        tasks.push(tokio::spawn(async move {
            for (i, u) in users.iter().enumerate() {
                if i % workers != wkr {
                    continue;
                }
                for folder in ["inbox", "sentitems"] {
                    let mut url = format!(
                        "{graph}/users/{u}/mailFolders/{folder}/messages/delta?$select={select}"
                    );
                    loop {
                        let r = request(
                            "GET",
                            &url,
                            &[("authorization", &auth), ("prefer", &prefer)],
                            None,
                        )
                        .await
                        .expect("request");
                        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                        reqs.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(r.body.len() as u64, Ordering::Relaxed);
                        let v: Value = serde_json::from_slice(&r.body).expect("json");
                        msgs.fetch_add(
                            v["value"].as_array().map(|a| a.len()).unwrap_or(0) as u64,
                            Ordering::Relaxed,
                        );
                        match v["@odata.nextLink"].as_str() {
                            Some(n) => url = n.to_string(),
                            None => break,
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t1.elapsed().as_secs_f64();
    let n = msgs.load(Ordering::Relaxed);
    assert_eq!(
        n,
        u64::from(mailboxes) * u64::from(inbox + sent),
        "every message paged"
    );
    println!(
        "paged {n} messages in {} requests, {:.2} GB of JSON, in {secs:.1} s: {:.0} messages/s, {:.0} MB/s",
        reqs.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed) as f64 / 1e9,
        n as f64 / secs,
        bytes.load(Ordering::Relaxed) as f64 / 1e6 / secs
    );
    println!("peak RSS (VmHWM): {:.1} MB", peak_rss_mb());
    sim.shutdown().await;
}
