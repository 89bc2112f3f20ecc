//! Graph v1.0: routing, bearer-token checks and admission (throttling/faults) for the users
//! endpoints (`directory.rs`) and the mail-folder message delta, with Graph's error bodies and
//! opaque, MAC-protected paging tokens.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::Shared;
use crate::config::{GoneStyle, PropagationFailure};
use crate::errors::{GraphIds, Resp, graph_error, json_response};
use crate::generate::{ALL_FIELDS, Owner, RenderCtx, View, parse_select, render_message};
use crate::identity::{AccessClaims, verify_access_token};
use crate::state::{Change, Filter, FullCursor, immutable_id, parse_folder, regular_id};
use crate::throttle::{Admission, Endpoint, PostFault, ViolationKind, format_retry_after};
use crate::util::{json_str, now, parse_form, percent_decode};

const ODATA_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
pub(crate) const USER_ROLES: &[&str] = &[
    "User.Read.All",
    "User.ReadBasic.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const MAIL_ROLES: &[&str] = &[
    "Mail.Read",
    "Mail.ReadWrite",
    "Mail.ReadBasic",
    "Mail.ReadBasic.All",
];

enum Route {
    /// (user segment, addressed with the key form `users('..')`).
    User(String, bool),
    /// The collection `/users` (`$filter`).
    Users,
    Delta(String, bool, String),
    Me,
    Unknown(String),
}

/// Split a path into segments, turning `name('key')` into `name`, `key` and `delta()` into `delta`.
fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let seg = percent_decode(raw);
        if let (Some(open), true) = (seg.find('('), seg.ends_with(')')) {
            out.push(seg[..open].to_string());
            let inner = seg[open + 1..seg.len() - 1].trim_matches('\'');
            if !inner.is_empty() {
                out.push(inner.to_string());
            }
        } else {
            out.push(seg);
        }
    }
    out
}

fn route(path: &str) -> Route {
    let rest = path.trim_start_matches("/v1.0");
    // `segments` flattens `users('x')` into `users`, `x`; the key form matters for `$` UPNs.
    let first = rest.trim_start_matches('/').split('/').next().unwrap_or("");
    let key_form = percent_decode(first)
        .to_ascii_lowercase()
        .starts_with("users(");
    let segs = segments(rest);
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match l.as_slice() {
        ["users"] => Route::Users,
        ["users", _] => Route::User(segs[1].clone(), key_form),
        ["users", _, "mailfolders", _, "messages", "delta"] => {
            Route::Delta(segs[1].clone(), key_form, segs[3].clone())
        }
        ["me", ..] => Route::Me,
        _ => Route::Unknown(segs.last().cloned().unwrap_or_default()),
    }
}

/// Paging state carried inside `$skiptoken` / `$deltatoken`: opaque to clients, MAC-protected,
/// so the server keeps no per-token memory.
#[derive(Clone, Copy, Debug)]
struct Tok {
    /// 1 = full round page, 2 = incremental round page, 3 = delta (next round).
    kind: u8,
    mbx: u32,
    folder: u8,
    epoch: u32,
    global_epoch: u32,
    issued: i64,
    a: u64,
    b: u64,
    phase: u8,
    pos: u32,
    emitted: u32,
    filter_kind: u8,
    filter_at: i64,
    select: u32,
}

impl Tok {
    fn encode(&self, key: &[u8; 32]) -> String {
        let mut b = Vec::with_capacity(72);
        b.push(1u8);
        b.push(self.kind);
        b.extend_from_slice(&self.mbx.to_be_bytes());
        b.push(self.folder);
        b.extend_from_slice(&self.epoch.to_be_bytes());
        b.extend_from_slice(&self.global_epoch.to_be_bytes());
        b.extend_from_slice(&self.issued.to_be_bytes());
        b.extend_from_slice(&self.a.to_be_bytes());
        b.extend_from_slice(&self.b.to_be_bytes());
        b.push(self.phase);
        b.extend_from_slice(&self.pos.to_be_bytes());
        b.extend_from_slice(&self.emitted.to_be_bytes());
        b.push(self.filter_kind);
        b.extend_from_slice(&self.filter_at.to_be_bytes());
        b.extend_from_slice(&self.select.to_be_bytes());
        let mac = mac(key, &b);
        // Scramble the fields so the token reads as noise (clients must treat it as opaque).
        scramble(key, &mac, &mut b);
        b.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(b)
    }

