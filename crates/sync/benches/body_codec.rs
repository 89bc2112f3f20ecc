//! Which codec stores message bodies: every candidate compresses and decompresses the bodies the
//! simulator serves (fetched through the real Graph client), and the table shows CPU per body
//! and stored bytes against gzip level 6 (what the archive wrote first). The target: the least
//! CPU whose bytes stay within 10 % of gzip-6 (DynamoDB bills writes per KB). Not a test.
//!
//! The `hashLog` and `minMatch` rows change zstd-1's match finder.
//! The `+ dict` rows compress with a 64 KB dictionary trained on another simulator seed's bodies.
//! They share the simulator's word list with the bodies measured, so their bytes flatter what a
//! dictionary would do for real mail; even so they are no faster than `zstd-1 reused`.
//!
//! `cargo bench -p o365-sync-engine --bench body_codec -- [MESSAGES]` (default 2000)

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ms_sim::*;
use o365_domain::connection::AppRegistration;
use o365_domain::ids::{Email, TenantId};
use o365_domain::mailbox::{MailFolder, SyncLink};
use o365_domain::microsoft::{DeltaRequest, MailSource};
use o365_domain::secret::{AppCredential, ClientCredential, Sensitive};
use o365_msgraph::{GraphClient, GraphConfig};
use o365_secrets::LocalSecretStore;

