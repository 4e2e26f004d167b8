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
    /// The A/A distribution of each metric, keyed like `metrics`: present in a calibrated
    /// baseline (`fleetgate run --repeat N --write-baseline`), empty in a point baseline.
    pub distributions: BTreeMap<String, MetricDistribution>,
}

impl Baseline {
    /// Whether it was recorded from one run (no distributions): its checks use the point rule
    /// (noise 0), and the report says so.
    pub fn is_point(&self) -> bool {
        self.distributions.is_empty()
    }
}

/// How a regression check's shift must compare with the class's A/A noise: a shift is material
/// only beyond `max(tolerance, NOISE_MULTIPLIER × noise)`.
pub const NOISE_MULTIPLIER: f64 = 3.0;

/// The fewest runs a calibrated baseline is recorded from.
pub const MIN_CALIBRATION_RUNS: u32 = 3;

/// One metric's A/A distribution in a calibrated baseline: what repeated runs of the same build
/// on one hardware class measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDistribution {
    /// Values it is from (runs × agents of the class).
    pub n: u64,
    /// Their median: the baseline value (`metrics.<key>` holds the same number).
    pub centre: f64,
    /// Their normal-scaled median absolute deviation (1.4826 × MAD): the run-to-run standard
    /// deviation, robust to a stray run.
    pub spread: f64,
    /// The median half-width of the runs' own 95 % intervals, for metrics that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_half_width: Option<f64>,
}

impl MetricDistribution {
    /// The A/A noise of `current − centre`: the standard deviation of one new run's value
    /// (`spread`) and of the centre, a median of `n` (`spread × √(π / 2n)`), combined:
    /// `spread × √(1 + π / 2n)`.
    pub fn noise(&self) -> f64 {
        self.spread * (1.0 + std::f64::consts::PI / (2.0 * self.n as f64)).sqrt()
    }

    /// Half-width of the 95 % interval of the centre (`1.96 × spread × √(π / 2n)`), by which
    /// the interval of a shift from it widens.
    pub fn centre_half_width(&self) -> f64 {
        crate::report::significance::Z_975
            * self.spread
            * (std::f64::consts::PI / (2.0 * self.n as f64)).sqrt()
    }

    /// The distribution of `values`, with the half-widths of the `intervals` the runs gave
    /// (none for a metric without one); `None` without values.
    pub fn of(values: &[f64], intervals: &[Interval]) -> Option<Self> {
        let half_widths: Vec<f64> = intervals.iter().map(|i| (i.hi - i.lo) / 2.0).collect();
        Some(MetricDistribution {
            n: values.len() as u64,
            centre: stats::median(values).ok()?,
            spread: stats::mad(values).ok()?,
            interval_half_width: stats::median(&half_widths).ok(),
        })
    }
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
#[expect(
    clippy::large_enum_variant,
    reason = "one gate per run: boxing the baseline would save nothing worth the indirection"
)]
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
    let distributions = match object.get("distributions") {
        None => BTreeMap::new(),
        Some(value) => parse_distributions(value, &metrics).map_err(err)?,
    };
    Ok(Baseline {
        path: file.to_owned(),
        version: REPORT_VERSION.to_owned(),
        config,
        metrics,
        distributions,
    })
}

/// A calibrated baseline's `distributions`: one per metric, each with `n` of at least
/// [`MIN_CALIBRATION_RUNS`], a finite non-negative `spread` and half-width, and a `centre` that
/// is the metric's value.
fn parse_distributions(
    value: &serde_json::Value,
    metrics: &BTreeMap<String, f64>,
) -> Result<BTreeMap<String, MetricDistribution>, String> {
    let Some(map) = value.as_object() else {
        return Err("Baseline file key 'distributions' must be a JSON object".to_owned());
    };
    let mut out = BTreeMap::new();
    for (metric, entry) in map {
        let at = format!("Baseline file key 'distributions.{metric}'");
        let d: MetricDistribution = serde_path_to_error::deserialize(entry)
            .map_err(|e| format!("{at}.{} is not valid: {}", e.path(), e.inner()))?;
        let Some(&value) = metrics.get(metric) else {
            return Err(format!("{at} has no value in 'metrics'"));
        };
        if d.n < u64::from(MIN_CALIBRATION_RUNS) {
            return Err(format!(
                "{at}.n must be at least {MIN_CALIBRATION_RUNS}: {}",
                d.n
            ));
        }
        let finite_non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !finite_non_negative(d.spread) {
            return Err(format!(
                "{at}.spread must be a number at least 0: {}",
                d.spread
            ));
        }
        if let Some(w) = d.interval_half_width.filter(|w| !finite_non_negative(*w)) {
            return Err(format!(
                "{at}.interval_half_width must be a number at least 0: {w}"
            ));
        }
        if (d.centre - value).abs() > 1e-9 * value.abs().max(1.0) {
            return Err(format!(
                "{at}.centre is {} but 'metrics.{metric}' is {value}; they must agree",
                d.centre
            ));
        }
        out.insert(metric.clone(), d);
    }
    Ok(out)
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
    let mut base = String::new();
    write_base(&mut base, key);
    base
}

