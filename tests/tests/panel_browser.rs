//! The built-in web panel in a real browser (Debian's headless `chromium`, driven over the
//! DevTools protocol: `mtg_tests::browser`), inside a loopback-only network namespace (root
//! needed), on the runtime this binary was built with. One browser for the whole run.
//!
//! It checks that the page loads without a token and asks for one when the API has one, lists
//! the users with the numbers of known traffic, draws the live traffic, that a QR code decodes
//! back to the user's link, that adding, editing, disabling and deleting a user from the page
//! change `GET /secrets` (and an API error is shown from its JSON), the Russian translation,
//! and that no request leaves the API's origin. Screenshots go to
//! `target/tmp/panel-screenshots/<runtime>/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mtg_tests::api_client::request;
use mtg_tests::browser::{self, Browser, Page};
use mtg_tests::client::ProxyClient;
use mtg_tests::config_text::{numbered_user, users_config};
use mtg_tests::proxy_under_test::{ProxyUnderTest, RUNTIME};
use mtg_tests::runtime::block_on;
use mtg_tests::{DcMode, FakeDc, FrontingSite, netns};
use serde_json::Value;

const HOST: &str = "front.example";
const PUBLIC: &str = "203.0.113.10";
const TOKEN: &str = "panel-test-token-0123456789";
const WAIT: Duration = Duration::from_secs(15);

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("panel-screenshots").join(RUNTIME)
}

fn config(names: &[&str], dc: SocketAddr, front: &FrontingSite, token: Option<&str>, tables: &str) -> String {
    let token = token.map(|t| format!("api-token = \"{t}\"\n")).unwrap_or_default();
    format!(
        "public-ipv4 = \"{PUBLIC}\"\n{token}{}",
        users_config(names, HOST, dc, front.addr().port(), tables)
    )
}

