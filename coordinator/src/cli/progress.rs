//! A run's progress on stderr: on a terminal, a live bar per agent (in agent-id order) with
//! the run's other events printed above the bars; otherwise a plain line per tenth of each
//! phase.

use std::collections::BTreeMap;

use fleetgate_proto::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// What the run's events look like on stderr.
#[derive(Debug)]
pub struct ProgressDisplay {
    /// The live bars (on a terminal only).
    live: Option<LiveBars>,
    /// Per agent, runtime and phase: the last tenth printed as a plain line.
    last_tenth: BTreeMap<String, u64>,
}

/// One bar per agent, redrawn in place.
#[derive(Debug)]
struct LiveBars {
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
}

impl LiveBars {
    fn new() -> Self {
        LiveBars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: BTreeMap::new(),
        }
    }

    /// An agent's row: its runtime and phase, a bar, the percentage, the counts and the
    /// phase's estimated time left.
    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{msg:<56} [{bar:30}] {percent:>3}% {pos}/{len} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("# ")
    }

    /// Shows `agent_id`'s progress on its bar, which is added in agent-id order the first
    /// time.
    fn show(&mut self, agent_id: &str, label: String, done: u64, total: u64) {
        if let Some(bar) = self.bars.get(agent_id) {
            if bar.message() != label {
                // A new phase: its rate, and so its ETA, starts afresh.
                bar.reset();
                bar.set_message(label);
            }
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        let bar = ProgressBar::new(total)
            .with_style(Self::style())
            .with_message(label)
            .with_position(done)
            .with_finish(ProgressFinish::Abandon);
        let index = self.bars.keys().filter(|k| k.as_str() < agent_id).count();
        let bar = self.multi.insert(index, bar);
        self.bars.insert(agent_id.to_owned(), bar);
    }
}

impl ProgressDisplay {
    /// A display with live bars if `terminal` (stderr is a terminal), else plain lines.
    pub fn new(terminal: bool) -> Self {
        ProgressDisplay {
            live: terminal.then(LiveBars::new),
            last_tenth: BTreeMap::new(),
        }
    }

    /// Shows one event of the run: its acceptance and diagnostics as lines, its progress as a
    /// bar or a line per tenth.
    pub fn update(&mut self, event: &pb::RunEvent) {
        let p = match &event.body {
            Some(pb::run_event::Body::Progress(p)) => p,
            Some(pb::run_event::Body::Accepted(a)) => {
                self.line(&format!(
                    "Run {} accepted on {} agent(s): {}",
                    event.run_id,
                    a.agent_ids.len(),
                    a.agent_ids.join(", ")
                ));
                return;
            }
            Some(pb::run_event::Body::Diagnostic(d)) => {
                self.line(d);
                return;
            }
            _ => return,
        };
        let label = format!("{} {} {}", p.agent_id, p.runtime, p.phase);
        if let Some(live) = &mut self.live {
            live.show(&p.agent_id, label, p.done.min(p.total), p.total);
        } else {
            let total = p.total.max(1);
            let pct = p.done.min(total) * 100 / total;
            let tenth = pct / 10;
            if self.last_tenth.get(&label) != Some(&tenth) {
                self.line(&format!("{label}: {}/{} ({pct}%)", p.done, p.total));
                self.last_tenth.insert(label, tenth);
            }
        }
    }

    /// Leaves the bars as they are, so what follows is printed below them.
    pub fn finish(&mut self) {
        if let Some(live) = &mut self.live {
            for bar in std::mem::take(&mut live.bars).into_values() {
                bar.abandon();
            }
        }
    }

    /// Prints `text` as a line on stderr, above the bars if there are any.
    #[expect(clippy::print_stderr, reason = "progress goes to stderr")]
    pub fn line(&self, text: &str) {
        match &self.live {
            Some(live) if !live.multi.is_hidden() => {
                if live.multi.println(text).is_err() {
                    eprintln!("{text}");
                }
            }
            _ => eprintln!("{text}"),
        }
    }
}
