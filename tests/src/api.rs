//! The API as the front end sees it: our routers on a real socket, the real store (dynoxide),
//! Microsoft played by the simulator, tokens signed by the development identity key.

use std::sync::Arc;

use ms_sim::{AppInfo, AppSpec, SimConfig, Simulator, TenantInfo, TenantSpec, UserSpec};
use o365_domain::audit::AuditAction;
use o365_domain::connection::AppRegistration;
use o365_domain::ids::OrgId;
use o365_domain::ports::{OrgStore, SyncTrigger};
use o365_domain::secret::{AppCredential, ClientCredential, Sensitive};
use o365_domain::user::{NewUser, Role};
use o365_runtime::{Env, Parts};
use o365_secrets::LocalSecretStore;
use reqwest::StatusCode;
use serde_json::Value;

use crate::{StoreFixture, audit};

pub const FRONTEND: &str = "https://app.example.com";
pub const STATE_KEY: &[u8] = b"test-state-signing-key-0123456789abcdef";

pub struct ApiHarness {
    pub fixture: StoreFixture,
    pub sim: Simulator,
    pub tenant: TenantInfo,
    pub default_app: AppInfo,
    pub read_only_app: AppInfo,
    pub secrets: Arc<LocalSecretStore>,
    pub base: String,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
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
        let parts = Parts {
            store: Arc::new(fixture.store.clone()),
            secrets: secrets.clone(),
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
            default_app,
            read_only_app,
            secrets,
            base,
            http,
            server,
        }
    }

    /// An org as the operator command creates it: its first admin is also its Primary user,
    /// plus an admin and a member.
    pub async fn org(&self, name: &str) -> OrgId {
        let org = OrgId::parse(name).unwrap();
        let store = &self.fixture.store;
        let primary = NewUser::parse("globaladmin@contoso.com", "Global Admin", "admin").unwrap();
        store
            .create_org(&org, &primary, audit(&org, AuditAction::OrgCreated, "org"))
            .await
            .unwrap();
        for (email, role) in [
            ("admin@contoso.com", Role::Admin),
            ("adele@contoso.com", Role::Member),
        ] {
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

    /// Turns the service account on (as the Primary admin) and returns the consent URL.
    pub async fn activate(&self, org: &str) -> String {
        let settings = self
            .as_user(
                org,
                "globaladmin@contoso.com",
                "GET",
                "/v1/integration",
                None,
            )
            .await;
        let version = settings.body["settings"]["version"].as_u64().unwrap();
        if !settings.body["settings"]["use_service_account"]
            .as_bool()
            .unwrap()
        {
            let r = self
                .as_user(
                    org,
                    "globaladmin@contoso.com",
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
                "globaladmin@contoso.com",
                "POST",
                "/v1/integration/connection/activate",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["consent_url"].as_str().unwrap().to_owned()
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
    async fn sync_org_now(&self, _org: &OrgId) -> o365_domain::Result<usize> {
        Err(o365_domain::DomainError::Unavailable(
            "no sync queue in this test".into(),
        ))
    }
}
