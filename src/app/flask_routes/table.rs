//! Reading the table `flask routes` prints.
//!
//! Flask (2.2 to 3.1) prints a header (`Endpoint  Methods  [Subdomain|Host]  Rule`), a line of
//! dashes, then one row per rule, every column padded to its widest cell and columns separated
//! by two spaces. The dashes give the exact columns, so a cell may hold single spaces (the
//! methods cell is "GET, POST"). `--all-methods` adds HEAD and OPTIONS to that cell and `--sort`
//! only reorders the rows, so one reader takes every variant. Anything else is refused with the
//! line that did not fit: a policy drafted from half a table would silently miss routes.

use std::fmt;

/// One row: a URL rule of the app and the endpoint that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlaskRule {
    pub endpoint: String,
    /// As printed (upper case, sorted); HEAD and OPTIONS only with `--all-methods`.
    pub methods: Vec<String>,
    /// The Subdomain or Host column, when the app has one and this rule sets it.
    pub domain: Option<String>,
    /// The Werkzeug rule, such as `/api/users/<int:user_id>/profile`.
    pub rule: String,
    /// Line in the input, for messages.
    pub line: usize,
}

/// Why the input is not a `flask routes` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for TableError {}

const NO_ROUTES: &str = "No routes were registered.";

/// Parses the whole output of `flask routes`.
pub fn parse(text: &str) -> Result<Vec<FlaskRule>, TableError> {
    let mut lines = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .skip_while(|(_, l)| l.trim().is_empty());
    let Some((header_line, header)) = lines.next() else {
        return Err(TableError {
            line: 1,
            message: "empty input; expected the output of `flask routes`".into(),
        });
    };
    if header.trim() == NO_ROUTES {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = header.split_whitespace().collect();
    let with_domain = match names.as_slice() {
        ["Endpoint", "Methods", "Rule"] => false,
        ["Endpoint", "Methods", "Subdomain" | "Host", "Rule"] => true,
        _ => {
            return Err(TableError {
                line: header_line,
                message: format!(
                    "expected the header `flask routes` prints (\"Endpoint  Methods  Rule\"), found {:?}",
                    header.trim_end()
                ),
            });
        }
    };
    let (dash_line, dashes) = lines.next().unwrap_or((header_line + 1, ""));
    let columns = column_starts(dashes)
        .filter(|starts| starts.len() == names.len() && starts == &word_starts(header))
        .ok_or_else(|| TableError {
            line: dash_line,
            message: format!(
                "expected the line of dashes under the header (\"--------  -------  ----\"), found {:?}",
                dashes.trim_end()
            ),
        })?;

    let mut rules = Vec::new();
    for (line, text) in lines {
        if text.trim().is_empty() {
            continue;
        }
        let cells = split_row(text, &columns).ok_or_else(|| TableError {
            line,
            message: format!(
                "{:?} does not fit the columns of the header (was the table cut or edited?)",
                text.trim_end()
            ),
        })?;
        rules.push(rule_from_cells(line, &cells, with_domain)?);
    }
    Ok(rules)
}

/// Where each run of dashes starts, if the line is only dashes separated by two spaces.
fn column_starts(dashes: &str) -> Option<Vec<usize>> {
    let chars: Vec<char> = dashes.trim_end().chars().collect();
    let mut starts = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '-' {
            return None;
        }
        starts.push(i);
        while i < chars.len() && chars[i] == '-' {
            i += 1;
        }
        if i < chars.len() {
            if chars.get(i..i + 2) != Some(&[' ', ' ']) {
                return None;
            }
            i += 2;
        }
    }
    (!starts.is_empty()).then_some(starts)
}

/// Where each word of the header starts (in characters, as Flask pads).
fn word_starts(header: &str) -> Vec<usize> {
    let chars: Vec<char> = header.chars().collect();
    (0..chars.len())
        .filter(|&i| !chars[i].is_whitespace() && (i == 0 || chars[i - 1].is_whitespace()))
        .collect()
}

/// Cuts a row at the columns; `None` when a cell runs into the next column's separator.
fn split_row(text: &str, columns: &[usize]) -> Option<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let mut cells = Vec::with_capacity(columns.len());
    for (i, &start) in columns.iter().enumerate() {
        let end = columns.get(i + 1).map_or(chars.len(), |next| next - 2);
        if i + 1 < columns.len() {
            // The two separator characters must be spaces, or the row is not this table's.
            let separator = chars.get(end..end + 2)?;
            if separator != [' ', ' '] {
                return None;
            }
        }
        let cell: String = chars.get(start..end.max(start))?.iter().collect();
        cells.push(cell.trim().to_string());
    }
    Some(cells)
}

fn rule_from_cells(
    line: usize,
    cells: &[String],
    with_domain: bool,
) -> Result<FlaskRule, TableError> {
    let error = |message: String| TableError { line, message };
    let endpoint = cells[0].clone();
    if endpoint.is_empty() || endpoint.contains(char::is_whitespace) {
        return Err(error(format!(
            "endpoint {endpoint:?} must be one word, as Flask prints it"
        )));
    }
    let methods_cell = &cells[1];
    let methods: Vec<String> = if methods_cell.is_empty() {
        Vec::new()
    } else {
        methods_cell.split(", ").map(str::to_string).collect()
    };
    if let Some(bad) = methods
        .iter()
        .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(error(format!(
            "method {bad:?} in {methods_cell:?}: expected upper-case methods separated by \", \""
        )));
    }
    let domain = with_domain
        .then(|| cells[2].clone())
        .filter(|d| !d.is_empty());
    let rule = cells[cells.len() - 1].clone();
    if !rule.starts_with('/') {
        return Err(error(format!("rule {rule:?} must start with '/'")));
    }
    Ok(FlaskRule {
        endpoint,
        methods,
        domain,
        rule,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
Endpoint           Methods             Rule
-----------------  ------------------  ---------------------------------
get_credential     GET, HEAD, OPTIONS  /api/credentials/<cred_id>
login              OPTIONS, POST       /api/auth/login                  
";

    #[test]
    fn reads_rows_by_the_dashes() {
        let rules = parse(TABLE).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].methods, ["GET", "HEAD", "OPTIONS"]);
        assert_eq!(rules[1].rule, "/api/auth/login");
        assert_eq!(rules[1].line, 4);
    }

    #[test]
    fn reads_a_subdomain_column() {
        let text = "\
Endpoint  Methods  Subdomain  Rule
--------  -------  ---------  ----
a         GET      api        /a
b         GET                 /b
";
        let rules = parse(text).unwrap();
        assert_eq!(rules[0].domain.as_deref(), Some("api"));
        assert_eq!(rules[1].domain, None);
        assert_eq!(rules[1].rule, "/b");
    }

    #[test]
    fn no_routes_is_an_empty_table() {
        assert_eq!(parse("No routes were registered.\n").unwrap(), []);
    }

    #[test]
    fn names_the_line_that_does_not_fit() {
        let mut text = TABLE.to_string();
        text.push_str("stats GET /api/stats\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 5, "{err}");
        let err = parse("Usage: flask [OPTIONS] COMMAND\n").unwrap_err();
        assert_eq!(err.line, 1);
        let err = parse("Endpoint  Methods  Rule\nxx\n").unwrap_err();
        assert_eq!(err.line, 2);
    }
}
