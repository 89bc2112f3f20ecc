//! Configuration from the environment, and the wiring every entry point shares: each Lambda's
//! `main` and the local runner read the same variables and build the same adapters.

pub mod functions;
pub mod ops;
pub mod sqs_event;

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};

use o365_domain::ids::OrgId;
use o365_domain::ports::{SecretStore, SyncTrigger};
use o365_domain::service::grant::Grants;
use o365_domain::service::{ServiceConfig, Services, Store};
use o365_http_api::{ApiState, AuthConfig, Authenticator, FrontendConfig, KeySource};
use o365_msgraph::{EntraSignIn, GraphClient, GraphConfig, SignInConfig};
use o365_queue_sqs::SqsJobQueue;
use o365_secrets::{SecretIds, SecretsManagerStore};
use o365_store_dynamodb::{DynamoStore, TableNames};
use o365_sync_engine::{JobQueue, Stores, SyncConfig, SyncEngine};

/// A configuration problem, named by its variable.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Reads variables; every lookup goes through here so tests can feed a map.
pub struct Env<'a>(pub &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    pub fn process() -> Env<'static> {
        Env(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    pub fn or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.get(name)
            .ok_or_else(|| ConfigError(format!("{name} is not set")))
    }

    pub fn seconds(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        match self.get(name) {
            None => Ok(Duration::from_secs(default)),
            Some(v) => v
                .parse()
                .map(Duration::from_secs)
                .map_err(|_| ConfigError(format!("{name} must be whole seconds, not '{v}'"))),
        }
    }
}

pub fn table_names(env: &Env) -> TableNames {
    TableNames {
        state: env.or("O365_STATE_TABLE", TableNames::DEFAULT_STATE),
        messages: env.or("O365_MESSAGES_TABLE", TableNames::DEFAULT_MESSAGES),
    }
}

pub fn graph_config(env: &Env) -> GraphConfig {
    GraphConfig {
        authority_url: env.or("O365_AUTHORITY_URL", o365_msgraph::DEFAULT_AUTHORITY_URL),
        graph_base_url: env.or("O365_GRAPH_BASE_URL", o365_msgraph::DEFAULT_GRAPH_BASE_URL),
        ..GraphConfig::default()
    }
}

/// The app credentials from Secrets Manager (what the sync functions need).
pub fn secrets_manager(env: &Env, sdk: &SdkConfig) -> Result<SecretsManagerStore, ConfigError> {
    secrets_manager_with(env, sdk, None)
}

/// The app credentials and the consent-state signing key (the HTTP functions).
pub fn secrets_manager_with_state_key(
    env: &Env,
    sdk: &SdkConfig,
) -> Result<SecretsManagerStore, ConfigError> {
    let key = env.required("O365_STATE_KEY_SECRET_ID")?;
    secrets_manager_with(env, sdk, Some(key))
}

fn secrets_manager_with(
    env: &Env,
    sdk: &SdkConfig,
    state_signing_key: Option<String>,
) -> Result<SecretsManagerStore, ConfigError> {
    let ids = SecretIds {
        default_app: env.required("O365_DEFAULT_APP_SECRET_ID")?,
        read_only_app: env.required("O365_READ_ONLY_APP_SECRET_ID")?,
        state_signing_key,
    };
    let ttl = env.seconds(
        "O365_SECRET_CACHE_SECS",
        SecretsManagerStore::DEFAULT_TTL.as_secs(),
    )?;
    Ok(SecretsManagerStore::new(
        aws_sdk_secretsmanager::Client::new(sdk),
        ids,
        ttl,
    ))
}

/// The AWS SDK configuration: region and credentials from the Lambda environment, endpoints
/// overridable with the SDK's own `AWS_ENDPOINT_URL_*` variables.
pub async fn aws_sdk_config() -> SdkConfig {
    use aws_smithy_http_client::tls;
    // The SDK's HTTPS client trusts the compiled-in roots AWS endpoints chain to
    // (`o365-http-client`): no certificate file is read at start.
    let trust = o365_http_client::aws_root_certificates_pem().fold(
        tls::TrustStore::empty().with_native_roots(false),
        |t, pem| t.with_pem_certificate(pem),
    );
    let context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("the compiled-in roots make a TLS context");
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .http_client(https)
        .load()
        .await
}

