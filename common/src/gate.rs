//! Gate assets (budget, baseline, tolerance files), the two gates, and threshold resolution.
//!
//! Assets are loaded and validated before any job runs: a missing or unreadable file, bad
//! JSON, a wrong version, a non-numeric value, a metric without a threshold or a baseline whose
//! config differs from the run's is an [`AssetError`] — one line naming the file and the key.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{ComparableConfig, GateMode};
use crate::report::metrics::is_two_sided;
use crate::report::model::{BudgetCheck, REPORT_VERSION, RegressionCheck};
use crate::stats::{self, Decision, DualCriterion, Interval};

pub use crate::config::AssetSource;

/// A gate asset cannot be used. Displays as one line: `<file>: <what is wrong>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", crate::input::one_line(.file), crate::input::one_line(.message))]
pub struct AssetError {
    /// The file.
    pub file: String,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Which asset a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Budget,
    Baseline,
    Tolerance,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Budget => "Budget file",
            Kind::Baseline => "Baseline file",
            Kind::Tolerance => "Tolerance file",
        }
    }

    fn metrics_key(self) -> &'static str {
        match self {
            Kind::Budget => "budgets",
            Kind::Baseline => "metrics",
            Kind::Tolerance => "tolerances",
        }
    }
}

/// A loaded budget file.
#[derive(Debug, Clone, PartialEq)]
pub struct Budgets {
    /// Where it came from.
    pub path: String,
    /// `<runtime>.<metric>` → maximum.
    pub budgets: BTreeMap<String, f64>,
}

/// A loaded baseline file.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Where it came from.
    pub path: String,
    /// Its version.
    pub version: String,
    /// The config it was recorded with.
    pub config: ComparableConfig,
    /// `<runtime>.<metric>` → recorded value.
    pub metrics: BTreeMap<String, f64>,
}

/// A loaded tolerance file.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerances {
    /// Where it came from.
    pub path: String,
    /// `<runtime>.<metric>` → allowed increase.
    pub tolerances: BTreeMap<String, f64>,
}

/// A run's loaded gate.
#[derive(Debug, Clone)]
pub enum Gate {
    /// Absolute maxima.
    Budget(Budgets),
    /// Baseline plus tolerances.
    Regression(Baseline, Tolerances),
}

impl Gate {
    /// Which of the two gates this is.
    pub fn mode(&self) -> GateMode {
        match self {
            Gate::Budget(_) => GateMode::Budget,
            Gate::Regression(..) => GateMode::Regression,
        }
    }
}

type Object = serde_json::Map<String, serde_json::Value>;

fn read_object(file: &str, bytes: Option<&[u8]>, kind: Kind) -> Result<Object, AssetError> {
    let err = |message: String| AssetError {
        file: file.to_owned(),
        message,
    };
    let read;
    let bytes = match bytes {
        Some(bytes) => bytes,
        None => {
            read = crate::input::read_file(std::path::Path::new(file))
                .map_err(|e| err(format!("{} cannot be read: {e}", kind.label())))?;
            &read
        }
    };
    let value = crate::input::parse_json(bytes)
        .map_err(|e| err(format!("{} cannot be read: {e}", kind.label())))?;
    let serde_json::Value::Object(object) = value else {
        return Err(err(format!("{} must be a JSON object", kind.label())));
    };
    match object.get("version") {
        Some(serde_json::Value::String(v)) if v == REPORT_VERSION => Ok(object),
        other => Err(err(format!(
            "{} version must be {REPORT_VERSION} (key 'version' is {})",
            kind.label(),
            other.map_or_else(|| "missing".to_owned(), ToString::to_string)
        ))),
    }
}

