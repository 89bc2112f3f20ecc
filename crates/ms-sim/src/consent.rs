//! Admin consent: `GET/POST /{tenant}/v2.0/adminconsent`. Real HTML pages (sign-in, consent,
//! errors) driven by plain forms, so a browser, a WebDriver test or `browser_consent` all
//! walk the same path.
//!
//! Sign-in convention: the signed-in user comes from the `login_hint` query/form parameter or
//! the `ms_sim_user` cookie (set by the sign-in page). `prompt=select_account` forces the
//! sign-in page.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Shared;
use crate::config::NonAdminConsent;
use crate::errors::Resp;
use crate::model::{ConsentRecord, SimError};
use crate::state::ServicePrincipal;
use crate::throttle::Endpoint;
use crate::util::{aad_time, encode_form, form_get, html_escape, html_unescape, now, parse_form};

pub const SESSION_COOKIE: &str = "ms_sim_user";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDecision {
    Accept,
    Cancel,
}

/// What the browser ended up with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ConsentOutcome {
    /// A 302 back to the app: `location` is the full URL, `params` its query.
    Redirect {
        location: String,
        params: BTreeMap<String, String>,
    },
    /// A page that stays (error or "Need admin approval"): the AADSTS code shown, if any.
    Page {
        status: u16,
        aadsts: Option<u32>,
        html: String,
    },
}

impl ConsentOutcome {
    pub fn param(&self, k: &str) -> Option<&str> {
        match self {
            ConsentOutcome::Redirect { params, .. } => params.get(k).map(String::as_str),
            ConsentOutcome::Page { .. } => None,
        }
    }
    pub fn aadsts(&self) -> Option<u32> {
        match self {
            ConsentOutcome::Page { aadsts, .. } => *aadsts,
            ConsentOutcome::Redirect { params, .. } => params
                .get("error_description")
                .and_then(|d| d.strip_prefix("AADSTS"))
                .and_then(|d| d.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|d| d.parse().ok()),
        }
    }
}

