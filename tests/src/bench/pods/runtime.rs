//! The load generator's runtime inside the client pod: a current-thread
//! tokio runtime on a thread that joined the pod's network namespace.

use tokio::{runtime::Handle, sync::oneshot};

use crate::harness::{
    BoxError,
    netns::{Netns, enter_netns},
};

/// A current-thread tokio runtime on a thread that joined a network
/// namespace: sockets its tasks open belong to the namespace. Stops (its
/// tasks dropped) when this is dropped.
pub struct NetnsRuntime {
    pub handle: Handle,
    /// Dropping it ends the thread's `block_on`.
    _stop: oneshot::Sender<()>,
}

impl NetnsRuntime {
    pub async fn start(ns: &Netns) -> Result<NetnsRuntime, BoxError> {
        let file = ns.open()?;
        let (ready, started) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("load-in-netns".into())
            .spawn(move || {
                let runtime = enter_netns(&file).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                match runtime {
                    Ok(rt) => {
                        if ready.send(Ok(rt.handle().clone())).is_ok() {
                            rt.block_on(async {
                                let _ = stopped.await;
                            });
                        }
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })?;
        let handle = started
            .await
            .map_err(|_| "the load thread ended before its runtime started")??;
        Ok(NetnsRuntime {
            handle,
            _stop: stop,
        })
    }

    /// Runs `f` on this runtime (inside the namespace) and returns its output.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, BoxError> {
        Ok(self.handle.spawn(f).await?)
    }
}
