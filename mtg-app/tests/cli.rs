//! The `mtg-multi` binary as an operator uses it: exit codes, the one-line config error, the
//! start-up log line, SIGTERM, and no secret in any output.
//!
//! `run` resolves the secrets' hostnames and may ask ifconfig.co for our address (the start-up
//! SNI check), and `access` asks it when no address is known: those tests run in a
//! loopback-only network namespace (root; the tests crate's `netns` module, shared by path).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/src/netns.rs"]
mod netns;

const BIN: &str = env!("CARGO_BIN_EXE_mtg-multi");
const KEY_HEX: &str = "367a189aee18fa31c190054efd4a8e95";

/// A config file in a temp directory of its own, removed with it when dropped.
struct TempConfig {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl std::ops::Deref for TempConfig {
    type Target = std::path::PathBuf;

    fn deref(&self) -> &std::path::PathBuf {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for TempConfig {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

impl AsRef<std::path::Path> for TempConfig {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

fn temp_config(name: &str, text: &str) -> TempConfig {
    let dir = tempfile::Builder::new().prefix(&format!("mtg-cli-{name}-")).tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    TempConfig { _dir: dir, path }
}

/// Reads a child's stderr on a thread of its own, a line at a time.
fn log_lines(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Appends lines to `log` until `done(log)` holds (true), or until `timeout` passes or the
/// stream ends (false).
fn wait_log(
    lines: &std::sync::mpsc::Receiver<String>,
    log: &mut String,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while !done(log) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else { return false };
        log.push_str(&line);
        log.push('\n');
    }
    true
}

/// Appends lines to `log` until one contains `needle`.
fn wait_line(
    lines: &std::sync::mpsc::Receiver<String>,
    log: &mut String,
    needle: &str,
    timeout: Duration,
) -> bool {
    let seen = log.len();
    wait_log(lines, log, timeout, |log| log[seen..].contains(needle))
}

/// Waits (bounded: 15 s) for `child` to exit after a signal.
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    if !netns::enter("serves_logs_without_secrets_and_stops_on_sigterm") {
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = temp_config(
        "ok",
        &format!(
            "bind-to = \"127.0.0.1:{port}\"\ndebug = true\n[secrets]\nalice = \"ee{KEY_HEX}6578616d706c652e636f6d\"\n"
        ),
    );
    let mut child = Command::new(BIN).arg("run").arg(&path).stderr(Stdio::piped()).spawn().unwrap();
    let lines = log_lines(child.stderr.take().unwrap());
    let mut log = String::new();
    assert!(wait_line(&lines, &mut log, "serving", Duration::from_secs(10)), "{log}");
    assert!(log.contains("serving users=1"), "{log}");
    assert!(log.contains(&format!("127.0.0.1:{port}")), "{log}");
    // A probe, so the debug log has something to say about a connection: wait until it has.
    let mut probe = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut probe, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    drop(probe);
    assert!(wait_line(&lines, &mut log, "not a client", Duration::from_secs(10)), "{log}");

    // The kill command sends SIGTERM.
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = wait_exit(&mut child);
    // The reader's channel closes once the child's stderr is at its end.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
        log.push_str(&line);
        log.push('\n');
    }
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.to_lowercase().contains(KEY_HEX), "a secret key appeared in the log:\n{log}");
}

#[test]
fn run_warns_in_the_background_when_a_secret_hostname_is_not_ours() {
    if !netns::enter("run_warns_in_the_background_when_a_secret_hostname_is_not_ours") {
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // localhost resolves to loopback, not to the configured public address.
    let path = temp_config(
        "sni",
        &format!(
            "bind-to = \"127.0.0.1:{port}\"\npublic-ipv4 = \"192.0.2.1\"\n[secrets]\nalice = \"ee{KEY_HEX}6c6f63616c686f7374\"\n"
        ),
    );
    let mut child = Command::new(BIN).arg("run").arg(&path).stderr(Stdio::piped()).spawn().unwrap();
    let lines = log_lines(child.stderr.take().unwrap());
    let mut log = String::new();
    // The check runs beside the start-up: the two lines come in either order.
    const WARNING: &str = "does not resolve to our public IP";
    wait_log(&lines, &mut log, Duration::from_secs(10), |log| {
        log.contains(WARNING) && log.contains("serving")
    });
    let warning = log.lines().find(|l| l.contains(WARNING)).map(str::to_owned);
    assert!(log.contains("serving"), "{log}");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0), "{log}");
    let warning = warning.unwrap_or_else(|| panic!("no SNI warning in:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("host=localhost"), "{warning}");
    assert!(warning.contains("resolved=127.0.0.1"), "{warning}");
    assert!(warning.contains("public=192.0.2.1"), "{warning}");
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
    if !netns::enter("sighup_reloads_the_users") {
        return;
    }
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
    if !netns::enter("access_without_a_public_address_names_the_flags") {
        return;
    }
    let path = temp_config(
        "noip",
        &format!("bind-to = \"127.0.0.1:3128\"\nsecret = \"ee{KEY_HEX}6578616d706c652e636f6d\"\n"),
    );
    let out = Command::new(BIN).arg("access").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // ifconfig.co cannot be reached from the namespace: both families' failures are named.
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(
            "mtg-multi: no public address known: pass --ipv4 IP and/or --ipv6 IP, or set public-ipv4 / public-ipv6 in the config (detection failed: IPv4: GET https://ifconfig.co: "
        ),
        "{stderr}"
    );
    assert!(stderr.contains("; IPv6: GET https://ifconfig.co: "), "{stderr}");
    assert!(stderr.ends_with(")\n"), "{stderr}");
}

#[test]
fn simple_run_serves_one_secret_and_checks_its_flags() {
    if !netns::enter("simple_run_serves_one_secret_and_checks_its_flags") {
        return;
    }
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

#[test]
fn version_names_the_crate_version() {
    for flag in ["--version", "-V", "-v"] {
        let out = Command::new(BIN).arg(flag).output().unwrap();
        assert!(out.status.success(), "{flag}");
        let text = String::from_utf8(out.stdout).unwrap();
        let expected = format!("mtg-multi {}", env!("CARGO_PKG_VERSION"));
        assert!(
            text == format!("{expected}\n") || text.starts_with(&format!("{expected} (commit ")),
            "{text}"
        );
    }
}

/// What bash completes for the words of `line` (the last one being completed), with the
/// script `mtg-multi completions bash` prints.
fn bash_complete(line: &[&str]) -> Vec<String> {
    let program = r#"source <("$0" completions bash) || exit 1
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
_mtg__multi mtg-multi "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    let out = Command::new("bash").arg("-c").arg(program).arg(BIN).args(line).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

#[test]
fn bash_completes_the_verbs_and_their_flags() {
    assert_eq!(
        bash_complete(&["mtg-multi", ""]),
        [
            "-V",
            "-h",
            "--version",
            "--help",
            "run",
            "access",
            "simple-run",
            "doctor",
            "healthcheck",
            "completions",
            "manpage",
            "generate-secret",
            "help"
        ]
    );
    assert_eq!(bash_complete(&["mtg-multi", "do"]), ["doctor"]);
    assert_eq!(bash_complete(&["mtg-multi", "doctor", "--sk"]), ["--skip-native-check"]);
    assert_eq!(bash_complete(&["mtg-multi", "completions", "z"]), ["zsh"]);
    let out = Command::new(BIN).args(["completions", "zsh"]).output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("#compdef mtg-multi"));
}

/// Renders roff with groff, warnings on; the rendered text, or the warnings as an error.
fn groff(roff: &[u8]) -> Result<String, String> {
    let mut child = Command::new("groff")
        .args(["-man", "-Tascii", "-ww", "-P-cbou"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff (apt-get install groff-base)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), roff).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && stderr.is_empty() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(stderr)
    }
}

#[test]
fn man_pages_are_valid_roff_naming_the_verbs() {
    let out = Command::new(BIN).arg("manpage").output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.starts_with(b".ie \\n(.g .ds Aq"), "roff preamble");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\n.TH mtg-multi 1 "));
    let page = groff(&out.stdout).unwrap();
    assert!(page.contains("SUBCOMMANDS"), "{page}");
    for verb in
        ["run", "access", "simple-run", "doctor", "healthcheck", "completions", "manpage", "generate-secret"]
    {
        assert!(page.contains(&format!("mtg-multi-{verb}(1)")), "{verb} missing from:\n{page}");
    }

    let out = Command::new(BIN).args(["manpage", "doctor"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\n.TH mtg-multi-doctor 1 "));
    let page = groff(&out.stdout).unwrap();
    assert!(page.contains("mtg-multi doctor [--skip-native-check]"), "{page}");

    let out = Command::new(BIN).args(["manpage", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "mtg-multi: no verb \"nope\"; the verbs are run, access, simple-run, doctor, healthcheck, completions, manpage, generate-secret\n"
    );
}

/// `BIN` with none of the environment overlays' variables inherited.
fn bin_without_overlays() -> Command {
    let mut command = Command::new(BIN);
    for name in mtg_app::config::ENV_VARIABLES.iter().chain(&["WORKERS", "SECRET_COUNT"]) {
        command.env_remove(name);
    }
    command
}

#[test]
fn environment_overlays_win_over_the_file() {
    let path = temp_config(
        "env",
        &format!(
            "bind-to = \"127.0.0.1:3128\"\nad-tag = \"0123456789abcdef0123456789abcdef\"\n[secrets]\n\
             alice = \"ee{KEY_HEX}6578616d706c652e636f6d\"\n"
        ),
    );
    let access = |vars: &[(&str, &str)]| {
        let out = bin_without_overlays()
            .args(["access", "-i", "203.0.113.7", "--hex"])
            .arg(&path)
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (json["users"].as_object().unwrap().clone(), String::from_utf8(out.stderr).unwrap())
    };
    let (users, _) = access(&[]);
    assert_eq!(users.keys().collect::<Vec<_>>(), ["alice"]);
    // The official image's bare key with SECRET_HOST; MTG_BIND_TO's first port is the links' port.
    let key = "00112233445566778899aabbccddeeff";
    let (users, _) =
        access(&[("SECRET", key), ("SECRET_HOST", "example.com"), ("MTG_BIND_TO", "0.0.0.0:8443,[::]:8443")]);
    assert_eq!(users.keys().collect::<Vec<_>>(), ["default"]);
    let link = users["default"]["ipv4"]["tg_url"].as_str().unwrap();
    assert_eq!(link, format!("tg://proxy?port=8443&secret=ee{key}6578616d706c652e636f6d&server=203.0.113.7"));
    // MTG_SECRET wins over SECRET.
    let (users, _) =
        access(&[("SECRET", key), ("MTG_SECRET", &format!("ee{KEY_HEX}6f746865722e6578616d706c65"))]);
    let link = users["default"]["ipv4"]["tg_url"].as_str().unwrap();
    assert!(link.contains(&format!("port=3128&secret=ee{KEY_HEX}6f746865722e6578616d706c65&")), "{link}");
}

#[test]
fn environment_overlay_errors_name_the_variable() {
    let path = temp_config(
        "envbad",
        &format!("bind-to = \"127.0.0.1:3128\"\nsecret = \"ee{KEY_HEX}6578616d706c652e636f6d\"\n"),
    );
    for (vars, expected) in [
        (
            vec![("MTG_SECRET", "not-a-secret!")],
            "mtg-multi: invalid secret environment variable MTG_SECRET: ",
        ),
        (
            vec![("SECRET", "00112233445566778899aabbccddeeff")],
            "mtg-multi: environment variable SECRET_HOST is required (",
        ),
        (vec![("TAG", "12345")], "mtg-multi: invalid ad tag environment variable TAG: "),
        (
            vec![("MTG_BIND_TO", "example.com:443")],
            "mtg-multi: invalid value for environment variable MTG_BIND_TO: \"example.com:443\": expected ",
        ),
    ] {
        let out = bin_without_overlays()
            .args(["access", "-i", "203.0.113.7"])
            .arg(&path)
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{vars:?}: {stderr}");
        assert!(stderr.starts_with(expected) && stderr.lines().count() == 1, "{vars:?}: {stderr}");
        assert!(!stderr.contains("00112233445566778899aabbccddeeff"), "a secret in {stderr}");
    }
}

#[test]
fn healthcheck_passes_while_the_proxy_serves_and_fails_after() {
    if !netns::enter("healthcheck_passes_while_the_proxy_serves_and_fails_after") {
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The file names a closed port; MTG_BIND_TO (the environment wins) the one served.
    let path = temp_config(
        "health",
        &format!(
            "bind-to = \"127.0.0.1:{closed}\"\napi-bind-to = \"127.0.0.1:{api}\"\napi-token = \"t0ken\"\n\
             secret = \"ee{KEY_HEX}6578616d706c652e636f6d\"\n"
        ),
    );
    let bind = format!("0.0.0.0:{port}");
    let healthcheck = |env: bool| {
        let mut command = bin_without_overlays();
        command.args(["healthcheck", "-t", "3"]).arg(&path);
        if env {
            command.env("MTG_BIND_TO", &bind);
        }
        command.output().unwrap()
    };
    let mut child = bin_without_overlays()
        .arg("run")
        .arg(&path)
        .env("MTG_BIND_TO", &bind)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(child.stderr.take().unwrap());
    let mut log = String::new();
    assert!(wait_line(&lines, &mut log, "serving", Duration::from_secs(10)), "{log}");
    assert!(log.contains(&format!("0.0.0.0:{port}")), "{log}");
    let out = healthcheck(true);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Without the variable the file's closed port is checked: unhealthy, naming it.
    let out = healthcheck(false);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("mtg-multi: unhealthy: bind-to 127.0.0.1:{closed}: cannot connect")),
        "{stderr}"
    );
    assert!(!stderr.contains("api-bind-to"), "the API answered: {stderr}");

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0));
    let out = healthcheck(true);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("bind-to 0.0.0.0:{port}: cannot connect to 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("api-bind-to 127.0.0.1:{api}: GET http://127.0.0.1:{api}/stats")),
        "{stderr}"
    );
    assert!(!stderr.contains("t0ken"), "the token in {stderr}");
}
