//! Operator commands. An org and its first admin (who is also its Primary user) are created
//! here, explicitly — never implicitly by someone's first login.
//!
//! Usage:
//!   o365-ops create-org --org ORG --email EMAIL --name "DISPLAY NAME"
//!
//! Reads the same environment as the functions (O365_STATE_TABLE, AWS_REGION, credentials,
//! AWS_ENDPOINT_URL_DYNAMODB …).

use std::process::ExitCode;

use o365_domain::audit::{Actor, AuditAction, AuditEvent};
use o365_domain::ids::OrgId;
use o365_domain::ports::OrgStore;
use o365_domain::user::NewUser;
use o365_runtime::Env;

const USAGE: &str = "usage: o365-ops create-org --org ORG --email EMAIL --name \"DISPLAY NAME\"";

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("create-org") {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let (Some(org), Some(email), Some(name)) = (
        flag(&args, "--org"),
        flag(&args, "--email"),
        flag(&args, "--name"),
    ) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let org = match OrgId::parse(&org) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("invalid --org: {}", e.message);
            return ExitCode::from(2);
        }
    };
    let admin = match NewUser::parse(&email, &name, "admin") {
        Ok(u) => u,
        Err(o365_domain::DomainError::Invalid(errors)) => {
            for e in errors {
                eprintln!(
                    "invalid --{}: {}",
                    if e.field == "display_name" {
                        "name"
                    } else {
                        &e.field
                    },
                    e.message
                );
            }
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let env = Env::process();
    let store = o365_runtime::dynamo_store(&env, &o365_runtime::aws_sdk_config().await);
    let event = AuditEvent::new(
        &org,
        time::OffsetDateTime::now_utc(),
        Actor::System("o365-ops".into()),
        AuditAction::OrgCreated,
        "org",
    )
    .change(None, Some(&serde_json::json!({"first_admin": admin.email})));
    match store.create_org(&org, &admin, event).await {
        Ok(()) => {
            println!(
                "created org {org}; {} is its first admin and Primary user",
                admin.email
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot create org {org}: {e}");
            ExitCode::FAILURE
        }
    }
}
