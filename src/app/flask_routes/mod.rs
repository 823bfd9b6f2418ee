//! A policy from the app itself: `cachalot init --flask-routes` and `check --flask-routes`.
//!
//! A Flask team already has its route list: `flask routes` prints every rule with its
//! methods. `init` drafts a policy from it (see [`draft`]); `check` compares a policy with it
//! again later, because a renamed Flask rule otherwise silently stops being cached: the old
//! route matches nothing and no error says so.

mod draft;
mod rule;
mod table;

pub use rule::{Rule, Translation};
pub use table::{FlaskRule, TableError, parse};

use crate::policy::Policy;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

/// Exit status of `check --flask-routes` when the policy is valid but some of its routes
/// match no Flask rule (1 stays "invalid policy or unreadable routes").
pub const STALE_ROUTES: u8 = 2;

/// Reads `flask routes` output from a file, or standard input for `-`, and parses its rules.
pub fn load(source: &Path) -> Result<Vec<(FlaskRule, Rule)>, String> {
    let (text, shown) = if source == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("standard input: {e}"))?;
        (text, "standard input".to_string())
    } else {
        let text =
            std::fs::read_to_string(source).map_err(|e| format!("{}: {e}", source.display()))?;
        (text, source.display().to_string())
    };
    let rules = table::parse(&text).map_err(|e| format!("{shown}: {e}"))?;
    rules
        .into_iter()
        .map(|flask| {
            let rule = Rule::parse(&flask.rule)
                .map_err(|e| format!("{shown}: line {}: {e}", flask.line))?;
            Ok((flask, rule))
        })
        .collect()
}

/// `cachalot init --flask-routes FILE`: prints the draft policy on stdout.
pub fn init(source: &Path) -> ExitCode {
    let rules = match load(source) {
        Ok(rules) => rules,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = draft::draft(&rules);
    // The draft is promised to pass `check` as is; refuse to print one that would not.
    if let Err(e) = Policy::parse(&text, "the drafted policy") {
        eprintln!(
            "error: cachalot drafted a policy it rejects itself (a bug, please report it): {e}"
        );
        return ExitCode::FAILURE;
    }
    print!("{text}");
    ExitCode::SUCCESS
}

/// `cachalot check --flask-routes FILE`: warns about each policy route no Flask rule can
/// answer (path and method), in file order. Exit 0 when every route matches one,
/// [`STALE_ROUTES`] otherwise, 1 when the routes cannot be read.
pub fn compare(policy: &Policy, source: &Path) -> ExitCode {
    let rules = match load(source) {
        Ok(rules) => rules,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut routes: Vec<_> = policy.routes.iter().collect();
    routes.sort_by_key(|r| r.line);
    let mut stale = 0;
    for route in routes {
        let answered = rules.iter().any(|(flask, rule)| {
            rule.overlaps(&route.pattern) && methods_overlap(&route.methods, &flask.methods)
        });
        if !answered {
            stale += 1;
            eprintln!(
                "warning: route {} (line {}, {} {}) matches no rule of `flask routes`: renamed or removed in the app?",
                route.label, route.line, route.methods, route.pattern
            );
        }
    }
    if stale == 0 {
        println!(
            "{}: every route matches a rule of `flask routes` ({} rules)",
            source.display(),
            rules.len()
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "{}: {stale} of {} routes match no rule of `flask routes`",
            source.display(),
            policy.routes.len()
        );
        ExitCode::from(STALE_ROUTES)
    }
}

/// Flask adds HEAD to every GET rule and answers OPTIONS everywhere, printed or not.
fn methods_overlap(route: &crate::policy::route::MethodSet, flask: &[String]) -> bool {
    use crate::policy::route::MethodSet;
    let has =
        |m: &str| m == "OPTIONS" || flask.iter().any(|f| f == m) || (m == "HEAD" && has_get(flask));
    match route {
        MethodSet::Any => true,
        MethodSet::Only(list) => list.iter().any(|m| has(m.as_str())),
    }
}

fn has_get(flask: &[String]) -> bool {
    flask.iter().any(|f| f == "GET")
}
