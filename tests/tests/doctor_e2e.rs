//! `mtg-multi doctor` in-process against loopback stand-ins: the fake DC for every DC of the
//! table (`dc-overrides`), the local fronting site, a local time server. `doctor` asks
//! `0.pool.ntp.org` and ifconfig.co by default, so every test runs in a loopback-only network
//! namespace (root; see `mtg_tests::netns`).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mtg_app::doctor::{DoctorOptions, doctor, ntp};
use mtg_tests::socks_server::{SocksOptions, SocksServer};
use mtg_tests::temp_file::TempFile;
use mtg_tests::{DcMode, FakeDc, FrontingSite, netns};

/// The DCs of the built-in table.
const DCS: [i16; 6] = [1, 2, 3, 4, 5, 203];
/// A FakeTLS secret for `localhost` (key 367a…95).
const SECRET: &str = "ee367a189aee18fa31c190054efd4a8e956c6f63616c686f7374";

fn write_config(name: &str, text: &str) -> TempFile {
    TempFile::new(&format!("mtg-doctor-{name}-"), "config.toml", text)
}

/// A config whose DCs are `dcs` (DC → address), fronting to `front_port` on `localhost`.
fn config(public_ip: Option<&str>, front_port: u16, dcs: &[(i16, SocketAddr)]) -> String {
    let public = public_ip.map(|ip| format!("public-ipv4 = \"{ip}\"\n")).unwrap_or_default();
    let overrides: String = dcs.iter().map(|(dc, addr)| format!("{dc} = [\"{addr}\"]\n")).collect();
    format!(
        "bind-to = \"127.0.0.1:3128\"\n{public}secret = \"{SECRET}\"\n[domain-fronting]\nport = {front_port}\n\
         [network.timeout]\ntcp = \"2s\"\nhttp = \"2s\"\n[network.dc-overrides]\n{overrides}"
    )
}

fn run(path: &std::path::Path, options: &DoctorOptions) -> (u8, String) {
    let mut out = Vec::new();
    let code = doctor(path, options, &mut out);
    let text = String::from_utf8(out).unwrap();
    println!("{text}");
    (code, text)
}

/// The lines of one section of the report.
fn section<'a>(report: &'a str, title: &str) -> Vec<&'a str> {
    let mut lines = report.lines().skip_while(|l| *l != title);
    assert_eq!(lines.next(), Some(title), "no section {title:?} in:\n{report}");
    lines.take_while(|l| !l.is_empty()).collect()
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A time server `ahead` of our clock that answers one request.
fn time_server(ahead: Duration) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut request = [0u8; 512];
        let (n, peer) = socket.recv_from(&mut request).unwrap();
        assert_eq!(n, ntp::PACKET_LEN);
        assert_eq!(request[0], 0x23, "SNTP v4 client request");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + ahead;
        let mut answer = [0u8; ntp::PACKET_LEN];
        answer[0] = 0x24;
        answer[1] = 2;
        answer[24..32].copy_from_slice(&request[40..48]);
        answer[32..40].copy_from_slice(&ntp::from_unix(now));
        answer[40..48].copy_from_slice(&ntp::from_unix(now));
        socket.send_to(&answer, peer).unwrap();
    });
    (addr, handle)
}

