//! The Markdown summary and the HTML page of fleets far larger than a test can run: a real
//! one-agent report (a tiny `--mode all` run) cloned into thousands of agents over four
//! hardware classes, some of them made to fail. The Markdown of 10,000 agents stays bounded
//! whether every agent passes or every one fails, lists the agents that did not pass (failures
//! first) and counts what it leaves out, and reads right in GitHub's own renderer; the page of
//! 2,000 agents shows charts only for the agents that did not pass and the outliers, folds the
//! rest into a row each, and still loads cleanly in headless Chromium.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;

use fleetgate_common::report::{Report, Verdict};
use fleetgate_coordinator::html::{self, DETAILED_AGENTS};
use fleetgate_coordinator::output::{
    self, MARKDOWN_AGENT_ROWS, MARKDOWN_ALL_AGENTS, MARKDOWN_CHECK_ROWS, MARKDOWN_LINE_CHARS,
    MARKDOWN_LIST_LINES,
};
use serde_json::Value;
use support::relaxed_budgets;
use support::synthetic_fleet::{self, Fate, agent_id};
use support::tools::{chromium, console_problems, python_output};

/// Hardware classes of the synthetic fleets.
const CLASSES: usize = 4;

/// GitHub's limit on a pull request comment, in characters.
const COMMENT_LIMIT: usize = 65_536;

/// The report of a tiny `--mode all` run of `gpumemprof_cpu` (overhead maxima relaxed, so it
/// passes), made once per test binary.
fn one_agent() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (report, _) = relaxed_budgets::tiny_report(dir.path(), &["--no-html"]);
        assert_eq!(report.agents.len(), 1);
        assert_eq!(
            report.verdict,
            Verdict::Pass,
            "{:?}",
            report.failure_diagnostics
        );
        report
    })
}

/// The one-agent report cloned into an agent per fate over [`CLASSES`] classes (see
/// [`synthetic_fleet::fleet`]).
fn fleet(fates: &[Fate]) -> Report {
    synthetic_fleet::fleet(one_agent(), fates, CLASSES)
}

/// Budget checks per agent of the synthetic fleets.
fn checks_per_agent() -> usize {
    one_agent().budget_checks.iter().flatten().count()
}

/// What a reader of `markdown` sees in GitHub's own renderer (cmark-gfm, with GitHub's
/// extensions): its blocks in order — `["h", heading]`, `["p", paragraph]`, `["ul", [item,
/// ...]]`, `["table", [[cell, ...], ...]]` with the header row first — and how many of each
/// HTML element it made.
fn render_gfm(markdown: &str) -> (Vec<Value>, BTreeMap<String, u64>) {
    let script = r#"
import json, sys
from html.parser import HTMLParser
import cmarkgfm
from cmarkgfm.cmark import Options
html = cmarkgfm.github_flavored_markdown_to_html(sys.stdin.read(), options=Options.CMARK_OPT_UNSAFE)
class Reader(HTMLParser):
    def __init__(self):
        super().__init__()
        self.blocks, self.tags, self.text = [], {}, None
    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag in ("h1", "h2", "h3", "h4", "p", "td", "th", "li"):
            self.text = ""
        elif tag == "table":
            self.blocks.append(["table", []])
        elif tag == "tr":
            self.blocks[-1][1].append([])
        elif tag == "ul":
            self.blocks.append(["ul", []])
        elif tag == "br" and self.text is not None:
            self.text += "\n"
    def handle_endtag(self, tag):
        if self.text is None:
            return
        if tag in ("h1", "h2", "h3", "h4"):
            self.blocks.append(["h", self.text])
        elif tag == "p":
            self.blocks.append(["p", self.text])
        elif tag in ("td", "th"):
            self.blocks[-1][1][-1].append(self.text)
        elif tag == "li":
            self.blocks[-1][1].append(self.text)
        else:
            return
        self.text = None
    def handle_data(self, data):
        if self.text is not None:
            self.text += data
reader = Reader()
reader.feed(html)
print(json.dumps({"blocks": reader.blocks, "tags": reader.tags}))
"#;
    let seen: Value = serde_json::from_slice(&python_output(script, markdown.as_bytes())).unwrap();
    let tags = serde_json::from_value(seen["tags"].clone()).unwrap();
    (seen["blocks"].as_array().unwrap().clone(), tags)
}

