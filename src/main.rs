//! The `oncohooks` binary: everything lives in the library (see `cli`).

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc, as text-embeddings-inference does:
/// candle allocates a fresh buffer for every tensor op, and under load
/// glibc's malloc/free/consolidate were ~12% of the server's CPU in the
/// hook profile (docs/benchmarks.md, "CDS hook latency").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pin_candle_thread_count();
    match oncohooks::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain, without a backtrace: this is for people.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// candle 0.11 asks `candle_core::utils::get_num_threads()` on every matrix
/// product, and without `RAYON_NUM_THREADS` in the environment that reads
/// and parses `/proc/cpuinfo` each time (`num_cpus::get_physical`): about
/// 100 reads per cachexia hook, measured as 13% of the server's CPU under
/// load (docs/benchmarks.md, "CDS hook latency"). Computing the same number
/// once and putting it in the environment keeps candle's choice unchanged
/// and makes the lookup an environment read.
fn pin_candle_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // SAFETY: first statement of `main`, before the runtime, the logger
        // or any other thread exists, so nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}
