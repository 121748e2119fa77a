//! The `oncohooks` binary: everything lives in the library (see `cli`).

fn main() -> anyhow::Result<()> {
    oncohooks::cli::run()
}
