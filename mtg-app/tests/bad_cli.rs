//! Malformed command lines against the real binary: each exits 2 with exactly one stderr
//! line that starts `mtg-multi: ` and names the problem, prints nothing on stdout, and never
//! panics. (Malformed config files are in `config_errors.rs`.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mtg-multi");
const EE: &str = "ee367a189aee18fa31c190054efd4a8e956578616d706c652e636f6d";
const ACCESS_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/access.toml");

/// Arguments and a fragment the one stderr line must contain.
fn cases() -> Vec<(Vec<String>, &'static str)> {
    let long_host = "a".repeat(300);
    let not_utf8 = BIN.to_owned();
    let table: Vec<(Vec<&str>, &'static str)> = vec![
        (
            vec![],
            "a command is required: one of run, access, simple-run, doctor, healthcheck, completions, manpage, generate-secret",
        ),
        (vec!["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (vec!["doctor"], "required arguments were not provided: <CONFIG>"),
        (vec!["doctor", "/nonexistent/mtg.toml"], "cannot read config /nonexistent/mtg.toml"),
        (vec!["completions", "nosuch"], "invalid value 'nosuch' for '<SHELL>'"),
        (vec!["manpage", "nosuch"], "no verb \"nosuch\"; the verbs are run,"),
        (vec!["--bogus"], "unexpected argument '--bogus' found"),
        (vec!["run"], "required arguments were not provided: <CONFIG>"),
        (vec!["run", "a.toml", "b.toml"], "unexpected argument 'b.toml' found"),
        (vec!["run", "--bogus", "a.toml"], "unexpected argument '--bogus' found"),
        (vec!["run", "/"], "cannot read config /: Is a directory"),
        (vec!["run", &not_utf8], "stream did not contain valid UTF-8"),
        (vec!["run", "/nonexistent/dir/mtg.toml"], "cannot read config /nonexistent/dir/mtg.toml"),
        (vec!["access"], "required arguments were not provided: <CONFIG>"),
        (vec!["access", "/nonexistent/mtg.toml"], "cannot read config /nonexistent/mtg.toml"),
        (vec!["access", "--ipv4", "300.1.1.1", ACCESS_TOML], "invalid value '300.1.1.1' for '--ipv4 <IPV4>'"),
        (vec!["access", "--ipv4", "::1", ACCESS_TOML], "invalid value '::1' for '--ipv4 <IPV4>'"),
        (vec!["access", "--ipv6", "::zz", ACCESS_TOML], "invalid value '::zz' for '--ipv6 <IPV6>'"),
        (
            vec!["access", "-p", "0", ACCESS_TOML],
            "invalid value '0' for '--port <PORT>': 0 is not in 1..=65535",
        ),
        (vec!["access", "-p", "70000", ACCESS_TOML], "invalid value '70000' for '--port <PORT>'"),
        (vec!["access", "-p", "https", ACCESS_TOML], "invalid value 'https' for '--port <PORT>'"),
        (vec!["access", "--qr=yes", ACCESS_TOML], "unexpected value 'yes' for '--qr'"),
        (vec!["generate-secret"], "required arguments were not provided: <HOSTNAME>"),
        (vec!["generate-secret", ""], "invalid hostname \"\""),
        (vec!["generate-secret", "bad host"], "invalid hostname \"bad host\""),
        (vec!["generate-secret", &long_host], "invalid hostname \"aaaa"),
        (vec!["generate-secret", "--hex", "a.example", "b.example"], "unexpected argument 'b.example' found"),
        (vec!["simple-run"], "required arguments were not provided: <BIND_TO> <SECRET>"),
        (vec!["simple-run", "127.0.0.1:3128"], "required arguments were not provided: <SECRET>"),
        (vec!["simple-run", "127.0.0.1:3128", "nothex"], "secret is neither hex nor base64url"),
        (vec!["simple-run", "127.0.0.1:3128", "ee1234"], "invalid secret"),
        (vec!["simple-run", "localhost:3128", EE], "invalid value for bind-to: \"localhost:3128\""),
        (vec!["simple-run", "127.0.0.1:0", EE], "invalid value for bind-to: \"127.0.0.1:0\""),
        (vec!["simple-run", "-c", "lots", "127.0.0.1:3128", EE], "invalid value 'lots' for '--concurrency"),
        (vec!["simple-run", "-c", "-1", "127.0.0.1:3128", EE], "'-1'"),
        (
            vec!["simple-run", "-i", "sideways", "127.0.0.1:3128", EE],
            "invalid value for prefer-ip: \"sideways\"",
        ),
        (vec!["simple-run", "-a", "huge", "127.0.0.1:3128", EE], "defense.anti-replay.max-size: \"huge\""),
        (vec!["simple-run", "-s", "notaurl", "127.0.0.1:3128", EE], "network.proxies: \"notaurl\""),
        (
            vec!["simple-run", "-n", "dns.example", "127.0.0.1:3128", EE],
            "invalid value 'dns.example' for '--doh-ip",
        ),
        (
            vec!["simple-run", "-p", "65536", "127.0.0.1:3128", EE],
            "invalid value '65536' for '--domain-fronting-port",
        ),
        (vec!["simple-run", "--timeout=-5s", "127.0.0.1:3128", EE], "network.timeout.tcp: \"-5s\""),
        (
            vec!["simple-run", "127.0.0.1:3128", "dd367a189aee18fa31c190054efd4a8e95"],
            "need [secured] enabled = true",
        ),
    ];
    table.into_iter().map(|(args, want)| (args.into_iter().map(str::to_owned).collect(), want)).collect()
}

#[test]
fn every_malformed_command_line_exits_2_with_one_line_naming_it() {
    let cases = cases();
    assert!(cases.len() >= 30, "the table has {} cases", cases.len());
    let mut failures = Vec::new();
    for (args, want) in &cases {
        let out = Command::new(BIN).args(args).env("RUST_BACKTRACE", "1").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let problems: Vec<&str> = [
            (out.status.code() != Some(2), "exit code is not 2"),
            (!out.stdout.is_empty(), "stdout is not empty"),
            (stderr.lines().count() != 1 || !stderr.ends_with('\n'), "stderr is not exactly one line"),
            (!stderr.starts_with("mtg-multi: "), "stderr does not start with `mtg-multi: `"),
            (!stderr.contains(want), "stderr does not name the problem"),
            (stderr.contains("panicked") || stderr.contains("backtrace"), "a panic"),
        ]
        .into_iter()
        .filter_map(|(bad, what)| bad.then_some(what))
        .collect();
        if !problems.is_empty() {
            failures
                .push(format!("{args:?}: {problems:?} (code {:?}) stderr: {stderr:?}", out.status.code()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn help_and_version_still_print_to_stdout_and_exit_0() {
    for flag in ["--help", "--version", "help"] {
        let out = Command::new(BIN).arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert!(out.stderr.is_empty(), "{flag}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("mtg-multi"), "{flag}");
    }
}
