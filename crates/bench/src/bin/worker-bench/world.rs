//! What the measured worker runs against: the Microsoft simulator, DynamoDB (dynoxide) with
//! connected orgs and their users, and the app credentials and the jobs queue on moto.

use std::sync::Arc;

use ms_sim::{MailboxSpec, SimConfig, Simulator, UserSpec};
use o365_domain::audit::{Actor, AuditAction, AuditEvent};
use o365_domain::connection::{AppRegistration, Connection, ConnectionStatus};
use o365_domain::ids::{Email, OrgId, TenantId};
use o365_domain::ports::{OrgStore, UserStore};
use o365_domain::user::NewUser;
use o365_store_dynamodb::{DynamoStore, TableNames, ensure_tables};
use time::OffsetDateTime;

/// The org's own domain: its people are not indexed as outsiders.
pub const INTERNAL_DOMAIN: &str = "contoso.com";

pub struct World {
    pub sim: Simulator,
    pub tenant: uuid::Uuid,
    pub client_id: String,
    pub client_secret: String,
    pub dynamo: o365_local_stack::EmbeddedDynamo,
    /// Setup and checks go straight to DynamoDB (not counted).
    pub store: Arc<DynamoStore>,
}

fn audit(org: &OrgId, action: AuditAction, object: &str) -> AuditEvent {
    AuditEvent::new(
        org,
        OffsetDateTime::now_utc(),
        Actor::System("bench".into()),
        action,
        object,
    )
}

impl World {
    pub async fn start() -> Self {
        let sim = Simulator::start(SimConfig::default()).await.unwrap();
        let app = sim
            .consented_app(INTERNAL_DOMAIN, &["Mail.ReadWrite", "User.Read.All"])
            .unwrap();
        let dynamo = o365_local_stack::EmbeddedDynamo::in_memory()
            .await
            .expect("dynoxide starts");
        let client = o365_local_stack::dynamodb_client(dynamo.endpoint());
        ensure_tables(&client, &TableNames::default())
            .await
            .unwrap();
        Self {
            sim,
            tenant: app.tenant.id,
            client_id: app.app.client_id.to_string(),
            client_secret: app.secret.value.clone(),
            dynamo,
            store: Arc::new(DynamoStore::new(client, TableNames::default())),
        }
    }

    /// A connected org whose `mailboxes` (user names) each hold `inbox` + `sent` messages in the
    /// simulator and have sync on. Returns their emails and directory ids.
    pub async fn org(
        &self,
        name: &str,
        mailboxes: &[String],
        inbox: u32,
        sent: u32,
    ) -> (OrgId, Vec<(Email, uuid::Uuid)>) {
        let org = OrgId::parse(name).unwrap();
        let root = format!("root@{name}.example");
        self.store
            .create_org(
                &org,
                &NewUser::parse(&root, "Root", "admin").unwrap(),
                audit(&org, AuditAction::OrgCreated, "org"),
            )
            .await
            .unwrap();
        let before = self.store.connection(&org).await.unwrap();
        let connection = Connection {
            status: ConnectionStatus::Connected,
            tenant_id: Some(TenantId::parse(&self.tenant.to_string()).unwrap()),
            app: Some(AppRegistration::Default),
            activated_by: Some(Email::parse(&root).unwrap()),
            granted_by: None,
            granted_at: Some(OffsetDateTime::now_utc()),
            last_verified_at: Some(OffsetDateTime::now_utc()),
            last_error: None,
            attempt: None,
            pending_until: None,
            version: before.version + 1,
        };
        self.store
            .save_connection(
                &org,
                &connection,
                audit(&org, AuditAction::ConnectionVerified, "connection"),
            )
            .await
            .unwrap();
        // The org's own domain, as an admin sets it: its people are not indexed as outsiders.
        let policy = o365_domain::capture_policy::CapturePolicy {
            internal_domains: vec![INTERNAL_DOMAIN.into()],
            version: 1,
            ..Default::default()
        };
        self.store
            .save_capture_policy(
                &org,
                &policy,
                audit(&org, AuditAction::CapturePolicyChanged, "capture_policy"),
            )
            .await
            .unwrap();
        let mut emails = Vec::with_capacity(mailboxes.len());
        for user in mailboxes {
            let info = self
                .sim
                .create_user(
                    self.tenant,
                    UserSpec {
                        user_name: user.clone(),
                        mailbox: Some(MailboxSpec {
                            inbox,
                            sentitems: sent,
                        }),
                        ..Default::default()
                    },
                )
                .unwrap();
            let email = Email::parse(&format!("{user}@{INTERNAL_DOMAIN}")).unwrap();
            self.store
                .add_user(
                    &org,
                    &NewUser::parse(email.as_str(), "Someone", "member").unwrap(),
                    audit(&org, AuditAction::UserAdded, email.as_str()),
                )
                .await
                .unwrap();
            emails.push((email, info.id));
        }
        let toggles: Vec<(Email, bool)> = emails.iter().map(|(e, _)| (e.clone(), true)).collect();
        for chunk in toggles.chunks(50) {
            self.store
                .set_sync_enabled(&org, chunk, audit(&org, AuditAction::SyncToggled, "users"))
                .await
                .unwrap();
        }
        (org, emails)
    }
}

impl World {
    /// An app-only Graph token for the peers (client credentials at the simulator).
    pub async fn app_token(&self) -> String {
        let url = format!("{}/{}/oauth2/v2.0/token", self.sim.authority(), self.tenant);
        let answer: serde_json::Value = reqwest::Client::new()
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["access_token"].as_str().expect("a token").to_owned()
    }
}

/// Moto (Secrets Manager and SQS): the app credentials the worker reads and the queue it hands
/// continuations to. Returns (default app secret id, read-only app secret id, queue url).
pub async fn moto(
    endpoint: &str,
    client_id: &str,
    client_secret: &str,
) -> (String, String, String) {
    let sdk = o365_local_stack::local_sdk_config(endpoint);
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let value =
        serde_json::json!({"client_id": client_id, "client_secret": client_secret}).to_string();
    let mut ids = Vec::new();
    for app in ["default-app", "read-only-app"] {
        let name = format!("bench-{run}/{app}");
        secrets
            .create_secret()
            .name(&name)
            .secret_string(&value)
            .send()
            .await
            .expect("moto takes the secret");
        ids.push(name);
    }
    let queue = aws_sdk_sqs::Client::new(&sdk)
        .create_queue()
        .queue_name(format!("bench-{run}-jobs"))
        .send()
        .await
        .expect("moto makes the queue")
        .queue_url
        .unwrap();
    (ids.remove(0), ids.remove(0), queue)
}
