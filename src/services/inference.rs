//! The dedicated inference pool of the cachexia model (issue 4 §6:
//! "inference on a dedicated thread pool").
//!
//! A hook's model call is a few milliseconds of candle work (one row per
//! patient plus one per ablated modality and input, times five ensemble
//! members). It used to run on Tokio's blocking pool, which grows to one
//! thread per concurrent hook (32 under the benchmark load); candle's
//! element-wise ops and gemm then handed pieces of each call to rayon's
//! global pool, so the two cores switched between tens of threads.
//! A fixed rayon pool of `[models] inference_threads` threads runs the calls
//! instead: every call, and whatever candle parallelises inside it, stays on
//! those threads, and a hook awaits its result on a oneshot channel without
//! holding any thread.

use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum InferencePoolError {
    #[error("building the inference pool: {0}")]
    Build(#[from] rayon::ThreadPoolBuildError),
    #[error("the inference task panicked or was dropped")]
    Lost,
}

/// Half the available CPUs, at least one. A cachexia hook's model call is
/// about a third of its CPU time; the HTTP workers (one per CPU), parsing,
/// signing checks and the audit write take the rest. One model thread per
/// CPU on top of them made the two cores of the benchmark machine switch
/// between more runnable threads than they could serve: with half, the
/// same load ran 4-15 % more hooks per second at a lower p99 in 6 of 8
/// alternating pairs (docs/benchmarks.md, "One ping per hook write, half
/// the CPUs for the model").
pub fn default_threads() -> usize {
    (std::thread::available_parallelism().map_or(1, usize::from) / 2).max(1)
}

pub struct InferencePool {
    pool: rayon::ThreadPool,
}

impl InferencePool {
    /// `threads` = 0: half the available CPUs, at least one ([`default_threads`]).
    pub fn new(threads: usize) -> Result<Self, InferencePoolError> {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("inference-{i}"))
            .build()?;
        Ok(Self { pool })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Run `f` on the pool and await its result. A panic inside `f` is
    /// caught (the pool thread survives) and reported as [`InferencePoolError::Lost`].
    pub async fn run<R, F>(&self, f: F) -> Result<R, InferencePoolError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        self.pool.spawn(move || {
            let _entered = span.enter();
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            // The hook may have given up (client gone): nobody to tell.
            let _ = tx.send(out);
        });
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            _ => Err(InferencePoolError::Lost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_on_its_own_named_threads_and_survives_a_panic() {
        let pool = InferencePool::new(2).unwrap();
        assert_eq!(pool.threads(), 2);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("inference-"));
        let lost = pool.run(|| -> u32 { panic!("model bug") }).await;
        assert!(matches!(lost, Err(InferencePoolError::Lost)));
        // The pool still answers after the panic.
        assert_eq!(pool.run(|| 6 * 7).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn zero_threads_means_half_the_cpus() {
        let pool = InferencePool::new(0).unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(pool.threads(), (cpus / 2).max(1));
    }
}
