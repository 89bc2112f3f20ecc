//! `ms-sim --port 8081 [--seed N] [--demo] [--redirect-uri URI]... [--messages N]`
//! Serves the simulator alone on 127.0.0.1 until Ctrl-C.

use ms_sim::{SimConfig, Simulator};

fn usage() -> ! {
    eprintln!(
        "usage: ms-sim [--port N] [--seed N] [--demo] [--redirect-uri URI]... [--messages N] [--max-page-size N] [--propagation-ms N]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut cfg = SimConfig {
        port: 8081,
        ..Default::default()
    };
    let mut demo = false;
    let mut redirects = Vec::new();
    let mut messages = 50u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let num = |args: &mut dyn Iterator<Item = String>| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--port" => cfg.port = num(&mut args) as u16,
            "--seed" => cfg.seed = num(&mut args),
            "--messages" => messages = num(&mut args) as u32,
            "--max-page-size" => cfg.max_page_size = num(&mut args) as u32,
            "--propagation-ms" => {
                cfg.propagation = std::time::Duration::from_millis(num(&mut args))
            }
            "--demo" => demo = true,
            "--redirect-uri" => redirects.push(args.next().unwrap_or_else(|| usage())),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let sim = match Simulator::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ms-sim: cannot start: {e}");
            std::process::exit(1)
        }
    };
    println!("ms-sim listening on {}", sim.base_url());
    println!(
        "  authority:  {}   (token: {{authority}}/{{tenant}}/oauth2/v2.0/token)",
        sim.authority()
    );
    println!(
        "  sign-in:    {}/organizations/oauth2/v2.0/authorize   (discovery: {})",
        sim.authority(),
        sim.openid_configuration_url("organizations")
    );
    println!("  graph:      {}", sim.graph_url());
    println!("  control:    {}/_sim/...", sim.base_url());
    if demo {
        if redirects.is_empty() {
            redirects.push("http://localhost:8080/connect/callback".into());
        }
        match sim.create_demo(&redirects, messages) {
            Ok(w) => {
                println!(
                    "demo world:\n{}",
                    serde_json::to_string_pretty(&w).unwrap_or_default()
                );
                println!(
                    "consent URL (sign in as admin@contoso.com):\n  {}",
                    sim.admin_consent_url(
                        "organizations",
                        &w.default_app.app.client_id.to_string(),
                        &redirects[0],
                        "demo-state"
                    )
                );
            }
            Err(e) => eprintln!("demo setup failed: {e}"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
}
