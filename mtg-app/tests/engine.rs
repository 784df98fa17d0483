//! The engine end to end over loopback on the runtime this test binary was built with
//! (`cargo test -p mtg-app` for tokio, `--no-default-features --features smol` for smol): a
//! valid client relays through a minimal echo DC, probes reach a minimal fronting site.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mtg_app::config::Config;
use mtg_app::control::{Control, serve};
use mtg_app::engine::{AllowAll, Directory, Settings, Shared};
use mtg_app::runtime::{Runtime, Selected};
use mtg_proto::client::{ClientSession, FakeTlsHello};
use mtg_proto::{NoReplayCheck, Secret};

/// An obfuscated2 echo DC on a thread: decrypts what the proxy sends and sends it back.
fn echo_dc() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut frame = [0u8; 64];
                if stream.read_exact(&mut frame).is_err() {
                    return;
                }
                let (header, mut cipher) = mtg_proto::obfs2::respond(&frame, None);
                assert_eq!(header.tag, [0xdd; 4]);
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    cipher.decrypt(&mut buf[..n]);
                    cipher.encrypt(&mut buf[..n]);
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A fronting "site" that reports the first bytes of each connection and answers `FRONT`.
fn fronting_site() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = tx.send(got);
                let _ = stream.write_all(b"FRONT");
            });
        }
    });
    (addr, rx)
}

fn start_proxy(users: &[(String, Secret)], dc: SocketAddr, front: SocketAddr) -> SocketAddr {
    let mut overrides = std::collections::BTreeMap::new();
    overrides.insert(2, vec![dc]);
    // The config needs a user to load; the engine serves `users` (its directory), not these.
    let text = "secret = \"ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d\"\n\
        bind-to = \"127.0.0.1:443\"\nconcurrency = 100\n";
    let mut config = Config::from_toml_str(text).unwrap().config;
    config.bind_to = vec!["127.0.0.1:0".parse().unwrap()];
    config.network.timeout.handshake = Duration::from_secs(2);
    config.network.timeout.tcp = Duration::from_secs(2);
    config.network.timeout.idle = Duration::from_secs(30);
    config.network.dc_overrides = overrides;
    config.domain_fronting.host = Some(front.ip().to_string());
    config.domain_fronting.port = front.port();
    // The one-connection fronting site here must see only the probe the test sends.
    config.doppelganger.learn_from_fronting = false;
    let mut settings = Settings::from_config(&config);
    settings.shutdown_grace = Duration::from_secs(1);
    let shared = Shared::new(
        settings,
        Directory::new(users, &Default::default(), &Default::default(), &Default::default()),
        Box::new(NoReplayCheck),
        Box::new(AllowAll),
        mtg_app::metrics::Metrics::new("mtg"),
    );
    let control = Control::new(shared, None);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        Selected::run(|rt| {
            serve(rt, control, std::future::pending(), move |ready| tx.send(ready.listeners[0]).unwrap())
        })
        .unwrap()
        .unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

fn now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

#[test]
fn valid_client_relays_byte_exact_and_probes_are_fronted() {
    let alice = Secret::fake_tls([7; 16], "front.example").unwrap();
    let users = vec![("alice".to_owned(), alice.clone())];
    let (front, front_rx) = fronting_site();
    let proxy = start_proxy(&users, echo_dc(), front);

    let mut rng = rand::rng();
    let mut conn = TcpStream::connect(proxy).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut wire = Vec::new();
    let hello = FakeTlsHello::build(&alice, now(), &mut rng, &mut wire).unwrap();
    conn.write_all(&wire).unwrap();
    let mut flight = Vec::new();
    let flight_len = loop {
        let mut buf = [0u8; 8192];
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "proxy closed during the flight");
        flight.extend_from_slice(&buf[..n]);
        if let Some(len) = hello.verify_flight(&flight).unwrap() {
            break len;
        }
    };
    assert_eq!(flight.len(), flight_len, "nothing after the flight yet");

    let mut first = Vec::new();
    let mut client = ClientSession::start(&alice, 2, &mut rng, &mut first);
    conn.write_all(&first).unwrap();

    let payload: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut sealed = Vec::new();
    client.seal(&payload, &mut sealed);
    let mut writer = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&sealed).unwrap());
    let mut echoed = Vec::new();
    let mut buf = vec![0u8; 65536];
    while echoed.len() < payload.len() {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} bytes", echoed.len());
        let range = client.open(&mut buf[..n]).unwrap();
        echoed.extend_from_slice(&buf[range]);
    }
    sender.join().unwrap();
    assert_eq!(echoed, payload);

    // A plain HTTP request is a probe: the site gets exactly its bytes and answers it.
    let mut probe = TcpStream::connect(proxy).unwrap();
    probe.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    probe.write_all(b"GET / HTTP/1.1\r\nHost: front.example\r\n\r\n").unwrap();
    let seen = front_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(seen, b"GET / HTTP/1.1\r\nHost: front.example\r\n\r\n");
    let mut answer = Vec::new();
    probe.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"FRONT");
}
