//! What each deployed function builds when it starts, from its environment alone. The mains are
//! glue around these; a test builds each with a recording environment to check that the
//! template gives every function exactly the variables (and so the permissions) it asks for.

use std::sync::Arc;

use o365_domain::ids::OrgId;
use o365_domain::ports::{SecretStore, SyncTrigger};
use o365_domain::service::grant::Grants;
use o365_http_api::{ApiState, Authenticator};
use o365_msgraph::GraphClient;
use o365_queue_sqs::SqsJobQueue;
use o365_sync_engine::{Stores, SyncEngine};

use crate::{
    ConfigError, Env, Parts, QueuedSyncTrigger, api_state, api_state_with_auth, aws_sdk_config,
    dynamo_store, grants, graph_config, secrets_manager, secrets_manager_with_state_key,
    sqs_sync_engine, state_store, sync_config,
};

/// user-api: the API state (it signs consent state, so it refuses to start without its key).
pub async fn user_api(env: &Env<'_>) -> Result<ApiState, ConfigError> {
    let sdk = aws_sdk_config().await;
    let store = Arc::new(dynamo_store(env, &sdk));
    let secrets: Arc<dyn SecretStore> = Arc::new(secrets_manager_with_state_key(env, &sdk)?);
    // "Sync now" queues the org's walk for the fan-out function: one message, whatever the
    // org's size.
    let fan_out = SqsJobQueue::new(aws_sdk_sqs::Client::new(&sdk))
        .with_fan_out(env.required("O365_FANOUT_QUEUE_URL")?);
    let parts = Parts {
        store,
        secrets,
        sync: Arc::new(QueuedSyncTrigger(Arc::new(fan_out))),
    };
    api_state(env, parts, graph_config(env))
}

/// consent-callback: the same state without what its one public route never uses — no bearer
/// tokens to check, no jobs to queue — so it needs neither their variables nor their IAM.
pub async fn consent_callback(env: &Env<'_>) -> Result<ApiState, ConfigError> {
    let sdk = aws_sdk_config().await;
    let parts = Parts {
        store: Arc::new(state_store(env, &sdk)),
        secrets: Arc::new(secrets_manager_with_state_key(env, &sdk)?),
        sync: Arc::new(NoSyncHere),
    };
    api_state_with_auth(env, parts, graph_config(env), Authenticator::refusing_all())
}

/// The callback never starts a sync.
struct NoSyncHere;

#[async_trait::async_trait]
impl SyncTrigger for NoSyncHere {
    async fn sync_org_now(&self, _: &OrgId, _: &str) -> o365_domain::Result<()> {
        Err(o365_domain::DomainError::Unavailable(
            "the consent callback does not start syncs".into(),
        ))
    }
}

/// mailbox-sync: settles connections still "verifying", then fans out.
pub struct FanOut {
    pub grants: Arc<Grants>,
    pub engine: Arc<SyncEngine>,
}

pub async fn mailbox_sync(env: &Env<'_>) -> Result<FanOut, ConfigError> {
    let sdk = aws_sdk_config().await;
    // The fan-out reads users and leases, never captured mail.
    let store = Arc::new(state_store(env, &sdk));
    let secrets: Arc<dyn SecretStore> = Arc::new(secrets_manager(env, &sdk)?);
    Ok(FanOut {
        grants: Arc::new(grants(env, store.clone(), secrets.clone())?),
        engine: sqs_sync_engine(env, &sdk, store, secrets)?,
    })
}

/// sync-worker: the engine, and the Graph client whose request counts feed the metrics.
pub struct Worker {
    pub engine: Arc<SyncEngine>,
    pub graph: GraphClient,
}

pub async fn sync_worker(env: &Env<'_>) -> Result<Worker, ConfigError> {
    let sdk = aws_sdk_config().await;
    let store = Arc::new(dynamo_store(env, &sdk));
    let secrets: Arc<dyn SecretStore> = Arc::new(secrets_manager(env, &sdk)?);
    let graph = GraphClient::new(graph_config(env), secrets);
    // The worker hands continuations back to its own queue; it never walks an org.
    let queue = SqsJobQueue::new(aws_sdk_sqs::Client::new(&sdk))
        .with_jobs(env.required("O365_SYNC_QUEUE_URL")?);
    let engine = Arc::new(SyncEngine::new(
        Stores::single(store),
        Arc::new(graph.clone()),
        Arc::new(graph.clone()),
        Arc::new(queue),
        sync_config(env)?,
    ));
    Ok(Worker { engine, graph })
}
