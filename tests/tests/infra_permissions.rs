//! Each function gets exactly the variables its code reads when it starts, and exactly the IAM
//! its code can call with them: a table's actions for each table it names, `GetSecretValue` on
//! each secret it names, the queue's actions when it names the queue. What the code calls is
//! read from the adapters' sources (operator-only files, which no function runs, left out).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use o365_runtime::Env;
use yaml_rust2::{Yaml, YamlLoader};

fn template() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    let text = std::fs::read_to_string(path).expect("infra/template.yaml exists");
    YamlLoader::load_from_str(&text)
        .expect("the template is YAML")
        .remove(0)
}

/// A plausible value for every variable, so every branch that reads one is taken.
fn sample(name: &str) -> String {
    match name {
        "O365_FRONTEND_ORIGIN" => "https://app.example.com".into(),
        "O365_FRONTEND_CONNECTION_PATH" => "/settings/connection".into(),
        n if n.ends_with("_SECS") || n.ends_with("_DAYS") || n.ends_with("_SIZE") => "60".into(),
        n if n.ends_with("_URL") || n.ends_with("_URI") => "https://example.com/x".into(),
        _ => "sample".into(),
    }
}

/// The `O365_*` variables a function's start-up reads when given exactly `given` (others are
/// unset); it must start with them.
async fn reads(function: &str, given: &BTreeMap<String, String>) -> BTreeSet<String> {
    let seen = Mutex::new(BTreeSet::new());
    let lookup = |name: &str| {
        seen.lock().unwrap().insert(name.to_owned());
        given.get(name).cloned()
    };
    let env = Env(&lookup);
    let started = match function {
        "user-api" => o365_runtime::functions::user_api(&env).await.err(),
        "consent-callback" => o365_runtime::functions::consent_callback(&env).await.err(),
        "mailbox-sync" => o365_runtime::functions::mailbox_sync(&env).await.err(),
        "sync-worker" => o365_runtime::functions::sync_worker(&env).await.err(),
        other => panic!("unknown function {other}"),
    };
    assert!(
        started.is_none(),
        "{function} starts with the template's variables: {started:?}"
    );
    let mut names = seen.into_inner().unwrap();
    // Read when a metric line is written, by every function that writes one.
    names.insert("O365_METRICS_NAMESPACE".into());
    names.retain(|n| n.starts_with("O365_"));
    names
}

/// A resource reference as written in the template: `!Ref X`, `!GetAtt X.Arn` and
/// `!Sub "${X.Arn}/index/*"` all name `X` (the index form as `X/index`). yaml-rust2 keeps the
/// scalar of a tagged node.
fn resource_name(value: &Yaml) -> String {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a resource reference: {value:?}"));
    let text = text.trim_start_matches("${");
    let (name, rest) = text.split_once('.').unwrap_or((text, ""));
    if rest.contains("/index/") {
        format!("{name}/index")
    } else {
        name.to_owned()
    }
}

fn as_list(value: &Yaml) -> Vec<Yaml> {
    match value {
        Yaml::Array(items) => items.clone(),
        Yaml::BadValue => vec![],
        other => vec![other.clone()],
    }
}

/// The SDK calls in an adapter crate's sources, as IAM actions (`dynamodb:GetItem`, …).
fn calls(crate_dir: &str, service: &str, skip: &[&str]) -> BTreeSet<String> {
    let dir = format!("{}/../crates/{crate_dir}/src", env!("CARGO_MANIFEST_DIR"));
    let mut actions = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        if skip.contains(&file.as_str()) || !file.ends_with(".rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        for (call, action) in [
            ("get_item()", "GetItem"),
            ("put_item()", "PutItem"),
            ("update_item()", "UpdateItem"),
            ("delete_item()", "DeleteItem"),
            ("query()", "Query"),
            ("scan()", "Scan"),
            ("batch_get_item()", "BatchGetItem"),
            ("batch_write_item()", "BatchWriteItem"),
            ("transact_write_items()", "TransactWriteItems"),
            ("ConditionCheck::builder()", "ConditionCheckItem"),
            ("create_table()", "CreateTable"),
            ("describe_table()", "DescribeTable"),
            ("update_time_to_live()", "UpdateTimeToLive"),
            ("get_secret_value()", "GetSecretValue"),
            ("send_message()", "SendMessage"),
            // SendMessageBatch is authorised by sqs:SendMessage.
            ("send_message_batch()", "SendMessage"),
            ("change_message_visibility()", "ChangeMessageVisibility"),
            ("receive_message()", "ReceiveMessage"),
            ("delete_message()", "DeleteMessage"),
        ] {
            if source.contains(&format!(".{call}")) || source.contains(call) && call.contains("::")
            {
                actions.insert(format!("{service}:{action}"));
            }
        }
    }
    actions
}