    fn decode(s: &str, key: &[u8; 32]) -> Option<Tok> {
        let b = URL_SAFE_NO_PAD.decode(s.trim()).ok()?;
        if b.len() != 61 + 10 {
            return None;
        }
        let (data, tag) = b.split_at(61);
        let mut data = data.to_vec();
        scramble(key, tag, &mut data);
        if mac(key, &data) != tag || data[0] != 1 {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes(data[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_be_bytes(data[i..i + 8].try_into().unwrap_or_default());
        Some(Tok {
            kind: data[1],
            mbx: u32_at(2),
            folder: data[6],
            epoch: u32_at(7),
            global_epoch: u32_at(11),
            issued: u64_at(15) as i64,
            a: u64_at(23),
            b: u64_at(31),
            phase: data[39],
            pos: u32_at(40),
            emitted: u32_at(44),
            filter_kind: data[48],
            filter_at: u64_at(49) as i64,
            select: u32_at(57),
        })
    }

    fn filter(&self) -> Option<Filter> {
        let at = time::OffsetDateTime::from_unix_timestamp(self.filter_at).ok()?;
        match self.filter_kind {
            1 => Some(Filter { at, strict: false }),
            2 => Some(Filter { at, strict: true }),
            _ => None,
        }
    }
}

/// XOR with a keystream derived from the key and the MAC (its own inverse).
fn scramble(key: &[u8; 32], tag: &[u8], data: &mut [u8]) {
    let k = u64::from_be_bytes(key[..8].try_into().unwrap_or_default());
    let t = tag
        .iter()
        .fold(0u64, |h, b| h.rotate_left(8) ^ u64::from(*b));
    for (i, chunk) in data.chunks_mut(8).enumerate() {
        let ks = crate::util::hash_parts(&[k, t, i as u64]).to_be_bytes();
        for (d, x) in chunk.iter_mut().zip(ks) {
            *d ^= x;
        }
    }
}

fn mac(key: &[u8; 32], data: &[u8]) -> [u8; 10] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length works for HMAC");
    m.update(data);
    let full = m.finalize().into_bytes();
    let mut out = [0u8; 10];
    out.copy_from_slice(&full[..10]);
    out
}

/// `Prefer` values from any number of headers, comma-separated.
struct Prefer {
    max_page: Option<u32>,
    immutable: bool,
}

fn prefer(headers: &HeaderMap) -> Prefer {
    let mut p = Prefer {
        max_page: None,
        immutable: false,
    };
    for v in headers.get_all("prefer") {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(',').map(str::trim) {
            let (k, val) = part.split_once('=').unwrap_or((part, ""));
            let val = val.trim().trim_matches('"');
            if k.trim().eq_ignore_ascii_case("odata.maxpagesize") {
                p.max_page = val.parse().ok();
            } else if k.trim().eq_ignore_ascii_case("IdType")
                && val.eq_ignore_ascii_case("ImmutableId")
            {
                p.immutable = true;
            }
        }
    }
    p
}

/// Decrements the mailbox's in-flight count when the request is done.
struct InFlight {
    shared: Arc<Shared>,
    mbx: u32,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(m) = st.mailboxes.get_mut(self.mbx as usize) {
            m.in_flight = m.in_flight.saturating_sub(1);
        }
    }
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| {
            let (scheme, rest) = s.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        })
        .unwrap_or_default()
}

pub(crate) async fn handle(shared: Arc<Shared>, req: Request) -> Resp {
    let ids = GraphIds::new(req.headers());
    let headers = req.headers().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let is_get = req.method() == axum::http::Method::GET;
    drop(req);
    let route = route(&path);
    let (endpoint, user_seg) = match &route {
        Route::User(u, _) => (Endpoint::GraphUser, Some(u.clone())),
        Route::Delta(u, _, _) => (Endpoint::GraphDelta, Some(u.clone())),
        Route::Users => (Endpoint::GraphUsersQuery, None),
        _ => (Endpoint::GraphOther, None),
    };
    {
        let mut st = shared.lock();
        let uid = user_seg.as_deref().and_then(|u| st.find_user(u));
        st.throttle.count(endpoint, uid);
    }
    if !is_get {
        return graph_error(
            &ids,
            405,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        );
    }
    let claims = match verify_access_token(&shared, &bearer(&headers)) {
        Ok(c) => c,
        Err(msg) => return graph_error(&ids, 401, "InvalidAuthenticationToken", msg),
    };
    if let Route::User(u, false) | Route::Delta(u, false, _) = &route
        && u.starts_with('$')
    {
        // Graph reads a leading `$` in a path segment as a system query option.
        return graph_error(
            &ids,
            400,
            "Request_BadRequest",
            &format!(
                "Invalid object identifier '{u}'. A userPrincipalName that begins with '$' must be addressed with the key form: /users('{u}')."
            ),
        );
    }
    match route {
        Route::Me => graph_error(
            &ids,
            400,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        ),
        Route::Unknown(seg) => graph_error(
            &ids,
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{seg}'."),
        ),
        Route::User(u, _) => crate::directory::get_user(shared, ids, claims, u, &query).await,
        Route::Users => crate::directory::list_users(shared, ids, claims, &query, &headers).await,
        Route::Delta(u, _, f) => delta(shared, ids, claims, u, f, &query, &headers).await,
    }
}

