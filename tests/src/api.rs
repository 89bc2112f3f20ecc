//! The API as the front end sees it: our routers on a real socket, the real store (dynoxide),
//! Microsoft played by the simulator, tokens signed by the development identity key.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ms_sim::{
    AppInfo, AppSpec, ConsentDecision, ConsentOutcome, SimConfig, Simulator, TenantInfo,
    TenantSpec, UserSpec,
};
use o365_domain::audit::AuditAction;
use o365_domain::connection::AppRegistration;
use o365_domain::ids::OrgId;
use o365_domain::ports::{OrgStore, SecretStore, SyncTrigger};
use o365_domain::secret::{AppCredential, ClientCredential, Freshness, Sensitive};
use o365_domain::service::grant::Grants;
use o365_domain::user::{NewUser, Role};
use o365_runtime::{Env, Parts};
use o365_secrets::LocalSecretStore;
use reqwest::StatusCode;
use serde_json::Value;

use crate::{StoreFixture, audit};

pub const FRONTEND: &str = "https://app.example.com";
pub const STATE_KEY: &[u8] = b"test-state-signing-key-0123456789abcdef";

/// Users of the simulated tenants. `contoso.com` (the harness's `tenant`): a Global
/// Administrator, an admin who is not one, ordinary users. `fabrikam.com` (`other_tenant`): its
/// own Global Administrator.
pub const GLOBAL_ADMIN: &str = "globaladmin@contoso.com";
pub const OTHER_GLOBAL_ADMIN: &str = "admin@fabrikam.com";

pub struct ApiHarness {
    pub fixture: StoreFixture,
    pub sim: Simulator,
    pub tenant: TenantInfo,
    pub other_tenant: TenantInfo,
    pub default_app: AppInfo,
    pub read_only_app: AppInfo,
    pub secrets: Arc<LocalSecretStore>,
    /// What the services see: the local store, counting key refreshes.
    pub counted: Arc<CountingSecrets>,
    pub grants: Grants,
    pub base: String,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

/// The secret store the services use, counting forced re-reads of the state-signing key (each
/// would be a Secrets Manager call in AWS).
pub struct CountingSecrets {
    inner: Arc<LocalSecretStore>,
    pub key_refreshes: AtomicUsize,
}

#[async_trait::async_trait]
impl SecretStore for CountingSecrets {
    async fn app_credential(
        &self,
        app: AppRegistration,
        freshness: Freshness,
    ) -> o365_domain::Result<AppCredential> {
        self.inner.app_credential(app, freshness).await
    }

    async fn state_signing_key(
        &self,
        freshness: Freshness,
    ) -> o365_domain::Result<Sensitive<Vec<u8>>> {
        if freshness == Freshness::Refresh {
            self.key_refreshes.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.state_signing_key(freshness).await
    }
}

impl Drop for ApiHarness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

fn secret_credential(client_id: &str, secret: &str) -> AppCredential {
    AppCredential {
        client_id: client_id.into(),
        credential: ClientCredential::Secret(Sensitive::new(secret.into())),
    }
}

impl ApiHarness {
    pub async fn start(sim_config: SimConfig, sync: Arc<dyn SyncTrigger>) -> Self {
        Self::start_with(sim_config, sync, &[]).await
    }

