//! One shared multi-thread tokio runtime on background threads, so the servers of this crate
//! run the same way whether a test is synchronous, on tokio or on smol.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The handle of the shared runtime (two worker threads, started on first use, never stopped).
pub fn handle() -> Handle {
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("mtg-tests")
                .enable_all()
                .build()
                .expect("build the shared test runtime")
        })
        .handle()
        .clone()
}

/// Runs `future` on the shared runtime and blocks the calling thread until it ends.
///
/// For synchronous tests and for tests on another runtime; do not call it from a task of the
/// shared runtime itself.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    handle().spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().expect("the future panicked on the shared test runtime")
}
