//! A faithful, in-process simulator of the Microsoft identity platform (admin consent,
//! client-credentials tokens, OpenID Connect sign-in) and Microsoft Graph (users, mail
//! delta), with
//! throttling, fault injection and a ground-truth/violation report for tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ms_sim::SimError> {
//! use ms_sim::*;
//! let sim = Simulator::start(SimConfig::default()).await?;
//! let t = sim.create_tenant(TenantSpec { domain: "contoso.com".into(), ..Default::default() })?;
//! # Ok(()) }
//! ```
//! See README.md for the full story.

mod auth_code;
mod authorize;
mod client_auth;
mod config;
mod consent;
mod control;
mod control_oidc;
mod demo;
mod directory;
mod errors;
pub mod fixtures;
mod generate;
mod graph;
#[doc(hidden)]
pub mod http_client;
mod identity;
mod model;
mod oidc;
mod pages;
mod signing;
mod state;
mod throttle;
mod util;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Request, State as AxState};
use axum::response::IntoResponse;
use time::OffsetDateTime;
use tokio::sync::oneshot;

pub use auth_code::{ROLE_GLOBAL_ADMIN, ROLE_MEMBER, ROLE_PRIVILEGED_ROLE_ADMIN};
pub use config::{
    BodySizes, GoneStyle, NonAdminConsent, PropagationFailure, SimConfig, ThrottleLimits,
    UnconsentedError,
};
pub use consent::ConsentDecision;
pub use demo::{ConsentedApp, DemoApp, DemoWorld};
pub use model::*;
pub use oidc::MSA_TENANT_ID;
pub use pages::{ConsentOutcome, SESSION_COOKIE};
pub use throttle::{
    Endpoint, FaultRate, FaultRule, FaultScope, FaultSpec, RequestCount, Violation, ViolationKind,
};

/// Graph's resource id and the scope clients request for app-only tokens.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Graph's application id: the `aud` of delegated Graph access tokens.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub base_url: String,
    pub anchor: OffsetDateTime,
    pub state: Mutex<state::State>,
    pub keys: signing::Keys,
    pub mac_key: [u8; 32],
}

impl Shared {
    /// The state lock. A panic while holding it must not wedge every later request.
    pub fn lock(&self) -> MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cheap, cloneable handle on a running simulator: the whole control API lives here
/// (a `Simulator` derefs to it), so tests can pass it to tasks.
#[derive(Clone)]
pub struct SimHandle {
    pub(crate) shared: Arc<Shared>,
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    handle: SimHandle,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Simulator {
    /// Bind 127.0.0.1:`config.port` (0 = any free port) and serve in the background.
    pub async fn start(config: SimConfig) -> Result<Simulator, SimError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let anchor = config.time_anchor.unwrap_or_else(|| {
            let n = util::now();
            n.replace_time(time::Time::from_hms(n.hour(), 0, 0).unwrap_or(time::Time::MIDNIGHT))
        });
        let mut mac_key = [0u8; 32];
        for (i, chunk) in mac_key.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&util::hash_parts(&[config.seed, 0x3ac, i as u64]).to_be_bytes());
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state::State::new(
                config.seed,
                config.propagation,
                config.propagation_failure,
            )),
            keys: signing::Keys::load(),
            cfg: config,
            base_url,
            anchor,
            mac_key,
        });
        let app = router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = server.await {
                tracing::error!(error = %e, "ms-sim server stopped");
            }
        });
        tracing::info!(%addr, "ms-sim listening");
        Ok(Simulator {
            handle: SimHandle { shared },
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn handle(&self) -> SimHandle {
        self.handle.clone()
    }

    /// Stop serving and wait for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl std::ops::Deref for Simulator {
    type Target = SimHandle;
    fn deref(&self) -> &SimHandle {
        &self.handle
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`: the identity authority and the host of Graph (`/v1.0`).
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// Authority to configure instead of `https://login.microsoftonline.com`.
    pub fn authority(&self) -> &str {
        &self.shared.base_url
    }

    /// Graph root to configure instead of `https://graph.microsoft.com/v1.0`.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.shared.base_url)
    }

    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.shared.base_url)
    }

    /// The admin-consent URL a product would send an admin to.
    pub fn admin_consent_url(
        &self,
        tenant: &str,
        client_id: &str,
        redirect_uri: &str,
        state: &str,
    ) -> String {
        format!(
            "{}/{tenant}/v2.0/adminconsent?{}",
            self.shared.base_url,
            util::encode_form(&[
                ("client_id", client_id),
                ("scope", GRAPH_DEFAULT_SCOPE),
                ("redirect_uri", redirect_uri),
                ("state", state)
            ])
        )
    }

    pub fn config(&self) -> &SimConfig {
        &self.shared.cfg
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .nest("/_sim", control::router().merge(control_oidc::router()))
        .fallback(dispatch)
        .with_state(shared)
}

/// Route Microsoft URLs by hand: Graph and the identity platform use spellings
/// (`delta()`, `mailFolders('inbox')`, tenant segments) that a fixed route table would miss.
async fn dispatch(AxState(shared): AxState<Arc<Shared>>, req: Request) -> axum::response::Response {
    let path = req.uri().path().to_string();
    if path == "/v1.0" || path.starts_with("/v1.0/") {
        return graph::handle(shared, req).await;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = req.method() == axum::http::Method::GET;
    match segs.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] => {
            identity::token(shared, util::percent_decode(tenant), req).await
        }
        [tenant, "v2.0", "adminconsent"] => {
            consent::handle(shared, util::percent_decode(tenant), req).await
        }
        [tenant, "oauth2", "v2.0", "authorize"] => {
            authorize::handle(shared, util::percent_decode(tenant), req).await
        }
        [tenant, "v2.0", ".well-known", "openid-configuration"] if get => {
            oidc::configuration(shared, util::percent_decode(tenant), req).await
        }
        [tenant, "discovery", "v2.0", "keys"] if get => {
            oidc::keys(shared, Some(util::percent_decode(tenant)), req).await
        }
        ["discovery", "v2.0", "keys"] if get => oidc::keys(shared, None, req).await,
        _ => (axum::http::StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}
