//! The gate asset parsers: `gate::parse_budgets`, `gate::parse_baseline` and
//! `gate::parse_tolerances`, each given the same bytes.
//!
//! Accepted: the version is `v0.4`, the metric map is the document's own (same keys, same
//! values), every value is finite (and, in budgets and tolerances, not negative), each metric
//! key covers itself, a measurement equal to a budget passes it, and the asset written back
//! out as JSON parses to the same asset. Refused: one line that names the file and the asset,
//! and a document that is not JSON at all is refused with the reader's own reason.

#![no_main]

use std::collections::BTreeMap;

use fleetgate_common::gate::{self, AssetError, threshold_candidates};
use fleetgate_common::input;
use fleetgate_common::report::REPORT_VERSION;
use fleetgate_fuzz::assert_one_line;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|bytes: &[u8]| {
    let doc = input::parse_json(bytes).map_err(|e| e.to_string());

    match gate::parse_budgets("budget.json", Some(bytes)) {
        Ok(budgets) => {
            assert_eq!(budgets.path, "budget.json");
            same_map(&doc, "budgets", &budgets.budgets, false);
            let own = self_resolving(&budgets.budgets);
            if let Err(e) = budgets.require(&own, &gate::no_classes) {
                panic!("budgets do not cover their own keys: {e}");
            }
            let at_budget: BTreeMap<String, f64> = own
                .iter()
                .map(|k| (k.clone(), budgets.budgets[k]))
                .collect();
            for (metric, check) in budgets.check(&at_budget, &gate::no_classes) {
                assert!(check.passed, "{metric} at its budget fails: {check:?}");
                assert_eq!(check.threshold_key, metric);
            }
            let text = json!({"version": REPORT_VERSION, "budgets": budgets.budgets}).to_string();
            assert_eq!(
                gate::parse_budgets("budget.json", Some(text.as_bytes())),
                Ok(budgets),
                "written back: {text}"
            );
        }
        Err(e) => refused(&e, "budget.json", "Budget file", &doc),
    }

    match gate::parse_tolerances("tolerances.json", Some(bytes)) {
        Ok(tolerances) => {
            assert_eq!(tolerances.path, "tolerances.json");
            same_map(&doc, "tolerances", &tolerances.tolerances, false);
            let own = self_resolving(&tolerances.tolerances);
            if let Err(e) = tolerances.require(&own, &gate::no_classes) {
                panic!("tolerances do not cover their own keys: {e}");
            }
            let text =
                json!({"version": REPORT_VERSION, "tolerances": tolerances.tolerances}).to_string();
            assert_eq!(
                gate::parse_tolerances("tolerances.json", Some(text.as_bytes())),
                Ok(tolerances),
                "written back: {text}"
            );
        }
        Err(e) => refused(&e, "tolerances.json", "Tolerance file", &doc),
    }

    match gate::parse_baseline("baseline.json", Some(bytes)) {
        Ok(baseline) => {
            assert_eq!(baseline.path, "baseline.json");
            assert_eq!(baseline.version, REPORT_VERSION);
            same_map(&doc, "metrics", &baseline.metrics, true);
            let shown = baseline.config.to_string();
            assert!(
                !shown.contains(['\n', '\r']),
                "config shows on more lines: {shown:?}"
            );
            let own = self_resolving(&baseline.metrics);
            if let Err(e) = baseline.require(&own, &baseline.config, &gate::no_classes) {
                panic!("baseline refuses its own config and keys: {e}");
            }
            let config = serde_json::to_value(&baseline.config).expect("a config serializes");
            let text = json!({
                "version": REPORT_VERSION,
                "config": config,
                "metrics": baseline.metrics,
            })
            .to_string();
            assert_eq!(
                gate::parse_baseline("baseline.json", Some(text.as_bytes())),
                Ok(baseline),
                "written back: {text}"
            );
        }
        Err(e) => refused(&e, "baseline.json", "Baseline file", &doc),
    }
});

/// The accepted map is exactly the document's `key` object, every value finite, and (unless
/// `negative_ok`) none below zero.
fn same_map(
    doc: &Result<Value, String>,
    key: &str,
    map: &BTreeMap<String, f64>,
    negative_ok: bool,
) {
    let doc = doc
        .as_ref()
        .expect("an asset was accepted from bytes the reader refuses");
    assert_eq!(doc["version"], REPORT_VERSION);
    let object = doc[key]
        .as_object()
        .expect("accepted without a metric object");
    assert!(!map.is_empty(), "accepted an empty '{key}'");
    assert_eq!(object.len(), map.len());
    for (metric, value) in object {
        let got = map.get(metric).copied();
        assert_eq!(
            got,
            value.as_f64(),
            "'{key}.{metric}' read as {got:?} from {value}"
        );
        let got = got.unwrap_or(f64::NAN);
        assert!(got.is_finite(), "'{key}.{metric}' = {got}");
        assert!(
            negative_ok || got >= 0.0,
            "'{key}.{metric}' = {got} accepted"
        );
    }
}

/// The keys whose most specific threshold candidate is the key itself (a plain key naming a
/// GPU instance, `<runtime>@<gpu>.<metric>`, resolves to its runtime's key instead).
fn self_resolving(map: &BTreeMap<String, f64>) -> Vec<String> {
    map.keys()
        .filter(|k| threshold_candidates(k, |_: &str| None).first() == Some(*k))
        .cloned()
        .collect()
}

fn refused(e: &AssetError, file: &str, label: &str, doc: &Result<Value, String>) {
    assert_eq!(e.file, file);
    assert_one_line(label, &e.to_string());
    assert!(
        e.message.starts_with(label),
        "refusal does not name the asset: {e}"
    );
    if let Err(reason) = doc {
        assert_eq!(e.message, format!("{label} cannot be read: {reason}"));
    }
}