const IDENTITY_NOT_FOUND: &str =
    "The identity of the calling application could not be established.";

/// Checks shared by both endpoints. On success: (user id, mailbox number, in-flight guard,
/// latency, post fault).
pub(crate) struct Admitted {
    pub user: Uuid,
    mbx: Option<u32>,
    _guard: Option<InFlight>,
    pub post: PostFault,
}

/// The calling app must exist in the token's tenant (and have propagated, in mode `Graph`).
/// Returns (tenant id, app id); None is answered `identity_not_found`.
pub(crate) fn check_identity(
    st: &crate::state::State,
    claims: &AccessClaims,
) -> Option<(Uuid, Uuid)> {
    let tid = Uuid::parse_str(&claims.tid).ok()?;
    let app = Uuid::parse_str(&claims.appid).unwrap_or_default();
    let tenant = st.tenants.get(&tid)?;
    let sp = tenant.service_principals.get(&app)?;
    (!st.propagating(tenant, sp, PropagationFailure::Graph)).then_some((tid, app))
}

pub(crate) fn identity_not_found(ids: &GraphIds) -> Resp {
    graph_error(
        ids,
        401,
        "Authorization_IdentityNotFound",
        IDENTITY_NOT_FOUND,
    )
}

/// `mail`: a mailbox endpoint (Exchange errors, wrong-tenant violations) rather than a
/// directory read (users of other tenants are simply not found).
pub(crate) async fn admit(
    shared: &Arc<Shared>,
    ids: &GraphIds,
    claims: &AccessClaims,
    user_seg: &str,
    mail: bool,
) -> Result<Admitted, Resp> {
    let (adm, latency) = {
        let mut guard = shared.lock();
        let st = &mut *guard;
        let Some((tid, app)) = check_identity(st, claims) else {
            return Err(identity_not_found(ids));
        };
        let tid = Some(tid);
        let found = st
            .find_user(user_seg)
            .filter(|u| mail || Some(st.users[u].tenant) == tid);
        let Some(uid) = found else {
            return Err(if mail {
                graph_error(
                    ids,
                    404,
                    "ErrorInvalidUser",
                    &format!("The requested user '{user_seg}' is invalid."),
                )
            } else {
                graph_error(
                    ids,
                    404,
                    "Request_ResourceNotFound",
                    &format!(
                        "Resource '{user_seg}' does not exist or one of its queried reference-property objects are not present."
                    ),
                )
            });
        };
        let user = &st.users[&uid];
        if Some(user.tenant) != tid {
            let detail = format!(
                "token of tenant {} used for user {} of tenant {}",
                claims.tid, user.upn, user.tenant
            );
            st.throttle.violation(
                ViolationKind::WrongTenantToken,
                Some(app),
                Some(uid),
                detail,
            );
            return Err(graph_error(
                ids,
                401,
                "Authorization_IdentityNotFound",
                IDENTITY_NOT_FOUND,
            ));
        }
        let mbx = user.mailbox;
        let mut guard_out = None;
        let mut post = PostFault::None;
        let mut latency = None;
        if let Some(n) = mbx {
            let m = &mut st.mailboxes[n as usize];
            m.in_flight += 1;
            m.max_in_flight = m.max_in_flight.max(m.in_flight);
            let in_flight = m.in_flight;
            guard_out = Some(InFlight {
                shared: shared.clone(),
                mbx: n,
            });
            match st.throttle.admit(
                &shared.cfg.throttle,
                shared.cfg.seed,
                app,
                n,
                uid,
                in_flight,
                Instant::now(),
            ) {
                Admission::Proceed {
                    latency: l,
                    post: p,
                } => {
                    latency = l;
                    post = p;
                }
                Admission::Reject(r) => {
                    let mut resp = graph_error(ids, r.status, r.code, r.message);
                    if let Some(ra) = r.retry_after
                        && let Ok(v) = HeaderValue::from_str(&format_retry_after(ra))
                    {
                        resp.headers_mut().insert("retry-after", v);
                    }
                    // The in-flight guard locks the state when dropped: release the lock first.
                    drop(guard);
                    drop(guard_out);
                    return Err(resp);
                }
            }
        }
        (
            Admitted {
                user: uid,
                mbx,
                _guard: guard_out,
                post,
            },
            latency,
        )
    };
    if let Some(l) = latency {
        tokio::time::sleep(l).await;
    }
    Ok(adm)
}

