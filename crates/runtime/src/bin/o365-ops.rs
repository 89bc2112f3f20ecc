//! Operator commands. An org and its first admin (who is also its Primary user) are created
//! here, explicitly — never implicitly by someone's first login. Commands that change
//! something are dry runs unless `--confirm` is given.
//!
//! Reads the same environment as the functions (O365_STATE_TABLE, O365_MESSAGES_TABLE,
//! AWS_REGION, credentials, AWS_ENDPOINT_URL_DYNAMODB / _SQS / _SECRETS_MANAGER …).

use std::process::ExitCode;

use o365_domain::audit::{Actor, AuditAction, AuditEvent};
use o365_domain::ids::{Email, OrgId};
use o365_domain::ports::OrgStore;
use o365_domain::user::NewUser;
use o365_runtime::{Env, ops};

const USAGE: &str = "usage: o365-ops COMMAND [ARGS]
  create-org --org ORG --email EMAIL --name \"DISPLAY NAME\"
  list-orgs
  show-org --org ORG
  resync-mailbox --org ORG --email EMAIL [--confirm]
  purge-mailbox --org ORG --email EMAIL [--confirm]
  offboard-org --org ORG [--confirm]
  redrive-dlq --from DLQ_URL --to QUEUE_URL [--confirm]
  rotate-state-key --secret-id ID [--confirm]";

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn required(args: &[String], name: &str) -> Result<String, ExitCode> {
    flag(args, name).ok_or_else(|| {
        eprintln!("missing {name}\n{USAGE}");
        ExitCode::from(2)
    })
}

fn org_arg(args: &[String]) -> Result<OrgId, ExitCode> {
    OrgId::parse(&required(args, "--org")?).map_err(|e| {
        eprintln!("invalid --org: {}", e.message);
        ExitCode::from(2)
    })
}

fn email_arg(args: &[String]) -> Result<Email, ExitCode> {
    Email::parse(&required(args, "--email")?).map_err(|e| {
        eprintln!("invalid --email: {}", e.message);
        ExitCode::from(2)
    })
}

fn failed(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{e}");
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

async fn run(args: &[String]) -> Result<(), ExitCode> {
    let confirm = args.iter().any(|a| a == "--confirm");
    let dry = if confirm {
        ""
    } else {
        "(dry run: add --confirm) "
    };
    let env = Env::process();
    let sdk = o365_runtime::aws_sdk_config().await;
    let store = || o365_runtime::dynamo_store(&env, &sdk);
    match args.first().map(String::as_str) {
        Some("create-org") => create_org(args, &store()).await,
        Some("list-orgs") => {
            for line in ops::list_orgs(&store()).await.map_err(failed)? {
                println!(
                    "{}\t{}\t{}",
                    line.org,
                    line.connection.status.as_str(),
                    line.connection
                        .tenant_id
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        Some("show-org") => {
            let org = org_arg(args)?;
            let r = ops::show_org(&store(), &org).await.map_err(failed)?;
            println!(
                "service account: {}, read only: {}",
                r.settings.use_service_account, r.settings.read_only
            );
            println!(
                "connection: {} (tenant {}){}",
                r.connection.status.as_str(),
                r.connection
                    .tenant_id
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "none".into()),
                r.connection
                    .last_error
                    .map(|f| format!("; last error {}: {}", f.code.as_str(), f.message))
                    .unwrap_or_default()
            );
            println!("users in error: {}", r.users_in_error.len());
            for (email, code) in &r.users_in_error {
                println!("  {email}\t{code}");
            }
            println!("recent runs:");
            for run in &r.recent_runs {
                println!(
                    "  {}\t{}\t{:?}\tnew {} updated {} deleted {}",
                    run.finished_at,
                    run.mailbox,
                    run.outcome,
                    run.counters.captured,
                    run.counters.updated,
                    run.counters.deleted
                );
            }
            Ok(())
        }
        Some("resync-mailbox") => {
            let (org, email) = (org_arg(args)?, email_arg(args)?);
            let folders = ops::resync_mailbox(&store(), &org, &email, confirm)
                .await
                .map_err(failed)?;
            println!(
                "{dry}{} folder position(s) of {email} {}",
                folders.len(),
                if confirm {
                    "cleared"
                } else {
                    "would be cleared"
                }
            );
            Ok(())
        }
        Some("purge-mailbox") => {
            let (org, email) = (org_arg(args)?, email_arg(args)?);
            let report = ops::purge(&store(), &org, &email, confirm)
                .await
                .map_err(failed)?;
            println!(
                "{dry}{} archived item(s) of {email} {}",
                report.deleted,
                if confirm {
                    "deleted"
                } else {
                    "would be deleted"
                }
            );
            Ok(())
        }
        Some("offboard-org") => {
            let org = org_arg(args)?;
            let report = ops::offboard(&store(), &org, confirm)
                .await
                .map_err(failed)?;
            println!(
                "{dry}org {org} (connection {:?}): {} user(s), {} mailbox(es){}",
                report.connection,
                report.users,
                report.mailboxes.len(),
                if confirm {
                    format!(
                        ", {} archived item(s) deleted; the org is gone",
                        report.messages_deleted
                    )
                } else {
                    " would be deleted with all their mail, settings, audit and run history".into()
                }
            );
            Ok(())
        }
        Some("redrive-dlq") => {
            let (from, to) = (required(args, "--from")?, required(args, "--to")?);
            let sqs = aws_sdk_sqs::Client::new(&sdk);
            let n = ops::redrive(&sqs, &from, &to, confirm)
                .await
                .map_err(failed)?;
            println!(
                "{dry}{n} job(s) {}",
                if confirm { "moved back" } else { "waiting" }
            );
            Ok(())
        }
        Some("rotate-state-key") => {
            let id = required(args, "--secret-id")?;
            let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
            let done = ops::rotate_state_key(&secrets, &id, confirm)
                .await
                .map_err(failed)?;
            println!(
                "{dry}{}",
                if done {
                    "a new consent-state signing key is in place; admins mid-way through connecting start again"
                } else {
                    "would put a new random consent-state signing key"
                }
            );
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            Err(ExitCode::from(2))
        }
    }
}

async fn create_org(
    args: &[String],
    store: &o365_store_dynamodb::DynamoStore,
) -> Result<(), ExitCode> {
    let org = org_arg(args)?;
    let (email, name) = (required(args, "--email")?, required(args, "--name")?);
    let admin = match NewUser::parse(&email, &name, "admin") {
        Ok(u) => u,
        Err(o365_domain::DomainError::Invalid(errors)) => {
            for e in errors {
                let field = if e.field == "display_name" {
                    "name"
                } else {
                    &e.field
                };
                eprintln!("invalid --{field}: {}", e.message);
            }
            return Err(ExitCode::from(2));
        }
        Err(e) => return Err(failed(e)),
    };
    let event = AuditEvent::new(
        &org,
        time::OffsetDateTime::now_utc(),
        Actor::System("o365-ops".into()),
        AuditAction::OrgCreated,
        "org",
    )
    .change(None, Some(&serde_json::json!({"first_admin": admin.email})));
    store
        .create_org(&org, &admin, event)
        .await
        .map_err(|e| failed(format!("cannot create org {org}: {e}")))?;
    println!(
        "created org {org}; {} is its first admin and Primary user",
        admin.email
    );
    Ok(())
}
