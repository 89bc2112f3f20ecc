mod common;

use std::time::Duration;

use common::*;
use ms_sim::*;
use serde_json::Value;

/// The demo world with consent for the default app, and an app-only token for contoso.
struct Demo {
    sim: Simulator,
    world: DemoWorld,
    token: String,
    http: reqwest::Client,
}

async fn demo(cfg: SimConfig) -> Demo {
    let sim = Simulator::start(cfg).await.unwrap();
    let world = sim.create_demo(&[REDIRECT.to_string()], 5).unwrap();
    sim.grant_consent(world.tenant.id, world.default_app.app.client_id)
        .unwrap();
    let http = reqwest::Client::new();
    let token = demo_token(&sim, &http, &world.tenant, &world.default_app).await;
    Demo {
        sim,
        world,
        token,
        http,
    }
}

async fn demo_token(
    sim: &Simulator,
    http: &reqwest::Client,
    tenant: &TenantInfo,
    app: &DemoApp,
) -> String {
    let url = sim.token_url(&tenant.id.to_string());
    app_token(http, &url, app.app.client_id, &app.secret.value).await
}

impl Demo {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut rb = self
            .http
            .get(format!("{}{path}", self.sim.graph_url()))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        fetch(rb).await
    }

    /// `GET /users?$filter=..` (value percent-encoded) → the UPNs found.
    async fn filter(&self, filter: &str, headers: &[(&str, &str)]) -> (u16, Vec<String>, Value) {
        let q = form_urlencoded_pair("$filter", filter);
        let (s, v) = self.get(&format!("/users?{q}"), headers).await;
        let upns = v["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|u| u["userPrincipalName"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        (s, upns, v)
    }
}

fn form_urlencoded_pair(k: &str, v: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!("{}={}", enc(k), enc(v))
}

#[tokio::test]
async fn demo_world_has_the_lookup_cases_and_a_second_tenant() {
    let d = demo(SimConfig::default()).await;
    let find = |upn: &str| {
        d.world
            .users
            .iter()
            .find(|u| u.user_principal_name == upn)
            .unwrap_or_else(|| panic!("{upn}"))
    };
    assert_eq!(
        find("diego.siciliani@contoso.com").mail,
        "diego@contoso.com"
    );
    assert!(
        find("nestor.wilke@contoso.com")
            .proxy_addresses
            .contains(&"smtp:nestor@contoso.com".to_string())
    );
    assert_eq!(
        find("nestor.wilke@contoso.com").proxy_addresses[0],
        "SMTP:nestor.wilke@contoso.com"
    );
    assert!(find("$svc-sales@contoso.com").has_mailbox);
    assert!(find("pradeep.gupta@contoso.com").privileged_role_admin);
    assert!(find("admin@contoso.com").global_admin);
    for old in [
        "adele.vance",
        "alex.wilber",
        "megan.bowen",
        "patti.fernandez",
        "lee.gu",
        "grady.archie",
    ] {
        find(&format!("{old}@contoso.com"));
    }
    assert_eq!(d.world.other_tenant.domain, "fabrikam.com");
    let upns: Vec<&str> = d
        .world
        .other_users
        .iter()
        .map(|u| u.user_principal_name.as_str())
        .collect();
    assert_eq!(upns, ["admin@fabrikam.com", "alan.steiner@fabrikam.com"]);
    assert!(
        d.world.other_users[0].global_admin && d.world.other_users.iter().all(|u| u.has_mailbox)
    );
}