pub fn dynamo_store(env: &Env, sdk: &SdkConfig) -> DynamoStore {
    DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table_names(env))
}

/// The store of a function that never touches captured mail (the consent callback, the
/// scheduled fan-out): it is not told the messages table, so it neither reads that variable
/// nor gets permissions on it; a call that reached for it would fail.
pub fn state_store(env: &Env, sdk: &SdkConfig) -> DynamoStore {
    let tables = TableNames {
        state: env.or("O365_STATE_TABLE", TableNames::DEFAULT_STATE),
        messages: String::new(),
    };
    DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), tables)
}

pub fn service_config(env: &Env) -> Result<ServiceConfig, ConfigError> {
    let defaults = ServiceConfig::default();
    let grace = env.seconds(
        "O365_CONSENT_PROPAGATION_GRACE_SECS",
        defaults.propagation_grace.whole_seconds().max(0) as u64,
    )?;
    Ok(ServiceConfig {
        verify_budget: env.seconds("O365_CONSENT_VERIFY_BUDGET_SECS", 20)?,
        propagation_grace: time::Duration::try_from(grace)
            .map_err(|_| ConfigError("O365_CONSENT_PROPAGATION_GRACE_SECS is too large".into()))?,
        ..defaults
    })
}

pub fn frontend(env: &Env) -> Result<FrontendConfig, ConfigError> {
    FrontendConfig::new(
        &env.required("O365_FRONTEND_ORIGIN")?,
        &env.or("O365_FRONTEND_CONNECTION_PATH", "/settings/connection"),
    )
    .map_err(|e| {
        ConfigError(format!(
            "O365_FRONTEND_ORIGIN / O365_FRONTEND_CONNECTION_PATH: {e}"
        ))
    })
}

/// Bearer-token verification: the identity provider's JWKS in AWS; a PEM key where given.
pub fn authenticator(env: &Env) -> Result<Arc<Authenticator>, ConfigError> {
    let keys = match (
        env.get("O365_JWT_JWKS_URL"),
        env.get("O365_JWT_PUBLIC_KEY_PEM"),
    ) {
        (Some(url), _) => KeySource::jwks(url),
        (None, Some(pem)) => KeySource::rsa_public_pem(pem.as_bytes())
            .map_err(|e| ConfigError(format!("O365_JWT_PUBLIC_KEY_PEM: {e}")))?,
        (None, None) => {
            return Err(ConfigError(
                "set O365_JWT_JWKS_URL (or O365_JWT_PUBLIC_KEY_PEM)".into(),
            ));
        }
    };
    Ok(Authenticator::new(
        keys,
        AuthConfig {
            issuer: env.required("O365_JWT_ISSUER")?,
            audience: env.required("O365_JWT_AUDIENCE")?,
            org_claim: env.or("O365_JWT_ORG_CLAIM", "org_id"),
            email_claim: env.or("O365_JWT_EMAIL_CLAIM", "email"),
        },
    ))
}

/// "Sync now": the org's walk queued for the fan-out (the path an org the schedule had no time
/// for takes), answered at once with the request's id. Needs only the fan-out queue.
pub struct QueuedSyncTrigger(pub Arc<dyn JobQueue>);

#[async_trait::async_trait]
impl SyncTrigger for QueuedSyncTrigger {
    async fn sync_org_now(&self, org: &OrgId, request: &str) -> o365_domain::Result<()> {
        o365_sync_engine::request_sync(self.0.as_ref(), org, request).await
    }
}

pub fn sync_config(env: &Env) -> Result<SyncConfig, ConfigError> {
    let number = |name: &str| -> Result<Option<u32>, ConfigError> {
        env.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| ConfigError(format!("{name} must be a whole number, not '{v}'")))
            })
            .transpose()
    };
    let mut config = SyncConfig::default();
    if let Some(n) = number("O365_SYNC_PAGE_SIZE")? {
        config.page_size = n;
    }
    if let Some(days) = number("O365_SYNC_BACKFILL_DAYS")? {
        config.backfill_days = (days > 0).then_some(days);
    }
    Ok(config)
}