#[test]
fn every_check_passes_against_loopback_stand_ins() {
    if !netns::enter("every_check_passes_against_loopback_stand_ins") {
        return;
    }
    let dc = FakeDc::start(DcMode::Telegram);
    let front = FrontingSite::start("localhost");
    let dcs: Vec<(i16, SocketAddr)> = DCS.iter().map(|&n| (n, dc.addr())).collect();
    let path = write_config("ok", &config(Some("127.0.0.1"), front.addr().port(), &dcs));
    let (code, report) = run(&path, &DoctorOptions::default());

    assert_eq!(code, 0, "{report}");
    assert_eq!(
        section(&report, "Config"),
        [format!("  ✅ {} is valid: 1 user(s), listening on 127.0.0.1:3128", path.display())]
    );
    assert_eq!(section(&report, "Deprecated options"), ["  ✅ no deprecated options are used"]);
    let time = section(&report, "Time skewness");
    assert_eq!(time.len(), 1);
    assert!(
        time[0].starts_with("  ⚠️ could not check the clock: cannot resolve 0.pool.ntp.org:123: "),
        "{report}"
    );
    let native = section(&report, "Validate native network connectivity");
    assert_eq!(native.len(), DCS.len(), "{report}");
    for (line, n) in native.iter().zip(DCS) {
        let answered = format!("  ✅ DC {n}: {} answered resPQ in ", dc.addr());
        assert!(line.starts_with(&answered) && line.ends_with("ms"), "{line}");
    }
    assert_eq!(
        section(&report, "Validate fronting domain connectivity"),
        [format!("  ✅ localhost:{} is reachable ({})", front.addr().port(), front.addr())]
    );
    let sni = section(&report, "Validate SNI-DNS match");
    assert_eq!(sni.len(), 1);
    assert!(sni[0].starts_with("  ✅ localhost resolves to 127.0.0.1"), "{report}");
    assert!(sni[0].ends_with(", our public IP 127.0.0.1"), "{report}");
    // The rustls site (ring: no X25519MLKEM768) answers both kinds of hello with X25519 and
    // packs its encrypted flight into one record, which the proxy can imitate in full.
    let flight = section(
        &report,
        &format!("Fronting site's first flight (localhost:{} (SNI localhost))", front.addr().port()),
    );
    for kind in ["x25519mlkem768", "x25519"] {
        let site = format!("  ✅ site, {kind} hello: cipher suite 1301, extensions [");
        assert!(
            flight.iter().any(|l| l.starts_with(&site) && l.contains("key share 001d (32 bytes)")),
            "{report}"
        );
        let proxy = format!(
            "  ✅ proxy, {kind} hello: the client's first cipher suite (the site follows the client's \
             order), the site's extension order, key share 001d"
        );
        assert!(flight.iter().any(|l| l.starts_with(&proxy)), "{report}");
    }
    assert!(flight.iter().all(|l| l.starts_with("  ✅ ")), "{report}");
    assert_eq!(
        flight.last(),
        Some(&"  ✅ in use: the proxy learns this at start and every raid-each"),
        "{report}"
    );

    // The fake DC saw one padded-intermediate leg per DC, each with a req_pq_multi.
    let mut seen = dc.dc_ids();
    seen.sort_unstable();
    assert_eq!(seen, DCS);
    assert_eq!(dc.req_pq_nonces().len(), DCS.len());
    assert!(dc.snapshot().iter().all(|c| c.tag_ok()));
    assert!(front.connections() >= 1);
}

#[test]
fn dead_dcs_a_skewed_clock_and_a_foreign_ip_fail() {
    if !netns::enter("dead_dcs_a_skewed_clock_and_a_foreign_ip_fail") {
        return;
    }
    let echo = FakeDc::start(DcMode::Echo);
    let closed = closed_port();
    let front = FrontingSite::start("localhost");
    let dcs: Vec<(i16, SocketAddr)> =
        DCS.iter().map(|&n| (n, if n == 2 { echo.addr() } else { closed })).collect();
    let path = write_config("down", &config(Some("192.0.2.1"), front.addr().port(), &dcs));
    // tolerate-time-skewness is 3s by default: 20s is far beyond it.
    let (ntp_addr, ntp_server) = time_server(Duration::from_secs(20));
    let options = DoctorOptions { ntp_server: ntp_addr.to_string(), ..DoctorOptions::default() };
    let (code, report) = run(&path, &options);
    ntp_server.join().unwrap();

    assert_eq!(code, 1, "{report}");
    let time = section(&report, "Time skewness");
    assert_eq!(time.len(), 1);
    // The server is 20 s ahead; the measured drift carries the round trip's jitter (19.999 s
    // has been seen), so it is read back as a number rather than matched as text.
    let drift: f64 = time[0]
        .strip_prefix("  ❌ clock drift is ")
        .and_then(|rest| rest.split_once("s (behind)"))
        .and_then(|(secs, _)| secs.parse().ok())
        .unwrap_or_else(|| panic!("no drift in {:?}:\n{report}", time[0]));
    assert!((19.0..=21.0).contains(&drift), "drift {drift} s, expected about 20 s:\n{report}");
    assert!(
        time[0].ends_with("s (behind), tolerate-time-skewness is 3s; synchronise the clock (NTP)"),
        "{report}"
    );
    let native = section(&report, "Validate native network connectivity");
    for (line, n) in native.iter().zip(DCS) {
        let expected = if n == 2 {
            // An echo returns our own req_pq_multi: not a resPQ.
            format!("  ❌ DC 2: {}: not a Telegram answer: unexpected constructor 0xbe7e8ef1", echo.addr())
        } else {
            format!("  ❌ DC {n}: cannot connect: Connection refused (os error 111)")
        };
        assert_eq!(*line, expected);
    }
    assert_eq!(native.len(), DCS.len());
    let sni = section(&report, "Validate SNI-DNS match");
    assert_eq!(sni.len(), 1);
    assert!(sni[0].starts_with("  ❌ localhost resolves to 127.0.0.1"), "{report}");
    assert!(
        sni[0].ends_with(", not to our public IP 192.0.2.1: censors can spot the SNI mismatch"),
        "{report}"
    );
}

