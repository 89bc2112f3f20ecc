//! The adapter against the in-process Microsoft simulator: tokens, errors, delta, throttling.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ms_sim::*;
use o365_domain::connection::AppRegistration;
use o365_domain::failure::FailureCode;
use o365_domain::ids::{Email, TenantId};
use o365_domain::mailbox::{MailFolder, SyncLink};
use o365_domain::microsoft::{DeltaRequest, Directory, DirectoryUser, MailSource, MicrosoftError};
use o365_domain::ports::SecretStore;
use o365_domain::secret::{AppCredential, ClientCredential, Freshness, Sensitive};
use o365_msgraph::{GraphClient, GraphConfig};
use o365_secrets::LocalSecretStore;
use time::OffsetDateTime;

/// Reading a user who must exist: what proving a grant does.
trait ReadsUser {
    async fn verify_grant(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
        email: &Email,
    ) -> Result<DirectoryUser, MicrosoftError>;
}

impl ReadsUser for GraphClient {
    async fn verify_grant(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
        email: &Email,
    ) -> Result<DirectoryUser, MicrosoftError> {
        self.find_user(tenant, app, email).await?.ok_or_else(|| {
            MicrosoftError::refused(FailureCode::UserNotFound, "not_found", "no such user")
        })
    }
}

const CERT: &str = include_str!("fixtures/client.cert.pem");
const KEY: &str = include_str!("fixtures/client.key.pem");

struct World {
    sim: Simulator,
    tenant: TenantInfo,
    app: AppInfo,
    secret: SecretInfo,
    user: UserInfo,
}

async fn world(inbox: u32, sent: u32) -> World {
    let sim = Simulator::start(SimConfig {
        history_days: 30,
        ..Default::default()
    })
    .await
    .unwrap();
    let ms_sim::ConsentedApp {
        tenant,
        app,
        secret,
    } = sim
        .consented_app("contoso.com", &["Mail.ReadWrite", "User.Read.All"])
        .unwrap();
    sim.add_certificate(app.client_id, CERT).unwrap();
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
        user,
    }
}

fn secret_cred(client_id: impl ToString, value: &str) -> AppCredential {
    AppCredential {
        client_id: client_id.to_string(),
        credential: ClientCredential::Secret(Sensitive::new(value.to_owned())),
    }
}

fn cert_cred(client_id: impl ToString) -> AppCredential {
    AppCredential {
        client_id: client_id.to_string(),
        credential: ClientCredential::Certificate {
            certificate_pem: CERT.into(),
            private_key_pem: Sensitive::new(KEY.into()),
        },
    }
}

fn local(c: AppCredential) -> Arc<LocalSecretStore> {
    Arc::new(LocalSecretStore::new(c.clone(), c, vec![7u8; 32]).unwrap())
}

fn config(base: &SimHandle) -> GraphConfig {
    GraphConfig {
        authority_url: base.authority().to_owned(),
        graph_base_url: base.graph_url(),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

impl World {
    fn tid(&self) -> TenantId {
        TenantId::parse(&self.tenant.id.to_string()).unwrap()
    }
    fn email(&self) -> Email {
        Email::parse(&self.user.user_principal_name).unwrap()
    }
    fn client(&self) -> GraphClient {
        GraphClient::new(
            config(&self.sim),
            local(secret_cred(self.app.client_id, &self.secret.value)),
        )
    }
}

fn request<'a>(
    tenant: &'a TenantId,
    mailbox: &'a Email,
    folder: MailFolder,
    from: Option<&'a SyncLink>,
) -> DeltaRequest<'a> {
    DeltaRequest {
        tenant,
        app: AppRegistration::Default,
        mailbox,
        // The simulator, like Graph, also accepts the UPN where the object id goes.
        user_id: mailbox.as_str(),
        folder,
        from,
        page_size: 10,
        backfill_since: None,
        include_body: false,
        deadline: Instant::now() + Duration::from_secs(60),
    }
}

/// Follows a folder's chain to its delta link; returns live ids seen, removals and the link.
async fn drain(
    client: &GraphClient,
    w: &World,
    folder: MailFolder,
    from: Option<SyncLink>,
) -> (Vec<String>, Vec<String>, SyncLink, usize) {
    let (tid, email) = (w.tid(), w.email());
    let mut link = from;
    let (mut ids, mut removed, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = client
            .delta_page(request(&tid, &email, folder, link.as_ref()))
            .await
            .unwrap();
        pages += 1;
        ids.extend(page.messages.iter().map(|m| m.id.clone()));
        removed.extend(page.removals.iter().map(|r| r.id.clone()));
        let done = matches!(page.next, SyncLink::Delta(_));
        link = Some(page.next);
        if done {
            return (ids, removed, link.unwrap(), pages);
        }
    }
}

