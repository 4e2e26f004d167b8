//! Synthetic fleets for the outputs at scale: a real one-agent report cloned into an agent per
//! [`Fate`], for the large-fleet tests and the `html_report` benchmark.

use std::collections::BTreeMap;

use fleetgate_common::report::{AgentStatus, Report, Verdict, class_summaries};

/// How one agent of a synthetic fleet did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Pass,
    /// Every check failed, each with its diagnostic.
    Fail,
    /// Its first budget check was inconclusive, with its diagnostic.
    Inconclusive,
    /// It passed, with every metric ten times its class's.
    Outlier,
    /// It was lost (its checks passed).
    Lost,
}

/// The id of a synthetic fleet's agent `i`.
pub(crate) fn agent_id(i: usize) -> String {
    format!("agent-{i:05}")
}

/// `one` (a report of one agent) cloned into an agent per fate, `agent-00000` and on, agent `i`
/// in class `class-{i % classes}`: its runtime sections, metrics, intervals, checks and gate
/// power lines under its id, each value scaled by a fixed factor (0.9 to 1.1, or 10 for an
/// outlier) so the classes' spreads are not flat, then its fate applied (a check passes unless
/// its fate says otherwise). The class summaries, their outliers' advice, the quorums (every
/// agent of a class) and the verdict are recomputed.
pub(crate) fn fleet(one: &Report, fates: &[Fate], classes: usize) -> Report {
    let (id, section) = one.agents.iter().next().expect("a report with an agent");
    let prefix = format!("{id}/");
    let mut fleet = one.clone();
    fleet.agents.clear();
    fleet.runtimes.clear();
    fleet.metrics.clear();
    fleet.metric_intervals.clear();
    fleet.failure_diagnostics.clear();
    fleet.gate_power.clear();
    let mut budget_checks = BTreeMap::new();
    let mut regression_checks = BTreeMap::new();
    for (i, &fate) in fates.iter().enumerate() {
        let new_id = agent_id(i);
        let factor = match fate {
            Fate::Outlier => 10.0,
            _ => 0.9 + 0.2 * ((i * 37) % 101) as f64 / 100.0,
        };
        let rename = |key: &str| key.replacen(&prefix, &format!("{new_id}/"), 1);
        let mut agent = section.clone();
        agent.hardware_class = format!("class-{}", i % classes);
        agent.facts.hostname = new_id.clone();
        if fate == Fate::Lost {
            agent.status = AgentStatus::Lost;
        }
        fleet.agents.insert(new_id.clone(), agent);
        for (k, v) in &one.runtimes {
            fleet.runtimes.insert(rename(k), v.clone());
        }
        for (k, v) in &one.metrics {
            fleet.metrics.insert(rename(k), v * factor);
        }
        for (k, v) in &one.metric_intervals {
            let mut v = *v;
            v.lo *= factor;
            v.hi *= factor;
            fleet.metric_intervals.insert(rename(k), v);
        }
        for (n, (k, c)) in one.budget_checks.iter().flatten().enumerate() {
            let key = rename(k);
            let mut c = c.clone();
            c.value *= factor;
            c.lo = c.lo.map(|v| v * factor);
            c.hi = c.hi.map(|v| v * factor);
            c.passed = true;
            c.inconclusive = false;
            match fate {
                Fate::Fail => {
                    c.passed = false;
                    fleet.failure_diagnostics.push(format!(
                        "{key}: {} exceeds the budget {} (synthetic failure)",
                        c.value, c.max_allowed
                    ));
                }
                Fate::Inconclusive if n == 0 => {
                    c.passed = false;
                    c.inconclusive = true;
                    fleet.failure_diagnostics.push(format!(
                        "{key}: inconclusive, its interval straddles the budget {} (synthetic)",
                        c.max_allowed
                    ));
                }
                _ => {}
            }
            budget_checks.insert(key, c);
        }
        for (k, c) in one.regression_checks.iter().flatten() {
            let key = rename(k);
            let mut c = c.clone();
            c.current_value *= factor;
            c.passed = fate != Fate::Fail;
            c.inconclusive = false;
            if fate == Fate::Fail {
                fleet.failure_diagnostics.push(format!(
                    "{key}: regressed by {} from {} (synthetic failure)",
                    c.delta, c.baseline_value
                ));
            }
            regression_checks.insert(key, c);
        }
        fleet.gate_power.extend(
            one.gate_power
                .iter()
                .map(|l| l.replacen(id.as_str(), &new_id, 1)),
        );
    }
    fleet.failure_diagnostics.extend(
        fates
            .iter()
            .enumerate()
            .filter(|(_, f)| **f == Fate::Lost)
            .map(|(i, _)| format!("{}: lost during the soak; inconclusive", agent_id(i))),
    );
    fleet.budget_checks = one.budget_checks.as_ref().map(|_| budget_checks);
    fleet.regression_checks = one.regression_checks.as_ref().map(|_| regression_checks);
    fleet.hardware_classes = class_summaries(&fleet.agents, &fleet.metrics);
    fleet.fleet_advice = fleet
        .hardware_classes
        .iter()
        .flat_map(|(class, c)| {
            c.outliers.iter().map(move |o| {
                format!(
                    "{}/{}: {} is an outlier in class {class} (synthetic advice)",
                    o.agent, o.metric, o.value
                )
            })
        })
        .collect();
    for (i, &fate) in fates.iter().enumerate() {
        if let Some(class) = fleet
            .hardware_classes
            .get_mut(&format!("class-{}", i % classes))
        {
            class.quorum += 1;
            if matches!(fate, Fate::Pass | Fate::Outlier) {
                class.passed += 1;
            }
        }
    }
    for class in fleet.hardware_classes.values_mut() {
        class.quorum_met = class.passed >= class.quorum;
    }
    fleet.passed = fates
        .iter()
        .all(|f| matches!(f, Fate::Pass | Fate::Outlier));
    fleet.verdict = if fates.contains(&Fate::Fail) {
        Verdict::Fail
    } else if fleet.passed {
        Verdict::Pass
    } else {
        Verdict::Inconclusive
    };
    fleet
}
