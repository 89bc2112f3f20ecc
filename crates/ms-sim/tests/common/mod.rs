#![allow(dead_code)]
//! Shared fixtures for the simulator's tests.

use ms_sim::*;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

pub const CLIENT_CERT: &str = include_str!("../fixtures/client.cert.pem");
pub const CLIENT_KEY: &str = include_str!("../fixtures/client.key.pem");
pub const OTHER_CERT: &str = include_str!("../fixtures/other.cert.pem");
pub const OTHER_KEY: &str = include_str!("../fixtures/other.key.pem");
pub const REDIRECT: &str = "https://app.example.com/connect/callback";

pub struct World {
    pub sim: Simulator,
    pub tenant: TenantInfo,
    pub app: AppInfo,
    pub secret: SecretInfo,
    pub cert: CertInfo,
    pub admin: UserInfo,
    pub user: UserInfo,
    pub http: reqwest::Client,
}

pub async fn world_with(cfg: SimConfig, inbox: u32, sent: u32) -> World {
    let sim = Simulator::start(cfg).await.unwrap();
    let tenant = sim
        .create_tenant(TenantSpec {
            domain: "contoso.com".into(),
            ..Default::default()
        })
        .unwrap();
    let app = sim
        .create_app(AppSpec {
            display_name: "o365-sync".into(),
            redirect_uris: vec![REDIRECT.into()],
            permissions: vec!["Mail.ReadWrite".into(), "User.Read.All".into()],
            ..Default::default()
        })
        .unwrap();
    let secret = sim
        .add_secret(
            app.client_id,
            OffsetDateTime::now_utc() + time::Duration::days(30),
        )
        .unwrap();
    let cert = sim.add_certificate(app.client_id, CLIENT_CERT).unwrap();
    let admin = sim
        .create_user(
            tenant.id,
            UserSpec {
                user_name: "admin".into(),
                global_admin: true,
                mailbox: None,
                ..Default::default()
            },
        )
        .unwrap();
    let user = sim
        .create_user(
            tenant.id,
            UserSpec {
                user_name: "adele.vance".into(),
                mailbox: Some(MailboxSpec {
                    inbox,
                    sentitems: sent,
                }),
                ..Default::default()
            },
        )
        .unwrap();
    World {
        sim,
        tenant,
        app,
        secret,
        cert,
        admin,
        user,
        http: reqwest::Client::new(),
    }
}

/// `world_with`, and the app holds consent in the tenant.
pub async fn consented_world(cfg: SimConfig, inbox: u32, sent: u32) -> World {
    let w = world_with(cfg, inbox, sent).await;
    w.sim.grant_consent(w.tenant.id, w.app.client_id).unwrap();
    w
}

pub async fn world() -> World {
    consented_world(SimConfig::default(), 25, 12).await
}

impl World {
    pub async fn token_form(&self, tenant: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.sim.token_url(tenant))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn secret_token_resp(&self) -> reqwest::Response {
        self.secret_token_resp_for(
            &self.tenant.id.to_string(),
            &self.app.client_id.to_string(),
            &self.secret.value,
        )
        .await
    }

    /// Client credentials with a secret at `/{tenant}/oauth2/v2.0/token`.
    pub async fn secret_token_resp_for(
        &self,
        tenant: &str,
        client_id: &str,
        secret: &str,
    ) -> reqwest::Response {
        secret_token_resp(&self.http, &self.sim.token_url(tenant), client_id, secret).await
    }

    /// An app-only token for another app of the world's tenant.
    pub async fn app_token(&self, client_id: Uuid, secret: &str) -> String {
        app_token(
            &self.http,
            &self.sim.token_url(&self.tenant.id.to_string()),
            client_id,
            secret,
        )
        .await
    }

    /// The app's admin-consent URL at `/organizations` (back to `REDIRECT` with `state`).
    pub fn consent_url(&self, state: &str) -> String {
        self.sim.admin_consent_url(
            "organizations",
            &self.app.client_id.to_string(),
            REDIRECT,
            state,
        )
    }

    /// Walk the app's admin consent at `/organizations` as `upn` and press `decision`.
    pub async fn consent(
        &self,
        state: &str,
        upn: &str,
        decision: ConsentDecision,
    ) -> ConsentOutcome {
        self.sim
            .browser_consent(&self.consent_url(state), upn, decision)
            .await
            .unwrap()
    }