fn refused_code(e: MicrosoftError) -> FailureCode {
    match e {
        MicrosoftError::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn tokens_with_secret_and_certificate_are_cached() {
    let w = world(3, 0).await;
    let client = w.client();
    let user = client
        .verify_grant(&w.tid(), AppRegistration::Default, &w.email())
        .await
        .unwrap();
    assert_eq!(user.user_principal_name, w.user.user_principal_name);
    assert_eq!(user.id, w.user.id.to_string());
    client
        .clone()
        .verify_grant(&w.tid(), AppRegistration::Default, &w.email())
        .await
        .unwrap();
    assert_eq!(
        w.sim.request_count(Endpoint::Token, None),
        1,
        "one token for two calls"
    );
    assert_eq!(client.stats().token_requests, 1);

    let by_cert = GraphClient::new(config(&w.sim), local(cert_cred(w.app.client_id)));
    by_cert
        .verify_grant(&w.tid(), AppRegistration::Default, &w.email())
        .await
        .unwrap();
    assert_eq!(w.sim.request_count(Endpoint::Token, None), 2);
}

/// A secret store whose cache is stale until asked to refresh (as Secrets Manager with a TTL).
struct StaleCache {
    inner: Arc<LocalSecretStore>,
    cached: Mutex<AppCredential>,
}

#[async_trait]
impl SecretStore for StaleCache {
    async fn app_credential(
        &self,
        app: AppRegistration,
        freshness: Freshness,
    ) -> o365_domain::Result<AppCredential> {
        if freshness == Freshness::Refresh {
            *self.cached.lock().unwrap() = self.inner.app_credential(app, freshness).await?;
        }
        Ok(self.cached.lock().unwrap().clone())
    }
    async fn state_signing_key(&self, f: Freshness) -> o365_domain::Result<Sensitive<Vec<u8>>> {
        self.inner.state_signing_key(f).await
    }
}

#[tokio::test]
async fn a_rotated_secret_is_picked_up_without_restart() {
    let w = world(1, 0).await;
    let old = secret_cred(w.app.client_id, &w.secret.value);
    let store = local(old.clone());
    let stale = Arc::new(StaleCache {
        inner: store.clone(),
        cached: Mutex::new(old),
    });
    // Operators add a new secret, store it, and the old one expires.
    let new = w
        .sim
        .add_secret(
            w.app.client_id,
            OffsetDateTime::now_utc() + time::Duration::days(30),
        )
        .unwrap();
    store.rotate(
        AppRegistration::Default,
        secret_cred(w.app.client_id, &new.value),
    );
    w.sim
        .expire_secret(w.app.client_id, Some(w.secret.id))
        .unwrap();

    let client = GraphClient::new(config(&w.sim), stale);
    client
        .verify_grant(&w.tid(), AppRegistration::Default, &w.email())
        .await
        .expect("the refreshed credential works");
    assert_eq!(client.stats().token_requests, 2);

    // A credential that stays wrong is reported as ours to fix.
    let bad = GraphClient::new(config(&w.sim), local(secret_cred(w.app.client_id, "nope")));
    let e = bad
        .verify_grant(&w.tid(), AppRegistration::Default, &w.email())
        .await
        .unwrap_err();
    match e {
        MicrosoftError::Refused {
            code,
            microsoft_code,
            ..
        } => {
            assert_eq!(code, FailureCode::InvalidCredential);
            assert_eq!(microsoft_code, "AADSTS7000215");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn token_errors_are_classified() {
    let w = world(1, 0).await;
    // A tenant that never consented.
    let other = w
        .sim
        .create_tenant(TenantSpec {
            domain: "fabrikam.com".into(),
            ..Default::default()
        })
        .unwrap();
    w.sim
        .create_user(
            other.id,
            UserSpec {
                user_name: "bob".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let other_tid = TenantId::parse(&other.id.to_string()).unwrap();
    let bob = Email::parse("bob@fabrikam.com").unwrap();
    let client = w.client();
    for (err, want) in [
        (UnconsentedError::NoServicePrincipal, "AADSTS7000229"),
        (UnconsentedError::AppNotFound, "AADSTS700016"),
        (UnconsentedError::ConsentMissing, "AADSTS65001"),
    ] {
        w.sim.set_unconsented_error(other.id, err).unwrap();
        match client
            .verify_grant(&other_tid, AppRegistration::Default, &bob)
            .await
            .unwrap_err()
        {
            MicrosoftError::Refused {
                code,
                microsoft_code,
                ..
            } => {
                assert_eq!(code, FailureCode::ConsentRequired);
                assert_eq!(microsoft_code, want);
            }
            e => panic!("{e:?}"),
        }
    }
    // An unknown tenant.
    let nowhere = TenantId::parse("00000000-1111-4222-8333-444444444444").unwrap();
    let e = client
        .verify_grant(&nowhere, AppRegistration::Default, &bob)
        .await
        .unwrap_err();
    assert_eq!(refused_code(e), FailureCode::TenantNotFound);
    // Conditional Access.
    w.sim
        .set_conditional_access_block(w.tenant.id, true)
        .unwrap();
    let e = w
        .client()
        .verify_grant(&w.tid(), AppRegistration::Default, &w.email())
        .await
        .unwrap_err();
    assert_eq!(refused_code(e), FailureCode::ConditionalAccessBlocked);
}

#[tokio::test]
async fn graph_errors_are_classified() {
    let w = world(1, 0).await;
    let t = w.tenant.id;
    let mk = |name: &str, spec: UserSpec| {
        w.sim
            .create_user(
                t,
                UserSpec {
                    user_name: name.into(),
                    ..spec
                },
            )
            .unwrap();
        Email::parse(&format!("{name}@contoso.com")).unwrap()
    };
    let unlicensed = mk(
        "unlicensed",
        UserSpec {
            licensed: false,
            ..Default::default()
        },
    );
    let onprem = mk(
        "onprem",
        UserSpec {
            on_premises: true,
            ..Default::default()
        },
    );
    let excluded = mk(
        "excluded",
        UserSpec {
            access_policy_excluded: true,
            ..Default::default()
        },
    );
    let ghost = Email::parse("ghost@contoso.com").unwrap();
    let client = w.client();
    let tid = w.tid();
    let delta_err = |mbx: Email| {
        let client = client.clone();
        async move {
            client
                .delta_page(request(&tid, &mbx, MailFolder::Inbox, None))
                .await
                .unwrap_err()
        }
    };
    assert_eq!(
        refused_code(delta_err(ghost.clone()).await),
        FailureCode::UserNotFound
    );
    assert_eq!(
        refused_code(delta_err(unlicensed).await),
        FailureCode::MailboxNotEnabled
    );
    assert_eq!(
        refused_code(delta_err(onprem).await),
        FailureCode::MailboxNotEnabled
    );
    match delta_err(excluded).await {
        MicrosoftError::Refused {
            code,
            microsoft_code,
            message,
        } => {
            assert_eq!(code, FailureCode::MailboxAccessPolicy);
            assert_eq!(microsoft_code, "ErrorAccessDenied");
            assert_eq!(message, "Access to OData is disabled.");
        }
        e => panic!("{e:?}"),
    }
    let e = client
        .verify_grant(&tid, AppRegistration::Default, &ghost)
        .await
        .unwrap_err();
    assert_eq!(refused_code(e), FailureCode::UserNotFound);

    // An app without Mail permissions, and one without directory permissions.
    let no_mail = w
        .sim
        .create_app(AppSpec {
            display_name: "nomail".into(),
            permissions: vec!["User.Read.All".into()],
            ..Default::default()
        })
        .unwrap();
    let no_dir = w
        .sim
        .create_app(AppSpec {
            display_name: "nodir".into(),
            permissions: vec!["Mail.Read".into()],
            ..Default::default()
        })
        .unwrap();
    for app in [&no_mail, &no_dir] {
        w.sim.grant_consent(t, app.client_id).unwrap();
    }
    let s1 = w
        .sim
        .add_secret(
            no_mail.client_id,
            OffsetDateTime::now_utc() + time::Duration::days(1),
        )
        .unwrap();
    let s2 = w
        .sim
        .add_secret(
            no_dir.client_id,
            OffsetDateTime::now_utc() + time::Duration::days(1),
        )
        .unwrap();
    let c1 = GraphClient::new(
        config(&w.sim),
        local(secret_cred(no_mail.client_id, &s1.value)),
    );
    let c2 = GraphClient::new(
        config(&w.sim),
        local(secret_cred(no_dir.client_id, &s2.value)),
    );
    let e = c1
        .delta_page(request(&tid, &w.email(), MailFolder::Inbox, None))
        .await
        .unwrap_err();
    assert_eq!(refused_code(e), FailureCode::InsufficientPrivileges);
    match c2
        .verify_grant(&tid, AppRegistration::Default, &w.email())
        .await
        .unwrap_err()
    {
        MicrosoftError::Refused {
            code,
            microsoft_code,
            ..
        } => {
            assert_eq!(code, FailureCode::InsufficientPrivileges);
            assert_eq!(microsoft_code, "Authorization_RequestDenied");
        }
        e => panic!("{e:?}"),
    }
    // Consent not propagated yet: tokens work, Graph does not know the app.
    w.sim
        .set_propagation(Some(t), Duration::from_secs(60), PropagationFailure::Graph)
        .unwrap();
    let late = w
        .sim
        .create_app(AppSpec {
            display_name: "late".into(),
            permissions: vec!["Mail.Read".into(), "User.Read.All".into()],
            ..Default::default()
        })
        .unwrap();
    w.sim.grant_consent(t, late.client_id).unwrap();
    let s3 = w
        .sim
        .add_secret(
            late.client_id,
            OffsetDateTime::now_utc() + time::Duration::days(1),
        )
        .unwrap();
    let c3 = GraphClient::new(
        config(&w.sim),
        local(secret_cred(late.client_id, &s3.value)),
    );
    let e = c3
        .verify_grant(&tid, AppRegistration::Default, &w.email())
        .await
        .unwrap_err();
    assert_eq!(refused_code(e), FailureCode::AuthorizationIdentityNotFound);
}

/// Answers every token request with a token issued for another tenant.
async fn forged_authority(tid: &str) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        r#"{{"tid":"{tid}","aud":"https://graph.microsoft.com"}}"#
    ));
    let body = format!(
        r#"{{"token_type":"Bearer","expires_in":3599,"access_token":"eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln"}}"#
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 16 * 1024];
            let _ = s.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_token_for_another_tenant_is_refused() {
    let w = world(1, 0).await;
    let mut cfg = config(&w.sim);
    cfg.authority_url = forged_authority("9b1f0c55-0000-4000-8000-000000000001").await;
    let client = GraphClient::new(cfg, local(secret_cred(w.app.client_id, &w.secret.value)));
    let e = client
        .verify_grant(&w.tid(), AppRegistration::Default, &w.email())
        .await
        .unwrap_err();
    assert_eq!(refused_code(e), FailureCode::TenantMismatch);
    assert_eq!(
        w.sim.request_count(Endpoint::GraphUser, None),
        0,
        "no Graph call with a foreign token"
    );
}

#[tokio::test]
async fn delta_pages_to_a_delta_link_with_removals_and_expiry() {
    let w = world(45, 7).await;
    let client = w.client();
    let (ids, removed, link, pages) = drain(&client, &w, MailFolder::Inbox, None).await;
    assert_eq!(pages, 5, "45 messages in pages of 10");
    assert!(removed.is_empty());
    let truth: HashSet<String> = w
        .sim
        .live_messages(&w.user.user_principal_name, Folder::Inbox)
        .unwrap()
        .into_iter()
        .map(|m| m.immutable_id)
        .collect();
    assert_eq!(
        ids.iter().cloned().collect::<HashSet<_>>(),
        truth,
        "immutable ids"
    );
    assert_eq!(ids.len(), truth.len());

    // Nothing changed: one request, nothing in it.
    let before = w.sim.request_count(Endpoint::GraphDelta, None);
    let (ids2, rem2, link, _) = drain(&client, &w, MailFolder::Inbox, Some(link)).await;
    assert!(ids2.is_empty() && rem2.is_empty());
    assert_eq!(w.sim.request_count(Endpoint::GraphDelta, None) - before, 1);

    // Churn: delete one, move one out, add two.
    let victim = ids[0].clone();
    let moved = ids[1].clone();
    w.sim.delete_message(&victim).unwrap();
    w.sim.move_message(&moved, Folder::SentItems).unwrap();
    let added = w
        .sim
        .add_messages(&w.user.user_principal_name, Folder::Inbox, 2)
        .unwrap();
    let (ids3, rem3, link, _) = drain(&client, &w, MailFolder::Inbox, Some(link)).await;
    assert_eq!(
        ids3.into_iter().collect::<HashSet<_>>(),
        added.into_iter().collect()
    );
    assert_eq!(
        rem3.into_iter().collect::<HashSet<_>>(),
        [victim, moved].into_iter().collect()
    );

    // The delta token expires: 410 becomes SyncStateExpired.
    w.sim
        .expire_delta_tokens(Some(&w.user.user_principal_name), Some(Folder::Inbox))
        .unwrap();
    let e = client
        .delta_page(request(
            &w.tid(),
            &w.email(),
            MailFolder::Inbox,
            Some(&link),
        ))
        .await
        .unwrap_err();
    assert_eq!(e, MicrosoftError::SyncStateExpired);
    assert!(w.sim.violations().is_empty(), "{:?}", w.sim.violations());
}

#[tokio::test]
async fn backfill_window_and_bodies_are_requested() {
    let w = world(30, 0).await;
    let client = w.client();
    let (tid, email) = (w.tid(), w.email());
    let since = OffsetDateTime::now_utc() - time::Duration::days(10);
    let mut req = request(&tid, &email, MailFolder::Inbox, None);
    req.backfill_since = Some(since);
    req.include_body = true;
    req.page_size = 100;
    let page = client.delta_page(req).await.unwrap();
    let truth = w
        .sim
        .live_messages(&w.user.user_principal_name, Folder::Inbox)
        .unwrap();
    let recent = truth
        .iter()
        .filter(|m| {
            OffsetDateTime::parse(&m.received, &time::format_description::well_known::Rfc3339)
                .unwrap()
                >= since.replace_nanosecond(0).unwrap()
        })
        .count();
    assert_eq!(page.messages.len(), recent);
    assert!(recent < 30);
    assert!(
        page.messages
            .iter()
            .all(|m| m.body.is_some() && m.received_at.is_some() && m.change_key.is_some())
    );
}

#[tokio::test]
async fn throttling_and_faults_are_survived_without_violations() {
    let w = world(120, 0).await;
    w.sim
        .set_faults(
            FaultScope::Mailbox(w.user.user_principal_name.clone()),
            FaultSpec {
                throttle: Some(FaultRule::probability(0.5).with_retry_after(0.05)),
                unavailable: Some(FaultRule::probability(0.1)),
                gateway_timeout: Some(FaultRule::probability(0.05)),
                reset_mid_body: Some(FaultRule::probability(0.05)),
                truncated_json: Some(FaultRule::probability(0.05)),
                latency_ms: None,
            },
        )
        .unwrap();
    let client = w.client();
    let (ids, _, _, _) = drain(&client, &w, MailFolder::Inbox, None).await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 120);
    assert!(client.stats().throttled > 0);
    assert!(w.sim.violations().is_empty(), "{:?}", w.sim.violations());
    assert!(w.sim.max_in_flight(&w.user.user_principal_name).unwrap() <= 4);
}

#[tokio::test]
async fn a_wait_past_the_deadline_returns_throttled() {
    let w = world(5, 0).await;
    w.sim
        .set_faults(
            FaultScope::Mailbox(w.user.user_principal_name.clone()),
            FaultSpec {
                throttle: Some(FaultRule::every(1).with_retry_after(7.5)),
                ..Default::default()
            },
        )
        .unwrap();
    let client = w.client();
    let (tid, email) = (w.tid(), w.email());
    let mut req = request(&tid, &email, MailFolder::Inbox, None);
    req.deadline = Instant::now() + Duration::from_secs(1);
    let started = Instant::now();
    let e = client.delta_page(req.clone()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    match e {
        MicrosoftError::Throttled { retry_after } => {
            assert!(
                retry_after > Duration::from_secs(7) && retry_after <= Duration::from_millis(7500)
            )
        }
        e => panic!("{e:?}"),
    }
    // A second call on the same mailbox does not knock before the Retry-After.
    let e = client.delta_page(req).await.unwrap_err();
    assert!(matches!(e, MicrosoftError::Throttled { .. }));
    assert_eq!(
        w.sim
            .request_count(Endpoint::GraphDelta, Some(&w.user.user_principal_name)),
        1
    );
    assert!(w.sim.violations().is_empty());
}