#[tokio::test]
async fn filter_by_mail_and_by_alias_within_the_tenant() {
    let d = demo(SimConfig::default()).await;
    let (s, upns, v) = d.filter("mail eq 'diego@contoso.com'", &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(upns, ["diego.siciliani@contoso.com"]);
    assert_eq!(
        v["@odata.context"],
        format!("{}/v1.0/$metadata#users", d.sim.base_url())
    );
    let (_, upns, _) = d.filter("mail eq 'DIEGO@Contoso.COM'", &[]).await;
    assert_eq!(upns, ["diego.siciliani@contoso.com"]);
    // The UPN is not the mail: no match.
    let (_, upns, _) = d.filter("mail eq 'diego.siciliani@contoso.com'", &[]).await;
    assert!(upns.is_empty());

    for f in [
        "proxyAddresses/any(x:x eq 'smtp:nestor@contoso.com')",
        "proxyAddresses/any(x:x eq 'SMTP:NESTOR@contoso.com')",
        "proxyAddresses/any(a: a eq 'smtp:nestor@contoso.com')",
        "proxyAddresses/any(x:x eq 'smtp:nestor.wilke@contoso.com')",
    ] {
        let (s, upns, v) = d.filter(f, &[]).await;
        assert_eq!(s, 200, "{f}: {v}");
        assert_eq!(upns, ["nestor.wilke@contoso.com"], "{f}");
    }
    // Without the smtp: prefix the proxy address does not match.
    let (_, upns, _) = d
        .filter("proxyAddresses/any(x:x eq 'nestor@contoso.com')", &[])
        .await;
    assert!(upns.is_empty());
    // Users of another tenant are invisible.
    let (s, upns, _) = d.filter("mail eq 'alan.steiner@fabrikam.com'", &[]).await;
    assert_eq!(s, 200);
    assert!(upns.is_empty());

    // $select shapes the items and the context.
    let q = format!(
        "{}&$select=id,mail,proxyAddresses",
        form_urlencoded_pair("$filter", "mail eq 'diego@contoso.com'")
    );
    let (s, v) = d.get(&format!("/users?{q}"), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["@odata.context"],
        format!(
            "{}/v1.0/$metadata#users(id,mail,proxyAddresses)",
            d.sim.base_url()
        )
    );
    let u = &v["value"][0];
    assert_eq!(u["mail"], "diego@contoso.com");
    assert_eq!(
        u["proxyAddresses"],
        serde_json::json!(["SMTP:diego@contoso.com"])
    );
    assert!(u["id"].is_string() && u.get("displayName").is_none());

    // OData quotes are doubled inside literals.
    d.sim
        .create_user(
            d.world.tenant.id,
            UserSpec {
                user_name: "shane.obrien".into(),
                mail: Some("o'brien@contoso.com".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let (_, upns, _) = d.filter("mail eq 'o''brien@contoso.com'", &[]).await;
    assert_eq!(upns, ["shane.obrien@contoso.com"]);

    for f in [
        "endsWith(mail,'@contoso.com')",
        "mail ne 'diego@contoso.com'",
        "startsWith(mail,'diego')",
        "mail eq 'a@contoso.com' or mail eq 'b@contoso.com'",
        "proxyAddresses/any(x:startsWith(x,'smtp:'))",
        "displayName eq 'Diego Siciliani'",
        "mail eq diego@contoso.com",
    ] {
        let (s, _, v) = d.filter(f, &[]).await;
        assert_eq!(s, 400, "{f}");
        assert_eq!(v["error"]["code"], "Request_UnsupportedQuery", "{f}");
        assert_eq!(v["error"]["message"], "Unsupported Query.");
    }
    assert_eq!(d.sim.request_count(Endpoint::GraphUsersQuery, None), 18);
}

#[tokio::test]
async fn filter_needs_a_user_role_and_an_established_identity() {
    let d = demo(SimConfig::default()).await;
    let (app, secret) = app_with_secret(
        &d.sim,
        AppSpec {
            display_name: "mail only".into(),
            permissions: vec!["Mail.Read".into()],
            ..Default::default()
        },
    );
    d.sim
        .grant_consent(d.world.tenant.id, app.client_id)
        .unwrap();
    let cert = d.world.default_app.certificate.clone();
    let mail_only = DemoApp {
        app,
        secret,
        certificate: cert,
    };
    let token = demo_token(&d.sim, &d.http, &d.world.tenant, &mail_only).await;
    let (s, v) = fetch(
        d.http
            .get(format!(
                "{}/users?{}",
                d.sim.graph_url(),
                form_urlencoded_pair("$filter", "mail eq 'diego@contoso.com'")
            ))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(v["error"]["code"], "Authorization_RequestDenied");

    // During the propagation window in Graph mode the app's identity is not established yet.
    d.sim
        .set_propagation(
            Some(d.world.tenant.id),
            Duration::from_secs(60),
            PropagationFailure::Graph,
        )
        .unwrap();
    d.sim
        .grant_consent(d.world.tenant.id, d.world.default_app.app.client_id)
        .unwrap();
    let (s, _, v) = d.filter("mail eq 'diego@contoso.com'", &[]).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["code"], "Authorization_IdentityNotFound");
}

#[tokio::test]
async fn dollar_upn_needs_the_key_form() {
    let d = demo(SimConfig::default()).await;
    for path in [
        "/users/$svc-sales@contoso.com",
        "/users/%24svc-sales%40contoso.com",
    ] {
        let (s, v) = d.get(path, &[]).await;
        assert_eq!(s, 400, "{path}");
        assert_eq!(v["error"]["code"], "Request_BadRequest");
    }
    for path in [
        "/users('$svc-sales@contoso.com')",
        "/users('%24svc-sales%40contoso.com')",
    ] {
        let (s, v) = d.get(path, &[]).await;
        assert_eq!(s, 200, "{path}: {v}");
        assert_eq!(v["userPrincipalName"], "$svc-sales@contoso.com");
        assert_eq!(v["mail"], "$svc-sales@contoso.com");
    }
    // The mailbox is reachable by id (and by key form).
    let id = d
        .world
        .users
        .iter()
        .find(|u| u.user_principal_name.starts_with('$'))
        .unwrap()
        .id;
    let (s, _) = d
        .get(
            &format!("/users/{id}/mailFolders/inbox/messages/delta"),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = d
        .get(
            "/users('$svc-sales@contoso.com')/mailFolders('inbox')/messages/delta()",
            &[],
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn get_user_select_and_other_tenants_not_found() {
    let d = demo(SimConfig::default()).await;
    let (s, v) = d
        .get(
            "/users/nestor.wilke@contoso.com?$select=id,userPrincipalName,displayName,mail,proxyAddresses",
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["displayName"], "Nestor Wilke");
    assert_eq!(
        v["proxyAddresses"],
        serde_json::json!(["SMTP:nestor.wilke@contoso.com", "smtp:nestor@contoso.com"])
    );
    assert!(v.get("givenName").is_none());
    let (s, v) = d.get("/users/diego.siciliani@contoso.com", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(v["mail"], "diego@contoso.com");
    assert!(v.get("proxyAddresses").is_none());
    let (s, v) = d
        .get("/users/nestor.wilke@contoso.com?$select=nickname", &[])
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "Request_BadRequest");

    // A user of another tenant: simply not found, and no violation for a directory read.
    let alan = d.world.other_users[1].id;
    for path in [
        "/users/alan.steiner@fabrikam.com".to_string(),
        format!("/users/{alan}"),
    ] {
        let (s, v) = d.get(&path, &[]).await;
        assert_eq!(s, 404, "{path}");
        assert_eq!(v["error"]["code"], "Request_ResourceNotFound");
    }
    assert!(d.sim.violations().is_empty());
}

#[tokio::test]
async fn rename_keeps_id_mailbox_and_old_address() {
    let d = demo(SimConfig {
        eventual_consistency_lag: Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    let adele = d.sim.user("adele.vance@contoso.com").unwrap();
    // Wait until the demo users are in the eventually consistent index.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let eventual = [("ConsistencyLevel", "eventual")];
    let (_, upns, _) = d
        .filter("mail eq 'adele.vance@contoso.com'", &eventual)
        .await;
    assert_eq!(upns, ["adele.vance@contoso.com"]);

    let info = d
        .sim
        .rename_user("adele.vance@contoso.com", "adele.smith@contoso.com")
        .unwrap();
    assert_eq!(info.id, adele.id);
    assert_eq!(info.user_principal_name, "adele.smith@contoso.com");
    assert_eq!(info.mail, "adele.smith@contoso.com");
    assert_eq!(
        info.proxy_addresses,
        [
            "SMTP:adele.smith@contoso.com",
            "smtp:adele.vance@contoso.com"
        ]
    );

    let (s, v) = d.get("/users/adele.vance@contoso.com", &[]).await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "Request_ResourceNotFound");
    let (s, v) = d.get("/users/adele.smith@contoso.com", &[]).await;
    assert_eq!(
        (s, v["id"].as_str()),
        (200, Some(adele.id.to_string().as_str()))
    );

    // The old address still finds her through proxyAddresses, unless the index lags.
    let old = "proxyAddresses/any(x:x eq 'smtp:adele.vance@contoso.com')";
    let (_, upns, _) = d.filter(old, &[]).await;
    assert_eq!(upns, ["adele.smith@contoso.com"]);
    let (_, upns, _) = d.filter(old, &eventual).await;
    assert!(upns.is_empty(), "the index has not caught up yet");
    let (_, upns, _) = d
        .filter("mail eq 'adele.smith@contoso.com'", &eventual)
        .await;
    assert!(upns.is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, upns, _) = d.filter(old, &eventual).await;
    assert_eq!(upns, ["adele.smith@contoso.com"]);

    // Mail by object id keeps working, on the same mailbox.
    let (s, v) = d
        .get(
            &format!("/users/{}/mailFolders/inbox/messages/delta", adele.id),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert!(!v["value"].as_array().unwrap().is_empty());
    assert_eq!(
        d.sim
            .message_count("adele.smith@contoso.com", Folder::Inbox)
            .unwrap(),
        5
    );

    // Over HTTP; taken addresses are refused.
    let (s, v) = fetch(
        d.http
            .post(format!(
                "{}/_sim/users/{}/rename",
                d.sim.base_url(),
                "megan.bowen@contoso.com"
            ))
            .json(&serde_json::json!({"user_principal_name": "megan.jones@contoso.com"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["user_principal_name"], "megan.jones@contoso.com");
    assert_eq!(
        v["proxy_addresses"],
        serde_json::json!([
            "SMTP:megan.jones@contoso.com",
            "smtp:megan.bowen@contoso.com"
        ])
    );
    assert!(matches!(
        d.sim
            .rename_user("megan.jones@contoso.com", "nestor@contoso.com"),
        Err(SimError::Invalid(_))
    ));
}
