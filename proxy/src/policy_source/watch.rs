//! The reload task: polls the file and listens for SIGHUP until shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{BoxError, PolicyFile};
use crate::state::Shared;

/// How the file is watched.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// Time between two looks at the file.
    pub poll_interval: Duration,
    /// Whether SIGHUP triggers a reload.
    pub sighup: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll_interval: Duration::from_secs(1),
            sighup: true,
        }
    }
}

/// A loaded file and the task that keeps it current.
#[derive(Debug)]
pub struct Watching {
    /// The source, to reload by hand.
    pub file: Arc<PolicyFile>,
    /// Ends after the shutdown token is cancelled.
    pub task: JoinHandle<()>,
}

/// [`super::load_and_watch`] with explicit options; returns the source and its task.
pub async fn load_and_watch_with(
    shared: Arc<Shared>,
    path: PathBuf,
    shutdown: CancellationToken,
    options: WatchOptions,
) -> Result<Watching, BoxError> {
    let file = Arc::new(PolicyFile::new(shared, path));
    file.load_initial().await?;
    // Installed before returning, so a SIGHUP sent once we are up is never lost
    // (nor does it take the default action, which would end the process).
    let hangup = if options.sighup {
        Some(signal(SignalKind::hangup())?)
    } else {
        None
    };
    let task = tokio::spawn(watch(file.clone(), options.poll_interval, hangup, shutdown));
    Ok(Watching { file, task })
}

async fn watch(
    file: Arc<PolicyFile>,
    poll_interval: Duration,
    mut hangup: Option<Signal>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(poll_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.reset(); // the first look is one interval after the initial load
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {
                // Outcomes are logged and counted by the source.
                let _ = file.poll().await;
            }
            received = next_hangup(&mut hangup) => match received {
                Some(()) => {
                    tracing::info!(path = %file.path().display(), "SIGHUP: reloading policy file");
                    let _ = file.reload_now().await;
                }
                None => hangup = None,
            },
        }
    }
    tracing::debug!(path = %file.path().display(), "policy file watch stopped");
}

/// The next SIGHUP; never, without a handler.
async fn next_hangup(hangup: &mut Option<Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
