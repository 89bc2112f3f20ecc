//! `cargo run`: the embedded default. One process runs every part of o365-sync against local
//! stand-ins: DynamoDB (dynoxide, data on disk), Microsoft (the simulator with a demo tenant),
//! and the platform's identity provider (a development key). The API and the consent callback
//! are the very routers the Lambdas serve.

mod demo;
mod local_pages;
mod secrets;
mod sync;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

use o365_local_stack::EmbeddedDynamo;
use o365_runtime::{Env, Parts};
use o365_store_dynamodb::{DynamoStore, TableNames, ensure_tables};

struct LocalConfig {
    http_addr: SocketAddr,
    dynamodb_addr: String,
    sim_port: u16,
    data_dir: PathBuf,
    messages_per_folder: u32,
}

impl LocalConfig {
    fn from_env(env: &Env) -> Result<Self, String> {
        let http_addr = env.or("O365_LOCAL_HTTP_ADDR", "127.0.0.1:8080");
        let sim_port = env.or("O365_LOCAL_SIM_PORT", "8081");
        let messages = env.or("O365_LOCAL_MESSAGES_PER_FOLDER", "200");
        Ok(Self {
            http_addr: http_addr
                .parse()
                .map_err(|_| format!("O365_LOCAL_HTTP_ADDR is not host:port: {http_addr}"))?,
            dynamodb_addr: env.or("O365_LOCAL_DYNAMODB_ADDR", "127.0.0.1:8000"),
            sim_port: sim_port
                .parse()
                .map_err(|_| format!("O365_LOCAL_SIM_PORT is not a port: {sim_port}"))?,
            data_dir: PathBuf::from(env.or("O365_LOCAL_DATA_DIR", ".local")),
            messages_per_folder: messages.parse().map_err(|_| {
                format!("O365_LOCAL_MESSAGES_PER_FOLDER is not a number: {messages}")
            })?,
        })
    }
}

#[derive(Clone)]
struct Health {
    store: DynamoStore,
    dynamodb_endpoint: String,
    simulator: String,
}

async fn health(State(h): State<Health>) -> impl IntoResponse {
    let tables = [
        h.store.tables().state.clone(),
        h.store.tables().messages.clone(),
    ];
    let (status, store) = match h.store.probe().await {
        Ok(()) => (
            StatusCode::OK,
            json!({"status": "ok", "endpoint": h.dynamodb_endpoint, "tables": tables}),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "detail": e.to_string(), "tables": tables}),
        ),
    };
    let overall = if status == StatusCode::OK {
        "ok"
    } else {
        "degraded"
    };
    (
        status,
        Json(json!({"status": overall, "store": store, "microsoft_simulator": h.simulator})),
    )
}

/// The `Host` values that name this run: loopback names and the bound address, with its port.
fn local_hosts(addr: SocketAddr) -> Arc<Vec<String>> {
    let port = addr.port();
    let mut hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    hosts.push(addr.to_string());
    Arc::new(hosts)
}

async fn only_local_hosts(
    allowed: Arc<Vec<String>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    if host.is_some_and(|h| allowed.contains(&h)) {
        return next.run(request).await;
    }
    (
        StatusCode::MISDIRECTED_REQUEST,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        Json(json!({
            "type": "https://o365-sync.dev/problems/misdirected",
            "title": "Not this host",
            "status": 421,
            "detail": "the embedded run answers only requests addressed to this machine (127.0.0.1, localhost or its bound address)",
        })),
    )
        .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    o365_runtime::init_tracing(false);
    let process = Env::process();
    let config = LocalConfig::from_env(&process)?;

    let db_path = config.data_dir.join("dynamodb.sqlite");
    let dynamo = EmbeddedDynamo::on_disk(&db_path, &config.dynamodb_addr).await?;
    let client = o365_local_stack::dynamodb_client(dynamo.endpoint());
    let tables = TableNames::default();
    ensure_tables(&client, &tables).await?;
    let store = DynamoStore::new(client, tables);

    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let world = demo::start(config.sim_port, &base, config.messages_per_folder, &store).await?;

    // Local defaults under whatever the environment sets: the same variables as in AWS.
    let defaults = o365_local_stack::local_api_env(
        world.sim.authority(),
        &world.sim.graph_url(),
        &base,
        &base,
    );
    let layered = move |k: &str| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| defaults.get(k).cloned())
    };
    let env = Env(&layered);
    let secrets = secrets::choose(&env, world.secrets.clone()).await?;
    let sync = sync::start(&env, store.clone(), secrets.clone())?;
    let parts = Parts {
        store: Arc::new(store.clone()),
        secrets,
        sync,
    };
    let state = o365_runtime::api_state(&env, parts, o365_runtime::graph_config(&env))?;

    let health_state = Health {
        store,
        dynamodb_endpoint: dynamo.endpoint().to_owned(),
        simulator: world.sim.base_url().to_owned(),
    };
    let allowed = local_hosts(config.http_addr);
    let app = Router::new()
        .route("/health", get(health))
        .with_state(health_state)
        .merge(local_pages::routes(world.apps))
        .merge(o365_http_api::user_api(state.clone()))
        .merge(o365_http_api::consent_callback(state))
        // The development token issuer must not be reachable from a web page through a
        // rebound DNS name: only requests naming this machine are served.
        .layer(axum::middleware::from_fn(move |request, next| {
            only_local_hosts(allowed.clone(), request, next)
        }));

    tracing::info!(
        http = %base,
        dynamodb = dynamo.endpoint(),
        simulator = world.sim.base_url(),
        data = %db_path.display(),
        "o365-sync local runner ready: GET {base}/health, a token from {base}/_local/token?org=demo&email=admin@contoso.com, the API under {base}/v1"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    dynamo.shutdown().await;
    Ok(())
}