pub(crate) fn has_role(claims: &AccessClaims, wanted: &[&str]) -> bool {
    claims
        .roles
        .iter()
        .any(|r| wanted.iter().any(|w| w.eq_ignore_ascii_case(r)))
}

/// Build the final 200 response, applying a post fault (truncated JSON / reset mid-body).
pub(crate) fn finish(
    ids: &GraphIds,
    status: u16,
    body: String,
    post: PostFault,
    pref_applied: Option<String>,
) -> Resp {
    let mut r = match post {
        PostFault::None => json_response(status, body, ODATA_JSON),
        PostFault::Truncate => {
            let cut = (body.len() / 2).max(1);
            let mut b = body.into_bytes();
            b.truncate(cut);
            let mut r = json_response(status, String::new(), ODATA_JSON);
            *r.body_mut() = Body::from(b);
            r
        }
        PostFault::ResetMidBody => {
            let total = body.len();
            let mut b = body.into_bytes();
            b.truncate((total / 2).max(1));
            // Send the first half, give hyper time to flush it, then fail the body so the
            // connection is cut with the declared content-length unmet.
            let stream =
                futures_util::stream::unfold(Some(bytes::Bytes::from(b)), |first| async move {
                    match first {
                        Some(chunk) => Some((Ok::<_, std::io::Error>(chunk), None)),
                        None => {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            Some((
                                Err(std::io::Error::new(
                                    std::io::ErrorKind::ConnectionReset,
                                    "injected connection reset",
                                )),
                                None,
                            ))
                        }
                    }
                });
            let mut r = json_response(status, String::new(), ODATA_JSON);
            *r.body_mut() = Body::from_stream(stream);
            if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
                r.headers_mut().insert("content-length", v);
            }
            r
        }
    };
    ids.apply(&mut r);
    r.headers_mut()
        .insert("odata-version", HeaderValue::from_static("4.0"));
    r.headers_mut()
        .insert("vary", HeaderValue::from_static("Accept-Encoding"));
    if let Some(p) = pref_applied.and_then(|p| HeaderValue::from_str(&p).ok()) {
        r.headers_mut().insert("preference-applied", p);
    }
    r
}

fn gone(shared: &Shared, ids: &GraphIds, user: Uuid, folder: &str) -> Resp {
    match shared.cfg.gone_style {
        GoneStyle::SyncStateNotFound => graph_error(
            ids,
            410,
            "SyncStateNotFound",
            "The sync state generation is not found. Delete the sync state and start a full synchronization.",
        ),
        GoneStyle::ResyncRequired => graph_error(
            ids,
            410,
            "resyncRequired",
            "Resync required. Replace any local items with the server's items and start a new delta round.",
        ),
        GoneStyle::Location => {
            let mut r = graph_error(
                ids,
                410,
                "SyncStateNotFound",
                "The sync state is gone. Restart from the Location URL.",
            );
            let loc = format!(
                "{}/v1.0/users/{user}/mailFolders('{folder}')/messages/delta()",
                shared.base_url
            );
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert("location", v);
            }
            r
        }
    }
}

