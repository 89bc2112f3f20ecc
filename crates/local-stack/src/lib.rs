//! The local stack the embedded run and the tests stand on: a real DynamoDB API served by
//! dynoxide in-process, and AWS SDK clients pointed at local endpoints.

mod call_count;

pub use call_count::{DynamoCalls, WRITE_OPERATIONS};

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

/// The embedded run's stand-in identity provider key (development only; see keys/README.md).
pub const DEV_JWT_PRIVATE_KEY_PEM: &str = include_str!("../keys/dev-jwt-signing-key.pem");
pub const DEV_JWT_PUBLIC_KEY_PEM: &str = include_str!("../keys/dev-jwt-signing-key.pub.pem");
/// The same public key as a JWKS, served by the embedded run at `/_local/jwks.json` so functions
/// run locally (cargo-lambda) verify tokens the way they do in AWS.
pub const DEV_JWKS_JSON: &str = include_str!("../keys/dev-jwt-signing-key.jwks.json");
/// Issuer and audience of development tokens.
pub const DEV_JWT_ISSUER: &str = "https://idp.local.o365-sync.dev/";
pub const DEV_JWT_AUDIENCE: &str = "o365-sync-api";

/// A development bearer token for `org` and `email`, valid for `ttl_secs` (negative: expired).
pub fn dev_token(org: &str, email: &str, ttl_secs: i64) -> String {
    dev_token_with(
        serde_json::json!({"org_id": org, "email": email}),
        ttl_secs,
        DEV_JWT_AUDIENCE,
        DEV_JWT_PRIVATE_KEY_PEM,
    )
}

/// A token with arbitrary claims, audience and key (tests of what verification refuses).
pub fn dev_token_with(
    mut claims: serde_json::Value,
    ttl_secs: i64,
    audience: &str,
    private_key_pem: &str,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if let Some(map) = claims.as_object_mut() {
        map.insert("iss".into(), DEV_JWT_ISSUER.into());
        map.insert("aud".into(), audience.into());
        map.insert("iat".into(), now.into());
        map.insert("exp".into(), (now + ttl_secs).into());
    }
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.as_bytes())
        .expect("a valid RSA private key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .expect("token signs")
}

/// The API's configuration when Microsoft is reached at `authority`/`graph` (the simulator), the
/// API listens at `api_base`, the front end is `frontend_origin`, and bearer tokens are the
/// development ones. The same variables a deployment sets (see README "Configuration").
pub fn local_api_env(
    authority: &str,
    graph: &str,
    api_base: &str,
    frontend_origin: &str,
) -> std::collections::HashMap<&'static str, String> {
    std::collections::HashMap::from([
        ("O365_AUTHORITY_URL", authority.to_owned()),
        ("O365_GRAPH_BASE_URL", graph.to_owned()),
        (
            "O365_CONSENT_REDIRECT_URI",
            format!("{api_base}/consent/callback"),
        ),
        ("O365_FRONTEND_ORIGIN", frontend_origin.to_owned()),
        ("O365_JWT_PUBLIC_KEY_PEM", DEV_JWT_PUBLIC_KEY_PEM.to_owned()),
        ("O365_JWT_ISSUER", DEV_JWT_ISSUER.to_owned()),
        ("O365_JWT_AUDIENCE", DEV_JWT_AUDIENCE.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_jwks_verifies_development_tokens() {
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(DEV_JWKS_JSON).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[DEV_JWT_AUDIENCE]);
        validation.set_issuer(&[DEV_JWT_ISSUER]);
        let token = dev_token("demo", "admin@contoso.com", 60);
        let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
        assert_eq!(claims.claims["org_id"], "demo");
    }
}
