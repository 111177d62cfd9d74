//! The alert rules of `deploy/prometheus/alerts.yml`: valid (`promtool check rules`), each one
//! unit-tested where it fires and where it stays quiet (`promtool test rules` on
//! `alerts.test.yml`), each labelled with a severity Alertmanager routes and linked to its
//! runbook, and each runbook in `docs/operations.md` belonging to an alert.
//!
//! The YAML files are read line by line, in the layout they are written in (`- alert: Name`,
//! `alertname: Name` followed by `exp_alerts:`); a rule or a case written otherwise is not
//! found, which fails these tests rather than letting it through, and the number of rules found
//! is checked against promtool's own count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use inlet_shared::test_util::promtool;

/// Alerts that fire whatever the input, so no case can show them quiet.
const ALWAYS_FIRING: &[&str] = &["InletWatchdog"];

/// The severities `deploy/alertmanager/alertmanager.yml` routes (`none`: the watchdog's own route).
const SEVERITIES: &[&str] = &["page", "warn", "none"];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repository().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs promtool with `args`; panics with its output unless it succeeds, else returns stdout.
fn promtool_ok(args: &[&str]) -> String {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(repository())
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}); install it with scripts/install-promtool.sh"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

/// One alerting rule as written in alerts.yml.
#[derive(Debug, Default)]
struct Rule {
    severity: Option<String>,
    runbook_url: Option<String>,
}

/// The alerting rules of alerts.yml by name, and how many recording rules it has.
fn rules() -> (BTreeMap<String, Rule>, usize) {
    let mut rules: BTreeMap<String, Rule> = BTreeMap::new();
    let mut records = 0;
    let mut current: Option<String> = None;
    for line in read("deploy/prometheus/alerts.yml").lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert:") {
            let name = name.trim().to_owned();
            assert!(rules.insert(name.clone(), Rule::default()).is_none(), "alert {name} is defined twice");
            current = Some(name);
        } else if line.starts_with("- record:") {
            records += 1;
            current = None;
        } else if let Some(rule) = current.as_ref().and_then(|name| rules.get_mut(name)) {
            if let Some(severity) = line.split("severity:").nth(1) {
                rule.severity = Some(severity.trim().trim_end_matches('}').trim().to_owned());
            }
            if let Some(url) = line.strip_prefix("runbook_url:") {
                rule.runbook_url = Some(url.trim().to_owned());
            }
        }
    }
    (rules, records)
}

/// For each alert name in alerts.test.yml: (cases where it fires, cases where it stays quiet).
fn unit_test_cases() -> BTreeMap<String, (usize, usize)> {
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let text = read("deploy/prometheus/alerts.test.yml");
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for (index, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("alertname:") else { continue };
        let name = name.trim().to_owned();
        let expected = lines.get(index + 1).and_then(|next| next.strip_prefix("exp_alerts:")).map(str::trim);
        let entry = cases.entry(name.clone()).or_default();
        match expected {
            Some(rest) if rest.starts_with("[]") => entry.1 += 1,
            Some("") if lines.get(index + 2).is_some_and(|next| next.starts_with("- exp_labels:")) => entry.0 += 1,
            _ => panic!(
                "alerts.test.yml: `alertname: {name}` is not followed by `exp_alerts: []` or a list of `- exp_labels:`"
            ),
        }
    }
    cases
}

/// The `### Name` headings of the "Alerts and runbooks" section of docs/operations.md, with the
/// numbered steps under each.
fn runbooks() -> BTreeMap<String, usize> {
    let text = read("docs/operations.md");
    let start =
        text.find("\n## Alerts and runbooks\n").expect("docs/operations.md has no `## Alerts and runbooks` section");
    let section = &text[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    let mut runbooks: BTreeMap<String, usize> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            let name = heading.trim().to_owned();
            assert!(runbooks.insert(name.clone(), 0).is_none(), "two runbooks for {name}");
            current = Some(name);
        } else if let Some(name) = &current
            && ["1. ", "2. ", "3. "].iter().any(|step| line.starts_with(step))
        {
            *runbooks.entry(name.clone()).or_default() += 1;
        }
    }
    runbooks
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let checked = promtool_ok(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    let (rules, records) = rules();
    assert!(!rules.is_empty(), "no alert found in alerts.yml");
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", rules.len() + records)),
        "promtool counts other rules than the {} alerts and {records} recording rules read here:\n{checked}",
        rules.len()
    );
    let tested = promtool_ok(&["test", "rules", "deploy/prometheus/alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_has_a_case_where_it_fires_and_one_where_it_stays_quiet() {
    let (rules, _) = rules();
    let cases = unit_test_cases();
    for name in rules.keys() {
        let (firing, quiet) = cases.get(name).copied().unwrap_or_default();
        assert!(firing > 0, "alerts.test.yml has no case where {name} fires");
        assert!(
            quiet > 0 || ALWAYS_FIRING.contains(&name.as_str()),
            "alerts.test.yml has no case where {name} stays quiet (exp_alerts: [])"
        );
    }
    for name in cases.keys() {
        assert!(rules.contains_key(name), "alerts.test.yml tests {name}, which alerts.yml does not define");
    }
}

#[test]
fn every_alert_has_a_severity_and_a_runbook_and_every_runbook_an_alert() {
    let (rules, _) = rules();
    let runbooks = runbooks();
    for (name, rule) in &rules {
        let severity = rule.severity.as_deref().unwrap_or_else(|| panic!("{name} has no severity label"));
        assert!(SEVERITIES.contains(&severity), "{name}: severity {severity} is not one Alertmanager routes");
        assert_eq!(
            rule.runbook_url.as_deref(),
            Some(format!("docs/operations.md#{}", name.to_lowercase()).as_str()),
            "{name}: runbook_url must point at its heading in docs/operations.md"
        );
        let steps = runbooks.get(name).unwrap_or_else(|| panic!("docs/operations.md has no runbook `### {name}`"));
        assert!(*steps >= 3, "the runbook of {name} does not list the first three things to check (1. 2. 3.)");
    }
    let alerts: BTreeSet<&String> = rules.keys().collect();
    for name in runbooks.keys() {
        assert!(alerts.contains(name), "docs/operations.md has a runbook for {name}, which alerts.yml does not define");
    }
}
