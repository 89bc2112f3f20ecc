//! What each deployed function builds when it starts, from its environment alone. The mains are
//! glue around these; a test builds each with a recording environment to check that the
//! template gives every function exactly the variables (and so the permissions) it asks for.

use std::sync::Arc;

use o365_domain::ports::SecretStore;
use o365_domain::service::grant::Grants;
use o365_http_api::ApiState;
use o365_msgraph::GraphClient;
use o365_queue_sqs::SqsJobQueue;
use o365_sync_engine::{Stores, SyncEngine};

use crate::{
    ConfigError, EngineSyncTrigger, Env, Parts, api_state, aws_sdk_config, dynamo_store, grants,
    graph_config, secrets_manager, secrets_manager_with_state_key, sqs_sync_engine, sync_config,
};

/// user-api and consent-callback: the API state (they sign and verify consent state, so they
/// refuse to start without its key).
pub async fn http_api(env: &Env<'_>) -> Result<ApiState, ConfigError> {
    let sdk = aws_sdk_config().await;
    let store = Arc::new(dynamo_store(env, &sdk));
    let secrets: Arc<dyn SecretStore> = Arc::new(secrets_manager_with_state_key(env, &sdk)?);
    let engine = sqs_sync_engine(env, &sdk, store.clone(), secrets.clone())?;
    let parts = Parts {
        store,
        secrets,
        sync: Arc::new(EngineSyncTrigger(engine)),
    };
    api_state(env, parts, graph_config(env))
}

/// mailbox-sync: settles connections still "verifying", then fans out.
pub struct FanOut {
    pub grants: Arc<Grants>,
    pub engine: Arc<SyncEngine>,
}

pub async fn mailbox_sync(env: &Env<'_>) -> Result<FanOut, ConfigError> {
    let sdk = aws_sdk_config().await;
    let store = Arc::new(dynamo_store(env, &sdk));
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
    let queue = SqsJobQueue::new(
        aws_sdk_sqs::Client::new(&sdk),
        env.required("O365_SYNC_QUEUE_URL")?,
    );
    let engine = Arc::new(SyncEngine::new(
        Stores::single(store),
        Arc::new(graph.clone()),
        Arc::new(graph.clone()),
        Arc::new(queue),
        sync_config(env)?,
    ));
    Ok(Worker { engine, graph })
}
