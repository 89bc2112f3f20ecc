//! Every route × every kind of caller gets the expected status, and no refused call writes.

use std::sync::Arc;

use ms_sim::SimConfig;
use o365_domain::ids::OrgId;
use o365_domain::page::PageRequest;
use o365_domain::ports::{AuditLog, OrgStore, UserStore};
use o365_e2e::api::{ApiHarness, NoQueue};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    NoToken,
    BadSignature,
    Expired,
    WrongAudience,
    Member,
    OtherOrgAdmin,
    Admin,
    PrimaryAdmin,
}

const CALLERS: [Caller; 8] = [
    Caller::NoToken,
    Caller::BadSignature,
    Caller::Expired,
    Caller::WrongAudience,
    Caller::Member,
    Caller::OtherOrgAdmin,
    Caller::Admin,
    Caller::PrimaryAdmin,
];

struct Route {
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    headers: &'static [(&'static str, &'static str)],
    member: u16,
    admin: u16,
    primary: u16,
}

fn routes() -> Vec<Route> {
    let r = |method, path, body: Option<Value>, headers, member, admin, primary| Route {
        method,
        path,
        body,
        headers,
        member,
        admin,
        primary,
    };
    vec![
        r("GET", "/v1/integration", None, &[], 403, 200, 200),
        r(
            "PATCH",
            "/v1/integration/settings",
            Some(json!({"read_only": true, "version": 2})),
            &[],
            403,
            200,
            200,
        ),
        r(
            "POST",
            "/v1/integration/connection/activate",
            None,
            &[],
            403,
            403,
            200,
        ),
        r(
            "POST",
            "/v1/integration/connection/verify",
            None,
            &[],
            403,
            409,
            409,
        ),
        // Deleting stops everyone's sync: the Primary's action, like activating.
        r(
            "DELETE",
            "/v1/integration/connection",
            None,
            &[],
            403,
            403,
            200,
        ),
        r("GET", "/v1/users", None, &[], 403, 200, 200),
        r(
            "POST",
            "/v1/users",
            Some(json!({"email": "new@contoso.com", "display_name": "New", "role": "member"})),
            &[],
            403,
            201,
            201,
        ),
        r(
            "GET",
            "/v1/users/adele@contoso.com",
            None,
            &[],
            200,
            200,
            200,
        ),
        r(
            "GET",
            "/v1/users/admin@contoso.com",
            None,
            &[],
            403,
            200,
            200,
        ),
        r(
            "PATCH",
            "/v1/users/adele@contoso.com",
            Some(json!({"role": "admin", "version": 1})),
            &[],
            403,
            200,
            200,
        ),
        r(
            "DELETE",
            "/v1/users/adele@contoso.com",
            None,
            &[("if-match", "\"1\"")],
            403,
            204,
            204,
        ),
        r(
            "PUT",
            "/v1/primary",
            Some(json!({"email": "admin@contoso.com"})),
            &[],
            403,
            200,
            200,
        ),
        r(
            "POST",
            "/v1/users/sync",
            Some(json!({"changes": [{"email": "adele@contoso.com", "sync_enabled": true}]})),
            &[],
            403,
            200,
            200,
        ),
        r("POST", "/v1/sync", None, &[], 403, 409, 409),
        r("GET", "/v1/audit", None, &[], 403, 200, 200),
        r("GET", "/v1/sync/runs", None, &[], 403, 200, 200),
        r("GET", "/v1/me", None, &[], 200, 200, 200),
        r(
            "GET",
            "/v1/integration/capture-policy",
            None,
            &[],
            403,
            200,
            200,
        ),
        r(
            "PUT",
            "/v1/integration/capture-policy",
            Some(json!({"excluded_domains": ["lawfirm.com"], "version": 0})),
            &[],
            403,
            200,
            200,
        ),
        // Captured mail: the owner (the member here) and admins; a message that does not exist
        // is 404 for those allowed to look.
        r(
            "GET",
            "/v1/users/adele@contoso.com/messages",
            None,
            &[],
            200,
            200,
            200,
        ),
        r(
            "GET",
            "/v1/users/admin@contoso.com/messages",
            None,
            &[],
            403,
            200,
            200,
        ),
        r(
            "GET",
            "/v1/users/adele@contoso.com/messages/AAMkAGI2",
            None,
            &[],
            404,
            404,
            404,
        ),
        r(
            "POST",
            "/v1/erasures",
            Some(json!({"address": "eve@evil.example"})),
            &[],
            403,
            200,
            200,
        ),
        r(
            "POST",
            "/v1/users/bob@contoso.com/purge",
            None,
            &[],
            403,
            200,
            200,
        ),
        r(
            "GET",
            "/v1/users/admin@contoso.com/messages/AAMkAGI2",
            None,
            &[],
            403,
            404,
            404,
        ),
    ]
}

fn token(h: &ApiHarness, org: &str, caller: Caller) -> Option<String> {
    use o365_local_stack::{DEV_JWT_PRIVATE_KEY_PEM, dev_token, dev_token_with};
    Some(match caller {
        Caller::NoToken => return None,
        Caller::BadSignature => {
            let t = h.token(org, "globaladmin@contoso.com");
            let (head, sig) = t.rsplit_once('.').unwrap();
            let flipped = if sig.starts_with('A') { "B" } else { "A" };
            format!("{head}.{flipped}{}", &sig[1..])
        }
        Caller::Expired => dev_token(org, "globaladmin@contoso.com", -120),
        Caller::WrongAudience => dev_token_with(
            json!({"org_id": org, "email": "globaladmin@contoso.com"}),
            300,
            "another-api",
            DEV_JWT_PRIVATE_KEY_PEM,
        ),
        Caller::Member => h.token(org, "adele@contoso.com"),
        // An admin of another org presenting a token for this org: not a user here.
        Caller::OtherOrgAdmin => h.token(org, "boss@globex.com"),
        Caller::Admin => h.token(org, "admin@contoso.com"),
        Caller::PrimaryAdmin => h.token(org, "globaladmin@contoso.com"),
    })
}