/// Writes [`strip_instance`]`(key)` into `out`, replacing what it held.
fn write_base(out: &mut String, key: &str) {
    out.clear();
    match key.split_once('@') {
        Some((runtime, after)) => {
            out.push_str(runtime);
            if let Some((_, metric)) = after.split_once('.') {
                out.push('.');
                out.push_str(metric);
            }
        }
        None => out.push_str(key),
    }
}

/// Maps an agent id to its hardware class, for threshold resolution.
pub type ClassOf<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Finds a fleet metric's threshold in a map of them: the value of the first key of
/// [`threshold_candidates`] that the map holds, with that key. The candidates are written one
/// at a time into a buffer it reuses, and an agent's class is looked up once for a run of that
/// agent's metrics, so checking a 10,000-agent report (110,000 metrics) allocates only the
/// keys that matched.
pub(crate) struct Resolver<'a> {
    class_of: ClassOf<'a>,
    /// The agent last looked up, and its class.
    class: Option<(String, Option<String>)>,
    base: String,
    key: String,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(class_of: ClassOf<'a>) -> Self {
        Resolver {
            class_of,
            class: None,
            base: String::new(),
            key: String::new(),
        }
    }

    /// The value for `metric` in `map`, most specific key first, with the key that matched.
    pub(crate) fn resolve<V: Copy>(
        &mut self,
        map: &BTreeMap<String, V>,
        metric: &str,
    ) -> Option<(String, V)> {
        let found = |key: &str| map.get(key).map(|v| (key.to_owned(), *v));
        let Some((agent, rest)) = metric.split_once('/') else {
            write_base(&mut self.base, metric);
            return found(&self.base);
        };
        if let Some(hit) = found(metric) {
            return Some(hit);
        }
        write_base(&mut self.base, rest);
        // `<prefix>/<base>`, in the reused buffer.
        let scoped = |key: &mut String, prefix: &str, base: &str| {
            key.clear();
            key.push_str(prefix);
            key.push('/');
            key.push_str(base);
            found(key)
        };
        if self.base != rest
            && let Some(hit) = scoped(&mut self.key, agent, &self.base)
        {
            return Some(hit);
        }
        if self.class.as_ref().is_none_or(|(last, _)| last != agent) {
            self.class = Some((agent.to_owned(), (self.class_of)(agent)));
        }
        if let Some(class) = self.class.as_ref().and_then(|(_, class)| class.as_deref())
            && let Some(hit) = scoped(&mut self.key, class, &self.base)
        {
            return Some(hit);
        }
        found(&self.base)
    }
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
    let mut resolver = Resolver::new(class_of);
    for key in expected {
        if resolver.resolve(map, key).is_none() {
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
        let mut resolver = Resolver::new(class_of);
        metrics
            .iter()
            .map(|(metric, &value)| {
                let (threshold_key, max_allowed) = resolver
                    .resolve(&self.budgets, metric)
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
    /// decided by [`DualCriterion`] on `delta = current − baseline`, with the interval shifted
    /// by the baseline (and, for a calibrated baseline, widened by the uncertainty of its
    /// centre): it fails when the interval excludes 0 from above and `delta` exceeds the
    /// material shift `max(tolerance, NOISE_MULTIPLIER × noise)`, is inconclusive when `delta`
    /// exceeds it but the interval reaches 0, and otherwise passes. The noise is the class's A/A noise from
    /// the baseline's distributions (0 for a point baseline). A metric without an interval
    /// fails when `delta` exceeds the material shift (two-sided counters also below its
    /// negative). No baseline or tolerance (NaN) fails.
    pub fn check_intervals(
        &self,
        baseline: &Baseline,
        metrics: &BTreeMap<String, f64>,
        intervals: &BTreeMap<String, Interval>,
        class_of: ClassOf<'_>,
    ) -> BTreeMap<String, RegressionCheck> {
        let mut resolver = Resolver::new(class_of);
        metrics
            .iter()
            .map(|(metric, &current_value)| {
                let baseline_value = resolver
                    .resolve(&baseline.metrics, metric)
                    .map_or(f64::NAN, |(_, v)| v);
                let distribution = resolver
                    .resolve(&baseline.distributions, metric)
                    .map(|(_, d)| d);
                let (threshold_key, max_regression) = resolver
                    .resolve(&self.tolerances, metric)
                    .unwrap_or_else(|| (String::new(), f64::NAN));
                let noise = distribution.map(|d| d.noise());
                let rule = DualCriterion {
                    tolerance: max_regression,
                    noise: noise.unwrap_or(0.0),
                    k: NOISE_MULTIPLIER,
                };
                // NaN (no baseline or tolerance) is an error of the rule: it fails.
                let material = rule.threshold().unwrap_or(f64::NAN);
                let delta = current_value - baseline_value;
                let two_sided = is_two_sided(metric);
                let widen = distribution.map_or(0.0, |d| d.centre_half_width());
                let interval = intervals
                    .get(metric)
                    .filter(|_| !two_sided)
                    .map(|i| Interval {
                        lo: i.lo - baseline_value - widen,
                        hi: i.hi - baseline_value + widen,
                    });
                let decision = match interval {
                    Some(i) => rule.decide(delta, i).unwrap_or(Decision::Fail),
                    // NaN fails both comparisons.
                    None if delta <= material && (!two_sided || delta >= -material) => {
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
                        noise,
                        material_shift: noise.map(|_| material),
                        // Set over the whole report by `report::significance`.
                        p_value: None,
                        p_adjusted: None,
                    },
                )
            })
            .collect()
    }
}

/// A calibrated regression baseline file recorded from the `reports` of repeated runs of one
/// request (`fleetgate run --repeat N --write-baseline`), dated by the last of them.
///
/// Every metric key of the reports is pooled per hardware class over agents and runs (a
/// per-GPU instance `@<gpu>` counts as its runtime); `metrics` holds each pool's median and
/// `distributions` its [`MetricDistribution`]. Keys are `<class>/<runtime>.<metric>` when the
/// agents span more than one class, else the plain `<runtime>.<metric>` (which any class
/// resolves to). Fewer than [`MIN_CALIBRATION_RUNS`] reports, or reports of different configs,
/// are an error.
pub fn calibrated_baseline_document(
    reports: &[crate::report::Report],
    host: &str,
) -> Result<serde_json::Value, String> {
    let (Some(first), Some(last)) = (reports.first(), reports.last()) else {
        return Err("no run to record".to_owned());
    };
    if reports.len() < MIN_CALIBRATION_RUNS as usize {
        return Err(format!(
            "a calibrated baseline needs at least {MIN_CALIBRATION_RUNS} runs, got {}",
            reports.len()
        ));
    }
    let config = first.config.comparable();
    if let Some(i) = reports.iter().position(|r| r.config.comparable() != config) {
        return Err(format!("run {} had another config than run 1", i + 1));
    }
    let class_of = |report: &crate::report::Report, agent: &str| {
        report.agents.get(agent).map(|a| a.hardware_class.clone())
    };
    let classes: std::collections::BTreeSet<String> = reports
        .iter()
        .flat_map(|r| r.agents.values().map(|a| a.hardware_class.clone()))
        .collect();
    let by_class = classes.len() > 1;
    let mut pools: BTreeMap<String, (Vec<f64>, Vec<Interval>)> = BTreeMap::new();
    for report in reports {
        for (key, &value) in &report.metrics {
            let (agent, rest) = key.split_once('/').unwrap_or(("", key));
            let plain = strip_instance(rest);
            let pooled = match class_of(report, agent) {
                Some(class) if by_class => format!("{class}/{plain}"),
                _ => plain,
            };
            let pool = pools.entry(pooled).or_default();
            pool.0.push(value);
            if let Some(&i) = report.metric_intervals.get(key) {
                pool.1.push(i);
            }
        }
    }
    let mut metrics = BTreeMap::new();
    let mut distributions = BTreeMap::new();
    for (key, (values, intervals)) in pools {
        if let Some(d) = MetricDistribution::of(&values, &intervals) {
            metrics.insert(key.clone(), d.centre);
            distributions.insert(key, d);
        }
    }
    Ok(serde_json::json!({
        "version": REPORT_VERSION,
        "description": format!(
            "Calibrated by `fleetgate run --repeat {} --write-baseline` ending {} on host {host} (profile {}, mode {}): per metric the median of the runs, with their spread and A/A noise in 'distributions'.",
            reports.len(), last.timestamp_utc, last.profile, last.mode
        ),
        "config": config,
        "metrics": metrics,
        "distributions": distributions,
    }))
}

/// A resolver for single-host runs, whose metric keys carry no agent.
pub fn no_classes(_agent: &str) -> Option<String> {
    None
}

#[cfg(test)]
mod tests;