    /// With extra configuration variables (e.g. a short propagation grace).
    pub async fn start_with(
        sim_config: SimConfig,
        sync: Arc<dyn SyncTrigger>,
        extra: &[(&'static str, &str)],
    ) -> Self {
        let fixture = StoreFixture::dynoxide().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let callback = format!("{base}/consent/callback");

        let sim = Simulator::start(sim_config)
            .await
            .expect("simulator starts");
        let tenant = sim
            .create_tenant(TenantSpec {
                domain: "contoso.com".into(),
                ..Default::default()
            })
            .unwrap();
        let default_app = sim
            .create_app(AppSpec {
                display_name: "o365-sync".into(),
                redirect_uris: vec![callback.clone()],
                permissions: vec!["Mail.ReadWrite".into(), "User.Read.All".into()],
                ..Default::default()
            })
            .unwrap();
        let read_only_app = sim
            .create_app(AppSpec {
                display_name: "o365-sync (read only)".into(),
                redirect_uris: vec![callback.clone()],
                permissions: vec!["Mail.Read".into(), "User.Read.All".into()],
                ..Default::default()
            })
            .unwrap();
        let far = time::OffsetDateTime::now_utc() + time::Duration::days(365);
        let s1 = sim.add_secret(default_app.client_id, far).unwrap();
        let s2 = sim.add_secret(read_only_app.client_id, far).unwrap();
        for (name, admin) in [("globaladmin", true), ("adele", false), ("bob", false)] {
            sim.create_user(
                tenant.id,
                UserSpec {
                    user_name: name.into(),
                    global_admin: admin,
                    ..Default::default()
                },
            )
            .unwrap();
        }
        let other_tenant = sim
            .create_tenant(TenantSpec {
                domain: "fabrikam.com".into(),
                ..Default::default()
            })
            .unwrap();
        sim.create_user(
            other_tenant.id,
            UserSpec {
                user_name: "admin".into(),
                global_admin: true,
                ..Default::default()
            },
        )
        .unwrap();
        let secrets = Arc::new(
            LocalSecretStore::new(
                secret_credential(&default_app.client_id.to_string(), &s1.value),
                secret_credential(&read_only_app.client_id.to_string(), &s2.value),
                STATE_KEY.to_vec(),
            )
            .unwrap(),
        );

        let mut vars =
            o365_local_stack::local_api_env(sim.authority(), &sim.graph_url(), &base, FRONTEND);
        vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let lookup = move |k: &str| vars.get(k).cloned();
        let env = Env(&lookup);
        let counted = Arc::new(CountingSecrets {
            inner: secrets.clone(),
            key_refreshes: AtomicUsize::new(0),
        });
        let grants = o365_runtime::grants(&env, Arc::new(fixture.store.clone()), counted.clone())
            .expect("configuration is complete");
        let parts = Parts {
            store: Arc::new(fixture.store.clone()),
            secrets: counted.clone(),
            sync,
        };
        let state = o365_runtime::api_state(&env, parts, o365_runtime::graph_config(&env))
            .expect("configuration is complete");
        let app =
            o365_http_api::user_api(state.clone()).merge(o365_http_api::consent_callback(state));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            fixture,
            sim,
            tenant,
            other_tenant,
            default_app,
            read_only_app,
            secrets,
            counted,
            grants,
            base,
            http,
            server,
        }
    }

    /// An org as the operator command creates it: its first admin is also its Primary user,
    /// plus an admin and a member.
    pub async fn org(&self, name: &str) -> OrgId {
        self.org_with_primary(name, GLOBAL_ADMIN).await
    }

    /// An org whose Primary user (its first admin) has the platform email `primary`.
    pub async fn org_with_primary(&self, name: &str, primary: &str) -> OrgId {
        let org = OrgId::parse(name).unwrap();
        let store = &self.fixture.store;
        let primary = NewUser::parse(primary, "Primary Admin", "admin").unwrap();
        store
            .create_org(&org, &primary, audit(&org, AuditAction::OrgCreated, "org"))
            .await
            .unwrap();
        for (email, role) in [
            ("admin@contoso.com", Role::Admin),
            ("adele@contoso.com", Role::Member),
        ] {
            if email.eq_ignore_ascii_case(primary.email.as_str()) {
                continue;
            }
            let user = NewUser::parse(email, "Someone", role.as_str()).unwrap();
            o365_domain::ports::UserStore::add_user(
                store,
                &org,
                &user,
                audit(&org, AuditAction::UserAdded, "user"),
            )
            .await
            .unwrap();
        }
        org
    }

    pub fn token(&self, org: &str, email: &str) -> String {
        o365_local_stack::dev_token(org, email, 300)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut request = self.http.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn as_user(
        &self,
        org: &str,
        email: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        self.call(method, path, Some(&self.token(org, email)), body, &[])
            .await
    }

    /// Turns the service account on (as the Primary admin) and returns the sign-in URL that
    /// starts connecting.
    pub async fn activate(&self, org: &str) -> String {
        self.activate_as(org, GLOBAL_ADMIN).await
    }

    pub async fn activate_as(&self, org: &str, primary: &str) -> String {
        let settings = self
            .as_user(org, primary, "GET", "/v1/integration", None)
            .await;
        let version = settings.body["settings"]["version"].as_u64().unwrap();
        if !settings.body["settings"]["use_service_account"]
            .as_bool()
            .unwrap()
        {
            let r = self
                .as_user(
                    org,
                    primary,
                    "PATCH",
                    "/v1/integration/settings",
                    Some(serde_json::json!({"use_service_account": true, "version": version})),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }
        let r = self
            .as_user(
                org,
                primary,
                "POST",
                "/v1/integration/connection/activate",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["consent_url"].as_str().unwrap().to_owned()
    }

    /// Microsoft's redirect to our callback, followed: the browser's GET of `location`.
    pub async fn follow(&self, outcome: ConsentOutcome) -> Reply {
        match outcome {
            ConsentOutcome::Redirect { location, .. } => {
                self.call("GET", &location, None, None, &[]).await
            }
            ConsentOutcome::Page { status, aadsts, .. } => {
                panic!("Microsoft kept the browser on a page: {status} AADSTS{aadsts:?}")
            }
        }
    }

    /// The sign-in leg: the browser signs in at `sign_in_url` as `ms_user`, Microsoft sends it
    /// to our callback; returns our callback's answer (a 303 to the consent page, or to the
    /// front end when refused).
    pub async fn sign_in(&self, sign_in_url: &str, ms_user: &str) -> Reply {
        let out = self
            .sim
            .browser_sign_in(sign_in_url, ms_user)
            .await
            .expect("the sign-in page works");
        self.follow(out).await
    }

    /// The consent leg: `ms_user` decides on the consent page our callback sent the browser to.
    pub async fn consent(
        &self,
        consent_url: &str,
        ms_user: &str,
        decision: ConsentDecision,
    ) -> Reply {
        let out = self
            .sim
            .browser_consent(consent_url, ms_user, decision)
            .await
            .expect("the consent page works");
        self.follow(out).await
    }

    /// Both legs as one person: sign in, then decide on the consent page. Returns the final
    /// answer (or the sign-in leg's, if it did not lead to the consent page).
    pub async fn connect_via(
        &self,
        sign_in_url: &str,
        ms_user: &str,
        decision: ConsentDecision,
    ) -> Reply {
        let signed_in = self.sign_in(sign_in_url, ms_user).await;
        if !self.is_consent_page(signed_in.location()) {
            return signed_in;
        }
        let consent_url = signed_in.location().to_owned();
        self.consent(&consent_url, ms_user, decision).await
    }

    /// Activate as the Primary Global Administrator and go through both legs.
    pub async fn connect(&self, org: &str, decision: ConsentDecision) -> Reply {
        let url = self.activate(org).await;
        self.connect_via(&url, GLOBAL_ADMIN, decision).await
    }

    pub fn is_consent_page(&self, location: &str) -> bool {
        location.starts_with(self.sim.authority()) && location.contains("/v2.0/adminconsent?")
    }

    pub fn app_for(&self, app: AppRegistration) -> &AppInfo {
        match app {
            AppRegistration::Default => &self.default_app,
            AppRegistration::ReadOnly => &self.read_only_app,
        }
    }
}

/// "Sync now" for tests that never reach the queue (refused or precondition-failed calls).
pub struct NoQueue;

#[async_trait::async_trait]
impl SyncTrigger for NoQueue {
    async fn sync_org_now(&self, _org: &OrgId, _request: &str) -> o365_domain::Result<()> {
        Err(o365_domain::DomainError::Unavailable(
            "no sync queue in this test".into(),
        ))
    }
}
