//! The local stack the embedded run and the tests stand on: a real DynamoDB API served by
//! dynoxide in-process, and AWS SDK clients pointed at local endpoints.

use std::path::Path;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Region local endpoints are addressed as; they ignore it, the SDK needs one.
pub const LOCAL_REGION: &str = "us-east-1";

/// A dynoxide server on 127.0.0.1, stopped when dropped or on [`EmbeddedDynamo::shutdown`].
pub struct EmbeddedDynamo {
    endpoint: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl EmbeddedDynamo {
    /// A throw-away in-memory database (tests).
    pub async fn in_memory() -> std::io::Result<Self> {
        let db = dynoxide::Database::memory().map_err(std::io::Error::other)?;
        Self::serve(db, "127.0.0.1:0").await
    }

    /// A database kept in `path` across runs (the embedded default), served on `addr`.
    pub async fn on_disk(path: &Path, addr: &str) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = dynoxide::Database::new(&path.to_string_lossy()).map_err(std::io::Error::other)?;
        Self::serve(db, addr).await
    }

    async fn serve(db: dynoxide::Database, addr: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(dynoxide::server::serve_with_shutdown(listener, db, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            endpoint,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EmbeddedDynamo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// SDK configuration for a local endpoint: static dummy credentials, a fixed region, and the
/// same retry policy production uses.
pub fn local_sdk_config(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(LOCAL_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "local",
            "local",
            None,
            None,
            "o365-local-stack",
        )))
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .build()
}

pub fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&local_sdk_config(endpoint))
}

pub fn secretsmanager_client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&local_sdk_config(endpoint))
}

pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&local_sdk_config(endpoint))
}
