//! The call counter sees the calls a client makes.

#[tokio::test]
async fn counts_calls_by_operation() {
    let server = o365_local_stack::EmbeddedDynamo::in_memory().await.unwrap();
    let calls = o365_local_stack::DynamoCalls::default();
    let client = calls.client(server.endpoint());
    client.list_tables().send().await.unwrap();
    client.list_tables().send().await.unwrap();
    assert_eq!(
        calls.snapshot().get("ListTables"),
        Some(&2),
        "{:?}",
        calls.snapshot()
    );
}