    /// Another tenant `domain` with users `user_names` (default specs).
    pub fn other_tenant(&self, domain: &str, user_names: &[&str]) -> TenantInfo {
        let t = self
            .sim
            .create_tenant(TenantSpec {
                domain: domain.into(),
                ..Default::default()
            })
            .unwrap();
        for name in user_names {
            self.sim
                .create_user(
                    t.id,
                    UserSpec {
                        user_name: (*name).into(),
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        t
    }

    pub async fn token(&self) -> String {
        let r = self.secret_token_resp().await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    pub async fn graph(&self, token: &str, path: &str, prefer: &[&str]) -> reqwest::Response {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.sim.graph_url(), path)
        };
        let mut rb = self.http.get(url).bearer_auth(token);
        for p in prefer {
            rb = rb.header("prefer", *p);
        }
        rb.send().await.unwrap()
    }

    pub fn delta_path(&self, folder: &str) -> String {
        format!(
            "/users/{}/mailFolders/{folder}/messages/delta",
            self.user.id
        )
    }
}

/// Client credentials with a secret (`scope` = Graph's `.default`) at `token_url`.
pub async fn secret_token_resp(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    secret: &str,
) -> reqwest::Response {
    http.post(token_url)
        .form(&[
            ("client_id", client_id),
            ("scope", GRAPH_DEFAULT_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
}

/// The access token of a client-credentials request (the status is not checked).
pub async fn app_token(
    http: &reqwest::Client,
    token_url: &str,
    client_id: Uuid,
    secret: &str,
) -> String {
    let r = secret_token_resp(http, token_url, &client_id.to_string(), secret).await;
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

/// Register an app from `spec` and give it a client secret valid for a day.
pub fn app_with_secret(sim: &Simulator, spec: AppSpec) -> (AppInfo, SecretInfo) {
    let app = sim.create_app(spec).unwrap();
    let secret = sim
        .add_secret(
            app.client_id,
            OffsetDateTime::now_utc() + time::Duration::days(1),
        )
        .unwrap();
    (app, secret)
}

/// A client assertion as Microsoft's docs describe it, signed with the fixture key.
pub fn assertion(
    client_id: Uuid,
    aud: &str,
    key_pem: &str,
    cert_pem: &str,
    alg: jsonwebtoken::Algorithm,
    sha256: bool,
    jti: &str,
) -> String {
    use base64::Engine;
    use sha2::Digest;
    let der = {
        let b: String = cert_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD.decode(b).unwrap()
    };
    let mut h = jsonwebtoken::Header::new(alg);
    h.typ = Some("JWT".into());
    if sha256 {
        h.x5t_s256 = Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der)),
        );
    } else {
        h.x5t =
            Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der)));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({
        "aud": aud, "iss": client_id.to_string(), "sub": client_id.to_string(),
        "jti": jti, "nbf": now, "iat": now, "exp": now + 600,
    });
    jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// An identity-platform error body: `error`, the one code in `error_codes`, and the
/// description starting `AADSTS{code}: `.
pub fn assert_aadsts(v: &Value, error: &str, code: u64) {
    assert_eq!(v["error"], error, "{v}");
    assert_eq!(v["error_codes"], serde_json::json!([code]), "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with(&format!("AADSTS{code}: ")),
        "{v}"
    );
}

pub async fn error_code(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap())
}

// ---- plain HTTP calls ------------------------------------------------------------------------

/// Send a request: its status and JSON body.
pub async fn fetch(rb: reqwest::RequestBuilder) -> (u16, Value) {
    error_code(rb.send().await.unwrap()).await
}

/// Send a request: its JSON body (the status is not checked).
pub async fn fetch_json<T: DeserializeOwned>(rb: reqwest::RequestBuilder) -> T {
    rb.send().await.unwrap().json().await.unwrap()
}

/// Send a request: its body as text (the status is not checked).
pub async fn fetch_text(rb: reqwest::RequestBuilder) -> String {
    rb.send().await.unwrap().text().await.unwrap()
}

/// Send a request: its status (the body is not read).
pub async fn fetch_status(rb: reqwest::RequestBuilder) -> u16 {
    rb.send().await.unwrap().status().as_u16()
}

pub async fn get_json(w: &World, url: &str) -> (u16, Value) {
    fetch(w.http.get(url)).await
}

pub async fn get_status(w: &World, url: &str) -> u16 {
    fetch_status(w.http.get(url)).await
}

/// `POST url` with a JSON body: the JSON answer.
pub async fn post_json<T: DeserializeOwned>(w: &World, url: &str, body: &Value) -> T {
    fetch_json(w.http.post(url).json(body)).await
}

/// `POST url` without a body: the JSON answer.
pub async fn post_empty(w: &World, url: &str) -> Value {
    fetch_json(w.http.post(url)).await
}

/// `POST url` with a JSON body: the status.
pub async fn post_status(w: &World, url: &str, body: &Value) -> u16 {
    fetch_status(w.http.post(url).json(body)).await
}

/// `PUT url` with a JSON body: the status.
pub async fn put_status(w: &World, url: &str, body: &Value) -> u16 {
    fetch_status(w.http.put(url).json(body)).await
}

/// Follow a delta round to its deltaLink, returning all items and the deltaLink.
pub async fn full_round(
    w: &World,
    token: &str,
    first: &str,
    prefer: &[&str],
) -> (Vec<Value>, String, usize) {
    let mut url = first.to_string();
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let r = w.graph(token, &url, prefer).await;
        assert_eq!(r.status(), 200, "page {url}");
        let v: Value = r.json().await.unwrap();
        pages += 1;
        items.extend(v["value"].as_array().unwrap().iter().cloned());
        if let Some(n) = v["@odata.nextLink"].as_str() {
            url = n.to_string();
        } else {
            return (
                items,
                v["@odata.deltaLink"]
                    .as_str()
                    .expect("deltaLink")
                    .to_string(),
                pages,
            );
        }
    }
}