type Codec = (&'static str, fn(&[u8]) -> Vec<u8>, fn(&[u8]) -> Vec<u8>);

fn gzip(level: u32, b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn unzstd(b: &[u8]) -> Vec<u8> {
    zstd::bulk::decompress(b, 8 << 20).unwrap()
}

/// One compression context per thread, kept between bodies (creating one costs more than
/// compressing a 10 KB body at a low level).
fn reused(level: i32, b: &[u8]) -> Vec<u8> {
    thread_local! {
        static CTX: std::cell::RefCell<std::collections::HashMap<i32, zstd::bulk::Compressor<'static>>> = Default::default();
    }
    CTX.with(|c| {
        c.borrow_mut()
            .entry(level)
            .or_insert_with(|| zstd::bulk::Compressor::new(level).unwrap())
            .compress(b)
            .unwrap()
    })
}

const CODECS: &[Codec] = &[
    ("gzip-6 (before)", |b| gzip(6, b), gunzip),
    ("gzip-1", |b| gzip(1, b), gunzip),
    (
        "zstd-(-3)",
        |b| zstd::bulk::compress(b, -3).unwrap(),
        unzstd,
    ),
    ("zstd-1", |b| zstd::bulk::compress(b, 1).unwrap(), unzstd),
    ("zstd-1 reused", |b| reused(1, b), unzstd),
    ("zstd-2 reused", |b| reused(2, b), unzstd),
    ("zstd-(-1) reused", |b| reused(-1, b), unzstd),
    ("zstd-3", |b| zstd::bulk::compress(b, 3).unwrap(), unzstd),
];

/// The bodies one simulator (its own seed) serves for a mailbox of `wanted` messages.
async fn simulator_bodies(seed: u64, wanted: usize) -> Vec<Vec<u8>> {
    let sim = Simulator::start(SimConfig {
        seed,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let ConsentedApp {
        tenant,
        app,
        secret,
    } = sim
        .consented_app("contoso.com", &["Mail.ReadWrite", "User.Read.All"])
        .unwrap();
    let user = sim
        .create_user(
            tenant.id,
            UserSpec {
                user_name: "bench".into(),
                mailbox: Some(MailboxSpec {
                    inbox: wanted as u32,
                    sentitems: 0,
                }),
                ..Default::default()
            },
        )
        .unwrap();
    let cred = AppCredential {
        client_id: app.client_id.to_string(),
        credential: ClientCredential::Secret(Sensitive::new(secret.value.clone())),
    };
    let graph = GraphClient::new(
        GraphConfig {
            authority_url: sim.authority().to_owned(),
            graph_base_url: sim.graph_url(),
            ..Default::default()
        },
        Arc::new(LocalSecretStore::new(cred.clone(), cred, vec![1; 32]).unwrap()),
    );
    let tenant_id = TenantId::parse(&tenant.id.to_string()).unwrap();
    let mailbox = Email::parse(&user.user_principal_name).unwrap();
    let user_id = user.id.to_string();
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut link: Option<SyncLink> = None;
    loop {
        let page = graph
            .delta_page(DeltaRequest {
                tenant: &tenant_id,
                app: AppRegistration::Default,
                mailbox: &mailbox,
                user_id: &user_id,
                folder: MailFolder::Inbox,
                from: link.as_ref(),
                page_size: 100,
                backfill_since: None,
                include_body: true,
                deadline: Instant::now() + Duration::from_secs(60),
            })
            .await
            .unwrap();
        bodies.extend(
            page.messages
                .into_iter()
                .filter_map(|m| m.body.map(|b| b.content.into_bytes())),
        );
        match page.next {
            SyncLink::Delta(_) => break,
            next => link = Some(next),
        }
    }
    bodies
}

#[tokio::main]
async fn main() {
    let wanted: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    // The dictionary learns from another simulator seed than the one measured.
    let training = simulator_bodies(7, 2000).await;
    let dictionary = zstd::dict::from_samples(&training, 64 * 1024).unwrap();
    let bodies = simulator_bodies(SimConfig::default().seed, wanted).await;
    let raw: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "body codec bench: {} simulator bodies, {:.1} KB mean, {:.1} MB in all",
        bodies.len(),
        raw as f64 / bodies.len() as f64 / 1024.0,
        raw as f64 / 1e6
    );
    println!(
        "{:<16} {:>14} {:>14} {:>12} {:>12}  target",
        "codec", "compress µs", "decompress µs", "stored MB", "vs gzip-6"
    );
    let mut baseline = None;
    type Boxed = Box<dyn FnMut(&[u8]) -> Vec<u8>>;
    let mut codecs: Vec<(String, Boxed, Boxed)> = CODECS
        .iter()
        .map(|&(name, c, d)| (name.to_owned(), Box::new(c) as Boxed, Box::new(d) as Boxed))
        .collect();
    for level in [-7, -5, -3, -1, 1, 2] {
        let mut c = zstd::bulk::Compressor::with_dictionary(level, &dictionary).unwrap();
        let mut d = zstd::bulk::Decompressor::with_dictionary(&dictionary).unwrap();
        codecs.push((
            format!("zstd-({level}) + dict"),
            Box::new(move |b| c.compress(b).unwrap()),
            Box::new(move |b| d.decompress(b, 8 << 20).unwrap()),
        ));
    }
    // Match-finder sizes: if the time went to finding matches, these would move it.
    use zstd::zstd_safe::CParameter;
    for (name, parameter) in [
        ("zstd-1 hashLog 12", CParameter::HashLog(12)),
        ("zstd-1 hashLog 16", CParameter::HashLog(16)),
        ("zstd-1 minMatch 4", CParameter::MinMatch(4)),
        ("zstd-1 minMatch 7", CParameter::MinMatch(7)),
    ] {
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        c.set_parameter(parameter).unwrap();
        codecs.push((
            name.to_owned(),
            Box::new(move |b| c.compress(b).unwrap()),
            Box::new(unzstd),
        ));
    }
    for (name, mut compress, mut decompress) in codecs {
        let started = Instant::now();
        let packed: Vec<Vec<u8>> = bodies.iter().map(|b| compress(b)).collect();
        let compress_us = started.elapsed().as_secs_f64() * 1e6 / bodies.len() as f64;
        let started = Instant::now();
        for (p, b) in packed.iter().zip(&bodies) {
            assert_eq!(decompress(p).len(), b.len());
        }
        let decompress_us = started.elapsed().as_secs_f64() * 1e6 / bodies.len() as f64;
        let stored: usize = packed.iter().map(Vec::len).sum();
        let base = *baseline.get_or_insert(stored);
        let ratio = stored as f64 / base as f64;
        println!(
            "{name:<16} {compress_us:>14.1} {decompress_us:>14.1} {:>12.2} {:>11.1}%  bytes ≤ 110 %: {}",
            stored as f64 / 1e6,
            ratio * 100.0,
            if ratio <= 1.10 { "yes" } else { "no" }
        );
    }
}
