//! The `oncohooks` binary: everything lives in the library (see `cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    match oncohooks::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain, without a backtrace: this is for people.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
