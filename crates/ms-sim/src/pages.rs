//! HTML pages and redirects shared by the interactive endpoints (admin consent, authorize),
//! and the scripted "browser" that walks them (`browser_consent`, `browser_sign_in`).
//!
//! Sign-in convention: the signed-in user comes from the `login_hint` query/form parameter or
//! the `ms_sim_user` cookie (set by the "Pick an account" page).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::errors::Resp;
use crate::state::State;
use crate::util::{aad_time, encode_form, html_escape, html_unescape, now, parse_form};

pub const SESSION_COOKIE: &str = "ms_sim_user";

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

pub(crate) fn page(status: u16, title: &str, inner: &str) -> Resp {
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

/// An error page that stays (request errors must never redirect to an unverified URI).
pub(crate) fn error_page(code: u32, message: &str) -> Resp {
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

pub(crate) fn redirect(location: &str, cookie: Option<String>) -> Resp {
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

pub(crate) fn append_query(uri: &str, q: &str) -> String {
    format!("{uri}{}{q}", if uri.contains('?') { '&' } else { '?' })
}

/// `302 redirect_uri?error=..&error_description=AADSTSnnn: ..&error_uri=..{extra}&state=..`
/// (state only when the app sent one).
pub(crate) fn error_redirect(
    base: &str,
    redirect_uri: &str,
    error: &str,
    code: u32,
    message: &str,
    extra: &[(&str, &str)],
    state: Option<&str>,
) -> Resp {
    let desc = format!(
        "AADSTS{code}: {message}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
        Uuid::new_v4(),
        Uuid::new_v4(),
        aad_time(now())
    );
    let uri = format!("{base}/error?code={code}");
    let mut q: Vec<(&str, &str)> = vec![
        ("error", error),
        ("error_description", &desc),
        ("error_uri", &uri),
    ];
    q.extend_from_slice(extra);
    if let Some(s) = state {
        q.push(("state", s));
    }
    redirect(&append_query(redirect_uri, &encode_form(&q)), None)
}

pub(crate) fn cookie_user(headers: &HeaderMap) -> Option<String> {
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

/// `Set-Cookie` value that signs `upn` in.
pub(crate) fn session_cookie(upn: &str) -> String {
    format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
        percent_encoding::utf8_percent_encode(upn, percent_encoding::NON_ALPHANUMERIC)
    )
}

pub(crate) fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        html_escape(name),
        html_escape(value)
    )
}

/// Path of an interactive endpoint for the tenant segment as the request spelled it.
pub(crate) fn self_path(tenant_seg: &str, rest: &str) -> String {
    format!(
        "/{}/{rest}",
        percent_encoding::utf8_percent_encode(tenant_seg, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// "Pick an account": one form per user (of `tenant`, or every tenant) posting
/// `action=signin`, `login_hint` and the flow's `fields` back to `self_path`; optionally a
/// Cancel form (`data-action="cancel"`).
pub(crate) fn account_picker(
    st: &State,
    tenant: Option<Uuid>,
    self_path: &str,
    fields: &[(&str, &str)],
    app_name: &str,
    cancel: bool,
) -> Resp {
    let mut users: Vec<(String, String)> = st
        .users
        .values()
        .filter(|u| tenant.is_none_or(|t| t == u.tenant))
        .map(|u| (u.upn.clone(), u.display_name.clone()))
        .collect();
    users.sort();
    let carried: String = fields.iter().map(|(k, v)| hidden(k, v)).collect();
    let mut list = String::new();
    for (upn, name) in users {
        list.push_str(&format!(
            "<li><form method=\"post\" action=\"{self_path}\" data-action=\"signin\">{}{}{carried}<button type=\"submit\">{} ({})</button></form></li>",
            hidden("action", "signin"),
            hidden("login_hint", &upn),
            html_escape(&name),
            html_escape(&upn)
        ));
    }
    let cancel_form = if cancel {
        format!(
            "<form method=\"post\" action=\"{self_path}\" data-action=\"cancel\">{}{carried}<button type=\"submit\" id=\"cancel\">Cancel</button></form>",
            hidden("action", "cancel")
        )
    } else {
        String::new()
    };
    page(
        200,
        "Sign in to your account",
        &format!(
            "<h1>Pick an account</h1><p>to continue to {}</p><ul id=\"accounts\">{list}</ul>{cancel_form}",
            html_escape(app_name)
        ),
    )
}

/// (action, fields) of every form marked `data-action="{which}"`.
pub(crate) fn find_forms(html: &str, which: &str) -> Vec<(String, Vec<(String, String)>)> {
    let marker = format!("data-action=\"{which}\"");
    let attr = |tag: &str, name: &str| -> Option<String> {
        let k = format!("{name}=\"");
        let i = tag.find(&k)? + k.len();
        let j = tag[i..].find('"')? + i;
        Some(html_unescape(&tag[i..j]))
    };
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(rel) = html[from..].find(&marker) {
        let at = from + rel;
        from = at + marker.len();
        let (Some(start), Some(len)) = (html[..at].rfind("<form"), html[at..].find("</form>"))
        else {
            continue;
        };
        let form = &html[start..at + len];
        let Some(action) = attr(form, "action") else {
            continue;
        };
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
        out.push((action, fields));
    }
    out
}

pub(crate) fn find_form(html: &str, which: &str) -> Option<(String, Vec<(String, String)>)> {
    find_forms(html, which).into_iter().next()
}

pub(crate) fn outcome(base: &str, resp: &crate::http_client::RawResponse) -> ConsentOutcome {
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

/// Submit a form found on a page, as a browser would.
pub(crate) async fn submit(
    base: &str,
    cookie: &str,
    action: &str,
    fields: &[(String, String)],
) -> std::io::Result<crate::http_client::RawResponse> {
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = encode_form(&pairs);
    let url = if action.starts_with('/') {
        format!("{base}{action}")
    } else {
        action.to_string()
    };
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if !cookie.is_empty() {
        headers.push(("cookie", cookie));
    }
    crate::http_client::request("POST", &url, &headers, Some(body.as_bytes())).await
}

/// `ms_sim_user=<upn>` as a request `Cookie` header.
pub(crate) fn cookie_header(upn: &str) -> String {
    format!(
        "{SESSION_COOKIE}={}",
        percent_encoding::utf8_percent_encode(upn, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// The account picker's `action=signin`: sign `upn` in (the session cookie) and send the
/// browser `back` to the flow; an unknown account is the 50034 error page.
pub(crate) fn sign_in(st: &State, upn: &str, back: &str) -> Resp {
    if st.find_user(upn).is_none() {
        return error_page(
            50034,
            &format!(
                "The user account {upn} does not exist in the directory. To sign into this application, the account must be added to the directory."
            ),
        );
    }
    redirect(back, Some(session_cookie(upn)))
}

/// Who is signed in, by the convention above: the `login_hint` parameter, else the session
/// cookie; nobody when `prompt=select_account` asks for the account picker.
pub(crate) fn signed_in_user(
    st: &State,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Option<Uuid> {
    let p = |k: &str| crate::util::form_get(params, k).filter(|v| !v.is_empty());
    if p("prompt") == Some("select_account") {
        return None;
    }
    let who = p("login_hint")
        .map(str::to_string)
        .or_else(|| cookie_user(headers))?;
    st.find_user(&who)
}

/// A browser's request to a page: its headers, whether it was a form POST, and its parameters
/// (the form body for a POST, the query otherwise).
pub(crate) async fn read_form_request(
    req: axum::extract::Request,
) -> (axum::http::HeaderMap, bool, Vec<(String, String)>) {
    let headers = req.headers().clone();
    let is_post = req.method() == axum::http::Method::POST;
    let query = req.uri().query().unwrap_or("").to_string();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let params = if is_post {
        crate::util::parse_form(&String::from_utf8_lossy(&body))
    } else {
        crate::util::parse_form(&query)
    };
    (headers, is_post, params)
}

/// The tenant an interactive endpoint's path names: `None` for the multi-tenant segments it
/// accepts (`multi`, lower case), or the 90002 error page for an unknown tenant.
pub(crate) fn path_tenant(
    st: &State,
    tenant_seg: &str,
    multi: &[&str],
) -> Result<Option<Uuid>, Box<Resp>> {
    if multi.contains(&tenant_seg.to_ascii_lowercase().as_str()) {
        return Ok(None);
    }
    st.find_tenant(tenant_seg).map(Some).ok_or_else(|| {
        Box::new(error_page(
            90002,
            &crate::errors::tenant_not_found(tenant_seg),
        ))
    })
}

/// The app registration a request names by `client_id`, provided `redirect_uri` is one of its
/// redirect URIs. Otherwise the error page: 700016 naming the directory (the path tenant's
/// domain, else the segment as spelled in lower case), or 50011.
pub(crate) fn registered_app<'a>(
    st: &'a State,
    client_id: &str,
    redirect_uri: &str,
    path_tenant: Option<Uuid>,
    tenant_seg: &str,
) -> Result<&'a crate::state::App, Box<Resp>> {
    let Some(app) = Uuid::parse_str(client_id)
        .ok()
        .and_then(|c| st.apps.get(&c))
    else {
        let dir = path_tenant
            .map(|t| st.tenants[&t].domain.clone())
            .unwrap_or_else(|| tenant_seg.to_ascii_lowercase());
        let msg = crate::errors::app_not_found(client_id, &dir);
        return Err(Box::new(error_page(700016, &msg)));
    };
    if !app.redirect_uris.iter().any(|u| u == redirect_uri) {
        let msg = format!(
            "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal."
        );
        return Err(Box::new(error_page(50011, &msg)));
    }
    Ok(app)
}
