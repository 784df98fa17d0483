//! The `mtg-multi` binary as an operator uses it: exit codes, the one-line config error, the
//! start-up log line, SIGTERM, and no secret in any output.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mtg-multi");
const KEY_HEX: &str = "367a189aee18fa31c190054efd4a8e95";

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mtg-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn invalid_config_exits_2_with_one_line_naming_the_key() {
    let path = temp_config(
        "bad",
        &format!(
            "bind-to = \"127.0.0.1:3128\"\nsecret = \"ee{KEY_HEX}6578616d706c652e636f6d\"\n[network.timeout]\nidle = \"forever\"\n"
        ),
    );
    let out = Command::new(BIN).arg("run").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        "mtg-multi: invalid value for network.timeout.idle: \"forever\": expected a non-negative Go duration like 300ms, 10s, 1h30m\n"
    );
}

#[test]
fn missing_config_exits_2() {
    let out = Command::new(BIN).args(["run", "/nonexistent/mtg.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("mtg-multi: cannot read config /nonexistent/mtg.toml")
    );
}

#[test]
fn serves_logs_without_secrets_and_stops_on_sigterm() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = temp_config(
        "ok",
        &format!(
            "bind-to = \"127.0.0.1:{port}\"\ndebug = true\n[secrets]\nalice = \"ee{KEY_HEX}6578616d706c652e636f6d\"\n"
        ),
    );
    let mut child = Command::new(BIN).arg("run").arg(&path).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let Some(Ok(line)) = lines.next() else { break };
        log.push_str(&line);
        log.push('\n');
        if line.contains("serving") {
            break;
        }
    }
    assert!(log.contains("serving users=1"), "{log}");
    assert!(log.contains(&format!("127.0.0.1:{port}")), "{log}");
    // A probe, so the debug log has something to say about a connection.
    let mut probe = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut probe, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    drop(probe);
    std::thread::sleep(Duration::from_millis(300));

    // The kill command sends SIGTERM.
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    for line in lines.map_while(Result::ok) {
        log.push_str(&line);
        log.push('\n');
    }
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.to_lowercase().contains(KEY_HEX), "a secret key appeared in the log:\n{log}");
}

#[test]
fn generate_secret_prints_a_parsable_secret() {
    let out = Command::new(BIN).args(["generate-secret", "--hex", "example.com"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = mtg_proto::Secret::parse(text.trim()).unwrap();
    assert_eq!(secret.host(), "example.com");
    assert!(text.trim().starts_with("ee"));
    let out = Command::new(BIN).args(["generate-secret", "bad host"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sighup_reloads_the_users() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base =
        format!("bind-to = \"127.0.0.1:{port}\"\n[secrets]\nalice = \"ee{KEY_HEX}6578616d706c652e636f6d\"\n");
    let path = temp_config("hup", &base);
    let mut child = Command::new(BIN).arg("run").arg(&path).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let wait_for = |lines: &mut std::io::Lines<BufReader<std::process::ChildStderr>>, what: &str| -> String {
        let mut seen = String::new();
        while let Some(Ok(line)) = lines.next() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(what) {
                return line;
            }
        }
        panic!("no {what:?} in:\n{seen}");
    };
    wait_for(&mut lines, "serving");
    std::fs::write(&path, format!("{base}bob = \"ee{}6578616d706c652e636f6d\"\n", "11".repeat(16))).unwrap();
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    let line = wait_for(&mut lines, "config reloaded");
    assert!(line.contains("added=[\"bob\"]"), "{line}");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn access_prints_golden_links_for_every_user() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let out = Command::new(BIN)
        .args(["access", "--ipv6", "2001:db8::1", "-p", "443"])
        .arg(format!("{dir}/access.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let golden = std::fs::read_to_string(format!("{dir}/access.golden.json")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), golden);

    let out = Command::new(BIN)
        .args(["access", "--qr", "--hex"])
        .arg(format!("{dir}/access.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("secret=ee473ce5d4958eb5f968c87680a23854a0676f6f676c652e636f6d"), "{text}");
    assert!(text.contains("\nbob (203.0.113.10):\n"), "{text}");
    assert!(text.contains('▀') || text.contains('▄') || text.contains('█'), "a QR code is drawn");
}

#[test]
fn access_without_a_public_address_names_the_flags() {
    let path = temp_config(
        "noip",
        &format!("bind-to = \"127.0.0.1:3128\"\nsecret = \"ee{KEY_HEX}6578616d706c652e636f6d\"\n"),
    );
    let out = Command::new(BIN).arg("access").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "mtg-multi: no public address known: pass --ipv4 IP and/or --ipv6 IP, or set public-ipv4 / public-ipv6 in the config\n"
    );
}

#[test]
fn simple_run_serves_one_secret_and_checks_its_flags() {
    let secret = format!("ee{KEY_HEX}6578616d706c652e636f6d");
    let out =
        Command::new(BIN).args(["simple-run", "-t", "forever", "127.0.0.1:3128", &secret]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "mtg-multi: invalid value for network.timeout.tcp: \"forever\": expected a non-negative Go duration like 300ms, 10s, 1h30m\n"
    );

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(BIN)
        .args(["simple-run", &format!("127.0.0.1:{port}"), &secret])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let serving = lines.by_ref().map_while(Result::ok).find(|l| l.contains("serving")).unwrap();
    assert!(serving.contains(&format!("127.0.0.1:{port}")), "{serving}");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
