//! `mtg-proxy-process CONFIG`: the proxy exactly as `mtg-multi run CONFIG` serves it, built
//! with this crate's runtime feature, so tests can run it as a child process and read its
//! RSS, descriptors and CPU time from `/proc` (see `mtg_tests::proxy_process`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (Some(config), None) => mtg_app::run::run(std::path::Path::new(&config)),
        _ => {
            eprintln!("usage: mtg-proxy-process CONFIG");
            ExitCode::from(2)
        }
    }
}