#[test]
fn without_a_public_ip_the_sni_check_warns_and_skip_native_check_skips_the_dcs() {
    if !netns::enter("without_a_public_ip_the_sni_check_warns_and_skip_native_check_skips_the_dcs") {
        return;
    }
    let front = FrontingSite::start("localhost");
    // The DC overrides point nowhere: with --skip-native-check they are not dialled.
    let path = write_config("skip", &config(None, front.addr().port(), &[(2, closed_port())]));
    let options = DoctorOptions { skip_native_check: true, ..DoctorOptions::default() };
    let (code, report) = run(&path, &options);

    assert_eq!(code, 0, "{report}");
    assert!(!report.contains("Validate native network connectivity"), "{report}");
    let sni = section(&report, "Validate SNI-DNS match");
    assert_eq!(sni.len(), 1);
    // ifconfig.co cannot be reached from the namespace: a warning naming the keys, not a failure.
    assert!(
        sni[0].starts_with(
            "  ⚠️ cannot check: our public IP is unknown (set public-ipv4 / public-ipv6): IPv4: GET https://ifconfig.co"
        ),
        "{report}"
    );
}

#[test]
fn a_config_error_exits_2_without_a_report() {
    let path = write_config("bad", "bind-to = \"127.0.0.1:3128\"\nsecret = \"not a secret\"\n");
    let (code, report) = run(&path, &DoctorOptions::default());
    assert_eq!(code, 2);
    assert_eq!(report, "");
    let (code, report) = run(&PathBuf::from("/nonexistent/mtg.toml"), &DoctorOptions::default());
    assert_eq!(code, 2);
    assert_eq!(report, "");
}

#[test]
fn each_socks5_proxy_gets_its_own_dc_section() {
    if !netns::enter("each_socks5_proxy_gets_its_own_dc_section") {
        return;
    }
    let dc = FakeDc::start(DcMode::Telegram);
    let front = FrontingSite::start("localhost");
    let live = SocksServer::start_with(&SocksOptions {
        credentials: Some(("doc".into(), "s3cret-pw".into())),
        outgoing: None,
    });
    let dead = format!("socks5://{}", closed_port());
    let dcs: Vec<(i16, SocketAddr)> = DCS.iter().map(|&n| (n, dc.addr())).collect();
    let mut text = config(Some("127.0.0.1"), front.addr().port(), &dcs);
    let live_url = live.url(Some(("doc", "s3cret-pw")));
    text = text.replace(
        "[network.timeout]",
        &format!("[network]\nproxies = [\"{live_url}\", \"{dead}\"]\n[network.timeout]"),
    );
    let path = write_config("socks", &text);
    let options = DoctorOptions { skip_native_check: true, ..DoctorOptions::default() };
    let (code, report) = run(&path, &options);

    assert_eq!(code, 1, "the dead proxy fails its section: {report}");
    assert!(!report.contains("Validate native network connectivity"), "{report}");
    assert!(!report.contains("s3cret-pw"), "the password is never shown: {report}");
    let through_live = section(
        &report,
        &format!("Validate network connectivity with proxy socks5://doc:***@{}", live.addr()),
    );
    assert_eq!(through_live.len(), DCS.len(), "{report}");
    for (line, n) in through_live.iter().zip(DCS) {
        assert!(line.starts_with(&format!("  ✅ DC {n}: {} answered resPQ in ", dc.addr())), "{line}");
    }
    let through_dead = section(&report, &format!("Validate network connectivity with proxy {dead}"));
    assert_eq!(through_dead.len(), DCS.len(), "{report}");
    assert!(through_dead.iter().all(|l| l.starts_with("  ❌ DC ")), "{report}");
    assert_eq!(dc.req_pq_nonces().len(), DCS.len(), "only the live proxy's probes arrive");
}

