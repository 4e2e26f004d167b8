//! Agents: sessions (one live session per agent id), hellos, heartbeats and other signs of
//! life, agents lost to silence, forgetting lost agents after their time-to-live, and the
//! fleet listing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Bound;
use std::time::Duration;

use fleetgate_common::host::{HostFacts, RuntimeAvailability, derive_hardware_class};
use fleetgate_common::ids::{AgentId, JobId};
use fleetgate_common::messages::AgentState;
use fleetgate_common::messages::{AgentHello, AgentListing, AgentSummary, FromAgent, ToAgent};
use tokio::time::Instant;

use super::{MAX_PAGE_AGENTS, Outbound, Registry, RegistryError, shown, unix_ms};

/// How often, at most, one agent's ignored events are logged.
pub(super) const IGNORED_EVENT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// What the registry keeps about an agent.
#[derive(Debug)]
pub(super) struct AgentEntry {
    pub(super) facts: HostFacts,
    pub(super) runtimes: Vec<RuntimeAvailability>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) hardware_class: String,
    pub(super) state: AgentState,
    pub(super) last_seen: Instant,
    pub(super) last_seen_unix_ms: u64,
    /// The live session: its connection id and outbound stream.
    pub(super) conn: Option<(u64, Outbound)>,
    /// Where the latest session came from.
    pub(super) peer: Option<SocketAddr>,
    /// Events of this agent ignored (unknown job, or another agent's) since the last warning
    /// about them, and when that warning was logged: at most one warning per
    /// [`IGNORED_EVENT_WARNING_INTERVAL`], carrying the count.
    pub(super) ignored_events: u64,
    pub(super) ignored_warned_at: Option<Instant>,
}

impl AgentEntry {
    /// Counts an ignored event; the count to log when a warning is due (the first one, then at
    /// most one per interval).
    pub(super) fn warn_ignored(&mut self, now: Instant) -> Option<u64> {
        self.ignored_events += 1;
        let due = self
            .ignored_warned_at
            .is_none_or(|at| now.duration_since(at) >= IGNORED_EVENT_WARNING_INTERVAL);
        due.then(|| {
            self.ignored_warned_at = Some(now);
            std::mem::take(&mut self.ignored_events)
        })
    }

    /// Whether a run may be dispatched to it: connected, with a session.
    pub(super) fn available(&self) -> bool {
        self.state == AgentState::Connected && self.conn.is_some()
    }

    /// Whether its jobs count as lost: it went silent, or its session is gone.
    pub(super) fn gone(&self) -> bool {
        self.state == AgentState::Lost || self.conn.is_none()
    }

    /// The agent as the fleet listing shows it.
    fn summary(&self, id: &AgentId) -> AgentSummary {
        AgentSummary {
            agent_id: id.clone(),
            facts: self.facts.clone(),
            runtimes: self.runtimes.clone(),
            labels: self.labels.clone(),
            hardware_class: self.hardware_class.clone(),
            state: self.state,
            session_open: self.conn.is_some(),
            last_seen_unix_ms: self.last_seen_unix_ms,
        }
    }
}

impl Registry {
    /// Silence after which an agent is lost (and its session may be replaced).
    pub(super) fn expiry(&self) -> Duration {
        self.settings.heartbeat_interval.saturating_mul(3)
    }