fn page(status: u16, title: &str, inner: &str) -> Resp {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
<style>body{{font-family:Segoe UI,Arial,sans-serif;background:#f2f2f2}}main{{background:#fff;max-width:440px;margin:60px auto;padding:44px;box-shadow:0 2px 6px rgba(0,0,0,.2)}}\
button{{padding:6px 24px;margin:8px 8px 0 0}}.muted{{color:#666;font-size:13px}}li{{margin:6px 0}}</style></head>\
<body><main><div class=\"muted\">Microsoft (simulated)</div>{}</main></body></html>",
        html_escape(title),
        inner
    );
    let mut r = Response::new(Body::from(html));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("no-store, no-cache"),
    );
    r
}

fn error_page(code: u32, message: &str) -> Resp {
    let trace = Uuid::new_v4();
    let inner = format!(
        "<h1>Sign in</h1><p>Sorry, but we're having trouble signing you in.</p>\
<p id=\"error\" data-aadsts=\"{code}\">AADSTS{code}: {}</p>\
<p class=\"muted\">Request Id: {trace}<br>Correlation Id: {}<br>Timestamp: {}</p>",
        html_escape(message),
        Uuid::new_v4(),
        aad_time(now())
    );
    page(200, "Sign in to your account", &inner)
}

fn redirect(location: &str, cookie: Option<String>) -> Resp {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert("location", v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert("set-cookie", c);
    }
    r
}

fn append_query(uri: &str, q: &str) -> String {
    format!("{uri}{}{q}", if uri.contains('?') { '&' } else { '?' })
}

fn cookie_user(headers: &HeaderMap) -> Option<String> {
    for v in headers.get_all("cookie") {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, val)) = part.trim().split_once('=')
                && k == SESSION_COOKIE
                && !val.is_empty()
            {
                return Some(crate::util::percent_decode(val));
            }
        }
    }
    None
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        html_escape(name),
        html_escape(value)
    )
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
    let headers = req.headers().clone();
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let params = if method == Method::POST {
        parse_form(&String::from_utf8_lossy(&body))
    } else {
        parse_form(&query)
    };
    let p = |k: &str| form_get(&params, k).unwrap_or("").to_string();
    let (client_id, scope, redirect_uri, state) =
        (p("client_id"), p("scope"), p("redirect_uri"), p("state"));
    let action = if method == Method::POST {
        p("action")
    } else {
        String::new()
    };
    let base = &shared.base_url;
    let self_path = format!(
        "/{}/v2.0/adminconsent",
        percent_encoding::utf8_percent_encode(&tenant_seg, percent_encoding::NON_ALPHANUMERIC)
    );
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
    let path_tenant = if lower == "organizations" {
        None
    } else {
        match st.find_tenant(&tenant_seg) {
            Some(t) => Some(t),
            None => {
                return error_page(
                    90002,
                    &format!(
                        "Tenant '{tenant_seg}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                    ),
                );
            }
        }
    };
    let app = Uuid::parse_str(&client_id)
        .ok()
        .and_then(|c| st.apps.get(&c));
    let Some(app) = app else {
        let dir = path_tenant
            .map(|t| st.tenants[&t].domain.clone())
            .unwrap_or_else(|| "organizations".into());
        return error_page(
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{dir}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    };
    if !app.redirect_uris.contains(&redirect_uri) {
        return error_page(
            50011,
            &format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal."
            ),
        );
    }
    let app_id = app.client_id;
    let app_name = app.display_name.clone();
    let permissions = app.permissions.clone();

    // 2. Sign-in.
    if action == "signin" {
        let upn = p("login_hint");
        if st.find_user(&upn).is_none() {
            return error_page(
                50034,
                &format!(
                    "The user account {upn} does not exist in the directory. To sign into this application, the account must be added to the directory."
                ),
            );
        }
        let cookie = format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
            percent_encoding::utf8_percent_encode(&upn, percent_encoding::NON_ALPHANUMERIC)
        );
        return redirect(&format!("{self_path}?{}", flow(None)), Some(cookie));
    }
    let force_pick = form_get(&params, "prompt") == Some("select_account");
    let who = form_get(&params, "login_hint")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| cookie_user(&headers));
    let user = if force_pick {
        None
    } else {
        who.as_deref().and_then(|u| st.find_user(u))
    };
    let Some(uid) = user else {
        let mut users: Vec<(String, String)> = st
            .users
            .values()
            .filter(|u| path_tenant.is_none_or(|t| t == u.tenant))
            .map(|u| (u.upn.clone(), u.display_name.clone()))
            .collect();
        users.sort();
        let mut list = String::new();
        for (upn, name) in users {
            list.push_str(&format!(
                "<li><form method=\"post\" action=\"{self_path}\" data-action=\"signin\">{}{}{}{}{}{}<button type=\"submit\">{} ({})</button></form></li>",
                hidden("action", "signin"),
                hidden("login_hint", &upn),
                hidden("client_id", &client_id),
                hidden("scope", &scope),
                hidden("redirect_uri", &redirect_uri),
                hidden("state", &state),
                html_escape(&name),
                html_escape(&upn)
            ));
        }
        return page(
            200,
            "Sign in to your account",
            &format!(
                "<h1>Pick an account</h1><p>to continue to {}</p><ul id=\"accounts\">{list}</ul>",
                html_escape(&app_name)
            ),
        );
    };
    let user = &st.users[&uid];
    let user_tenant = user.tenant;
    let upn = user.upn.clone();
    let is_admin = user.global_admin;
    if path_tenant.is_some_and(|t| t != user_tenant) {
        let dom = st.tenants[&path_tenant.unwrap_or_default()].domain.clone();
        return error_page(
            50020,
            &format!(
                "User account '{upn}' from identity provider 'https://sts.windows.net/{user_tenant}/' does not exist in tenant '{dom}' and cannot access the application '{client_id}'({app_name}) in that tenant."
            ),
        );
    }

    // 3. Only a Global Administrator may grant application permissions.
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
            NonAdminConsent::Redirect => {
                let q = encode_form(&[
                    ("error", "consent_required"),
                    (
                        "error_description",
                        &format!(
                            "AADSTS90094: {msg}\r\nTrace ID: {}\r\nTimestamp: {}",
                            Uuid::new_v4(),
                            aad_time(now())
                        ),
                    ),
                    ("error_uri", &format!("{base}/error?code=90094")),
                    ("admin_consent", "True"),
                    ("state", &state),
                ]);
                redirect(&append_query(&redirect_uri, &q), None)
            }
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
        "cancel" => {
            let q = encode_form(&[
                ("error", "access_denied"),
                (
                    "error_description",
                    &format!(
                        "AADSTS65004: User declined to consent to access the app.\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
                        Uuid::new_v4(),
                        Uuid::new_v4(),
                        aad_time(now())
                    ),
                ),
                ("error_uri", &format!("{base}/error?code=65004")),
                ("admin_consent", "True"),
                ("state", &state),
            ]);
            redirect(&append_query(&redirect_uri, &q), None)
        }
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