fn expected(route: &Route, caller: Caller) -> u16 {
    match caller {
        Caller::NoToken | Caller::BadSignature | Caller::Expired | Caller::WrongAudience => 401,
        Caller::OtherOrgAdmin => 403,
        Caller::Member => route.member,
        Caller::Admin => route.admin,
        Caller::PrimaryAdmin => route.primary,
    }
}

/// Everything a refused call could have changed.
async fn snapshot(h: &ApiHarness, org: &OrgId) -> Value {
    let s = &h.fixture.store;
    let users: Vec<Value> = s
        .list_users(org, None, PageRequest::first(200))
        .await
        .unwrap()
        .items
        .iter()
        .map(|u| serde_json::to_value(u).unwrap())
        .collect();
    json!({
        "settings": serde_json::to_value(s.settings(org).await.unwrap()).unwrap(),
        "connection": serde_json::to_value(s.connection(org).await.unwrap()).unwrap(),
        "users": users,
        "audit": s.list_audit(org, PageRequest::first(200)).await.unwrap().items.len(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_caller() {
    let h = ApiHarness::start(SimConfig::default(), Arc::new(NoQueue)).await;
    let globex = h.org("globex").await;
    let boss = o365_domain::user::NewUser::parse("boss@globex.com", "Boss", "admin").unwrap();
    h.fixture
        .store
        .add_user(
            &globex,
            &boss,
            o365_e2e::audit(&globex, o365_domain::audit::AuditAction::UserAdded, "user"),
        )
        .await
        .unwrap();

    let mut failures = Vec::new();
    let mut calls = 0;
    for (i, route) in routes().iter().enumerate() {
        for caller in CALLERS {
            // A fresh org per call: allowed calls change state the next call would see.
            let name = format!("org-{i}-{caller:?}").to_lowercase();
            let org = h.org(&name).await;
            let r = h
                .call(
                    "PATCH",
                    "/v1/integration/settings",
                    Some(&h.token(&name, "globaladmin@contoso.com")),
                    Some(json!({"use_service_account": true, "version": 1})),
                    &[],
                )
                .await;
            assert_eq!(r.status, StatusCode::OK);
            let before = snapshot(&h, &org).await;
            let globex_before = snapshot(&h, &globex).await;

            let t = token(&h, &name, caller);
            let reply = h
                .call(
                    route.method,
                    route.path,
                    t.as_deref(),
                    route.body.clone(),
                    route.headers,
                )
                .await;
            calls += 1;
            let want = expected(route, caller);
            if reply.status.as_u16() != want {
                failures.push(format!(
                    "{} {} as {caller:?}: got {} want {want}: {}",
                    route.method, route.path, reply.status, reply.body
                ));
            }
            if reply.status.is_client_error() || reply.status.is_server_error() {
                let ct = reply
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if ct != "application/problem+json" || !reply.body["type"].is_string() {
                    failures.push(format!(
                        "{} {} as {caller:?}: error is not problem+json ({ct})",
                        route.method, route.path
                    ));
                }
                if reply.status == StatusCode::UNAUTHORIZED
                    && reply.headers.get("www-authenticate").is_none()
                {
                    failures.push(format!(
                        "{} {} as {caller:?}: 401 without WWW-Authenticate",
                        route.method, route.path
                    ));
                }
                if snapshot(&h, &org).await != before {
                    failures.push(format!(
                        "{} {} as {caller:?}: refused but wrote",
                        route.method, route.path
                    ));
                }
            }
            if snapshot(&h, &globex).await != globex_before {
                failures.push(format!(
                    "{} {} as {caller:?}: touched another org",
                    route.method, route.path
                ));
            }
        }
    }
    assert_eq!(calls, routes().len() * CALLERS.len());
    assert!(
        failures.is_empty(),
        "{} of {calls} calls wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_only_their_own_org() {
    let h = ApiHarness::start(SimConfig::default(), Arc::new(NoQueue)).await;
    h.org("acme").await;
    let globex = h.org("globex").await;
    let only =
        o365_domain::user::NewUser::parse("only-in-globex@globex.com", "G", "member").unwrap();
    h.fixture
        .store
        .add_user(
            &globex,
            &only,
            o365_e2e::audit(&globex, o365_domain::audit::AuditAction::UserAdded, "user"),
        )
        .await
        .unwrap();
    let r = h
        .as_user(
            "acme",
            "globaladmin@contoso.com",
            "GET",
            "/v1/users/only-in-globex@globex.com",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .as_user("acme", "globaladmin@contoso.com", "GET", "/v1/users", None)
        .await;
    let emails: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails.len(), 3);
    assert!(!emails.contains(&"only-in-globex@globex.com"));
    // A page token of globex's listing is refused for acme.
    let g = h
        .as_user(
            "globex",
            "globaladmin@contoso.com",
            "GET",
            "/v1/users?limit=1",
            None,
        )
        .await;
    let next = g.body["next"].as_str().unwrap();
    let r = h
        .as_user(
            "acme",
            "globaladmin@contoso.com",
            "GET",
            &format!("/v1/users?limit=1&after={next}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
}