    /// Registers an agent's session: welcomes it (with what it may resume), then resends the
    /// assignments it lacks. Refused while another session of the id is live, or when a new
    /// id would pass the agent limit.
    pub(super) fn connect(
        &mut self,
        hello: AgentHello,
        outbound: Outbound,
        peer: Option<SocketAddr>,
    ) -> Result<u64, RegistryError> {
        let AgentHello {
            agent_id,
            facts,
            runtimes,
            labels,
            hardware_class,
            jobs: resumed,
            ..
        } = hello;
        // One live session per id: a second one (a cloned host with the same id) is refused,
        // so neither takes the other's session over. A session silent past the heartbeat
        // expiry, or whose stream is gone, is no longer live and may be replaced.
        let now = Instant::now();
        if let Some(existing) = self.agents.get(&agent_id)
            && let Some((_, current)) = &existing.conn
        {
            let holder = shown(existing.peer);
            if now.duration_since(existing.last_seen) <= self.expiry() && !current.is_closed() {
                tracing::warn!(agent_id = %agent_id, peer = %shown(peer), holder = %holder, "Agent refused: its id already has a live session from another peer.");
                return Err(RegistryError::AgentIdInUse { agent_id, holder });
            }
            tracing::info!(agent_id = %agent_id, peer = %shown(peer), previous = %holder, "Agent session replaces one that went silent.");
        }
        if !self.agents.contains_key(&agent_id) && self.agents.len() >= self.settings.max_agents {
            tracing::warn!(agent_id = %agent_id, "Agent refused: the coordinator is at its agent limit.");
            return Err(RegistryError::TooManyAgents {
                known: self.agents.len(),
                ttl_seconds: self.settings.lost_agent_ttl.as_secs(),
            });
        }
        let hardware_class = hardware_class.unwrap_or_else(|| derive_hardware_class(&facts));
        let conn = self.next_conn;
        self.next_conn += 1;
        let (welcome, cancel) = self.welcome(&agent_id, &resumed);
        outbound
            .try_send(Box::new(Ok(ToAgent::Welcome(welcome))))
            .map_err(|_| RegistryError::StreamClosed)?;
        for job_id in cancel {
            outbound
                .try_send(Box::new(Ok(ToAgent::Cancel {
                    job_id,
                    reason: "the coordinator does not know this job's run".into(),
                })))
                .ok();
        }
        let was_lost = self
            .agents
            .get(&agent_id)
            .is_some_and(|a| a.state == AgentState::Lost);
        self.agents.insert(
            agent_id.clone(),
            AgentEntry {
                facts,
                runtimes,
                labels,
                hardware_class,
                state: AgentState::Connected,
                last_seen: now,
                last_seen_unix_ms: unix_ms(),
                conn: Some((conn, outbound.clone())),
                peer,
                ignored_events: 0,
                ignored_warned_at: None,
            },
        );
        tracing::info!(agent_id = %agent_id, conn, rejoined = was_lost, "Agent registered.");
        let held: BTreeSet<JobId> = resumed.into_iter().map(|j| j.job_id).collect();
        self.resume_pending(&agent_id, &held, &outbound);
        Ok(conn)
    }

    /// A message on an agent's session: any message shows the agent is alive; a job event
    /// goes to its job. Messages of a stale session are ignored.
    pub(super) fn agent_message(&mut self, agent_id: &AgentId, conn: u64, message: FromAgent) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        let Some((current, outbound)) = &agent.conn else {
            return;
        };
        if *current != conn {
            return; // a stale stream
        }
        let outbound = outbound.clone();
        agent.last_seen = Instant::now();
        agent.last_seen_unix_ms = unix_ms();
        if agent.state == AgentState::Lost {
            agent.state = AgentState::Connected;
        }
        match message {
            FromAgent::JobEvent(event) => self.job_event(agent_id, &outbound, event),
            FromAgent::Heartbeat(_) | FromAgent::Unexpected => {}
        }
    }

    /// An agent's session ended: its outbound stream is dropped (unless a newer session
    /// replaced it).
    pub(super) fn disconnected(&mut self, agent_id: &AgentId, conn: u64) {
        if let Some(agent) = self.agents.get_mut(agent_id)
            && agent.conn.as_ref().is_some_and(|(c, _)| *c == conn)
        {
            tracing::info!(agent_id = %agent_id, "Agent stream closed.");
            agent.conn = None;
        }
    }

    /// Connected agents silent past the expiry are lost; their sessions are closed.
    pub(super) fn expire_silent_agents(&mut self, now: Instant) {
        let expiry = self.expiry();
        for (id, agent) in &mut self.agents {
            if agent.state == AgentState::Connected && now.duration_since(agent.last_seen) > expiry
            {
                tracing::warn!(agent_id = %id, silent_ms = now.duration_since(agent.last_seen).as_millis() as u64, "Agent lost: no heartbeat.");
                agent.state = AgentState::Lost;
                agent.conn = None;
                crate::metrics::agent_lost();
            }
        }
    }

    /// Forgets agents without a session whose last message is older than the time-to-live,
    /// unless a run in progress includes them (its report needs their facts).
    pub(super) fn forget_lost_agents(&mut self, now: Instant) {
        let ttl = self.settings.lost_agent_ttl;
        let expired: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(id, a)| {
                a.conn.is_none()
                    && now.duration_since(a.last_seen) > ttl
                    && !self.runs.values().any(|r| r.agents.contains(id))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(agent_id = %id, ttl_s = ttl.as_secs(), "Lost agent forgotten after its time-to-live.");
            self.agents.remove(&id);
        }
    }

    /// Agents after `after` in id order, at most `page_size` of them (0 or more than
    /// [`MAX_PAGE_AGENTS`]: that many), and whether more follow.
    pub(super) fn list_agents(&self, after: Option<&AgentId>, page_size: u32) -> AgentListing {
        let most = match page_size {
            0 => MAX_PAGE_AGENTS,
            n => n.min(MAX_PAGE_AGENTS),
        } as usize;
        let start = after.map_or(Bound::Unbounded, |id| Bound::Excluded(id.as_str()));
        let mut listing = AgentListing::default();
        for (id, agent) in self.agents.range::<str, _>((start, Bound::Unbounded)) {
            if listing.agents.len() == most {
                listing.more = true;
                break;
            }
            listing.agents.push(agent.summary(id));
        }
        listing
    }
}
