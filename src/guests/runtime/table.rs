//! The guest table: what walden wants of each guest and what it last saw,
//! and the status rows `walden status` / `walden guest list` show.

use super::policy::RestartState;
use crate::config::GuestConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// A guest's state as walden reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestState {
    /// Waiting for the guests in its `after` list to run, or for the host
    /// (a mount its disks live on; `last_error` says which).
    Waiting,
    /// Running (QEMU is up; the guest OS may still be booting).
    Running,
    /// Stopped by itself; restarting after the backoff delay.
    Backoff,
    /// Shutdown requested; forced off after its `shutdown_timeout`.
    Stopping,
    /// Off: not autostart, stopped on request, or shut down cleanly.
    Stopped,
    /// Off and not restarted: crash loop, start failure, failed prerequisite,
    /// or a failure with `restart = "never"` (`last_error` says which).
    Failed,
}

/// One guest in `walden status` (field names are part of the control protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStatus {
    /// Guest name.
    pub name: String,
    /// State.
    pub state: GuestState,
    /// QEMU's pid while running, when known.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Restarts by policy since walden started.
    #[serde(default)]
    pub restarts: u32,
    /// Why it failed or is waiting, or the last error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The config changed while it ran: the new definition applies at its
    /// next start (`walden guest restart NAME`).
    #[serde(default)]
    pub restart_pending: bool,
    /// Started at boot.
    #[serde(default)]
    pub autostart: bool,
    /// Memory as configured ("2GiB").
    #[serde(default)]
    pub memory: String,
    /// Virtual CPUs.
    #[serde(default)]
    pub vcpus: u32,
}

/// What follows when a requested stop is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThenDo {
    /// Stay off.
    Nothing,
    /// Start again (restart).
    Start,
    /// Remove the definition and forget the guest (removed from the config).
    Undefine,
}

/// A stop walden asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopOp {
    /// When the ACPI shutdown was sent; `None` until it is.
    pub sent: Option<Instant>,
    /// When the power button was last pressed (it is pressed again every
    /// [`super::Policy::acpi_repeat`]: a guest still booting when the first
    /// press came, before its OS listens, would otherwise ignore it).
    pub pressed: Option<Instant>,
    /// Whether the forced stop was sent after the timeout.
    pub destroyed: bool,
    /// Forced off at once, without the ACPI shutdown (`walden guest stop
    /// --force`: pulling the plug).
    pub force: bool,
    /// What comes after.
    pub then: ThenDo,
}

impl StopOp {
    /// A stop not yet sent.
    pub fn new(then: ThenDo) -> Self {
        Self {
            sent: None,
            pressed: None,
            destroyed: false,
            force: false,
            then,
        }
    }
}

/// One guest walden manages.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its config.
    pub config: GuestConfig,
    /// The domain XML of that config (what walden defines).
    pub xml: String,
    /// Whether walden wants it running.
    pub want: bool,
    /// Current state.
    pub state: GuestState,
    /// QEMU pid when running.
    pub pid: Option<u32>,
    /// Restarts by policy.
    pub restarts: u32,
    /// Last error or reason.
    pub last_error: Option<String>,
    /// Redefined while running; restart to apply.
    pub restart_pending: bool,
    /// When walden last saw it start.
    pub started_at: Option<Instant>,
    /// When the next restart is due (state Backoff).
    pub next_start: Option<Instant>,
    /// Backoff level and crash window.
    pub restart_state: RestartState,
    /// A stop in progress.
    pub stop: Option<StopOp>,
    /// Kept waiting by the host (a host block, or a prerequisite that is):
    /// waiting is all it can do, so bring-up does not wait for it.
    pub held: bool,
}

impl Entry {
    /// A new entry; wanted running when `want`.
    pub fn new(config: GuestConfig, xml: String, want: bool) -> Self {
        Self {
            config,
            xml,
            want,
            state: if want {
                GuestState::Waiting
            } else {
                GuestState::Stopped
            },
            pid: None,
            restarts: 0,
            last_error: None,
            restart_pending: false,
            started_at: None,
            next_start: None,
            restart_state: RestartState::default(),
            stop: None,
            held: false,
        }
    }

    /// Guest name.
    pub fn name(&self) -> &str {
        self.config.name.as_str()
    }

    /// The status row.
    pub fn status(&self) -> GuestStatus {
        GuestStatus {
            name: self.name().to_string(),
            state: self.state,
            pid: self.pid,
            restarts: self.restarts,
            last_error: self.last_error.clone(),
            restart_pending: self.restart_pending,
            autostart: self.config.autostart,
            memory: self.config.memory.to_string(),
            vcpus: self.config.vcpus,
        }
    }

    /// Want it running again, forgetting an earlier failure (explicit start).
    pub fn reset_for_start(&mut self) {
        self.want = true;
        self.restart_state = RestartState::default();
        self.next_start = None;
        if matches!(
            self.state,
            GuestState::Failed | GuestState::Stopped | GuestState::Backoff
        ) {
            self.state = GuestState::Waiting;
            self.last_error = None;
        }
    }
}

/// Every managed guest, in start order (a guest after its prerequisites).
#[derive(Debug, Default)]
pub struct Table {
    /// The guests.
    pub entries: Vec<Entry>,
    /// Host shutdown in progress: nothing starts any more.
    pub shutting_down: bool,
    /// Why the host keeps guests from starting, by source ("mounts",
    /// "vfio"): guest name -> reason. A blocked guest waits.
    pub host_blocks: BTreeMap<String, BTreeMap<String, String>>,
}

impl Table {
    /// Why the host keeps guest `name` from starting (the first source's
    /// reason), if it does.
    pub fn host_block(&self, name: &str) -> Option<&str> {
        self.host_blocks
            .values()
            .find_map(|blocks| blocks.get(name))
            .map(String::as_str)
    }

    /// Every wanted guest is running, failed, or held back by the host
    /// (bring-up need not wait for it).
    pub fn settled(&self) -> bool {
        self.entries.iter().all(|e| {
            !e.want || e.held || matches!(e.state, GuestState::Running | GuestState::Failed)
        })
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name() == name)
    }

    /// The entry called `name`, mutable.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.name() == name)
    }

    /// Status rows in table order.
    pub fn statuses(&self) -> Vec<GuestStatus> {
        self.entries.iter().map(Entry::status).collect()
    }

    /// Put the entries in start order (see [`super::order::start_order`]).
    pub fn sort(&mut self) {
        let configs: Vec<&GuestConfig> = self.entries.iter().map(|e| &e.config).collect();
        let order = super::order::start_order(&configs);
        let mut old: Vec<Option<Entry>> = self.entries.drain(..).map(Some).collect();
        for i in order {
            if let Some(e) = old[i].take() {
                self.entries.push(e);
            }
        }
    }
}
