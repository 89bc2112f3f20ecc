//! The README's run command: the binary starts, creates its tables on disk, and /health answers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

fn get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn the_embedded_default_starts_and_reports_a_healthy_store() {
    let data = std::env::temp_dir().join(format!("o365-local-{}", std::process::id()));
    let (http, dynamo, sim) = (free_addr(), free_addr(), free_addr());
    let sim_port = sim.rsplit_once(':').unwrap().1.to_owned();
    let _child = Running(
        Command::new(env!("CARGO_BIN_EXE_o365-sync-local"))
            .env("O365_LOCAL_HTTP_ADDR", &http)
            .env("O365_LOCAL_DYNAMODB_ADDR", &dynamo)
            .env("O365_LOCAL_DATA_DIR", &data)
            .env("O365_LOCAL_SIM_PORT", &sim_port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the runner starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let response = loop {
        if let Some(r) = get(&http, "/health") {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no answer on /health within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(r#""store":{"#)
            && response.contains("o365-sync-state")
            && response.contains("o365-sync-messages")
    );
    assert!(
        data.join("dynamodb.sqlite").exists(),
        "data is kept on disk"
    );

    // The API of the embedded run answers a development token for the seeded demo org.
    let token_reply = get(&http, "/_local/token?org=demo&email=admin@contoso.com").unwrap();
    let token = token_reply
        .split("\"access_token\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a token");
    let mut stream = TcpStream::connect(&http).unwrap();
    write!(stream, "GET /v1/me HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").unwrap();
    let mut me = String::new();
    stream.read_to_string(&mut me).unwrap();
    assert!(me.starts_with("HTTP/1.1 200"), "{me}");
    assert!(
        me.contains(r#""is_primary":true"#),
        "the demo org's Primary admin: {me}"
    );
    let _ = std::fs::remove_dir_all(&data);
}
