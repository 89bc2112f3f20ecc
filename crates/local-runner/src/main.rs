//! `cargo run`: the embedded default. Starts dynoxide with its data on disk, creates the tables
//! and serves the local HTTP endpoints (health now; the API, the consent callback, the Microsoft
//! simulator and the scheduler join as they land).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

use o365_local_stack::EmbeddedDynamo;
use o365_store_dynamodb::{DynamoStore, TableNames, ensure_tables};

struct Config {
    http_addr: SocketAddr,
    dynamodb_addr: String,
    data_dir: PathBuf,
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        let http_addr = var("O365_LOCAL_HTTP_ADDR", "127.0.0.1:8080");
        Ok(Self {
            http_addr: http_addr.parse().map_err(|_| format!("O365_LOCAL_HTTP_ADDR is not host:port: {http_addr}"))?,
            dynamodb_addr: var("O365_LOCAL_DYNAMODB_ADDR", "127.0.0.1:8000"),
            data_dir: PathBuf::from(var("O365_LOCAL_DATA_DIR", ".local")),
        })
    }
}

#[derive(Clone)]
struct AppState {
    store: DynamoStore,
    dynamodb_endpoint: String,
}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let tables = [state.store.tables().state.clone(), state.store.tables().messages.clone()];
    match state.store.probe().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ok", "store": {"status": "ok", "endpoint": state.dynamodb_endpoint, "tables": tables}})),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "store": {"status": "unavailable", "detail": e.to_string(), "tables": tables}})),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,dynoxide::server=error".into()))
        .init();
    let config = Config::from_env()?;

    let db_path = config.data_dir.join("dynamodb.sqlite");
    let dynamo = EmbeddedDynamo::on_disk(&db_path, &config.dynamodb_addr).await?;
    let client = o365_local_stack::dynamodb_client(dynamo.endpoint());
    let tables = TableNames::default();
    ensure_tables(&client, &tables).await?;
    let state = AppState { store: DynamoStore::new(client, tables), dynamodb_endpoint: dynamo.endpoint().to_owned() };

    let app = Router::new().route("/health", get(health)).with_state(state);
    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    tracing::info!(
        http = %listener.local_addr()?,
        dynamodb = dynamo.endpoint(),
        data = %db_path.display(),
        "o365-sync local runner ready: GET /health"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    dynamo.shutdown().await;
    Ok(())
}
