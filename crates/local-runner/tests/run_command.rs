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
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

fn get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn the_embedded_default_starts_and_reports_a_healthy_store() {
    let data = std::env::temp_dir().join(format!("o365-local-{}", std::process::id()));
    let (http, dynamo) = (free_addr(), free_addr());
    let _child = Running(
        Command::new(env!("CARGO_BIN_EXE_o365-sync-local"))
            .env("O365_LOCAL_HTTP_ADDR", &http)
            .env("O365_LOCAL_DYNAMODB_ADDR", &dynamo)
            .env("O365_LOCAL_DATA_DIR", &data)
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
        assert!(Instant::now() < deadline, "no answer on /health within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""store":{"#) && response.contains("o365-sync-state") && response.contains("o365-sync-messages"));
    assert!(data.join("dynamodb.sqlite").exists(), "data is kept on disk");
    let _ = std::fs::remove_dir_all(&data);
}
