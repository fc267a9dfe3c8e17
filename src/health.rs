//! The registry of background components: the journal's appender thread, the writer, the Redis
//! context task. Each registers when it starts and reports how it ended; one that dies (a panic,
//! or an end nobody asked for) is logged with its cause, named by `/health/ready`, turns
//! `/health/live` red, and makes the service stop with a non-zero exit code, so that its
//! supervisor restarts it and the journal replays what is unwritten.

use std::collections::BTreeMap;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt as _;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What became of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ComponentState {
    Running,
    /// Ended as asked, during shutdown.
    Stopped,
    /// Panicked, or ended while the service was running.
    Dead {
        cause: String,
    },
}

/// A component that died, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    pub component: &'static str,
    pub cause: String,
}

impl std::fmt::Display for Death {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} died: {}", self.component, self.cause)
    }
}

/// The registry; cheap to clone.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    components: Mutex<BTreeMap<&'static str, ComponentState>>,
    /// Set when shutdown begins: components that end from then on have stopped, not died.
    stopping: AtomicBool,
    /// The first death.
    death: watch::Sender<Option<Death>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                components: Mutex::default(),
                stopping: AtomicBool::new(false),
                death: watch::Sender::new(None),
            }),
        }
    }
}

impl Health {
    /// Registers a running component; the returned guard reports its end.
    pub fn register(&self, name: &'static str) -> Liveness {
        self.set(name, ComponentState::Running);
        Liveness {
            health: self.clone(),
            name,
            ended: false,
        }
    }

    /// Every component registered, and its state.
    pub fn components(&self) -> BTreeMap<&'static str, ComponentState> {
        self.inner.components.lock().clone()
    }

    /// The first component that died, if one has.
    pub fn death(&self) -> Option<Death> {
        self.inner.death.borrow().clone()
    }

    /// Waits until a component dies.
    pub async fn died(&self) -> Death {
        let mut deaths = self.inner.death.subscribe();
        loop {
            if let Some(death) = deaths.borrow_and_update().clone() {
                return death;
            }
            // The sender lives in `self`: `changed` cannot fail while we wait.
            let _ = deaths.changed().await;
        }
    }

    /// From now on, a component that ends has stopped as asked.
    pub fn begin_stopping(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }

    /// Runs `task` as the component `name` on the Tokio runtime: a panic, or an end before
    /// shutdown, is its death. The handle yields the task's output, or None if it panicked.
    pub fn spawn<F>(&self, name: &'static str, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let liveness = self.register(name);
        tokio::spawn(async move {
            let outcome = AssertUnwindSafe(task).catch_unwind().await;
            liveness.ended(outcome)
        })
    }

    /// Runs `run` as the component `name` on a thread of its own, with the same watch as
    /// [`Health::spawn`].
    pub fn spawn_thread<F, T>(
        &self,
        name: &'static str,
        run: F,
    ) -> io::Result<std::thread::JoinHandle<Option<T>>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let liveness = self.register(name);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || liveness.ended(std::panic::catch_unwind(AssertUnwindSafe(run))))
    }

    fn set(&self, name: &'static str, state: ComponentState) {
        let up = matches!(state, ComponentState::Running);
        metrics::gauge!("background_component_up", "component" => name)
            .set(f64::from(u8::from(up)));
        if let ComponentState::Dead { cause } = &state {
            tracing::error!(
                component = name,
                %cause,
                "a background component died; the service stops so that its supervisor restarts it (the journal replays what is unwritten)"
            );
            let death = Death {
                component: name,
                cause: cause.clone(),
            };
            self.inner.death.send_if_modified(|first| {
                first.is_none() && {
                    *first = Some(death);
                    true
                }
            });
        }
        self.inner.components.lock().insert(name, state);
    }
}

/// Held by a running component; reports how it ended. Dropped without a report, the component
/// was cancelled (the runtime shutting down, the process exiting): it has stopped, unless its
/// thread is unwinding from a panic.
pub struct Liveness {
    health: Health,
    name: &'static str,
    ended: bool,
}

impl Liveness {
    /// Reports the end of a run whose outcome is `Ok(output)`, or `Err(panic payload)`.
    fn ended<T>(mut self, outcome: std::thread::Result<T>) -> Option<T> {
        self.ended = true;
        match outcome {
            Ok(output) => {
                let state = if self.health.inner.stopping.load(Ordering::SeqCst) {
                    ComponentState::Stopped
                } else {
                    ComponentState::Dead {
                        cause: "it ended while the service was running".to_owned(),
                    }
                };
                self.health.set(self.name, state);
                Some(output)
            }
            Err(panic) => {
                let cause = format!("it panicked: {}", panic_message(panic.as_ref()));
                self.health.set(self.name, ComponentState::Dead { cause });
                None
            }
        }
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let state = if std::thread::panicking() {
            ComponentState::Dead {
                cause: "it panicked".to_owned(),
            }
        } else {
            ComponentState::Stopped
        };
        self.health.set(self.name, state);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The registry's metric.
pub fn describe_metrics() {
    use metrics::describe_gauge;

    describe_gauge!(
        "background_component_up",
        "1 while a background component runs, 0 once it has stopped or died, by component"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_dead_with_its_message() {
        let health = Health::default();
        let task = health.spawn("worker", async { panic!("the disk is on fire") });
        assert_eq!(task.await.unwrap(), None::<()>);
        let death = health.died().await;
        assert_eq!(death.component, "worker");
        assert_eq!(death.cause, "it panicked: the disk is on fire");
        assert!(matches!(
            health.components()["worker"],
            ComponentState::Dead { .. }
        ));
    }

    #[tokio::test]
    async fn a_task_that_ends_while_running_is_dead_and_after_stopping_is_stopped() {
        let health = Health::default();
        assert_eq!(health.spawn("early", async { 7 }).await.unwrap(), Some(7));
        assert_eq!(
            health.death().map(|d| d.cause),
            Some("it ended while the service was running".to_owned())
        );
        health.begin_stopping();
        health.spawn("late", async {}).await.unwrap();
        assert_eq!(health.components()["late"], ComponentState::Stopped);
        assert_eq!(
            health.death().unwrap().component,
            "early",
            "the first death is kept"
        );
    }

    #[tokio::test]
    async fn a_cancelled_task_has_stopped_not_died() {
        let health = Health::default();
        let task = health.spawn("cancelled", std::future::pending::<()>());
        task.abort();
        let _ = task.await;
        assert_eq!(health.components()["cancelled"], ComponentState::Stopped);
        assert_eq!(health.death(), None);
    }

    #[test]
    fn a_panicking_thread_is_dead_with_its_message() {
        let health = Health::default();
        let thread = health
            .spawn_thread("appender", || -> () {
                panic!("{}", String::from("no room"))
            })
            .unwrap();
        assert_eq!(thread.join().unwrap(), None);
        assert_eq!(health.death().unwrap().cause, "it panicked: no room");
    }
}