/// Extract (action, fields) of the form marked `data-action="{which}"`.
fn find_form(html: &str, which: &str) -> Option<(String, Vec<(String, String)>)> {
    let marker = format!("data-action=\"{which}\"");
    let at = html.find(&marker)?;
    let start = html[..at].rfind("<form")?;
    let end = at + html[at..].find("</form>")?;
    let form = &html[start..end];
    let attr = |tag: &str, name: &str| -> Option<String> {
        let k = format!("{name}=\"");
        let i = tag.find(&k)? + k.len();
        let j = tag[i..].find('"')? + i;
        Some(html_unescape(&tag[i..j]))
    };
    let action = attr(form, "action")?;
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input") {
        let j = rest[i..].find('>').map(|j| i + j).unwrap_or(rest.len());
        let tag = &rest[i..j];
        if let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value")) {
            fields.push((n, v));
        }
        rest = &rest[j..];
    }
    Some((action, fields))
}

fn outcome(base: &str, resp: crate::http_client::RawResponse) -> ConsentOutcome {
    if resp.status == 302 {
        let location = resp.header("location").unwrap_or_default().to_string();
        let abs = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location
        };
        let params = abs
            .split_once('?')
            .map(|(_, q)| parse_form(q).into_iter().collect())
            .unwrap_or_default();
        return ConsentOutcome::Redirect {
            location: abs,
            params,
        };
    }
    let html = String::from_utf8_lossy(&resp.body).into_owned();
    let aadsts = html
        .find("data-aadsts=\"")
        .and_then(|i| html[i + 13..].split('"').next())
        .and_then(|s| s.parse().ok());
    ConsentOutcome::Page {
        status: resp.status,
        aadsts,
        html,
    }
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
        let cookie = format!(
            "{SESSION_COOKIE}={}",
            percent_encoding::utf8_percent_encode(user, percent_encoding::NON_ALPHANUMERIC)
        );
        let first = request("GET", consent_url, &[("cookie", &cookie)], None).await?;
        let which = match decision {
            ConsentDecision::Accept => "accept",
            ConsentDecision::Cancel => "cancel",
        };
        if first.status != 200 {
            return Ok(outcome(&base, first));
        }
        let html = String::from_utf8_lossy(&first.body).into_owned();
        let Some((action, fields)) = find_form(&html, which) else {
            return Ok(outcome(&base, first));
        };
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = encode_form(&pairs);
        let url = if action.starts_with('/') {
            format!("{base}{action}")
        } else {
            action
        };
        let resp = request(
            "POST",
            &url,
            &[
                ("cookie", &cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Some(body.as_bytes()),
        )
        .await?;
        Ok(outcome(&base, resp))
    }
}
