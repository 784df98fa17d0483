//! The `mtg-multi` binary.

fn main() {
    eprintln!("mtg-multi: the proxy runtime lands with the run issue");
    std::process::exit(2);
}