async fn delta(
    shared: Arc<Shared>,
    ids: GraphIds,
    claims: AccessClaims,
    user_seg: String,
    folder_seg: String,
    query: &str,
    headers: &HeaderMap,
) -> Resp {
    let adm = match admit(&shared, &ids, &claims, &user_seg, true).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if !has_role(&claims, MAIL_ROLES) {
        return graph_error(
            &ids,
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    }
    let pref = prefer(headers);
    let q = parse_form(query);
    let get = |names: &[&str]| {
        q.iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.clone())
    };
    let skip = get(&["$skiptoken", "skiptoken"]);
    let delta_tok = get(&["$deltatoken", "deltatoken"]);
    let cfg = &shared.cfg;
    let page_size = pref
        .max_page
        .unwrap_or(cfg.default_page_size)
        .clamp(1, cfg.max_page_size.max(1));
    let mut applied = Vec::new();
    if pref.max_page.is_some() {
        applied.push(format!("odata.maxpagesize={page_size}"));
    }
    if pref.immutable {
        applied.push("IdType=\"ImmutableId\"".to_string());
    }
    let applied = (!applied.is_empty()).then(|| applied.join(", "));

    // Parse a fresh round's options before taking the lock.
    let mut fresh_select = ALL_FIELDS;
    let mut fresh_filter: Option<Filter> = None;
    if skip.is_none() && delta_tok.is_none() {
        if let Some(sel) = get(&["$select", "select"]) {
            match parse_select(&sel) {
                Ok(m) => fresh_select = m,
                Err(name) => {
                    return graph_error(
                        &ids,
                        400,
                        "RequestBroker--ParseUri",
                        &format!(
                            "Could not find a property named '{name}' on type 'microsoft.graph.message'."
                        ),
                    );
                }
            }
        }
        if let Some(f) = get(&["$filter", "filter"]) {
            let parts: Vec<&str> = f.split_whitespace().collect();
            let parsed = match parts.as_slice() {
                [prop, op, value] if prop.eq_ignore_ascii_case("receivedDateTime") => {
                    let strict = op.eq_ignore_ascii_case("gt");
                    if !strict && !op.eq_ignore_ascii_case("ge") {
                        None
                    } else {
                        crate::util::parse_time(value.trim_matches('\''))
                            .map(|at| Filter { at, strict })
                    }
                }
                _ => None,
            };
            match parsed {
                Some(fl) => fresh_filter = Some(fl),
                None => {
                    return graph_error(
                        &ids,
                        400,
                        "ErrorInvalidUrlQueryFilter",
                        "The query filter contains one or more invalid nodes. Delta supports only 'receivedDateTime ge|gt <value>'.",
                    );
                }
            }
        }
        if let Some(o) = get(&["$orderby", "orderby"]) {
            let o = o
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_ascii_lowercase();
            if o != "receiveddatetime desc" {
                return graph_error(
                    &ids,
                    400,
                    "ErrorInvalidProperty",
                    "Delta only supports $orderby=receivedDateTime desc.",
                );
            }
        }
    }

    let mut guard = shared.lock();
    let st = &mut *guard;
    let user = &st.users[&adm.user];
    let (Some(mbx), true, false) = (adm.mbx, user.licensed, user.on_premises) else {
        return graph_error(
            &ids,
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        );
    };
    if user.access_policy_excluded {
        return graph_error(
            &ids,
            403,
            "ErrorAccessDenied",
            "Access to OData is disabled.",
        );
    }
    if user.rbac_scoped_out {
        return graph_error(
            &ids,
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    }
    let owner = Owner {
        name: user.display_name.clone(),
        address: user.seed_address.clone(),
    };
    let user_id = user.id;
    let Some(folder) = parse_folder(cfg.seed, mbx, &folder_seg) else {
        return graph_error(
            &ids,
            404,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    let global_epoch = st.global_epoch;
    let m = &st.mailboxes[mbx as usize];
    let epoch = m.epochs[folder.idx()];
    let now_unix = now().unix_timestamp();

    // Where this request starts.
    let (mut tok, incremental) = match (skip.as_deref(), delta_tok.as_deref()) {
        (None, None) => {
            let c = m.start_cursor(folder);
            let (fk, fa) = match fresh_filter {
                Some(f) => (if f.strict { 2 } else { 1 }, f.at.unix_timestamp()),
                None => (0, 0),
            };
            let t = Tok {
                kind: 1,
                mbx,
                folder: folder as u8,
                epoch,
                global_epoch,
                issued: now_unix,
                a: m.seq,
                b: 0,
                phase: c.phase,
                pos: c.pos,
                emitted: 0,
                filter_kind: fk,
                filter_at: fa,
                select: fresh_select,
            };
            (t, false)
        }
        (s, d) => {
            let raw = s.or(d).unwrap_or_default();
            let Some(mut t) = Tok::decode(raw, &shared.mac_key) else {
                return gone(&shared, &ids, user_id, folder.well_known_name());
            };
            let kind_ok = if s.is_some() {
                t.kind == 1 || t.kind == 2
            } else {
                t.kind == 3
            };
            let expired = cfg
                .delta_token_ttl
                .is_some_and(|ttl| now_unix - t.issued > ttl.as_secs() as i64);
            if !kind_ok
                || t.mbx != mbx
                || t.folder != folder as u8
                || t.epoch != epoch
                || t.global_epoch != global_epoch
                || expired
            {
                return gone(&shared, &ids, user_id, folder.well_known_name());
            }
            if t.kind == 3 {
                // A new round of changes since the delta token's position.
                t = Tok {
                    kind: 2,
                    a: t.a,
                    b: m.seq,
                    phase: 0,
                    pos: 0,
                    emitted: 0,
                    ..t
                };
            }
            let inc = t.kind == 2;
            (t, inc)
        }
    };

    let ctx = RenderCtx {
        seed: cfg.seed,
        mbx,
        owner,
        anchor: shared.anchor,
        history_days: cfg.history_days,
        generated: m.generated,
        sizes: cfg.body_sizes.clone(),
    };
    let filter = tok.filter();
    let mut views: Vec<View> = Vec::new();
    let mut removed: Vec<(String, bool)> = Vec::new();
    let done;
    if incremental {
        let (changes, next) = m.changes(folder, tok.a, tok.b, tok.pos, page_size);
        for c in changes {
            match c {
                Change::Upsert(k) => {
                    let ov = m.overrides.get(&k).cloned();
                    if let Some(f) = filter
                        && !f.accepts(ctx.received(k, ov.as_ref()))
                    {
                        continue;
                    }
                    views.push(View { key: k, ov, folder });
                }
                Change::Removed(k, deleted, gen_in) => {
                    let id = if pref.immutable {
                        immutable_id(cfg.seed, mbx, k)
                    } else {
                        regular_id(cfg.seed, mbx, k, folder, gen_in)
                    };
                    removed.push((id, deleted));
                }
            }
        }
        match next {
            Some(p) => {
                tok.pos = p;
                done = false;
            }
            None => done = true,
        }
    } else {
        let mut cur = FullCursor {
            phase: tok.phase,
            pos: tok.pos,
            emitted: tok.emitted,
        };
        let mut keys = Vec::new();
        let recv = |k, ov: Option<&crate::state::Override>| ctx.received(k, ov);
        done = m.full_page(
            folder,
            &mut cur,
            page_size,
            filter,
            cfg.filter_cap,
            &recv,
            &mut keys,
        );
        tok.phase = cur.phase;
        tok.pos = cur.pos;
        tok.emitted = cur.emitted;
        for k in keys {
            views.push(View {
                key: k,
                ov: m.overrides.get(&k).cloned(),
                folder,
            });
        }
    }
    // Next link continues this round; the delta link starts the next one at this round's end.
    let link_base = format!(
        "{}/v1.0/users/{}/mailFolders('{}')/messages/delta()",
        shared.base_url,
        user_id,
        folder.well_known_name()
    );
    let link = if done {
        let end = if incremental { tok.b } else { tok.a };
        let t = Tok {
            kind: 3,
            a: end,
            b: 0,
            phase: 0,
            pos: 0,
            emitted: 0,
            issued: now_unix,
            ..tok
        };
        (
            "@odata.deltaLink",
            format!("{link_base}?$deltatoken={}", t.encode(&shared.mac_key)),
        )
    } else {
        (
            "@odata.nextLink",
            format!("{link_base}?$skiptoken={}", tok.encode(&shared.mac_key)),
        )
    };
    drop(guard);

    let mut out = String::with_capacity(4096 + views.len() * 2048);
    out.push_str("{\"@odata.context\":");
    json_str(
        &mut out,
        &format!("{}/v1.0/$metadata#Collection(message)", shared.base_url),
    );
    out.push_str(",\"value\":[");
    let mut first = true;
    for v in &views {
        if !first {
            out.push(',');
        }
        first = false;
        render_message(&mut out, &ctx, v, tok.select, pref.immutable);
    }
    for (id, deleted) in &removed {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str("{\"@odata.type\":\"#microsoft.graph.message\",\"id\":");
        json_str(&mut out, id);
        out.push_str(if *deleted {
            ",\"@removed\":{\"reason\":\"deleted\"}}"
        } else {
            ",\"@removed\":{\"reason\":\"changed\"}}"
        });
    }
    out.push_str("],\"");
    out.push_str(link.0);
    out.push_str("\":");
    json_str(&mut out, &link.1);
    out.push('}');
    finish(&ids, 200, out, adm.post, applied)
}
