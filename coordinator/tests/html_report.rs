//! The HTML report in a real browser: a tiny run writes its HTML next to the JSON report;
//! headless Chromium loads it without a console message or an external resource, its DOM
//! holds the verdict and the charts, and its screenshot is a page, not a blank. Text from the
//! report (labels, agent ids, diagnostics) is escaped: a label that is a script stays text.

mod support;

use std::path::Path;

use fleetgate_coordinator::html::{self, HistoryPoint, HistorySeries};
use support::cli::{fleetgate, text};
use support::relaxed_budgets;
use support::tools::{chromium, console_problems};

/// A script in a label, an agent id and a diagnostic.
const HOSTILE: &str = "<script>alert(1)</script>";

/// What in the page could make a browser fetch something or run a script: elements that
/// load or run things, quoted `src`/`href` attributes, CSS imports and URLs, and any web
/// address but the SVG namespace's.
fn external_references(html: &str) -> Vec<String> {
    let lower = html.to_lowercase();
    let mut found: Vec<String> = [
        "<script", "<link", "<iframe", "<img", "<object", "<embed", "@import", "url(", "src=\"",
        "href=\"", "src='", "href='",
    ]
    .into_iter()
    .filter(|needle| lower.contains(needle))
    .map(str::to_owned)
    .collect();
    let addresses = lower.matches("http://").count() + lower.matches("https://").count();
    let namespaces = lower
        .matches("xmlns=\"http://www.w3.org/2000/svg\"")
        .count();
    if addresses != namespaces {
        found.push(format!(
            "{addresses} web addresses, {namespaces} of them SVG namespaces"
        ));
    }
    found
}

/// The page of a real run loads cleanly, shows the verdict and the charts, and renders to a
/// screenshot that is a page (many colours, the verdict's colour among them).
#[test]
fn a_run_writes_an_html_report_that_chromium_renders_cleanly() {
    let work = tempfile::tempdir().unwrap();
    let (report, page) = relaxed_budgets::tiny_report(work.path(), &[]);
    let html = std::fs::read_to_string(&page).expect("the HTML report next to the JSON report");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(external_references(&html), Vec::<String>::new());

    // The detector sees a console error and an uncaught one (so its silence below means
    // something).
    let control = work.path().join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><html><body><script>console.error('boom'); throw new Error('control');</script></body></html>",
    )
    .unwrap();
    let (_, stderr) = chromium(work.path(), &control, &["--dump-dom"]);
    assert_eq!(console_problems(&stderr).len(), 2, "{stderr}");

    let (dom, stderr) = chromium(work.path(), &page, &["--dump-dom"]);
    assert_eq!(console_problems(&stderr), Vec::<&str>::new(), "{stderr}");
    let verdict = report.verdict.name();
    assert!(
        dom.contains(&format!(
            "<section id=\"verdict\" class=\"verdict {verdict}\">"
        )),
        "{dom}"
    );
    assert!(dom.contains(&format!("<span class=\"badge\">{verdict}</span>")));
    // The agent's section with its checks, soak and overhead charts.
    let agent = report.agents.keys().next().unwrap();
    assert!(dom.contains(agent.as_str()));
    for title in [
        "RSS checkpoints and trend",
        "Sink segments",
        "History window events",
        "Wall-time overhead per pair",
        "CPU-time overhead per pair",
    ] {
        assert!(dom.contains(title), "{title} missing");
    }
    let checks = report.budget_checks.as_ref().unwrap().len();
    let metrics = report
        .hardware_classes
        .values()
        .next()
        .unwrap()
        .metrics
        .len();
    // A bar per check, a strip per class metric, the RSS, two pair and three churn charts.
    let svgs = dom.matches("<svg").count();
    assert!(svgs >= checks + metrics + 6, "{svgs} <svg> elements");
    // The RSS chart plots every checkpoint.
    let soak = report
        .runtimes
        .values()
        .next()
        .unwrap()
        .soak
        .as_ref()
        .unwrap();
    assert!(
        soak.rss_checkpoints.len() >= 3,
        "{:?}",
        soak.rss_checkpoints
    );

    let shot = work.path().join("shot.png");
    let (_, stderr) = chromium(
        work.path(),
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000",
            "--hide-scrollbars",
        ],
    );
    assert_eq!(console_problems(&stderr), Vec::<&str>::new(), "{stderr}");
    let (width, height, pixels) = decode_rgb(&shot);
    assert_eq!((width, height), (1280, 2000));
    let non_white = pixels.iter().filter(|p| p.iter().any(|&c| c < 235)).count();
    let share = non_white as f64 / pixels.len() as f64;
    assert!(
        share > 0.03,
        "only {share:.4} of the screenshot is not white"
    );
    let mut colours: Vec<[u8; 3]> = pixels.clone();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 100, "{} distinct colours", colours.len());
    // The verdict badge in its colour.
    let badge = match verdict {
        "pass" => [0x1a, 0x7f, 0x37],
        "fail" => [0xcf, 0x22, 0x2e],
        _ => [0xbf, 0x87, 0x00],
    };
    let badge_pixels = pixels.iter().filter(|p| **p == badge).count();
    assert!(
        badge_pixels > 500,
        "{badge_pixels} pixels of the verdict colour"
    );
}