fn numeric_map(
    object: &Object,
    kind: Kind,
    file: &str,
) -> Result<BTreeMap<String, f64>, AssetError> {
    let key = kind.metrics_key();
    let err = |message: String| AssetError {
        file: file.to_owned(),
        message,
    };
    let Some(value) = object.get(key) else {
        return Err(err(format!("{} missing key '{key}'", kind.label())));
    };
    let Some(map) = value.as_object() else {
        return Err(err(format!(
            "{} key '{key}' must be a JSON object of metric values",
            kind.label()
        )));
    };
    if map.is_empty() {
        return Err(err(format!(
            "{} key '{key}' must not be empty",
            kind.label()
        )));
    }
    map.iter()
        .map(|(metric, v)| match v.as_f64() {
            // A negative maximum or allowed increase can never be met; measured baselines
            // may be negative (an overhead within noise of zero).
            Some(x) if x < 0.0 && kind != Kind::Baseline => Err(err(format!(
                "{} key '{key}.{metric}' must not be negative: {v}",
                kind.label()
            ))),
            Some(x) if x.is_finite() => Ok((metric.clone(), x)),
            _ => Err(err(format!(
                "{} key '{key}.{metric}' is not a number: {v}",
                kind.label()
            ))),
        })
        .collect()
}

/// Loads and validates a budget file: `{"version": "v0.4", "budgets": {metric: max}}`.
pub fn load_budgets(path: &Path) -> Result<Budgets, AssetError> {
    parse_budgets(&path.display().to_string(), None)
}

/// Validates a budget document named `file`; with `bytes` None the file is read.
pub fn parse_budgets(file: &str, bytes: Option<&[u8]>) -> Result<Budgets, AssetError> {
    let object = read_object(file, bytes, Kind::Budget)?;
    let budgets = numeric_map(&object, Kind::Budget, file)?;
    Ok(Budgets {
        path: file.to_owned(),
        budgets,
    })
}

/// Loads and validates a tolerance file: `{"version": "v0.4", "tolerances": {metric: delta}}`.
pub fn load_tolerances(path: &Path) -> Result<Tolerances, AssetError> {
    parse_tolerances(&path.display().to_string(), None)
}

/// Validates a tolerance document named `file`; with `bytes` None the file is read.
pub fn parse_tolerances(file: &str, bytes: Option<&[u8]>) -> Result<Tolerances, AssetError> {
    let object = read_object(file, bytes, Kind::Tolerance)?;
    let tolerances = numeric_map(&object, Kind::Tolerance, file)?;
    Ok(Tolerances {
        path: file.to_owned(),
        tolerances,
    })
}

/// Loads and validates a baseline file:
/// `{"version": "v0.4", "config": {…}, "metrics": {metric: value}}`.
pub fn load_baseline(path: &Path) -> Result<Baseline, AssetError> {
    parse_baseline(&path.display().to_string(), None)
}

/// Validates a baseline document named `file`; with `bytes` None the file is read.
pub fn parse_baseline(file: &str, bytes: Option<&[u8]>) -> Result<Baseline, AssetError> {
    let object = read_object(file, bytes, Kind::Baseline)?;
    let metrics = numeric_map(&object, Kind::Baseline, file)?;
    let err = |message: String| AssetError {
        file: file.to_owned(),
        message,
    };
    let config = object
        .get("config")
        .ok_or_else(|| err("Baseline file missing key 'config'".to_owned()))?;
    let invalid = |e: serde_path_to_error::Error<serde_json::Error>| {
        let at = e.path().to_string();
        err(format!(
            "Baseline file config key '{at}' is not valid: {}",
            e.inner()
        ))
    };
    // The workload's keys are flattened into the config, where a deserializer no longer
    // knows their path: check them on their own first, so an error names the key.
    serde_path_to_error::deserialize::<_, crate::config::Workload>(config).map_err(invalid)?;
    let config: ComparableConfig = serde_path_to_error::deserialize(config).map_err(invalid)?;
    Ok(Baseline {
        path: file.to_owned(),
        version: REPORT_VERSION.to_owned(),
        config,
        metrics,
    })
}

/// Threshold keys for a fleet metric key, most specific first: `<agent>/<runtime>.<metric>`,
/// then `<hardware_class>/<runtime>.<metric>`, then the plain `<runtime>.<metric>`. A plain key
/// resolves only to itself.
pub fn threshold_candidates(
    metric_key: &str,
    class_of: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    match metric_key.split_once('/') {
        Some((agent, rest)) => {
            // A per-GPU instance (`<runtime>@<gpu>.<metric>`) also takes its runtime's keys.
            let base = strip_instance(rest);
            let mut keys = vec![metric_key.to_owned()];
            if base != rest {
                keys.push(format!("{agent}/{base}"));
            }
            if let Some(class) = class_of(agent) {
                keys.push(format!("{class}/{base}"));
            }
            keys.push(base);
            keys
        }
        None => vec![strip_instance(metric_key)],
    }
}

