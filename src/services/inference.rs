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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

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

/// Calls that arrive while the pool is busy, run together ("batched when
/// concurrent", issue 4 §6).
///
/// A call joins a queue. While fewer than the pool's threads are draining
/// it, the call starts a drain on the pool; a drain takes every waiting
/// call (up to `max_batch`) in one `run` and repeats until the queue is
/// empty. An idle server therefore runs each call at once, alone: nothing
/// waits for a batch to fill. Under load, the calls that queued during one
/// pass form the next, so the per-pass cost (tensor set-up, one dispatch
/// per op) is paid once for all of them: the continuous batching of
/// text-embeddings-inference's queue, without its wait. (For the shipped
/// cachexia model that cost is small: 3-4 % of its time per hook;
/// docs/benchmarks.md, "Concurrent hooks in one model pass".)
pub struct Batcher<I, O> {
    pool: Arc<InferencePool>,
    shared: Arc<Shared<I, O>>,
}

type BatchFn<I, O> = dyn Fn(Vec<I>) -> Vec<O> + Send + Sync;

struct Shared<I, O> {
    queue: Mutex<Queue<I, O>>,
    run: Box<BatchFn<I, O>>,
    max_batch: usize,
    max_drains: usize,
}

struct Queue<I, O> {
    waiting: VecDeque<(I, oneshot::Sender<(O, usize)>)>,
    /// Drains running or scheduled on the pool.
    drains: usize,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// `run` answers a batch of inputs with one output per input, in order;
    /// it must not return fewer. `max_batch` = 0 is taken as 1 (no
    /// batching).
    pub fn new(
        pool: Arc<InferencePool>,
        max_batch: usize,
        run: impl Fn(Vec<I>) -> Vec<O> + Send + Sync + 'static,
    ) -> Self {
        let max_drains = pool.threads();
        Self {
            pool,
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    waiting: VecDeque::new(),
                    drains: 0,
                }),
                run: Box::new(run),
                max_batch: max_batch.max(1),
                max_drains,
            }),
        }
    }

    /// Queue `input` and await its output, and how many calls its pass
    /// held. A panic in `run` loses the calls of that batch
    /// ([`InferencePoolError::Lost`]), not the batcher.
    pub async fn run(&self, input: I) -> Result<(O, usize), InferencePoolError> {
        let (tx, rx) = oneshot::channel();
        let start_drain = {
            let mut q = self.shared.lock();
            q.waiting.push_back((input, tx));
            let start = q.drains < self.shared.max_drains;
            if start {
                q.drains += 1;
            }
            start
        };
        if start_drain {
            let shared = Arc::clone(&self.shared);
            self.pool.pool.spawn(move || shared.drain());
        }
        rx.await.map_err(|_| InferencePoolError::Lost)
    }
}