/// The fan-out's engine: DynamoDB, Graph, the jobs queue it fills and the fan-out queue it
/// reads and hands unfinished walks back to.
pub fn sqs_sync_engine(
    env: &Env,
    sdk: &SdkConfig,
    store: Arc<DynamoStore>,
    secrets: Arc<dyn SecretStore>,
) -> Result<Arc<SyncEngine>, ConfigError> {
    let queue = SqsJobQueue::new(aws_sdk_sqs::Client::new(sdk))
        .with_jobs(env.required("O365_SYNC_QUEUE_URL")?)
        .with_fan_out(env.required("O365_FANOUT_QUEUE_URL")?);
    let graph = Arc::new(GraphClient::new(graph_config(env), secrets));
    Ok(Arc::new(SyncEngine::new(
        Stores::single(store),
        graph.clone(),
        graph,
        Arc::new(queue),
        sync_config(env)?,
    )))
}

/// What the scheduled fan-out needs to settle connections still "verifying": the store and
/// app-only directory reads (with the short per-attempt patience of the callback).
pub fn grants(
    env: &Env,
    store: Arc<dyn Store>,
    secrets: Arc<dyn SecretStore>,
) -> Result<Grants, ConfigError> {
    let graph = GraphClient::new(
        GraphConfig {
            default_patience: VERIFY_ATTEMPT_PATIENCE,
            ..graph_config(env)
        },
        secrets,
    );
    Ok(Grants::new(store, Arc::new(graph), service_config(env)?))
}

/// Graph patience for one grant verification: the callback runs its own retry loop inside API
/// Gateway's 29 s, so each attempt must be short.
pub const VERIFY_ATTEMPT_PATIENCE: Duration = Duration::from_secs(4);

pub struct Parts {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<dyn SecretStore>,
    pub sync: Arc<dyn SyncTrigger>,
}

/// The API's state from its parts and the environment.
pub fn api_state(env: &Env, parts: Parts, graph: GraphConfig) -> Result<ApiState, ConfigError> {
    let auth = authenticator(env)?;
    api_state_with_auth(env, parts, graph, auth)
}

/// The API's state with a given bearer-token check (the consent callback has none to make).
pub fn api_state_with_auth(
    env: &Env,
    parts: Parts,
    graph: GraphConfig,
    auth: Arc<Authenticator>,
) -> Result<ApiState, ConfigError> {
    let graph = GraphClient::new(
        GraphConfig {
            default_patience: VERIFY_ATTEMPT_PATIENCE,
            ..graph
        },
        parts.secrets.clone(),
    );
    let sign_in = EntraSignIn::new(
        SignInConfig {
            authority_url: env.or("O365_AUTHORITY_URL", o365_msgraph::DEFAULT_AUTHORITY_URL),
            redirect_uri: env.required("O365_CONSENT_REDIRECT_URI")?,
        },
        parts.secrets.clone(),
    );
    let services = Services::new(
        parts.store,
        parts.secrets,
        Arc::new(graph),
        Arc::new(sign_in),
        parts.sync,
        service_config(env)?,
    );
    Ok(ApiState {
        services,
        auth,
        frontend: Arc::new(frontend(env)?),
    })
}

/// JSON logs for Lambda (CloudWatch), readable ones locally.
pub fn init_tracing(json: bool) {
    // RUST_LOG wins; else Lambda's own log-level setting (advanced logging controls set
    // AWS_LAMBDA_LOG_LEVEL: TRACE, DEBUG, INFO, WARN, ERROR or FATAL); else info.
    let lambda_level =
        std::env::var("AWS_LAMBDA_LOG_LEVEL")
            .ok()
            .map(|l| match l.to_ascii_lowercase().as_str() {
                "fatal" => "error".to_owned(),
                other => other.to_owned(),
            });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = lambda_level.unwrap_or_else(|| "info".into());
        format!("{level},dynoxide::server=error").into()
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        // The current span carries the invocation's request and trace ids onto every line.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

/// The instant to stop starting work in an invocation: Lambda's deadline (milliseconds since the
/// epoch) less `margin`, kept back to save state and answer.
pub fn invocation_deadline(
    context_deadline_ms: u64,
    margin: std::time::Duration,
) -> std::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let left = std::time::Duration::from_millis(context_deadline_ms.saturating_sub(now_ms));
    std::time::Instant::now() + left.saturating_sub(margin)
}