/// The headings of the rendered blocks.
fn headings(blocks: &[Value]) -> Vec<&str> {
    blocks
        .iter()
        .filter(|b| b[0] == "h")
        .map(|b| b[1].as_str().unwrap())
        .collect()
}

/// The blocks under heading `title`, up to the next heading.
fn section<'a>(blocks: &'a [Value], title: &str) -> &'a [Value] {
    let start = blocks
        .iter()
        .position(|b| b[0] == "h" && b[1] == title)
        .unwrap_or_else(|| panic!("no heading {title:?} in {:?}", headings(blocks)))
        + 1;
    let end = blocks[start..]
        .iter()
        .position(|b| b[0] == "h")
        .map_or(blocks.len(), |n| start + n);
    &blocks[start..end]
}

/// The rows of the first table under `title`, without its header, as cells.
fn table_rows(blocks: &[Value], title: &str) -> Vec<Vec<String>> {
    let table = section(blocks, title)
        .iter()
        .find(|b| b[0] == "table")
        .unwrap_or_else(|| panic!("no table under {title:?}"));
    table[1].as_array().unwrap()[1..]
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// The paragraphs under `title`.
fn paragraphs<'a>(blocks: &'a [Value], title: &str) -> Vec<&'a str> {
    section(blocks, title)
        .iter()
        .filter(|b| b[0] == "p")
        .map(|b| b[1].as_str().unwrap())
        .collect()
}

/// The items of the list under `title`.
fn items<'a>(blocks: &'a [Value], title: &str) -> Vec<&'a str> {
    section(blocks, title)
        .iter()
        .find(|b| b[0] == "ul")
        .unwrap_or_else(|| panic!("no list under {title:?}"))[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect()
}

/// The line that counts what a large fleet's summary leaves out.
fn not_shown(agents: usize, passed: usize, checks: usize, checks_passed: usize) -> String {
    format!(
        "Not shown here: {agents} agents ({passed} that passed, {} more that did not) and {checks} checks ({checks_passed} that passed, {} more that did not). Every agent and every check is in the JSON report.",
        agents - passed,
        checks - checks_passed
    )
}

#[test]
fn ten_thousand_passing_agents_fit_a_pull_request_comment() {
    let report = fleet(&[Fate::Pass; 10_000]);
    let markdown = output::markdown(&report, Some("report.html"));
    assert!(
        markdown.chars().count() < COMMENT_LIMIT / 2,
        "{} characters",
        markdown.chars().count()
    );
    let (blocks, tags) = render_gfm(&markdown);
    let title = format!("fleetgate {} report: PASS", report.version);
    // Classes and their metrics; no agent or check listed; gate power cut at its limit.
    assert_eq!(
        headings(&blocks),
        [
            title.as_str(),
            "Hardware classes",
            "Class metrics",
            "Gate power"
        ],
        "{markdown}"
    );
    let classes = table_rows(&blocks, "Hardware classes");
    assert_eq!(classes.len(), CLASSES);
    assert_eq!(
        classes[0],
        ["class-0", "2500", "2500", "2500", "yes", "0"],
        "{classes:?}"
    );
    let metrics = one_agent()
        .hardware_classes
        .values()
        .next()
        .unwrap()
        .metrics
        .len();
    assert_eq!(
        table_rows(&blocks, "Class metrics").len(),
        CLASSES * metrics
    );
    let checks = 10_000 * checks_per_agent();
    let gate_power = section(&blocks, "Gate power");
    let lines = report.gate_power.len();
    assert!(lines >= 10_000, "{lines} gate power lines");
    assert_eq!(items(&blocks, "Gate power").len(), MARKDOWN_LIST_LINES);
    assert_eq!(
        gate_power.last().unwrap()[1],
        format!(
            "Not listed here: {} of the {lines} gate power lines; the JSON report has them all.",
            lines - MARKDOWN_LIST_LINES
        )
    );
    assert!(
        paragraphs(&blocks, "Class metrics")
            .contains(&not_shown(10_000, 10_000, checks, checks).as_str()),
        "{markdown}"
    );
    assert!(!tags.contains_key("script") && !tags.contains_key("img"));
}