/// `GET /secrets` through the API, with the token.
fn secrets(api: SocketAddr) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = request(api, "GET", "/secrets", Some(&auth), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Waits until `check` holds for `GET /secrets`.
fn wait_secrets(api: SocketAddr, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + WAIT;
    loop {
        let list = secrets(api);
        if check(&list) {
            return list;
        }
        assert!(Instant::now() < until, "GET /secrets never showed {what}: {list}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn step<T>(what: &str, outcome: Result<T, String>) -> T {
    outcome.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The cell `class` of user `name`'s row: its `data-value`.
fn cell(page: &Page<'_>, name: &str, class: &str) -> Value {
    step(
        "read a cell",
        page.eval(&format!(
            "document.querySelector('tr[data-user=\"{name}\"] td.{class}')?.dataset.value ?? null"
        )),
    )
}

/// Decodes the QR code of an SVG the server drew (a `viewBox` square and a path of
/// `M{{x}} {{y}}h1v1h-1z` modules): rasterised at 4 pixels a module, read with `rqrr`.
fn decode_qr_svg(svg: &str) -> String {
    let side: usize = svg
        .split("viewBox=\"0 0 ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no viewBox in {svg}"));
    let path = svg.split(" d=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("a path");
    let mut dark = vec![false; side * side];
    for module in path.split('M').filter(|m| !m.is_empty()) {
        let coords = module.strip_suffix("h1v1h-1z").unwrap_or_else(|| panic!("odd module {module:?}"));
        let (x, y) = coords.split_once(' ').expect("x y");
        let (x, y): (usize, usize) = (x.parse().expect("x"), y.parse().expect("y"));
        dark[y * side + x] = true;
    }
    let scale = 4;
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(side * scale, side * scale, |x, y| {
        if dark[(y / scale) * side + x / scale] { 0 } else { 255 }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the SVG");
    grids[0].decode().expect("a readable QR code").1
}

#[test]
fn panel_in_a_real_browser() {
    if !netns::enter("panel_in_a_real_browser") {
        return;
    }
    assert!(browser::available(), "chromium is not installed (apt-get install chromium)");
    let started = Instant::now();
    let browser = step("start chromium", Browser::start());
    println!("panel test ({RUNTIME}): chromium up after {:?}", started.elapsed());
    let dc = FakeDc::start(DcMode::Echo);
    let front = FrontingSite::start(HOST);

    // --- Without a token: the page shows the users at once. -------------------------------
    let open_api = {
        let proxy = ProxyUnderTest::start(&config(&["alice", "bob"], dc.addr(), &front, None, ""));
        let (addr, api) = (proxy.addr(), proxy.api().expect("API on"));
        // Known traffic: alice 3 sessions of 1000 bytes each way, bob 2 of 5000; kept open.
        let mut clients = block_on(async move {
            let mut clients = Vec::new();
            for (n, sessions, size) in [(1u8, 3, 1000usize), (2, 2, 5000)] {
                for _ in 0..sessions {
                    let secret = numbered_user(n, HOST);
                    let mut c = ProxyClient::connect_ee(addr, &secret, 2).await.expect("connect");
                    c.send(&vec![n; size]).await.expect("send");
                    assert_eq!(c.recv_exact(size).await.expect("echo"), vec![n; size]);
                    clients.push(c);
                }
            }
            clients
        });
        let page = step("open a tab", browser.new_page());
        let origin = format!("http://{api}");
        step("load the panel", page.navigate(&format!("{origin}/?poll=300")));
        step(
            "the users table shows the known traffic",
            page.wait_for(
                "document.querySelector('tfoot td.up')?.dataset.value === '13000' && \
                 document.querySelector('tfoot td.connections')?.dataset.value === '5'",
                WAIT,
            ),
        );
        assert_eq!(step("login hidden", page.eval("document.querySelector('#login').hidden")), true);
        assert_eq!(step("no fleet card", page.eval("document.querySelector('#fleet').hidden")), true);
        for (name, connections, bytes) in [("alice", 3, 3000), ("bob", 2, 10000)] {
            assert_eq!(cell(&page, name, "connections"), connections.to_string(), "{name}");
            assert_eq!(cell(&page, name, "up"), bytes.to_string(), "{name}");
            assert_eq!(cell(&page, name, "down"), bytes.to_string(), "{name}");
            assert_eq!(cell(&page, name, "ips"), "1", "{name}: every session came from 127.0.0.1");
        }
        let shown =
            step("text", page.eval("document.querySelector('tr[data-user=\"bob\"] td.down').textContent"));
        assert_eq!(shown, "9.77 KiB");

        // Live traffic: 64 KiB more for bob, drawn as a rate and in the charts.
        let _clients = block_on(async move {
            let c = &mut clients[4];
            c.send(&vec![7u8; 65536]).await.expect("send");
            c.recv_exact(65536).await.expect("echo");
            clients
        });
        step(
            "the whole proxy's rate and chart show the new traffic",
            page.wait_for(
                "document.querySelector('tfoot td.up')?.dataset.value === '78536' && \
                 [...document.querySelectorAll('#total-chart polyline, tr[data-user=\"bob\"] td.rate polyline')] \
                   .filter(l => l.getAttribute('points').split(' ').some(p => Number(p.split(',')[1]) < 50)) \
                   .length === 4",
                WAIT,
            ),
        );

        // Links and a QR code that decodes back to the link.
        step(
            "open alice's links",
            page.eval("document.querySelector('tr[data-user=\"alice\"] button.links').click()"),
        );
        step(
            "links loaded",
            page.wait_for("document.querySelector('#links').dataset.loaded === 'yes'", WAIT),
        );
        let alice = secrets_open(api)["alice"].clone();
        // The port is the first `bind-to` one, as `mtg-multi access` gives it: the test proxy's
        // config says port 0 (it binds any free port).
        let expected =
            format!("tg://proxy?port=0&secret={}&server={PUBLIC}", alice["base64"].as_str().expect("base64"));
        let shown = step(
            "the tg link",
            page.eval("document.querySelector('#links .link[data-kind=\"tg\"] code').textContent"),
        );
        assert_eq!(shown, expected);
        let svg = step(
            "the tg QR code",
            page.eval("document.querySelector('#links .qr[data-kind=\"tg\"] svg').outerHTML"),
        );
        assert_eq!(decode_qr_svg(svg.as_str().expect("SVG text")), expected);
        let tme = step(
            "the t.me QR code",
            page.eval("document.querySelector('#links .qr[data-kind=\"tme\"] svg').outerHTML"),
        );
        assert_eq!(
            decode_qr_svg(tme.as_str().expect("SVG text")),
            expected.replace("tg://proxy", "https://t.me/proxy")
        );
        step("screenshot", page.screenshot(&shots().join("links.png")));
        step("close the links", page.eval("document.querySelector('#links-close').click()"));
        step("screenshot", page.screenshot(&shots().join("users.png")));

        // The page's own answer carries the policy; every request stayed on the API's origin.
        let document = page
            .events()
            .into_iter()
            .find(|e| e["method"] == "Network.responseReceived" && e["params"]["type"] == "Document")
            .expect("the page's response");
        let csp =
            document["params"]["response"]["headers"]["content-security-policy"].as_str().unwrap_or_default();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
        assert_same_origin(&page, &origin);
        api
    };
    println!("panel test ({RUNTIME}): open API done after {:?}", started.elapsed());
    let _ = open_api;

    // --- With a token: the page asks for it, then acts through the API. ---------------------
    let proxy = ProxyUnderTest::start(&config(
        &["alice", "bob"],
        dc.addr(),
        &front,
        Some(TOKEN),
        "[throttle]\nmax-connections = 10\ncheck-interval = \"1h\"\n",
    ));
    let api = proxy.api().expect("API on");
    let origin = format!("http://{api}");
    // The page loads without the token; the data and the links need it.
    assert_eq!(request(api, "GET", "/", None, "").0, 200);
    assert_eq!(request(api, "GET", "/panel.js", None, "").0, 200);
    assert_eq!(request(api, "GET", "/secrets/alice/links", None, "").0, 401);
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = request(api, "GET", "/secrets/alice/links", Some(&auth), "");
    assert_eq!(status, 200, "{body}");
    let links: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(links["links"][0]["family"], "ipv4");
    assert!(links["links"][0]["tg_qr"].as_str().is_some_and(|s| s.starts_with("<svg ")), "{body}");
    assert_eq!(request(api, "GET", "/secrets/nobody/links", Some(&auth), "").0, 404);
    assert_eq!(request(api, "POST", "/secrets/alice/links", Some(&auth), "").0, 405);
    let page = step("open a tab", browser.new_page());
    step("load the panel", page.navigate(&format!("{origin}/?poll=300")));
    step("the token is asked for", page.wait_for("!document.querySelector('#login').hidden", WAIT));
    assert_eq!(step("no table", page.eval("document.querySelector('#main').hidden")), true);
    assert_eq!(step("no data", page.eval("document.querySelectorAll('#users tbody tr').length")), 0);
    step("screenshot", page.screenshot(&shots().join("token.png")));
    // A wrong token is refused with a message; the right one opens the table.
    type_token(&page, "wrong");
    step("the wrong token is refused", page.wait_for("!document.querySelector('#error').hidden", WAIT));
    type_token(&page, TOKEN);
    step(
        "the table with the token",
        page.wait_for("document.querySelectorAll('#users tbody tr').length === 2", WAIT),
    );
    assert_eq!(step("token kept for the tab", page.eval("sessionStorage.getItem('mtg-panel-token')")), TOKEN);
    let throttle = step("throttle", page.eval("document.querySelector('#throttle').textContent"));
    assert!(
        throttle.as_str().is_some_and(|t| t.contains("not capping") && t.contains("Limit: 10")),
        "{throttle}"
    );

    // Add a user from the page.
    step("open the editor", page.eval("document.querySelector('#add').click()"));
    fill(
        &page,
        &[
            ("name", "carol"),
            ("host", HOST),
            ("quota", "10GB"),
            ("quota_reset", "monthly"),
            ("rate_limit", "20mbit"),
            ("max_ips", "2"),
        ],
    );
    step("save", page.eval("document.querySelector('#editor-save').click()"));
    let list = wait_secrets(api, "carol", |l| l.get("carol").is_some());
    assert_eq!(list["carol"]["quota"], 10u64 << 30);
    assert_eq!(list["carol"]["rate_limit"], 2_500_000);
    assert_eq!(list["carol"]["max_ips"], 2);
    assert_eq!(list["carol"]["host"], HOST);
    assert_eq!(list["carol"]["quota_reset"], "monthly");
    step("carol listed", page.wait_for("document.querySelector('tr[data-user=\"carol\"]') !== null", WAIT));
    let quota = step(
        "quota bar with its reset date",
        page.wait_for(
            "document.querySelector('tr[data-user=\"carol\"] td.quota .bar') && \
             document.querySelector('tr[data-user=\"carol\"] td.quota').textContent",
            WAIT,
        ),
    );
    assert!(
        quota.as_str().is_some_and(|q| q.contains("0 B / 10.0 GiB") && q.contains("resets 20")),
        "{quota}"
    );

    // An API error is shown from its JSON, and changes nothing.
    step("edit carol", page.eval("document.querySelector('tr[data-user=\"carol\"] button.edit').click()"));
    fill(&page, &[("quota", "lots")]);
    step("save", page.eval("document.querySelector('#editor-save').click()"));
    let error = step("the API's error", page.wait_for("!document.querySelector('#editor-error').hidden && document.querySelector('#editor-error').textContent", WAIT));
    assert!(error.as_str().is_some_and(|e| e.contains("field `quota`")), "{error}");
    step("screenshot", page.screenshot(&shots().join("error.png")));
    assert_eq!(secrets(api)["carol"]["quota"], 10u64 << 30);

    // Edit the limits.
    fill(&page, &[("quota", "5GB"), ("max_ips", "3")]);
    step("save", page.eval("document.querySelector('#editor-save').click()"));
    let list = wait_secrets(api, "carol's new quota", |l| l["carol"]["quota"] == 5u64 << 30);
    assert_eq!(list["carol"]["max_ips"], 3);
    assert_eq!(list["carol"]["rate_limit"], 2_500_000, "fields not edited are kept");
    step("editor closed", page.wait_for("!document.querySelector('#editor').open", WAIT));

    // Disable, then enable.
    step(
        "disable carol",
        page.eval("document.querySelector('tr[data-user=\"carol\"] button.toggle').click()"),
    );
    wait_secrets(api, "carol disabled", |l| l["carol"]["disabled"] == true);
    step(
        "shown disabled",
        page.wait_for("document.querySelector('tr[data-user=\"carol\"] td.state .tag.off') !== null", WAIT),
    );
    step(
        "enable carol",
        page.eval("document.querySelector('tr[data-user=\"carol\"] button.toggle').click()"),
    );
    let list = wait_secrets(api, "carol enabled", |l| l["carol"].get("disabled").is_none());
    assert_eq!(list["carol"]["quota"], 5u64 << 30, "limits kept across disable/enable");

    // Filter and sort.
    step("filter", page.eval("{ const f = document.querySelector('#filter'); f.value = 'car'; f.dispatchEvent(new Event('input')); }"));
    assert_eq!(step("filtered", page.eval("document.querySelectorAll('#users tbody tr').length")), 1);
    step("unfilter", page.eval("{ const f = document.querySelector('#filter'); f.value = ''; f.dispatchEvent(new Event('input')); }"));
    step("sort by name, descending", page.eval("document.querySelector('th[data-sort=\"name\"]').click()"));
    let order = step(
        "order",
        page.eval("[...document.querySelectorAll('#users tbody tr')].map(r => r.dataset.user).join(',')"),
    );
    assert_eq!(order, "carol,bob,alice");

    // Russian, on a phone.
    step("Russian", page.eval("{ const s = document.querySelector('#lang'); s.value = 'ru'; s.dispatchEvent(new Event('change')); }"));
    assert_eq!(
        step("translated", page.eval("document.querySelector('th[data-sort=\"name\"]').textContent")),
        "Имя"
    );
    step("phone screen", page.viewport(390, 844, true));
    step("screenshot", page.screenshot(&shots().join("phone-ru.png")));
    let overflow = step("fits", page.eval("document.documentElement.scrollWidth <= window.innerWidth + 1"));
    assert_eq!(overflow, true, "the page is wider than a phone's screen");
    step("desktop screen", page.call("Emulation.clearDeviceMetricsOverride", serde_json::json!({})));

    // Delete, with a confirmation.
    step(
        "delete carol",
        page.eval("document.querySelector('tr[data-user=\"carol\"] button.delete').click()"),
    );
    assert_eq!(step("asks first", page.eval("document.querySelector('#confirm').open")), true);
    assert!(secrets(api).get("carol").is_some(), "nothing deleted before the confirmation");
    step("confirm", page.eval("document.querySelector('#confirm-yes').click()"));
    wait_secrets(api, "carol gone", |l| l.get("carol").is_none() && l.get("alice").is_some());
    step(
        "carol gone from the page",
        page.wait_for("document.querySelector('tr[data-user=\"carol\"]') === null", WAIT),
    );

    assert_same_origin(&page, &origin);
    let errors: Vec<Value> =
        page.events().into_iter().filter(|e| e["method"] == "Runtime.exceptionThrown").collect();
    assert!(errors.is_empty(), "script errors: {errors:?}");

    // --- Fleet mode: the panel shows the live instances and the fleet's totals. -----------
    let redis = mtg_tests::redis_server::RedisServer::start(None);
    let fleet_tables = format!("[cluster]\nredis = \"{}\"\nname = \"panel-a\"\n", redis.url());
    let fleet = ProxyUnderTest::start(&config(&["alice"], dc.addr(), &front, None, &fleet_tables));
    let (fleet_addr, fleet_api) = (fleet.addr(), fleet.api().expect("API on"));
    let _session = block_on(async move {
        let mut c = ProxyClient::connect_ee(fleet_addr, &numbered_user(1, HOST), 2).await.expect("connect");
        c.send(&[1u8; 700]).await.expect("send");
        assert_eq!(c.recv_exact(700).await.expect("echo").len(), 700);
        c
    });
    let fleet_page = step("open a tab on the fleet", browser.new_page());
    step("load the fleet's panel", fleet_page.navigate(&format!("http://{fleet_api}/?poll=300")));
    step(
        "the fleet card lists the instance with its session and traffic",
        fleet_page.wait_for(
            "!document.querySelector('#fleet').hidden && \
             document.querySelector('#fleet tr[data-instance=\"panel-a\"] td:nth-child(2)')?.textContent === '1' && \
             document.querySelector('#fleet tr[data-instance=\"panel-a\"] td:nth-child(3)')?.textContent === '700 B'",
            WAIT,
        ),
    );
    let fleet_errors: Vec<Value> =
        fleet_page.events().into_iter().filter(|e| e["method"] == "Runtime.exceptionThrown").collect();
    assert!(fleet_errors.is_empty(), "script errors: {fleet_errors:?}");
    println!(
        "panel test ({RUNTIME}): done after {:?}; screenshots in {}",
        started.elapsed(),
        shots().display()
    );
}

/// `GET /secrets` of an API without a token.
fn secrets_open(api: SocketAddr) -> Value {
    let (status, body) = request(api, "GET", "/secrets", None, "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Types `token` into the token field (as keyboard input) and submits the form.
fn type_token(page: &Page<'_>, token: &str) {
    step("focus", page.eval("document.querySelector('#token').focus()"));
    step("type", page.call("Input.insertText", serde_json::json!({ "text": token })));
    step("submit", page.eval("document.querySelector('#login-form').requestSubmit()"));
}

/// Sets fields of the open editor.
fn fill(page: &Page<'_>, fields: &[(&str, &str)]) {
    step("editor open", page.wait_for("document.querySelector('#editor').open", WAIT));
    for (name, value) in fields {
        let script = format!(
            "document.querySelector('#editor-form').elements.namedItem({}).value = {}",
            serde_json::json!(name),
            serde_json::json!(value)
        );
        step("fill", page.eval(&script));
    }
}

/// Every request of the page went to `origin` (or was a `data:` URL): nothing left for
/// another origin, CSP violations or not.
fn assert_same_origin(page: &Page<'_>, origin: &str) {
    let urls = page.requested_urls();
    assert!(urls.len() > 3, "the page made its requests: {urls:?}");
    let foreign: Vec<&String> = urls
        .iter()
        .filter(|u| !(u.starts_with(&format!("{origin}/")) || u.starts_with("data:") || *u == "about:blank"))
        .collect();
    assert!(foreign.is_empty(), "requests to another origin: {foreign:?}");
    let violations: Vec<Value> = page
        .events()
        .into_iter()
        .filter(|e| e["method"] == "Log.entryAdded")
        .filter(|e| {
            e["params"]["entry"]["text"].as_str().is_some_and(|t| t.contains("Content Security Policy"))
        })
        .collect();
    assert!(violations.is_empty(), "CSP violations: {violations:?}");
}