// ---- sign-in (OpenID Connect) helpers ------------------------------------------------------

pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-sim-verifier";

/// base64url SHA-256 of the verifier (`code_challenge_method=S256`).
pub fn s256(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

/// An authorize URL as a product builds it (auth code + PKCE S256, query response mode).
pub fn authorize_url(sim: &Simulator, tenant: &str, client_id: Uuid, nonce: &str) -> String {
    sim.authorize_url(
        tenant,
        &[
            ("client_id", &client_id.to_string()),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("response_mode", "query"),
            ("scope", "openid profile email"),
            ("state", "st-123"),
            ("nonce", nonce),
            ("code_challenge", &s256(VERIFIER)),
            ("code_challenge_method", "S256"),
        ],
    )
}

/// A client that does not follow redirects (to look at each 302).
pub fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl World {
    /// Sign `upn` in and return the code (asserting the redirect back to the app).
    pub async fn sign_in_code(&self, tenant: &str, upn: &str, nonce: &str) -> String {
        let url = authorize_url(&self.sim, tenant, self.app.client_id, nonce);
        let out = self.sim.browser_sign_in(&url, upn).await.unwrap();
        match &out {
            ConsentOutcome::Redirect { location, params } => {
                assert!(location.starts_with(REDIRECT), "{location}");
                assert_eq!(params["state"], "st-123");
                params["code"].clone()
            }
            other => panic!("no redirect: {other:?}"),
        }
    }

    /// Redeem a code with the app's secret at `/{tenant}/oauth2/v2.0/token`.
    pub async fn redeem(
        &self,
        tenant: &str,
        code: &str,
        verifier: Option<&str>,
    ) -> reqwest::Response {
        let cid = self.app.client_id.to_string();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("client_id", cid.as_str()),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("scope", "openid profile email"),
            ("client_secret", self.secret.value.as_str()),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        self.token_form(tenant, &form).await
    }

    /// Sign in and redeem: the token response JSON.
    pub async fn sign_in_tokens(&self, tenant: &str, upn: &str, nonce: &str) -> Value {
        let code = self.sign_in_code(tenant, upn, nonce).await;
        let r = self.redeem(tenant, &code, Some(VERIFIER)).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

/// Submit the account picker's sign-in form (`action=signin`, `login_hint`, then `fields`) to
/// `url` with a client that does not follow redirects, and check that the answer is the 302
/// that sets the session cookie.
pub async fn post_signin(
    http: &reqwest::Client,
    url: &str,
    login_hint: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![("action", "signin"), ("login_hint", login_hint)];
    form.extend_from_slice(fields);
    let r = http.post(url).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("ms_sim_user=")
    );
    r
}

/// Header and claims of a JWT, unverified.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    use base64::Engine;
    let mut it = token.split('.');
    let mut part = || -> Value {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(it.next().unwrap())
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    };
    let h = part();
    (h, part())
}

/// Verify an ID token the way a relying party does: the tenant's discovery document →
/// `jwks_uri` → key by `kid`, RS256, `aud` = our client id, `iss` = the document's issuer.
pub async fn verify_id_token(w: &World, token: &str) -> Result<Value, String> {
    let (_, doc) = get_json(w, &w.sim.openid_configuration_url(&w.tenant.id.to_string())).await;
    let (_, jwks) = get_json(w, doc["jwks_uri"].as_str().unwrap()).await;
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let k = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or("unknown kid")?;
    let key = jsonwebtoken::DecodingKey::from_rsa_components(
        k["n"].as_str().unwrap(),
        k["e"].as_str().unwrap(),
    )
    .map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[w.app.client_id.to_string()]);
    v.set_issuer(&[doc["issuer"].as_str().unwrap()]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}
