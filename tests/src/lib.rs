//! Shared fixtures of the end-to-end tests: the real local stack, fresh per test.

pub mod api;

use o365_domain::audit::{Actor, AuditAction, AuditEvent};
use o365_domain::ids::OrgId;
use o365_local_stack::EmbeddedDynamo;
use o365_store_dynamodb::{DynamoStore, TableNames, ensure_tables};
use time::OffsetDateTime;

/// The moto server the test command starts (see README "Quick start").
pub fn moto_endpoint() -> String {
    std::env::var("O365_TEST_MOTO_ENDPOINT").expect(
        "O365_TEST_MOTO_ENDPOINT is not set: run the tests with scripts/test, which starts moto on 127.0.0.1",
    )
}

/// Which DynamoDB-API server a store test runs against.
pub enum Backend {
    /// dynoxide, in-process, a fresh database per test.
    Dynoxide(EmbeddedDynamo),
    /// moto's DynamoDB, shared by the run: each test gets its own table names.
    Moto,
}

pub struct StoreFixture {
    pub store: DynamoStore,
    /// Every DynamoDB call the store made, by operation.
    pub calls: o365_local_stack::DynamoCalls,
    _backend: Backend,
}

impl StoreFixture {
    pub async fn dynoxide() -> Self {
        let server = EmbeddedDynamo::in_memory().await.expect("dynoxide starts");
        let calls = o365_local_stack::DynamoCalls::default();
        let store = store_at(calls.client(server.endpoint()), TableNames::default()).await;
        Self {
            store,
            calls,
            _backend: Backend::Dynoxide(server),
        }
    }

    pub async fn moto() -> Self {
        let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
        let calls = o365_local_stack::DynamoCalls::default();
        let store = store_at(
            calls.client(&moto_endpoint()),
            TableNames::prefixed(&prefix),
        )
        .await;
        Self {
            store,
            calls,
            _backend: Backend::Moto,
        }
    }
}

async fn store_at(client: aws_sdk_dynamodb::Client, tables: TableNames) -> DynamoStore {
    ensure_tables(&client, &tables)
        .await
        .expect("tables are created");
    DynamoStore::new(client, tables)
}

pub fn org(name: &str) -> OrgId {
    OrgId::parse(name).expect("valid org id")
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub fn audit(org: &OrgId, action: AuditAction, object: &str) -> AuditEvent {
    AuditEvent::new(org, now(), Actor::System("test".into()), action, object)
}