#[test]
fn ten_thousand_failing_agents_stay_bounded() {
    let mut report = fleet(&[Fate::Fail; 10_000]);
    // A diagnostic far longer than any other is quoted only in part.
    report.failure_diagnostics[0].push_str(&" and on".repeat(100_000));
    let markdown = output::markdown(&report, None);
    assert!(markdown.len() < 256 * 1024, "{} bytes", markdown.len());
    let (blocks, _) = render_gfm(&markdown);
    let title = format!("fleetgate {} report: FAIL", report.version);
    assert_eq!(
        headings(&blocks),
        [
            title.as_str(),
            "Hardware classes",
            "Class metrics",
            "Failures",
            "Agents that did not pass",
            "Checks that did not pass",
            "Gate power"
        ],
        "{markdown}"
    );
    let classes = table_rows(&blocks, "Hardware classes");
    assert_eq!(
        classes[0],
        ["class-0", "2500", "0", "2500", "no", "0"],
        "{classes:?}"
    );
    let failures = report.failure_diagnostics.len();
    assert_eq!(failures, 10_000 * checks_per_agent());
    let listed = items(&blocks, "Failures");
    assert_eq!(
        listed[1..],
        report.failure_diagnostics[1..MARKDOWN_LIST_LINES]
    );
    let long = &report.failure_diagnostics[0];
    let kept: String = long.chars().take(MARKDOWN_LINE_CHARS).collect();
    assert_eq!(
        listed[0],
        format!("{kept} … (cut here; the JSON report has it whole)")
    );
    assert_eq!(
        paragraphs(&blocks, "Failures"),
        [format!(
            "Not listed here: {} of the {failures} failures; the JSON report has them all.",
            failures - MARKDOWN_LIST_LINES
        )]
    );
    // The first agents, at most as many as the limit, with their failed checks.
    let agents = table_rows(&blocks, "Agents that did not pass");
    let ids: Vec<&str> = agents.iter().map(|r| r[0].as_str()).collect();
    let expected: Vec<String> = (0..MARKDOWN_AGENT_ROWS).map(agent_id).collect();
    assert_eq!(ids, expected);
    let per_agent = checks_per_agent().to_string();
    assert_eq!(
        agents[0][..6],
        [
            "agent-00000",
            "class-0",
            "completed",
            "FAIL",
            per_agent.as_str(),
            "0"
        ]
    );
    let checks = table_rows(&blocks, "Checks that did not pass");
    let shown = MARKDOWN_CHECK_ROWS.min(MARKDOWN_AGENT_ROWS * checks_per_agent());
    assert_eq!(checks.len(), shown);
    assert!(checks.iter().all(|row| row[3] == "FAIL"), "{checks:?}");
    assert!(checks[0][0].starts_with("agent-00000/"), "{checks:?}");
    assert!(
        paragraphs(&blocks, "Checks that did not pass")
            .contains(&not_shown(10_000 - MARKDOWN_AGENT_ROWS, 0, failures - shown, 0).as_str()),
        "{markdown}"
    );
}