#[tokio::test]
async fn each_function_gets_the_variables_and_permissions_its_code_uses() {
    let doc = template();
    let globals = &doc["Globals"]["Function"]["Environment"]["Variables"];
    // Table creation is the template's in AWS; listing and erasing orgs is o365-ops'.
    let table_actions = calls("store-dynamodb", "dynamodb", &["tables.rs", "operator.rs"]);
    assert!(
        table_actions.contains("dynamodb:TransactWriteItems"),
        "{table_actions:?}"
    );
    assert!(
        !table_actions.contains("dynamodb:Scan"),
        "no function scans a table"
    );
    let queue_actions = calls("queue-sqs", "sqs", &[]);
    // What the SQS event source mapping does for a function it invokes.
    let poller: BTreeSet<String> = [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    ]
    .map(String::from)
    .into();

    let mut functions = 0;
    for (_, resource) in doc["Resources"].as_hash().unwrap() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        functions += 1;
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap();
        let own = &resource["Properties"]["Environment"]["Variables"];
        let mut variables: BTreeMap<String, Yaml> = BTreeMap::new();
        for scope in [globals, own] {
            for (k, v) in scope.as_hash().into_iter().flatten() {
                variables.insert(k.as_str().unwrap().to_owned(), v.clone());
            }
        }
        let declared: BTreeSet<String> = variables
            .keys()
            .filter(|k| k.starts_with("O365_"))
            .cloned()
            .collect();
        let given = declared.iter().map(|n| (n.clone(), sample(n))).collect();
        let read = reads(binary, &given).await;
        let unused: Vec<_> = declared.difference(&read).collect();
        assert!(
            unused.is_empty(),
            "{binary}: the template sets variables its code never reads: {unused:?}"
        );
        let read = declared.clone();

        let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
        let resource_of = |var: &str| resource_name(&variables[var]);
        for var in read.iter().filter(|v| v.ends_with("_TABLE")) {
            let table = resource_of(var);
            for action in &table_actions {
                expected.insert((action.clone(), table.clone()));
                expected.insert((action.clone(), format!("{table}/index")));
            }
        }
        for var in read.iter().filter(|v| v.ends_with("_SECRET_ID")) {
            expected.insert(("secretsmanager:GetSecretValue".into(), resource_of(var)));
        }
        // The queues that invoke this function.
        let consumed: BTreeSet<String> = resource["Properties"]["Events"]
            .as_hash()
            .into_iter()
            .flatten()
            .filter(|(_, e)| e["Type"].as_str() == Some("SQS"))
            .map(|(_, e)| resource_name(&e["Properties"]["Queue"]))
            .collect();
        for var in ["O365_SYNC_QUEUE_URL", "O365_FANOUT_QUEUE_URL"] {
            if !read.contains(var) {
                continue;
            }
            let queue = resource_of(var);
            // Sending is every queue user's. A queue that invokes the function adds the poller's
            // actions; changing a message's visibility is done to mailbox jobs received (a
            // throttled job waits on its own queue), so only by the jobs queue's consumer.
            let invokes = consumed.contains(&queue);
            let mut actions: BTreeSet<String> = queue_actions
                .iter()
                .filter(|a| {
                    *a != "sqs:ChangeMessageVisibility" || (invokes && var == "O365_SYNC_QUEUE_URL")
                })
                .cloned()
                .collect();
            if invokes {
                actions.extend(poller.iter().cloned());
            }
            for action in actions {
                expected.insert((action, queue.clone()));
            }
        }
        assert!(
            consumed.iter().all(|q| expected
                .iter()
                .any(|(a, r)| r == q && a == "sqs:ReceiveMessage")),
            "{binary}: invoked by a queue it is not told about: {consumed:?}"
        );

        let mut granted: BTreeSet<(String, String)> = BTreeSet::new();
        for policy in as_list(&resource["Properties"]["Policies"]) {
            // The customer-managed key's policy is conditional (`!If`), tested by its own rule.
            let Some(statements) = policy["Statement"].as_vec() else {
                assert!(
                    policy.as_vec().is_some(),
                    "{binary}: only inline statements and the KMS !If: {policy:?}"
                );
                continue;
            };
            for statement in statements {
                assert_eq!(statement["Effect"].as_str(), Some("Allow"));
                for action in as_list(&statement["Action"]) {
                    for target in as_list(&statement["Resource"]) {
                        granted
                            .insert((action.as_str().unwrap().to_owned(), resource_name(&target)));
                    }
                }
            }
        }
        assert_eq!(
            granted, expected,
            "{binary}: IAM is exactly what its code calls"
        );
    }
    assert_eq!(functions, 4);
}

