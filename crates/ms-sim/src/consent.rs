//! Admin consent: `GET/POST /{tenant}/v2.0/adminconsent`. Real HTML pages (sign-in, consent,
//! errors) driven by plain forms, so a browser, a WebDriver test or `browser_consent` all
//! walk the same path.
//!
//! Sign-in follows the convention of `pages.rs`; `prompt=select_account` forces the
//! account picker.

use std::sync::Arc;

use axum::extract::Request;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Shared;
use crate::config::NonAdminConsent;
use crate::errors::Resp;
use crate::model::{ConsentRecord, SimError};
use crate::pages::{
    ConsentOutcome, account_picker, append_query, cookie_header, error_page, error_redirect,
    find_form, hidden, outcome, page, path_tenant, redirect, registered_app, self_path, sign_in,
    signed_in_user, submit,
};
use crate::state::ServicePrincipal;
use crate::throttle::Endpoint;
use crate::util::{encode_form, form_get, html_escape, now};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDecision {
    Accept,
    Cancel,
}

fn role_description(role: &str) -> &'static str {
    match role {
        "Mail.Read" => "Read mail in all mailboxes",
        "Mail.ReadWrite" => "Read and write mail in all mailboxes",
        "Mail.ReadBasic.All" => "Read basic mail in all mailboxes",
        "User.Read.All" => "Read all users' full profiles",
        "User.ReadBasic.All" => "Read all users' basic profiles",
        _ => "Application permission",
    }
}

