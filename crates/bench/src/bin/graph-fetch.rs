//! The msgraph-sdk peer's job done by the worker's own Graph client: fetch and parse delta
//! pages of one folder, nothing stored. worker-bench runs it beside the Python peers with the
//! same arguments (a JSON object) and reads the same answer: `{"messages", "cpu_seconds"}`,
//! the CPU counted from after set-up, as the peers count it from after their imports (the
//! one token request the client makes is inside it; the peers are handed theirs).
//!
//! `GRAPH_FETCH_CLIENT_SECRET=… graph-fetch '{"graph_url", "authority_url", "client_id",
//! "tenant", "mailbox", "user_id", "folder", "page_size", "messages"}'`

use std::sync::Arc;
use std::time::{Duration, Instant};

use o365_domain::connection::AppRegistration;
use o365_domain::ids::{Email, TenantId};
use o365_domain::mailbox::{MailFolder, SyncLink};
use o365_domain::microsoft::{DeltaRequest, MailSource};
use o365_domain::secret::{AppCredential, ClientCredential, Sensitive};
use o365_msgraph::{GraphClient, GraphConfig};
use o365_secrets::LocalSecretStore;

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn text<'a>(args: &'a serde_json::Value, name: &str) -> &'a str {
    args[name]
        .as_str()
        .unwrap_or_else(|| panic!("graph-fetch: \"{name}\" is missing"))
}

fn main() {
    let raw = std::env::args()
        .nth(1)
        .expect("graph-fetch: one JSON argument");
    let args: serde_json::Value = serde_json::from_str(&raw).expect("graph-fetch: JSON");
    let credential = AppCredential {
        client_id: text(&args, "client_id").to_owned(),
        // Not on the command line, where any process may read it.
        credential: ClientCredential::Secret(Sensitive::new(
            std::env::var("GRAPH_FETCH_CLIENT_SECRET").expect("GRAPH_FETCH_CLIENT_SECRET"),
        )),
    };
    let secrets =
        LocalSecretStore::new(credential.clone(), credential, vec![1; 32]).expect("secrets");
    let tenant = TenantId::parse(text(&args, "tenant")).expect("tenant id");
    let mailbox = Email::parse(text(&args, "mailbox")).expect("mailbox");
    let folder = MailFolder::ALL
        .into_iter()
        .find(|f| f.well_known_name() == text(&args, "folder"))
        .expect("folder");
    let page_size = args["page_size"].as_u64().unwrap_or(1000) as u32;
    let wanted = args["messages"].as_u64().unwrap_or(10_000) as usize;
    // As the worker runs: one thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (handled, cpu) = runtime.block_on(async {
        let graph = GraphClient::new(
            GraphConfig {
                authority_url: text(&args, "authority_url").to_owned(),
                graph_base_url: text(&args, "graph_url").to_owned(),
                ..Default::default()
            },
            Arc::new(secrets),
        );
        let before = cpu_seconds();
        let mut handled = 0;
        let mut link: Option<SyncLink> = None;
        while handled < wanted {
            let page = graph
                .delta_page(DeltaRequest {
                    tenant: &tenant,
                    app: AppRegistration::Default,
                    mailbox: &mailbox,
                    user_id: text(&args, "user_id"),
                    folder,
                    from: link.as_ref(),
                    page_size,
                    backfill_since: None,
                    include_body: true,
                    deadline: Instant::now() + Duration::from_secs(120),
                })
                .await
                .expect("a delta page");
            handled += page.messages.len();
            match page.next {
                SyncLink::Delta(_) => break,
                next => link = Some(next),
            }
        }
        (handled, cpu_seconds() - before)
    });
    println!(
        "{}",
        serde_json::json!({"messages": handled, "cpu_seconds": cpu})
    );
}