/// `<runtime>@<gpu>.<metric>` → `<runtime>.<metric>`, `<runtime>@<gpu>` → `<runtime>`
/// (anything else unchanged).
pub fn strip_instance(key: &str) -> String {
    match key.split_once('@') {
        Some((runtime, after)) => match after.split_once('.') {
            Some((_, metric)) => format!("{runtime}.{metric}"),
            None => runtime.to_owned(),
        },
        None => key.to_owned(),
    }
}

/// Maps an agent id to its hardware class, for threshold resolution.
pub type ClassOf<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The value for `metric` in `map`, most specific key first (see [`threshold_candidates`]),
/// with the key that matched.
fn resolve(
    map: &BTreeMap<String, f64>,
    metric: &str,
    class_of: ClassOf<'_>,
) -> Option<(String, f64)> {
    threshold_candidates(metric, class_of)
        .into_iter()
        .find_map(|key| map.get(&key).map(|v| (key, *v)))
}

/// Fails unless every `expected` metric resolves to a value in `map`. Missing metrics are
/// named by their plain `<runtime>.<metric>` key, which is what a seed-format file would add.
fn require_coverage(
    kind: Kind,
    file: &str,
    map: &BTreeMap<String, f64>,
    expected: &[String],
    class_of: ClassOf<'_>,
) -> Result<(), AssetError> {
    let mut missing: Vec<&str> = Vec::new();
    for key in expected {
        if resolve(map, key, class_of).is_none() {
            let plain = key.split_once('/').map_or(key.as_str(), |(_, rest)| rest);
            if !missing.contains(&plain) {
                missing.push(plain);
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(AssetError {
            file: file.to_owned(),
            message: format!(
                "{} missing metric keys: {}",
                kind.label(),
                missing.join(", ")
            ),
        })
    }
}

impl Budgets {
    /// Fails unless every metric the run will produce has a budget.
    pub fn require(&self, expected: &[String], class_of: ClassOf<'_>) -> Result<(), AssetError> {
        require_coverage(Kind::Budget, &self.path, &self.budgets, expected, class_of)
    }

    /// One check per produced metric (a metric without a budget fails its check):
    /// `value <= max`.
    pub fn check(
        &self,
        metrics: &BTreeMap<String, f64>,
        class_of: ClassOf<'_>,
    ) -> BTreeMap<String, BudgetCheck> {
        self.check_intervals(metrics, &BTreeMap::new(), class_of)
    }

    /// As [`Self::check`], but a metric with a 95 % interval in `intervals` is decided by
    /// [`stats::budget_decision`]: it passes when `hi <= max`, fails when `lo > max`, and is
    /// otherwise inconclusive. An interval the rule rejects (NaN) fails.
    pub fn check_intervals(
        &self,
        metrics: &BTreeMap<String, f64>,
        intervals: &BTreeMap<String, Interval>,
        class_of: ClassOf<'_>,
    ) -> BTreeMap<String, BudgetCheck> {
        metrics
            .iter()
            .map(|(metric, &value)| {
                let (threshold_key, max_allowed) = resolve(&self.budgets, metric, class_of)
                    .unwrap_or_else(|| (String::new(), f64::NEG_INFINITY));
                let interval = intervals.get(metric);
                let decision = match interval {
                    Some(&i) => stats::budget_decision(i, max_allowed).unwrap_or(Decision::Fail),
                    None if value <= max_allowed => Decision::Pass,
                    None => Decision::Fail,
                };
                (
                    metric.clone(),
                    BudgetCheck {
                        value,
                        max_allowed,
                        threshold_key,
                        passed: decision == Decision::Pass,
                        lo: interval.map(|i| i.lo),
                        hi: interval.map(|i| i.hi),
                        inconclusive: decision == Decision::Inconclusive,
                    },
                )
            })
            .collect()
    }
}

impl Baseline {
    /// Fails unless the baseline covers every metric and was recorded with `current`'s config.
    pub fn require(
        &self,
        expected: &[String],
        current: &ComparableConfig,
        class_of: ClassOf<'_>,
    ) -> Result<(), AssetError> {
        if &self.config != current {
            return Err(AssetError {
                file: self.path.clone(),
                message: format!(
                    "Baseline config mismatch: current={current}, baseline={}",
                    self.config
                ),
            });
        }
        require_coverage(
            Kind::Baseline,
            &self.path,
            &self.metrics,
            expected,
            class_of,
        )
    }
}

impl Tolerances {
    /// Fails unless every metric the run will produce has a tolerance.
    pub fn require(&self, expected: &[String], class_of: ClassOf<'_>) -> Result<(), AssetError> {
        require_coverage(
            Kind::Tolerance,
            &self.path,
            &self.tolerances,
            expected,
            class_of,
        )
    }

    /// One check per produced metric: `current − baseline <= tolerance`, so an improvement
    /// passes; for the deterministic counters of [`crate::report::TWO_SIDED_METRICS`] also
    /// `current − baseline >= −tolerance` (less work than the baseline fails).
    pub fn check(
        &self,
        baseline: &Baseline,
        metrics: &BTreeMap<String, f64>,
        class_of: ClassOf<'_>,
    ) -> BTreeMap<String, RegressionCheck> {
        self.check_intervals(baseline, metrics, &BTreeMap::new(), class_of)
    }

    /// As [`Self::check`], but a one-sided metric with a 95 % interval in `intervals` is
    /// decided by [`DualCriterion`] (noise 0 until calibrated baselines exist) on
    /// `delta = current − baseline` with the interval shifted by the baseline: it fails when
    /// the interval excludes 0 from above and `delta > tolerance`, passes when its upper bound
    /// is within the tolerance, and is otherwise inconclusive. No baseline or tolerance (NaN)
    /// fails.
    pub fn check_intervals(
        &self,
        baseline: &Baseline,
        metrics: &BTreeMap<String, f64>,
        intervals: &BTreeMap<String, Interval>,
        class_of: ClassOf<'_>,
    ) -> BTreeMap<String, RegressionCheck> {
        metrics
            .iter()
            .map(|(metric, &current_value)| {
                let baseline_value =
                    resolve(&baseline.metrics, metric, class_of).map_or(f64::NAN, |(_, v)| v);
                let (threshold_key, max_regression) = resolve(&self.tolerances, metric, class_of)
                    .unwrap_or_else(|| (String::new(), f64::NAN));
                let delta = current_value - baseline_value;
                let two_sided = is_two_sided(metric);
                let interval = intervals
                    .get(metric)
                    .filter(|_| !two_sided)
                    .map(|i| Interval {
                        lo: i.lo - baseline_value,
                        hi: i.hi - baseline_value,
                    });
                let decision = match interval {
                    // NaN (no baseline or tolerance) is an error of the rule: it fails.
                    Some(i) => DualCriterion {
                        tolerance: max_regression,
                        noise: 0.0,
                        k: 0.0,
                    }
                    .decide(delta, i)
                    .unwrap_or(Decision::Fail),
                    // NaN (no baseline or tolerance) fails both comparisons.
                    None if delta <= max_regression && (!two_sided || delta >= -max_regression) => {
                        Decision::Pass
                    }
                    None => Decision::Fail,
                };
                let passed = decision == Decision::Pass;
                (
                    metric.clone(),
                    RegressionCheck {
                        current_value,
                        baseline_value,
                        delta,
                        max_regression,
                        threshold_key,
                        passed,
                        two_sided,
                        delta_lo: interval.map(|i| i.lo),
                        delta_hi: interval.map(|i| i.hi),
                        inconclusive: decision == Decision::Inconclusive,
                        // Set over the whole report by `report::significance`.
                        p_value: None,
                        p_adjusted: None,
                    },
                )
            })
            .collect()
    }
}

/// A resolver for single-host runs, whose metric keys carry no agent.
pub fn no_classes(_agent: &str) -> Option<String> {
    None
}

#[cfg(test)]
mod tests;
