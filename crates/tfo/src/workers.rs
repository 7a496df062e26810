//! `tfo serve`'s workers: one single-threaded tokio runtime per core, each
//! accepting on its own listener of one SO_REUSEPORT group (as nginx's
//! `reuseport` workers do). The kernel spreads new connections over the
//! listeners and each connection lives on the thread that accepted it, so no
//! thread wakes another per connection. Measured under `tfo load` on this
//! 2-core machine: one multi-threaded runtime took 1.8 context switches per
//! connection, these workers 0.3 (nginx 0.5).

use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use fastopen::{BlockingListener, FastOpenKey, TokioListener};

use crate::echo::{self, Budget, ConnectionLog, Limits, Protocol};

/// The listeners, shared by the workers and whoever changes their keys.
#[derive(Debug, Clone)]
pub(crate) struct Listeners(Arc<Vec<Arc<TokioListener>>>);

impl Listeners {
    /// Sets the keys on every listener of the group.
    pub(crate) fn set_keys(&self, primary: &FastOpenKey, backup: Option<&FastOpenKey>) -> fastopen::Result<()> {
        self.0.iter().try_for_each(|l| l.set_keys(primary, backup))
    }

    /// The first listener (they all have the same address and settings).
    pub(crate) fn first(&self) -> &TokioListener {
        &self.0[0]
    }
}

/// Bound listeners, each registered with the runtime that will serve it.
pub(crate) struct Workers {
    runtimes: Vec<tokio::runtime::Runtime>,
    listeners: Listeners,
    on_idle: OnIdle,
}

/// Runs on a worker's thread when it runs out of work, and when it ends.
pub(crate) type OnIdle = Arc<dyn Fn() + Send + Sync>;

/// What every worker serves, and how.
pub(crate) struct Serving {
    pub(crate) protocol: Protocol,
    /// TLS on every connection (`--tls-cert`).
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) limits: Limits,
    pub(crate) budget: Arc<Budget>,
    /// Becomes `true` when the server stops.
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
    pub(crate) on_connection: Arc<dyn Fn(ConnectionLog) + Send + Sync>,
}

impl Workers {
    /// One worker per listener of a group (`ListenerBuilder::bind_group`).
    /// `on_idle` runs on a worker's thread each time it runs out of work, and
    /// when it ends (to write what it has batched).
    pub(crate) fn new(group: Vec<BlockingListener>, on_idle: OnIdle) -> anyhow::Result<Workers> {
        let mut runtimes = Vec::new();
        let mut listeners = Vec::new();
        for std_listener in group {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park({
                    let on_idle = on_idle.clone();
                    move || on_idle()
                })
                .build()
                .context("starting a worker's runtime")?;
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

    pub(crate) fn listeners(&self) -> Listeners {
        self.listeners.clone()
    }

    /// Starts each worker on a thread of its own; each returns when `stop`
    /// turns true or the budget is spent, after draining its connections.
    pub(crate) fn spawn(self, serving: Serving) -> anyhow::Result<Vec<JoinHandle<anyhow::Result<()>>>> {
        let mut threads = Vec::new();
        for (n, (runtime, listener)) in self.runtimes.into_iter().zip(self.listeners.0.iter().cloned()).enumerate() {
            let (budget, on_connection, mut stop) =
                (serving.budget.clone(), serving.on_connection.clone(), serving.stop.clone());
            let (protocol, limits, on_idle) = (serving.protocol, serving.limits, self.on_idle.clone());
            let tls = serving.tls.clone();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn(move || {
                    let shutdown = async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    };
                    let served =
                        runtime.block_on(echo::serve(listener, protocol, tls, limits, &budget, shutdown, move |log| {
                            on_connection(log)
                        }));
                    on_idle();
                    served
                })
                .context("starting a worker thread")?;
            threads.push(thread);
        }
        Ok(threads)
    }
}
