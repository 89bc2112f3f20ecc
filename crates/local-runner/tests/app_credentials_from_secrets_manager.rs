//! `cargo run` pointed at real app registrations is configuration only: with the app-secret ids
//! set, the embedded run signs admins in with the credentials stored in Secrets Manager (here
//! moto, the test command's server), not with the simulator's demo apps.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DEFAULT_CLIENT_ID: &str = "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
const READ_ONLY_CLIENT_ID: &str = "6a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c3d";

struct Runner(Child);

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn put_secret(moto: &str, name: &str, value: serde_json::Value) {
    o365_local_stack::secretsmanager_client(moto)
        .create_secret()
        .name(name)
        .secret_string(value.to_string())
        .send()
        .await
        .expect("moto creates the secret");
}

#[tokio::test]
async fn the_embedded_run_signs_in_with_the_app_credentials_in_secrets_manager() {
    let moto = std::env::var("O365_TEST_MOTO_ENDPOINT")
        .expect("O365_TEST_MOTO_ENDPOINT is not set: run the tests with scripts/test");
    let prefix = format!("runner-{}", uuid::Uuid::new_v4().simple());
    let (default_id, read_only_id) = (
        format!("{prefix}/default-app"),
        format!("{prefix}/read-only-app"),
    );
    put_secret(
        &moto,
        &default_id,
        serde_json::json!({"client_id": DEFAULT_CLIENT_ID, "client_secret": "not-the-demo-secret"}),
    )
    .await;
    put_secret(&moto, &read_only_id, serde_json::json!({"client_id": READ_ONLY_CLIENT_ID, "client_secret": "not-the-demo-secret"})).await;

    let data = std::env::temp_dir().join(&prefix);
    let http = format!("127.0.0.1:{}", free_port());
    let _runner = Runner(
        Command::new(env!("CARGO_BIN_EXE_o365-sync-local"))
            .env("O365_LOCAL_HTTP_ADDR", &http)
            .env(
                "O365_LOCAL_DYNAMODB_ADDR",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("O365_LOCAL_SIM_PORT", free_port().to_string())
            .env("O365_LOCAL_DATA_DIR", &data)
            .env("O365_LOCAL_MESSAGES_PER_FOLDER", "1")
            .env("O365_LOCAL_SYNC_INTERVAL_SECS", "3600")
            .env("O365_DEFAULT_APP_SECRET_ID", &default_id)
            .env("O365_READ_ONLY_APP_SECRET_ID", &read_only_id)
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the runner starts"),
    );

    let base = format!("http://{http}");
    let client = reqwest::Client::new();
    let mut healthy = false;
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            healthy = r.status().is_success();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "the runner answers /health");
    // A page on another name (DNS rebinding) cannot reach the development token issuer.
    let rebound = client
        .get(format!(
            "{base}/_local/token?org=demo&email=admin@contoso.com"
        ))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 421);

    let token: serde_json::Value = client
        .get(format!(
            "{base}/_local/token?org=demo&email=admin@contoso.com"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let integration: serde_json::Value = client
        .get(format!("{base}/v1/integration"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let version = integration["settings"]["version"].as_u64().unwrap();
    let switched = client
        .patch(format!("{base}/v1/integration/settings"))
        .header("authorization", &bearer)
        .json(&serde_json::json!({"use_service_account": true, "version": version}))
        .send()
        .await
        .unwrap();
    assert!(
        switched.status().is_success(),
        "{:?}",
        switched.text().await
    );
    let activated: serde_json::Value = client
        .post(format!("{base}/v1/integration/connection/activate"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = activated["consent_url"]
        .as_str()
        .unwrap_or_else(|| panic!("{activated}"));
    assert!(
        url.contains(&format!("client_id={DEFAULT_CLIENT_ID}")),
        "the sign-in names the app whose credentials Secrets Manager holds: {url}"
    );
    let _ = std::fs::remove_dir_all(data);
}