#[test]
fn failures_come_first_and_what_is_left_out_is_counted() {
    // Agents that fail, are inconclusive, are lost or are outliers, spread over the fleet.
    let fates: Vec<Fate> = (0..10_000)
        .map(|i| match i {
            _ if i % 400 == 7 => Fate::Fail,
            _ if i % 250 == 3 => Fate::Inconclusive,
            1234 | 5678 => Fate::Lost,
            4321 => Fate::Outlier,
            _ => Fate::Pass,
        })
        .collect();
    let report = fleet(&fates);
    let of = |wanted: &[Fate]| -> Vec<usize> {
        (0..fates.len())
            .filter(|&i| wanted.contains(&fates[i]))
            .collect()
    };
    let failing = of(&[Fate::Fail]);
    let unsure = of(&[Fate::Inconclusive, Fate::Lost]);
    assert_eq!((failing.len(), unsure.len()), (25, 42));
    let markdown = output::markdown(&report, None);
    assert!(markdown.len() < 256 * 1024, "{} bytes", markdown.len());
    let (blocks, _) = render_gfm(&markdown);

    // The failing agents first, then the inconclusive ones, each in id order, up to the limit.
    let rows = table_rows(&blocks, "Agents that did not pass");
    let expected: Vec<String> = failing
        .iter()
        .chain(&unsure)
        .take(MARKDOWN_AGENT_ROWS)
        .map(|&i| agent_id(i))
        .collect();
    let ids: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ids, expected);
    let outcomes: BTreeSet<(&str, &str)> = rows
        .iter()
        .map(|r| (r[2].as_str(), r[3].as_str()))
        .collect();
    assert_eq!(
        outcomes,
        BTreeSet::from([
            ("completed", "FAIL"),
            ("completed", "INCONCLUSIVE"),
            ("lost", "INCONCLUSIVE")
        ])
    );
    // Their checks that did not pass: the failing agents' checks, then one per inconclusive
    // agent shown.
    let per_agent = checks_per_agent();
    let checks = table_rows(&blocks, "Checks that did not pass");
    let inconclusive_shown = rows
        .iter()
        .filter(|r| r[3] == "INCONCLUSIVE" && r[2] == "completed")
        .count();
    let shown = (failing.len() * per_agent + inconclusive_shown).min(MARKDOWN_CHECK_ROWS);
    assert_eq!(checks.len(), shown);
    assert!(checks[0][0].starts_with(&format!("{}/", agent_id(failing[0]))));
    let not_passed = failing.len() * per_agent + of(&[Fate::Inconclusive]).len();
    let not_passing_agents = failing.len() + unsure.len();
    assert!(
        paragraphs(&blocks, "Checks that did not pass").contains(
            &not_shown(
                10_000 - MARKDOWN_AGENT_ROWS,
                10_000 - not_passing_agents,
                10_000 * per_agent - shown,
                10_000 * per_agent - not_passed
            )
            .as_str()
        ),
        "{markdown}"
    );
    // The outlier is counted in its class and named in the fleet advice.
    let classes = table_rows(&blocks, "Hardware classes");
    let class = format!("class-{}", 4321 % CLASSES);
    let row = classes.iter().find(|r| r[0] == class).unwrap();
    assert_ne!(row[5], "0", "{classes:?}");
    assert!(
        items(&blocks, "Fleet advice")
            .iter()
            .any(|l| l.starts_with(&format!("{}/", agent_id(4321)))),
        "{markdown}"
    );
    // Failures and inconclusive diagnostics apart.
    assert_eq!(
        items(&blocks, "Failures").len(),
        (failing.len() * per_agent).min(MARKDOWN_LIST_LINES)
    );
    assert!(
        items(&blocks, "Inconclusive")
            .iter()
            .all(|l| l.contains("inconclusive"))
    );
}

#[test]
fn a_small_fleet_keeps_every_agent_and_check_in_its_summary() {
    let mut fates = vec![Fate::Pass; MARKDOWN_ALL_AGENTS];
    fates[3] = Fate::Fail;
    let (blocks, _) = render_gfm(&output::markdown(&fleet(&fates), None));
    let ids: Vec<String> = table_rows(&blocks, "Agents")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let expected: Vec<String> = (0..MARKDOWN_ALL_AGENTS).map(agent_id).collect();
    assert_eq!(ids, expected);
    assert_eq!(
        table_rows(&blocks, "Checks").len(),
        MARKDOWN_ALL_AGENTS * checks_per_agent()
    );
    // One agent more: the bounded summary.
    fates.push(Fate::Pass);
    let (blocks, _) = render_gfm(&output::markdown(&fleet(&fates), None));
    let heads = headings(&blocks);
    assert!(
        !heads.contains(&"Agents") && !heads.contains(&"Checks"),
        "{heads:?}"
    );
    assert_eq!(table_rows(&blocks, "Agents that did not pass").len(), 1);
}