#[test]
fn names_are_resolved_through_the_configured_dns_server() {
    if !netns::enter("names_are_resolved_through_the_configured_dns_server") {
        return;
    }
    let localhost = std::net::Ipv4Addr::LOCALHOST;
    let dns = mtg_tests::dns_server::DnsServer::start(&[
        ("front.mtg-tests.example", localhost),
        ("localhost", localhost),
    ]);
    let front = FrontingSite::start("localhost");
    let text = config(Some("127.0.0.1"), front.addr().port(), &[(2, closed_port())])
        .replace("[domain-fronting]\n", "[domain-fronting]\nhost = \"front.mtg-tests.example\"\n")
        .replace(
            "[network.timeout]\n",
            &format!("[network]\ndns = \"udp://{}\"\n[network.timeout]\n", dns.addr()),
        );
    let path = write_config("dns", &text);
    let options = DoctorOptions { skip_native_check: true, ..DoctorOptions::default() };
    let (code, report) = run(&path, &options);

    assert_eq!(code, 0, "{report}");
    assert_eq!(
        section(&report, "Validate fronting domain connectivity"),
        [format!("  ✅ front.mtg-tests.example:{} is reachable ({})", front.addr().port(), front.addr())]
    );
    let sni = section(&report, "Validate SNI-DNS match");
    assert!(sni[0].starts_with("  ✅ localhost resolves to 127.0.0.1"), "{report}");
    let asked: Vec<String> = dns.questions().into_iter().filter(|q| q.kind == "A").map(|q| q.name).collect();
    assert!(asked.contains(&"front.mtg-tests.example".to_owned()), "{asked:?}");
    assert!(asked.contains(&"localhost".to_owned()), "{asked:?}");
}

#[test]
fn a_tagged_config_gets_the_middle_proxy_bootstrap_checked() {
    use mtg_tests::fake_bootstrap::{Doc, FakeBootstrap};
    if !netns::enter("a_tagged_config_gets_the_middle_proxy_bootstrap_checked") {
        return;
    }
    let dc = FakeDc::start(DcMode::Telegram);
    let front = FrontingSite::start("localhost");
    let dcs: Vec<(i16, SocketAddr)> = DCS.iter().map(|&n| (n, dc.addr())).collect();
    let proxies: Vec<(i16, SocketAddr)> =
        vec![(2, "127.0.0.1:18881".parse().unwrap()), (-2, "127.0.0.1:18881".parse().unwrap())];
    let server = FakeBootstrap::start(&proxies);
    let text = format!(
        "ad-tag = \"0123456789abcdef0123456789abcdef\"\n{}{}",
        config(Some("127.0.0.1"), front.addr().port(), &dcs),
        server.section("1h", "")
    );
    let path = write_config("middle", &text);
    let options = DoctorOptions { skip_native_check: true, ..DoctorOptions::default() };
    let (code, report) = run(&path, &options);
    assert_eq!(code, 0, "{report}");
    let lines = section(&report, "Validate middle-proxy bootstrap");
    assert_eq!(lines.len(), 4, "{report}");
    assert_eq!(
        lines[0],
        format!("  ✅ proxy secret from {}: 128 bytes, key_select cafaf9c4", server.url(Doc::Secret))
    );
    assert!(lines[1].starts_with(&format!("  ✅ IPv4 list from {}: ", server.url(Doc::Config))), "{report}");
    assert!(lines[1].ends_with(" bytes, 1 middle-proxy address(es) for 2 DC id(s)"), "{report}");
    assert!(lines[2].starts_with("  ⚠️ middle-proxy IPv6 config: GET "), "{report}");
    assert!(lines[2].contains("404"), "{report}");
    assert!(lines[3].starts_with("  ✅ clock is ") && lines[3].ends_with("within 30 s"), "{report}");

    // Telegram's Date 120 s ahead: a failure naming the skew.
    server.set_date_offset(120);
    let (code, report) = run(&path, &options);
    assert_eq!(code, 1, "{report}");
    let lines = section(&report, "Validate middle-proxy bootstrap");
    assert!(lines[3].starts_with("  ❌ clock is 1"), "{report}");
    assert!(lines[3].contains("s off Telegram's"), "{report}");

    // Without a tag the section is not there.
    let untagged = write_config("middle-untagged", &text.replacen("ad-tag", "# ad-tag", 1));
    let (_, report) = run(&untagged, &options);
    assert!(!report.contains("Validate middle-proxy bootstrap"), "{report}");
}
