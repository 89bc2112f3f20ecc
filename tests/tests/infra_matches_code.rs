//! The deployed tables must be the tables the code defines: keys, indexes and TTL attribute.

use o365_store_dynamodb::{IndexProjection, Table, table_definitions};
use yaml_rust2::{Yaml, YamlLoader};

fn template() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
    let text = std::fs::read_to_string(path).expect("infra/template.yaml exists");
    YamlLoader::load_from_str(&text)
        .expect("the template is YAML")
        .remove(0)
}

fn key_schema(schema: &Yaml) -> (String, String) {
    let mut hash = String::new();
    let mut range = String::new();
    for element in schema.as_vec().expect("KeySchema is a list") {
        let name = element["AttributeName"].as_str().unwrap().to_owned();
        match element["KeyType"].as_str() {
            Some("HASH") => hash = name,
            Some("RANGE") => range = name,
            other => panic!("unexpected KeyType {other:?}"),
        }
    }
    (hash, range)
}

#[test]
fn every_table_in_code_is_in_the_template_with_the_same_keys_indexes_and_ttl() {
    let doc = template();
    for def in table_definitions() {
        let resource = match def.table {
            Table::State => "StateTable",
            Table::Messages => "MessagesTable",
        };
        let props = &doc["Resources"][resource]["Properties"];
        assert!(
            !props.is_badvalue(),
            "{resource} is missing from infra/template.yaml"
        );
        assert_eq!(
            props["BillingMode"].as_str(),
            Some("PAY_PER_REQUEST"),
            "{resource}"
        );
        assert_eq!(
            key_schema(&props["KeySchema"]),
            (def.partition_key.to_owned(), def.sort_key.to_owned()),
            "{resource} keys"
        );

        let declared: Vec<(String, String)> = props["AttributeDefinitions"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["AttributeName"].as_str().unwrap().to_owned(),
                    a["AttributeType"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut expected = vec![def.partition_key, def.sort_key];
        for index in &def.indexes {
            for key in [index.partition_key, index.sort_key] {
                if !expected.contains(&key) {
                    expected.push(key);
                }
            }
        }
        let mut expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|n| (n.to_owned(), "S".to_owned()))
            .collect();
        let mut declared_sorted = declared.clone();
        expected.sort();
        declared_sorted.sort();
        assert_eq!(
            declared_sorted, expected,
            "{resource} attribute definitions"
        );

        type Index = (String, (String, String), String, Vec<String>);
        let indexes: Vec<Index> = props["GlobalSecondaryIndexes"]
            .as_vec()
            .map(|v| v.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|i| {
                (
                    i["IndexName"].as_str().unwrap().to_owned(),
                    key_schema(&i["KeySchema"]),
                    i["Projection"]["ProjectionType"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    i["Projection"]["NonKeyAttributes"]
                        .as_vec()
                        .map(|v| v.iter().map(|a| a.as_str().unwrap().to_owned()).collect())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let expected_indexes: Vec<Index> = def
            .indexes
            .iter()
            .map(|i| {
                let (kind, attributes) = match i.projection {
                    IndexProjection::All => ("ALL", vec![]),
                    IndexProjection::Include(names) => {
                        ("INCLUDE", names.iter().map(|n| n.to_string()).collect())
                    }
                };
                (
                    i.name.to_owned(),
                    (i.partition_key.to_owned(), i.sort_key.to_owned()),
                    kind.to_owned(),
                    attributes,
                )
            })
            .collect();
        assert_eq!(indexes, expected_indexes, "{resource} indexes");

        let ttl = &props["TimeToLiveSpecification"];
        match def.ttl_attribute {
            Some(attr) => {
                assert_eq!(
                    ttl["AttributeName"].as_str(),
                    Some(attr),
                    "{resource} TTL attribute"
                );
                assert_eq!(
                    ttl["Enabled"].as_bool(),
                    Some(true),
                    "{resource} TTL enabled"
                );
            }
            None => assert!(
                ttl.is_badvalue(),
                "{resource} has a TTL the code does not know"
            ),
        }
    }
}

/// `sam build` runs `cargo lambda build --bin <Binary>` inside each function's `CodeUri`. At the
/// workspace root only the default member (the embedded runner) is in reach, so each function
/// must point at its own crate, whose package builds exactly that binary.
#[test]
fn every_function_builds_from_its_own_crate() {
    let doc = template();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra");
    let workspace = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .expect("the workspace manifest");
    let mut functions = 0;
    for (name, resource) in doc["Resources"].as_hash().expect("Resources") {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        functions += 1;
        let name = name.as_str().unwrap();
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: BuildProperties.Binary"));
        let code_uri = resource["Properties"]["CodeUri"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: CodeUri"));
        let manifest = std::path::Path::new(root).join(code_uri).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", manifest.display()));
        let package = text
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|n| n.trim_matches('"'))
            .unwrap_or_else(|| panic!("{name}: no package name"));
        assert_eq!(
            package, binary,
            "{name}: the crate at {code_uri} builds {package}"
        );
        let member = code_uri.trim_start_matches("../");
        assert!(
            workspace.contains(&format!("\"{member}\"")),
            "{name}: {member} is a workspace member"
        );
    }
    assert_eq!(functions, 4);
}