/// `KEY = "value"` lines of one TOML table (the env tables are written that way).
fn toml_table(path: &str, table: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let header = format!("[{table}]");
    text.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// `cargo lambda watch` gives each function the workspace's and its package's
/// `metadata.lambda.env`: with exactly those, each must start, and every `O365_*` one is used.
#[tokio::test]
async fn the_cargo_lambda_environment_starts_every_function() {
    let root = env!("CARGO_MANIFEST_DIR");
    let shared = toml_table(
        &format!("{root}/../Cargo.toml"),
        "workspace.metadata.lambda.env",
    );
    assert!(
        shared.contains_key("AWS_ENDPOINT_URL_DYNAMODB"),
        "{shared:?}"
    );
    for function in [
        "user-api",
        "consent-callback",
        "mailbox-sync",
        "sync-worker",
    ] {
        let mut env = shared.clone();
        env.extend(toml_table(
            &format!("{root}/../functions/{function}/Cargo.toml"),
            "package.metadata.lambda.env",
        ));
        let read = reads(function, &env).await;
        let unused: Vec<_> = env
            .keys()
            .filter(|k| k.starts_with("O365_") && !read.contains(*k))
            .collect();
        assert!(
            unused.is_empty(),
            "{function}: set but never read: {unused:?}"
        );
    }
}

/// README "Configuration" says which function uses each `O365_*` variable: exactly the ones
/// whose start-up reads it.
#[tokio::test]
async fn the_readme_says_which_function_reads_each_variable() {
    const FUNCTIONS: [&str; 4] = [
        "user-api",
        "consent-callback",
        "mailbox-sync",
        "sync-worker",
    ];
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    // Every variable the code might ask for, so every branch that reads one is taken.
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in readme.lines().filter(|l| l.starts_with("| `O365_")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let used_by = cells[2];
        if matches!(used_by, "embedded run" | "tests") {
            continue;
        }
        let functions: BTreeSet<String> = match used_by {
            "all" | "all functions" => FUNCTIONS.iter().map(|f| f.to_string()).collect(),
            list => list.split(',').map(|f| f.trim().to_owned()).collect(),
        };
        for name in cells[1].split('`').filter(|n| n.starts_with("O365_")) {
            documented.insert(name.to_owned(), functions.clone());
        }
    }
    let everything: BTreeMap<String, String> =
        documented.keys().map(|n| (n.clone(), sample(n))).collect();
    let mut actual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for function in FUNCTIONS {
        for name in reads(function, &everything).await {
            actual.entry(name).or_default().insert(function.to_owned());
        }
    }
    // A variable read only when another is absent (the PEM key, without a JWKS URL).
    let wrong: Vec<String> = documented
        .iter()
        .filter(|(name, _)| *name != "O365_JWT_PUBLIC_KEY_PEM")
        .filter(|(name, functions)| actual.get(*name) != Some(functions))
        .map(|(name, functions)| {
            format!(
                "{name}: README {functions:?}, read by {:?}",
                actual.get(name)
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "README's 'used by' column:\n{}",
        wrong.join("\n")
    );
    for name in actual.keys() {
        assert!(
            documented.contains_key(name),
            "README does not document {name}"
        );
    }
}