pub(crate) async fn handle(shared: Arc<Shared>, tenant_seg: String, req: Request) -> Resp {
    shared.lock().throttle.count(Endpoint::AdminConsent, None);
    let (headers, is_post, params) = crate::pages::read_form_request(req).await;
    let p = |k: &str| form_get(&params, k).unwrap_or("").to_string();
    let (client_id, scope, redirect_uri, state) =
        (p("client_id"), p("scope"), p("redirect_uri"), p("state"));
    let action = if is_post { p("action") } else { String::new() };
    let base = &shared.base_url;
    let self_path = self_path(&tenant_seg, "v2.0/adminconsent");
    let flow = |login_hint: Option<&str>| {
        let mut v = vec![
            ("client_id", client_id.as_str()),
            ("scope", scope.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("state", state.as_str()),
        ];
        if let Some(l) = login_hint {
            v.push(("login_hint", l));
        }
        encode_form(&v)
    };

    // 1. Validate the request itself: these errors never redirect.
    let lower = tenant_seg.to_ascii_lowercase();
    if lower == "common" || lower == "consumers" {
        return error_page(
            90130,
            "Application is not supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
        );
    }
    let mut st = shared.lock();
    let path_tenant = match path_tenant(&st, &tenant_seg, &["organizations"]) {
        Ok(t) => t,
        Err(page) => return *page,
    };
    let app = match registered_app(&st, &client_id, &redirect_uri, path_tenant, &tenant_seg) {
        Ok(app) => app,
        Err(page) => return *page,
    };
    let app_id = app.client_id;
    let app_name = app.display_name.clone();
    let permissions = app.permissions.clone();

    // 2. Sign-in.
    if action == "signin" {
        return sign_in(
            &st,
            &p("login_hint"),
            &format!("{self_path}?{}", flow(None)),
        );
    }
    let Some(uid) = signed_in_user(&st, &headers, &params) else {
        let fields = [
            ("client_id", client_id.as_str()),
            ("scope", scope.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("state", state.as_str()),
        ];
        return account_picker(&st, path_tenant, &self_path, &fields, &app_name, false);
    };
    let user = &st.users[&uid];
    let user_tenant = user.tenant;
    let upn = user.upn.clone();
    // Only these two roles can grant Graph application permissions.
    let is_admin = user.global_admin || user.privileged_role_admin;
    if path_tenant.is_some_and(|t| t != user_tenant) {
        let dom = st.tenants[&path_tenant.unwrap_or_default()].domain.clone();
        return error_page(
            50020,
            &format!(
                "User account '{upn}' from identity provider 'https://sts.windows.net/{user_tenant}/' does not exist in tenant '{dom}' and cannot access the application '{client_id}'({app_name}) in that tenant."
            ),
        );
    }

    // 3. Only a Global Administrator or Privileged Role Administrator may grant application
    //    permissions.
    if !is_admin {
        let msg = format!(
            "{app_name} needs permission to access resources in your organization that only an admin can grant. Please ask an admin to grant permission to this app before you can use it."
        );
        return match shared.cfg.non_admin_consent {
            NonAdminConsent::Page => {
                let inner = format!(
                    "<h1>Need admin approval</h1><p>{}</p><p id=\"error\" data-aadsts=\"90094\" class=\"muted\">AADSTS90094: Admin consent is required for the permissions requested by this application.</p>\
<p><a href=\"{self_path}?{}&amp;prompt=select_account\">Have an admin account? Sign in with that account</a></p><p>Signed in as {}</p>",
                    html_escape(&msg),
                    html_escape(&flow(None)),
                    html_escape(&upn)
                );
                page(200, "Need admin approval", &inner)
            }
            NonAdminConsent::Redirect => error_redirect(
                base,
                &redirect_uri,
                "consent_required",
                90094,
                &msg,
                &[("admin_consent", "True")],
                Some(&state),
            ),
        };
    }

    match action.as_str() {
        "accept" => {
            grant(&mut st, user_tenant, app_id, Some(upn));
            drop(st);
            let q = encode_form(&[
                ("admin_consent", "True"),
                ("tenant", &user_tenant.to_string()),
                ("scope", &scope),
                ("state", &state),
            ]);
            redirect(&append_query(&redirect_uri, &q), None)
        }
        "cancel" => error_redirect(
            base,
            &redirect_uri,
            "access_denied",
            65004,
            "User declined to consent to access the app.",
            &[("admin_consent", "True")],
            Some(&state),
        ),
        _ => {
            let mut perms = String::new();
            for r in &permissions {
                perms.push_str(&format!(
                    "<li data-role=\"{0}\"><b>{0}</b> (application) - {1}</li>",
                    html_escape(r),
                    role_description(r)
                ));
            }
            let fields = format!(
                "{}{}{}{}{}",
                hidden("client_id", &client_id),
                hidden("scope", &scope),
                hidden("redirect_uri", &redirect_uri),
                hidden("state", &state),
                hidden("login_hint", &upn)
            );
            let inner = format!(
                "<div class=\"muted\">{upn}</div><h1>Permissions requested</h1><h2 id=\"app-name\">{name}</h2><p class=\"muted\">unverified</p>\
<p>This app would like to:</p><ul id=\"permissions\">{perms}</ul>\
<p>If you accept, this app will get access to the specified resources for all users in your organization. No one else will be prompted to review these permissions.</p>\
<form method=\"post\" action=\"{self_path}\" data-action=\"accept\" style=\"display:inline\">{fields}{acc}<button type=\"submit\" id=\"accept\">Accept</button></form>\
<form method=\"post\" action=\"{self_path}\" data-action=\"cancel\" style=\"display:inline\">{fields}{can}<button type=\"submit\" id=\"cancel\">Cancel</button></form>",
                upn = html_escape(&upn),
                name = html_escape(&app_name),
                acc = hidden("action", "accept"),
                can = hidden("action", "cancel"),
            );
            page(200, "Permissions requested", &inner)
        }
    }
}

/// Record a consent: create or refresh the app's service principal in the tenant with the
/// app's registered permissions.
pub(crate) fn grant(
    st: &mut crate::state::State,
    tenant: Uuid,
    client_id: Uuid,
    by: Option<String>,
) -> Vec<String> {
    let roles = st
        .apps
        .get(&client_id)
        .map(|a| a.permissions.clone())
        .unwrap_or_default();
    let seed = st.seed;
    if let Some(t) = st.tenants.get_mut(&tenant) {
        let sp = t
            .service_principals
            .entry(client_id)
            .or_insert_with(|| ServicePrincipal {
                object_id: Uuid::from_u64_pair(
                    crate::util::hash_parts(&[
                        seed,
                        0x5b,
                        tenant.as_u64_pair().0,
                        client_id.as_u64_pair().0,
                    ]),
                    crate::util::hash_parts(&[
                        seed,
                        0x5c,
                        tenant.as_u64_pair().1,
                        client_id.as_u64_pair().1,
                    ]),
                ),
                roles: Vec::new(),
                consented_at: std::time::Instant::now(),
            });
        sp.roles = roles.clone();
        sp.consented_at = std::time::Instant::now();
    }
    st.consents.push(ConsentRecord {
        tenant_id: tenant,
        client_id,
        granted_by: by,
        roles: roles.clone(),
        at: now(),
        revoked: false,
    });
    roles
}

impl crate::SimHandle {
    /// Act as an admin's browser: open `consent_url` (the adminconsent URL a product built),
    /// signed in as `user` (UPN) through the session cookie, then press Accept or Cancel on the
    /// consent page by submitting its form. Returns the final redirect or the page that stayed.
    pub async fn browser_consent(
        &self,
        consent_url: &str,
        user: &str,
        decision: ConsentDecision,
    ) -> Result<ConsentOutcome, SimError> {
        use crate::http_client::request;
        let base = self.base_url().to_string();
        let cookie = cookie_header(user);
        let first = request("GET", consent_url, &[("cookie", &cookie)], None).await?;
        let which = match decision {
            ConsentDecision::Accept => "accept",
            ConsentDecision::Cancel => "cancel",
        };
        if first.status != 200 {
            return Ok(outcome(&base, &first));
        }
        let html = String::from_utf8_lossy(&first.body).into_owned();
        let Some((action, fields)) = find_form(&html, which) else {
            return Ok(outcome(&base, &first));
        };
        let resp = submit(&base, &cookie, &action, &fields).await?;
        Ok(outcome(&base, &resp))
    }
}
