//! `tfo serve`'s workers: one single-threaded tokio runtime per core, each
//! accepting on its own listener of one SO_REUSEPORT group (as nginx's
//! `reuseport` workers do). The kernel spreads new connections over the
//! listeners and each connection lives on the thread that accepted it, so no
//! thread wakes another per connection. Measured under `tfo load` on this
//! 2-core machine: one multi-threaded runtime took 1.8 context switches per
//! connection, these workers 0.3 (nginx 0.5).

use std::sync::Arc;
use std::thread::JoinHandle;

use fastopen::{BlockingListener, FastOpenKey, TokioListener};

use crate::echo::{self, Budget, ConnectionLog, Notices, Service};

/// The listeners, shared by the workers and whoever changes their keys.
#[derive(Debug, Clone)]
pub struct Listeners(Arc<Vec<Arc<TokioListener>>>);

impl Listeners {
    /// Sets the keys on every listener of the group.
    pub fn set_keys(&self, primary: &FastOpenKey, backup: Option<&FastOpenKey>) -> fastopen::Result<()> {
        self.0.iter().try_for_each(|l| l.set_keys(primary, backup))
    }

    /// The first listener (they all have the same address and settings).
    pub fn first(&self) -> &TokioListener {
        &self.0[0]
    }
}

/// Bound listeners, each registered with the runtime that will serve it.
pub struct Workers {
    runtimes: Vec<tokio::runtime::Runtime>,
    listeners: Listeners,
    on_idle: OnIdle,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").field("workers", &self.runtimes.len()).finish_non_exhaustive()
    }
}

/// Runs on a worker's thread when it runs out of work, and when it ends.
pub type OnIdle = Arc<dyn Fn() + Send + Sync>;

/// What every worker serves, and how.
#[allow(missing_debug_implementations)] // callbacks
pub struct Serving {
    pub service: Service,
    pub budget: Arc<Budget>,
    /// Operator notices of every worker.
    pub notices: Notices,
    /// Becomes `true` when the server stops.
    pub stop: tokio::sync::watch::Receiver<bool>,
    pub on_connection: Arc<dyn Fn(ConnectionLog) + Send + Sync>,
}

impl Workers {
    /// One worker per listener of a group (`ListenerBuilder::bind_group`).
    /// `on_idle` runs on a worker's thread each time it runs out of work, and
    /// when it ends (to write what it has batched).
    pub fn new(group: Vec<BlockingListener>, on_idle: OnIdle) -> std::io::Result<Workers> {
        let mut runtimes = Vec::new();
        let mut listeners = Vec::new();
        for std_listener in group {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park({
                    let on_idle = on_idle.clone();
                    move || on_idle()
                })
                .build()?;
            // Registered with the reactor of the runtime that will serve it.
            let listener = {
                let _entered = runtime.enter();
                TokioListener::from_std(std_listener.into_std())?
            };
            listeners.push(Arc::new(listener));
            runtimes.push(runtime);
        }
        Ok(Workers { runtimes, listeners: Listeners(Arc::new(listeners)), on_idle })
    }

    pub fn listeners(&self) -> Listeners {
        self.listeners.clone()
    }

    /// Starts each worker on a thread of its own; each returns when `stop`
    /// turns true or the budget is spent, after draining its connections.
    pub fn spawn(self, serving: Serving) -> std::io::Result<Vec<JoinHandle<()>>> {
        let mut threads = Vec::new();
        for (n, (runtime, listener)) in self.runtimes.into_iter().zip(self.listeners.0.iter().cloned()).enumerate() {
            let (budget, on_connection, mut stop) =
                (serving.budget.clone(), serving.on_connection.clone(), serving.stop.clone());
            let (service, notices, on_idle) = (serving.service.clone(), serving.notices.clone(), self.on_idle.clone());
            let thread = std::thread::Builder::new().name(format!("worker-{n}")).spawn(move || {
                let shutdown = async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                runtime.block_on(echo::serve(
                    listener,
                    &service,
                    &budget,
                    shutdown,
                    move |log| on_connection(log),
                    notices,
                ));
                on_idle();
            })?;
            threads.push(thread);
        }
        Ok(threads)
    }
}