/// The screenshot's size and pixels as RGB.
fn decode_rgb(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{info:?}");
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    let pixels = buffer[..info.buffer_size()]
        .chunks_exact(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

/// A label, an agent id, a hardware class and a diagnostic that are scripts stay text, in the
/// file and in the browser's DOM; the history section shows each series with its shifts.
#[test]
fn text_from_the_report_is_escaped_and_history_is_drawn() {
    let work = tempfile::tempdir().unwrap();
    let (mut report, _) = relaxed_budgets::tiny_report(work.path(), &["--no-html"]);
    assert!(!work.path().join("report.html").exists());
    // The agent renamed to a script, with a label and a diagnostic of its own.
    let (id, mut agent) = report.agents.pop_first().unwrap();
    let hostile_id = format!("{HOSTILE}&\"'");
    agent.labels.insert("team".into(), HOSTILE.into());
    agent.hardware_class = HOSTILE.into();
    report.agents.insert(hostile_id.clone(), agent);
    let rename = |key: &str| key.replacen(&id, &hostile_id, 1);
    report.runtimes = std::mem::take(&mut report.runtimes)
        .into_iter()
        .map(|(k, v)| (rename(&k), v))
        .collect();
    report.metrics = std::mem::take(&mut report.metrics)
        .into_iter()
        .map(|(k, v)| (rename(&k), v))
        .collect();
    if let Some(checks) = report.budget_checks.take() {
        report.budget_checks = Some(checks.into_iter().map(|(k, v)| (rename(&k), v)).collect());
    }
    for class in report.hardware_classes.values_mut() {
        class.agents = vec![hostile_id.clone()];
    }
    report.failure_diagnostics.push(format!(
        "{hostile_id}/gpumemprof_cpu: <img src=x onerror=alert(2)>"
    ));
    let history = vec![HistorySeries {
        metric: "gpumemprof_cpu.runtime_overhead_pct".into(),
        hardware_class: HOSTILE.into(),
        points: (0..12)
            .map(|i| HistoryPoint {
                run_id: format!("run-{i}"),
                finished_at: format!("2026-11-{:02}T12:00:00Z", i + 1),
                value: if i < 8 { 4.0 } else { 9.0 } + (i % 3) as f64 * 0.2,
            })
            .collect(),
        change_points: vec![8],
    }];
    let html = html::render(&report, &history);
    assert_eq!(external_references(&html), Vec::<String>::new());
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{html}"
    );
    assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;"));
    let page = work.path().join("hostile.html");
    std::fs::write(&page, &html).unwrap();
    let (dom, stderr) = chromium(work.path(), &page, &["--dump-dom"]);
    assert_eq!(console_problems(&stderr), Vec::<&str>::new(), "{stderr}");
    let lower = dom.to_lowercase();
    assert!(!lower.contains("<script"), "a script element in the DOM");
    assert!(!lower.contains("<img"), "an img element in the DOM");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // The history section: its chart and the shift at run-8.
    assert!(dom.contains("<section id=\"history\">"));
    assert!(
        dom.contains("from run run-8 (2026-11-09T12:00:00Z): 9.40%, after 4.20%"),
        "{dom}"
    );
}

/// `--html` puts the page where it says, and a page that is also the JSON report is refused
/// before the run.
#[test]
fn html_flag_names_the_page_and_may_not_be_another_output() {
    let work = tempfile::tempdir().unwrap();
    let elsewhere = work.path().join("pages/run.html");
    let (_, default_page) =
        relaxed_budgets::tiny_report(work.path(), &["--html", elsewhere.to_str().unwrap()]);
    assert!(!default_page.exists());
    let html = std::fs::read_to_string(&elsewhere).unwrap();
    assert!(html.contains("<section id=\"verdict\""));

    let json = work.path().join("same.json");
    let result = fleetgate(&[
        "run",
        "--output",
        json.to_str().unwrap(),
        "--html",
        json.to_str().unwrap(),
    ]);
    assert_eq!(result.status.code(), Some(2), "{}", text(&result.stderr));
    assert_eq!(
        text(&result.stderr).trim_end().lines().last().unwrap(),
        format!(
            "Error: --html {}: is also the file given to --output; give each output its own path",
            json.display()
        )
    );
    assert!(!json.exists());
}
