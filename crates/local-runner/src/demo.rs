//! The embedded run's world: the Microsoft simulator with a demo tenant, our credentials for
//! its two app registrations, and a demo org whose Primary admin is the tenant's Global Admin.

use std::sync::Arc;

use ms_sim::{DemoWorld, SimConfig, Simulator};
use o365_domain::audit::{Actor, AuditAction, AuditEvent};
use o365_domain::connection::{AppRegistration, ConnectionStatus};
use o365_domain::ids::OrgId;
use o365_domain::ports::{OrgStore, UserStore};
use o365_domain::secret::{AppCredential, ClientCredential, Sensitive};
use o365_domain::user::NewUser;
use o365_domain::{DomainError, Entity};
use o365_secrets::LocalSecretStore;
use o365_store_dynamodb::DynamoStore;

pub const DEMO_ORG: &str = "demo";

pub struct LocalWorld {
    pub sim: Simulator,
    pub secrets: Arc<LocalSecretStore>,
    /// Client ids of the simulator's two app registrations.
    pub apps: DemoApps,
}

#[derive(Clone, Copy, serde::Serialize)]
pub struct DemoApps {
    pub default_app: uuid::Uuid,
    pub read_only_app: uuid::Uuid,
}

fn credential(app: &ms_sim::DemoApp) -> AppCredential {
    AppCredential {
        client_id: app.app.client_id.to_string(),
        credential: ClientCredential::Secret(Sensitive::new(app.secret.value.clone())),
    }
}

pub async fn start(
    sim_port: u16,
    base: &str,
    messages_per_folder: u32,
    store: &DynamoStore,
) -> Result<LocalWorld, Box<dyn std::error::Error>> {
    let sim = Simulator::start(SimConfig {
        port: sim_port,
        ..SimConfig::default()
    })
    .await?;
    let world: DemoWorld =
        sim.create_demo(&[format!("{base}/consent/callback")], messages_per_folder)?;
    // A fresh key each start: consent round trips in flight across a restart are refused.
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
    .into_bytes();
    let secrets = Arc::new(LocalSecretStore::new(
        credential(&world.default_app),
        credential(&world.read_only_app),
        key,
    )?);
    seed_demo_org(store, &world).await?;
    regrant_recorded_consent(&sim, store, &world).await?;
    let apps = DemoApps {
        default_app: world.default_app.app.client_id,
        read_only_app: world.read_only_app.app.client_id,
    };
    Ok(LocalWorld { sim, secrets, apps })
}

async fn seed_demo_org(store: &DynamoStore, world: &DemoWorld) -> Result<(), DomainError> {
    let org = OrgId::parse(DEMO_ORG)?;
    let now = time::OffsetDateTime::now_utc();
    let event = |action, object: &str| {
        AuditEvent::new(
            &org,
            now,
            Actor::System("local-runner".into()),
            action,
            object,
        )
    };
    let admin = world
        .users
        .iter()
        .find(|u| u.global_admin)
        .expect("the demo tenant has a Global Administrator");
    let first = NewUser::parse(&admin.user_principal_name, &admin.display_name, "admin")?;
    match store
        .create_org(&org, &first, event(AuditAction::OrgCreated, "org"))
        .await
    {
        Ok(()) => {}
        Err(DomainError::AlreadyExists(Entity::Org)) => return Ok(()),
        Err(e) => return Err(e),
    }
    for user in world.users.iter().filter(|u| !u.global_admin) {
        // Platform emails as people type them: an alias or the mail address where the demo user
        // has one that differs from the UPN (the sync resolves each to its directory user).
        let alias = user
            .proxy_addresses
            .iter()
            .find_map(|p| p.strip_prefix("smtp:"))
            .map(str::to_owned);
        let mail = Some(user.mail.clone()).filter(|m| !m.is_empty());
        let email = alias
            .or(mail)
            .unwrap_or_else(|| user.user_principal_name.clone());
        let member = NewUser::parse(&email, &user.display_name, "member")?;
        store
            .add_user(&org, &member, event(AuditAction::UserAdded, "user"))
            .await?;
    }
    tracing::info!(org = DEMO_ORG, primary = %admin.user_principal_name, "created the demo org");
    Ok(())
}

/// Microsoft keeps a grant across our restarts; the simulator starts empty, so replay it.
async fn regrant_recorded_consent(
    sim: &Simulator,
    store: &DynamoStore,
    world: &DemoWorld,
) -> Result<(), Box<dyn std::error::Error>> {
    let connection = store.connection(&OrgId::parse(DEMO_ORG)?).await?;
    if let (ConnectionStatus::Connected | ConnectionStatus::Verifying, Some(app)) =
        (connection.status, connection.app)
    {
        let client_id = match app {
            AppRegistration::Default => world.default_app.app.client_id,
            AppRegistration::ReadOnly => world.read_only_app.app.client_id,
        };
        sim.grant_consent(world.tenant.id, client_id)?;
    }
    Ok(())
}