/// Chromium's DOM of `page` and the console messages, failed loads and refusals it logged.
fn chromium_dom(dir: &Path, page: &Path) -> (String, Vec<String>) {
    let (dom, stderr) = chromium(dir, page, &["--dump-dom"]);
    let problems = console_problems(&stderr)
        .into_iter()
        .map(str::to_owned)
        .collect();
    (dom, problems)
}

#[test]
fn the_page_of_two_thousand_agents_folds_the_passing_ones_and_loads_cleanly() {
    // A few failing and inconclusive agents, one lost and one outlier.
    let fates: Vec<Fate> = (0..2_000)
        .map(|i| match i {
            _ if i % 500 == 11 => Fate::Fail,
            _ if i % 700 == 5 => Fate::Inconclusive,
            77 => Fate::Lost,
            1_001 => Fate::Outlier,
            _ => Fate::Pass,
        })
        .collect();
    let report = fleet(&fates);
    let page = html::render(&report, &[]);
    // Boxes for the agents that did not pass (failures first), then the outlier.
    let boxed: Vec<usize> = [11, 511, 1_011, 1_511, 5, 77, 705, 1_405, 1_001].to_vec();
    let boxes: Vec<&str> = page
        .split("<details class=\"agent\"")
        .skip(1)
        .map(|b| {
            let start = b.find("</span> ").unwrap() + "</span> ".len();
            &b[start..start + "agent-00000".len()]
        })
        .collect();
    let expected: Vec<String> = boxed.iter().map(|&i| agent_id(i)).collect();
    assert_eq!(boxes, expected);
    // Every other agent is one row of the folded table, which is closed.
    let folded = page
        .split("<details class=\"folded\" id=\"other-agents\">")
        .nth(1)
        .expect("the folded table");
    let rows = folded
        .split("</details>")
        .next()
        .unwrap()
        .matches("<tr><td>");
    assert_eq!(rows.count(), 2_000 - boxed.len());
    assert!(
        folded.starts_with(
            "\n<summary>1991 more agents: 1991 passed, 0 failed, 0 inconclusive</summary>"
        ),
        "{}",
        &folded[..200]
    );
    assert!(page.contains(&format!(
        "the {} boxes below are the agents that did not pass, failures first, then the outliers (at most {DETAILED_AGENTS} boxes)",
        boxed.len()
    )));

    // A passing agent costs a row, not charts: 1,000 more passing agents add at most 1 KiB each.
    let mut more = fates.clone();
    more.extend([Fate::Pass; 1_000]);
    let bigger = html::render(&fleet(&more), &[]);
    let per_agent = (bigger.len() - page.len()) / 1_000;
    assert!(per_agent <= 1024, "{per_agent} bytes per passing agent");

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("fleet.html");
    std::fs::write(&file, &page).unwrap();
    let (dom, problems) = chromium_dom(work.path(), &file);
    assert_eq!(problems, Vec::<String>::new());
    assert!(dom.contains("<section id=\"verdict\" class=\"verdict fail\">"));
    let lower = dom.to_lowercase();
    for needle in [
        "<script", "<link", "<img", "<iframe", "src=\"", "href=\"", "url(",
    ] {
        assert!(!lower.contains(needle), "{needle} in the page");
    }
    // The browser parsed the whole table: every folded agent is in the DOM.
    assert!(dom.contains(&format!("<tr><td>{}</td><td>class-3</td>", agent_id(1_999))));
    assert_eq!(dom.matches("<details class=\"agent\"").count(), boxed.len());
}
