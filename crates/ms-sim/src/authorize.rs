//! OpenID Connect sign-in: `GET/POST /{tenant}/oauth2/v2.0/authorize` (authorization code +
//! PKCE, `response_mode=query`). Same pages and sign-in convention as admin consent
//! (`pages.rs`); the sign-in scopes need no consent page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::Shared;
use crate::errors::Resp;
use crate::model::SimError;
use crate::pages::{
    ConsentOutcome, account_picker, append_query, cookie_header, error_page, error_redirect,
    find_form, find_forms, outcome, path_tenant, redirect, registered_app, self_path, sign_in,
    signed_in_user, submit,
};
use crate::throttle::Endpoint;
use crate::util::{encode_form, form_get};

/// How long an authorization code can be redeemed.
const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// Parameters of the app's request that survive the sign-in round trip.
const CARRIED: [&str; 9] = [
    "client_id",
    "response_type",
    "redirect_uri",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

/// An issued authorization code and everything it is bound to.
pub(crate) struct AuthCode {
    pub client_id: Uuid,
    pub redirect_uri: String,
    /// The signed-in user's tenant.
    pub tenant: Uuid,
    pub user: Uuid,
    pub scope: String,
    pub nonce: Option<String>,
    /// (code_challenge, method `S256` or `plain`).
    pub challenge: Option<(String, String)>,
    pub expires: Instant,
    pub redeemed: bool,
}

fn new_code() -> String {
    let mut b = Vec::with_capacity(48);
    for _ in 0..3 {
        b.extend_from_slice(Uuid::new_v4().as_bytes());
    }
    format!("1.A{}", URL_SAFE_NO_PAD.encode(b))
}

pub(crate) async fn handle(shared: Arc<Shared>, tenant_seg: String, req: Request) -> Resp {
    shared.lock().throttle.count(Endpoint::Authorize, None);
    let (headers, is_post, params) = crate::pages::read_form_request(req).await;
    let p = |k: &str| form_get(&params, k).filter(|v| !v.is_empty());
    let client_id = p("client_id").unwrap_or("").to_string();
    let redirect_uri = p("redirect_uri").unwrap_or("").to_string();
    let state = p("state").map(str::to_string);
    let action = if is_post {
        p("action").unwrap_or("")
    } else {
        ""
    };
    let base = &shared.base_url;
    let self_path = self_path(&tenant_seg, "oauth2/v2.0/authorize");
    let carried: Vec<(&str, &str)> = CARRIED
        .iter()
        .filter_map(|k| p(k).map(|v| (*k, v)))
        .collect();

    // 1. Request errors are shown on a page and never redirect.
    let lower = tenant_seg.to_ascii_lowercase();
    if lower == "consumers" {
        return error_page(
            90130,
            "Application is not supported over the /consumers endpoint: personal Microsoft accounts cannot sign in. Please use the /organizations or tenant-specific endpoint.",
        );
    }
    let mut st = shared.lock();
    let path_tenant = match path_tenant(&st, &tenant_seg, &["organizations", "common"]) {
        Ok(t) => t,
        Err(page) => return *page,
    };
    let app = match registered_app(&st, &client_id, &redirect_uri, path_tenant, &tenant_seg) {
        Ok(app) => app,
        Err(page) => return *page,
    };
    let (app_id, app_name) = (app.client_id, app.display_name.clone());
    if let Some(m) = p("response_mode").filter(|m| *m != "query") {
        return error_page(
            900352,
            &format!("Invalid response_mode '{m}': the simulator answers only 'query'."),
        );
    }

    // 2. The redirect URI is trusted from here on: errors go back to the app.
    let fail = |error: &str, code: u32, msg: &str| {
        error_redirect(base, &redirect_uri, error, code, msg, &[], state.as_deref())
    };
    match p("response_type") {
        None => {
            return fail(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'response_type'.",
            );
        }
        Some("code") => {}
        Some(rt) => {
            return fail(
                "unsupported_response_type",
                700054,
                &format!("response_type '{rt}' is not enabled for the application."),
            );
        }
    }
    let scope = p("scope").unwrap_or("").to_string();
    if !scope.split_whitespace().any(|s| s == "openid") {
        return fail(
            "invalid_scope",
            70011,
            &format!(
                "The provided value for the input parameter 'scope' is not valid: '{scope}' does not contain 'openid'."
            ),
        );
    }
    let challenge = match (p("code_challenge"), p("code_challenge_method")) {
        (None, _) => None,
        (Some(c), None | Some("plain")) => Some((c.to_string(), "plain".to_string())),
        (Some(c), Some("S256")) => Some((c.to_string(), "S256".to_string())),
        (Some(_), Some(m)) => {
            return fail(
                "invalid_request",
                501491,
                &format!("Invalid code_challenge_method '{m}': use 'S256' or 'plain'."),
            );
        }
    };
    if action == "cancel" {
        return fail(
            "access_denied",
            50126,
            "Error validating credentials: the user canceled the sign-in.",
        );
    }

    // 3. Sign-in.
    if action == "signin" {
        let back = format!("{self_path}?{}", encode_form(&carried));
        return sign_in(&st, p("login_hint").unwrap_or(""), &back);
    }
    let Some(uid) = signed_in_user(&st, &headers, &params) else {
        return account_picker(&st, path_tenant, &self_path, &carried, &app_name, true);
    };
    let user = &st.users[&uid];
    let (user_tenant, upn) = (user.tenant, user.upn.clone());
    if let Some(t) = path_tenant.filter(|t| *t != user_tenant) {
        let dom = st.tenants[&t].domain.clone();
        return fail(
            "access_denied",
            50020,
            &format!(
                "User account '{upn}' from identity provider 'https://sts.windows.net/{user_tenant}/' does not exist in tenant '{dom}' and cannot access the application '{client_id}'({app_name}) in that tenant. The account needs to be added as an external user in the tenant first. Sign out and sign in again with a different Azure Active Directory user account."
            ),
        );
    }

    // 4. Issue the code.
    let now = Instant::now();
    if st.codes.len() > 1000 {
        st.codes.retain(|_, c| c.expires > now);
    }
    let code = new_code();
    st.codes.insert(
        code.clone(),
        AuthCode {
            client_id: app_id,
            redirect_uri: redirect_uri.clone(),
            tenant: user_tenant,
            user: uid,
            scope,
            nonce: p("nonce").map(str::to_string),
            challenge,
            expires: now + CODE_LIFETIME,
            redeemed: false,
        },
    );
    drop(st);
    let session = Uuid::new_v4().to_string();
    let mut q: Vec<(&str, &str)> = vec![("code", &code)];
    if let Some(s) = &state {
        q.push(("state", s));
    }
    q.push(("session_state", &session));
    redirect(&append_query(&redirect_uri, &encode_form(&q)), None)
}

impl crate::SimHandle {
    /// An authorize URL for `tenant` (`organizations`, `common`, GUID or domain) with the
    /// given query parameters, e.g. `[("client_id", ..), ("response_type", "code"), ..]`.
    pub fn authorize_url(&self, tenant: &str, params: &[(&str, &str)]) -> String {
        format!(
            "{}/{tenant}/oauth2/v2.0/authorize?{}",
            self.base_url(),
            encode_form(params)
        )
    }

    /// Act as a browser on an authorize URL: signed in as `user` (UPN) through the session
    /// cookie, pick that account if the account picker shows, follow the simulator's own
    /// redirects, and stop at the redirect to the app (`code`/`state`/`session_state` or
    /// `error`/`error_description`/`state`) or at a page that stays.
    pub async fn browser_sign_in(
        &self,
        authorize_url: &str,
        user: &str,
    ) -> Result<ConsentOutcome, SimError> {
        let base = self.base_url().to_string();
        let cookie = cookie_header(user);
        let get = |url: String| {
            let cookie = cookie.clone();
            async move { crate::http_client::request("GET", &url, &[("cookie", &cookie)], None).await }
        };
        let mut resp = get(authorize_url.to_string()).await?;
        for _ in 0..5 {
            let out = outcome(&base, &resp);
            match &out {
                ConsentOutcome::Redirect { location, .. }
                    if location.starts_with(&base)
                        && location.contains("/oauth2/v2.0/authorize") =>
                {
                    resp = get(location.clone()).await?;
                }
                ConsentOutcome::Page { html, .. } => {
                    let form = find_forms(html, "signin").into_iter().find(|(_, f)| {
                        f.iter()
                            .any(|(k, v)| k == "login_hint" && v.eq_ignore_ascii_case(user))
                    });
                    let Some((action, fields)) = form else {
                        return Ok(out);
                    };
                    resp = submit(&base, &cookie, &action, &fields).await?;
                }
                ConsentOutcome::Redirect { .. } => return Ok(out),
            }
        }
        Ok(outcome(&base, &resp))
    }

    /// Open an authorize URL with no session and press Cancel on the account picker. Returns
    /// the redirect to the app (`error=access_denied`), or whatever stayed if no picker showed
    /// (e.g. the URL carries a `login_hint`).
    pub async fn browser_cancel_sign_in(
        &self,
        authorize_url: &str,
    ) -> Result<ConsentOutcome, SimError> {
        let base = self.base_url().to_string();
        let first = crate::http_client::request("GET", authorize_url, &[], None).await?;
        let html = String::from_utf8_lossy(&first.body).into_owned();
        match (first.status, find_form(&html, "cancel")) {
            (200, Some((action, fields))) => {
                let resp = submit(&base, "", &action, &fields).await?;
                Ok(outcome(&base, &resp))
            }
            _ => Ok(outcome(&base, &first)),
        }
    }
}
