//! The operator command creates an org through the SDK's standard endpoint override, the same
//! path a deployed environment takes.

use std::process::Command;

use o365_domain::ids::{Email, OrgId};
use o365_domain::ports::{OrgStore, UserStore};
use o365_store_dynamodb::{DynamoStore, TableNames, ensure_tables};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_org_makes_the_first_admin_primary_and_refuses_a_second_time() {
    let dynamo = o365_local_stack::EmbeddedDynamo::in_memory().await.unwrap();
    let client = o365_local_stack::dynamodb_client(dynamo.endpoint());
    ensure_tables(&client, &TableNames::default())
        .await
        .unwrap();
    let run = |org: &str, email: &str| {
        let endpoint = dynamo.endpoint().to_owned();
        let (org, email) = (org.to_owned(), email.to_owned());
        std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_o365-ops"))
                .args([
                    "create-org",
                    "--org",
                    &org,
                    "--email",
                    &email,
                    "--name",
                    "First Admin",
                ])
                .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "local")
                .env("AWS_SECRET_ACCESS_KEY", "local")
                .env_remove("AWS_PROFILE")
                .output()
                .unwrap()
        })
        .join()
        .unwrap()
    };
    let out = run("acme", "Root@Contoso.com");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = DynamoStore::new(client, TableNames::default());
    let org = OrgId::parse("acme").unwrap();
    let root = store
        .user(&org, &Email::parse("root@contoso.com").unwrap())
        .await
        .unwrap();
    assert!(root.is_primary);
    assert_eq!(store.settings(&org).await.unwrap().version, 1);

    let again = run("acme", "other@contoso.com");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = run("acme", "not-an-email");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid --email"));
}