impl<I, O> Shared<I, O> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<I, O>> {
        // Nothing panics while holding the lock; a poisoned one is still
        // consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn drain(&self) {
        loop {
            let batch: Vec<(I, oneshot::Sender<(O, usize)>)> = {
                let mut q = self.lock();
                // A call whose hook has given up (client gone, deadline)
                // is not computed.
                q.waiting.retain(|(_, tx)| !tx.is_closed());
                if q.waiting.is_empty() {
                    q.drains -= 1;
                    return;
                }
                let n = q.waiting.len().min(self.max_batch);
                q.waiting.drain(..n).collect()
            };
            let (inputs, senders): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
            let n = inputs.len();
            let _span = tracing::debug_span!("Model pass", calls = n).entered();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.run)(inputs))) {
                Ok(outputs) if outputs.len() == n => {
                    for (tx, out) in senders.into_iter().zip(outputs) {
                        let _ = tx.send((out, n));
                    }
                }
                // A panic or a short answer: dropping the senders tells
                // every caller in the batch that its call was lost.
                _ => drop(senders),
            }
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

    /// Passes of a batcher on a one-thread pool, recorded, each output
    /// ten times its input; the pass over `[1]` holds the thread until
    /// `release` is sent, once `started` is set.
    struct Gated {
        batcher: Arc<Batcher<u32, u32>>,
        started: Arc<std::sync::atomic::AtomicBool>,
        release: std::sync::mpsc::Sender<()>,
        passes: Arc<Mutex<Vec<Vec<u32>>>>,
    }

    fn gated(max_batch: usize) -> Gated {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        let started = Arc::new(AtomicBool::new(false));
        let passes = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (Arc::clone(&started), Arc::clone(&passes));
        let pool = Arc::new(InferencePool::new(1).unwrap());
        let batcher = Arc::new(Batcher::new(pool, max_batch, move |xs: Vec<u32>| {
            if xs == [1] {
                flag.store(true, Ordering::SeqCst);
                wait.lock().unwrap().recv().unwrap();
            }
            log.lock().unwrap().push(xs.clone());
            xs.into_iter().map(|x| x * 10).collect()
        }));
        Gated {
            batcher,
            started,
            release,
            passes,
        }
    }

    impl Gated {
        fn call(
            &self,
            x: u32,
        ) -> tokio::task::JoinHandle<Result<(u32, usize), InferencePoolError>> {
            let b = Arc::clone(&self.batcher);
            tokio::spawn(async move { b.run(x).await })
        }

        /// Call with 1 and wait until its pass holds the pool's thread.
        async fn hold(&self) -> tokio::task::JoinHandle<Result<(u32, usize), InferencePoolError>> {
            let first = self.call(1);
            while !self.started.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
            first
        }

        async fn until_queued(&self, n: usize) {
            while self.batcher.shared.lock().waiting.len() < n {
                tokio::task::yield_now().await;
            }
        }
    }

    #[tokio::test]
    async fn a_lone_call_runs_at_once_and_concurrent_calls_share_a_pass() {
        let g = gated(4);
        let first = g.hold().await;
        let rest: Vec<_> = (2..=7).map(|x| g.call(x)).collect();
        g.until_queued(6).await;
        g.release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), (10, 1));
        let mut outs = Vec::new();
        for r in rest {
            outs.push(r.await.unwrap().unwrap());
        }
        // Each caller gets its own output, in its own order, and the size
        // of the pass it was in.
        assert_eq!(
            outs,
            vec![(20, 4), (30, 4), (40, 4), (50, 4), (60, 2), (70, 2)]
        );
        // One pass alone, then the six queued calls in passes of at most
        // four.
        assert_eq!(
            *g.passes.lock().unwrap(),
            vec![vec![1], vec![2, 3, 4, 5], vec![6, 7]]
        );
        assert_eq!(g.batcher.shared.lock().drains, 0);
    }

    /// A call whose hook gave up while it waited (its future dropped) is
    /// left out of the next pass.
    #[tokio::test]
    async fn a_call_given_up_while_queued_is_not_computed() {
        let g = gated(8);
        let first = g.hold().await;
        let gone = g.call(2);
        let kept = g.call(3);
        g.until_queued(2).await;
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        g.release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), (10, 1));
        assert_eq!(kept.await.unwrap().unwrap(), (30, 1));
        assert_eq!(*g.passes.lock().unwrap(), vec![vec![1], vec![3]]);
    }

    #[tokio::test]
    async fn a_panicking_pass_loses_its_calls_but_not_the_batcher() {
        let pool = Arc::new(InferencePool::new(1).unwrap());
        let batcher = Batcher::new(pool, 8, |xs: Vec<i32>| {
            assert!(xs.iter().all(|x| *x >= 0), "negative input");
            xs
        });
        assert!(matches!(
            batcher.run(-1).await,
            Err(InferencePoolError::Lost)
        ));
        assert_eq!(batcher.run(5).await.unwrap(), (5, 1));
        // A pass that answers fewer outputs than inputs loses them too.
        let short = Batcher::new(
            Arc::new(InferencePool::new(1).unwrap()),
            8,
            |_: Vec<i32>| Vec::<i32>::new(),
        );
        assert!(matches!(short.run(1).await, Err(InferencePoolError::Lost)));
    }
}
